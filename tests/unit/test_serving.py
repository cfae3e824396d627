from llmops_events.v1 import DeploymentCanaryStarted, DeploymentPromoted, DeploymentRequested, DeploymentRolledBack
from llmops_serving import DeploymentBook, ModelDeployment, choose_route, parse_triton_name, request_bucket, triton_name


def test_the_deployment_lifecycle_folds_into_champion_and_canary() -> None:
    book = DeploymentBook()
    book.apply(DeploymentRequested(model_name="m", model_version=1, artifact_uri="x"))
    assert book.get("m") == ModelDeployment("m", pending_version=1)
    book.apply(DeploymentPromoted(model_name="m", model_version=1))
    book.apply(DeploymentRequested(model_name="m", model_version=2, artifact_uri="x", champion_version=1))
    assert book.get("m").phase == "deploying"  # type: ignore[union-attr]
    book.apply(DeploymentCanaryStarted(model_name="m", model_version=2, champion_version=1, traffic_share=0.1))
    state = book.get("m")
    assert state is not None and state.phase == "canary" and state.live_versions == (1, 2)
    book.apply(DeploymentRolledBack(model_name="m", model_version=2, restored_version=1, reason="errors"))
    assert book.get("m") == ModelDeployment("m", champion_version=1)


def test_the_latest_event_alone_gives_the_state_as_after_compaction() -> None:
    book = DeploymentBook()
    book.apply(DeploymentCanaryStarted(model_name="m", model_version=5, champion_version=3, traffic_share=0.2))
    assert book.get("m") == ModelDeployment("m", champion_version=3, canary_version=5, canary_share=0.2)


def test_routing_is_sticky_and_close_to_the_canary_share() -> None:
    state = ModelDeployment("m", champion_version=1, canary_version=2, canary_share=0.1)
    routes = [choose_route(state, f"request-{i}") for i in range(5000)]
    canary_share = sum(r is not None and r.role == "canary" for r in routes) / len(routes)
    assert 0.08 < canary_share < 0.12
    assert choose_route(state, "request-7") == routes[7]
    assert 0 <= request_bucket("anything") < 1


def test_no_route_without_a_live_version_and_canary_only_takes_everything() -> None:
    assert choose_route(ModelDeployment("m"), "r") is None
    route = choose_route(ModelDeployment("m", canary_version=4, canary_share=0.1), "r")
    assert route is not None and route.version == 4


def test_triton_names_round_trip() -> None:
    assert parse_triton_name(triton_name("banking-intents", 12)) == ("banking-intents", 12)
    assert parse_triton_name("other") is None
