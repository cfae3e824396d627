"""The Helm chart (deploy/helm/llmops), checked offline: rendered by the real ``helm`` (built by
``make setup`` into build/go/bin) with each value set, and every object validated against the
Kubernetes schemas and the vendored Strimzi and KEDA CRD schemas. The chart's topics and users come
from the code (``llmops generate``): the rendered KafkaTopics and KafkaUsers are compared with
``platform_topics()`` and the ACL table."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from llmops_cli.chart import (
    CHART,
    CRDS,
    PRODUCTION_VALUES,
    check_generated,
    crd_schemas,
    k8s_name,
    render,
    validate_objects,
    value_sets,
)
from llmops_config import PlatformSettings
from llmops_config.kafka import SERVICE_PRINCIPALS
from llmops_events import Envelope
from llmops_events.topics import platform_topics
from llmops_events.v1.training import TrainingRequested
from llmops_stack.acls import ACCESS

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "build" / "go" / "bin" / "helm"

needs_helm = pytest.mark.skipif(
    not HELM.exists(), reason=f"{HELM} is not built: make setup builds it with Go (go install helm.sh/helm/v3)"
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    if not HELM.exists():
        pytest.skip(f"{HELM} is not built: make setup builds it with Go (go install helm.sh/helm/v3)")
    return {label: render(HELM, ROOT / CHART, values, settings) for label, values, settings in value_sets(ROOT)}


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def test_generated_files_match_the_code() -> None:
    assert check_generated(ROOT) == []


def test_vendored_crds_cover_every_custom_kind_the_chart_uses() -> None:
    schemas = crd_schemas(ROOT / CRDS)
    for kind in ("Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"):
        assert ("kafka.strimzi.io/v1", kind) in schemas
    for kind in ("ScaledObject", "TriggerAuthentication"):
        assert ("keda.sh/v1alpha1", kind) in schemas


@needs_helm
def test_every_rendered_object_is_valid(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for label, objects in rendered.items():
        assert objects, f"{label}: nothing rendered"
        assert validate_objects(objects, ROOT / CRDS) == [], label


@needs_helm
def test_validation_catches_what_the_api_server_would_refuse_or_prune(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Not vacuous: a misspelt field and a wrong type are reported, for Kubernetes' kinds and the CRDs'."""
    objects = rendered["default values"]
    deployment = copy.deepcopy(of_kind(objects, "Deployment")[0])
    deployment["spec"]["replicaz"] = 2
    topic = copy.deepcopy(of_kind(objects, "KafkaTopic")[0])
    topic["spec"]["partitions"] = "six"
    scaled = copy.deepcopy(of_kind(objects, "ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metadataa"] = scaled["spec"]["triggers"][0].pop("metadata")
    problems = validate_objects([deployment, topic, scaled], ROOT / CRDS)
    assert any("replicaz" in problem for problem in problems)
    assert any("partitions" in problem and "integer" in problem for problem in problems)
    assert any("metadataa" in problem for problem in problems)
    assert validate_objects(
        [{"apiVersion": "example.com/v1", "kind": "Unknown", "metadata": {"name": "x"}}], ROOT / CRDS
    )


@needs_helm
def test_topics_are_the_platform_topics_with_the_prefix(rendered: dict[str, list[dict[str, Any]]]) -> None:
    default = {t["spec"]["topicName"]: t["spec"] for t in of_kind(rendered["default values"], "KafkaTopic")}
    assert set(default) == {spec.name for spec in platform_topics()}
    for spec in platform_topics():
        assert default[spec.name]["partitions"] == spec.partitions
        assert default[spec.name]["replicas"] == 3
        assert default[spec.name]["config"]["min.insync.replicas"] == "2"
        for key, value in spec.config.items():
            assert default[spec.name]["config"][key] == value
    production = {t["spec"]["topicName"] for t in of_kind(rendered["production values"], "KafkaTopic")}
    assert production == {f"prod.{spec.name}" for spec in platform_topics()}


@needs_helm
def test_users_are_the_acl_table(rendered: dict[str, list[dict[str, Any]]]) -> None:
    users = {u["metadata"]["name"]: u for u in of_kind(rendered["production values"], "KafkaUser")}
    assert set(users) == {k8s_name(principal) for principal in ACCESS} | {"keda"}
    gateway = users["gateway"]["spec"]["authorization"]["acls"]
    writes = {acl["resource"]["name"] for acl in gateway if acl["operations"] == ["Write"]}
    assert writes == {f"prod.{topic}" for topic in ACCESS["gateway"].writes}
    groups = [acl["resource"] for acl in gateway if acl["resource"]["type"] == "group"]
    assert groups == [{"type": "group", "name": "gateway", "patternType": "prefix"}]


@needs_helm
def test_every_service_runs_with_probes_its_principal_and_the_kafka_secrets(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployments = {
        d["metadata"]["name"].removeprefix("llmops-"): d for d in of_kind(rendered["production values"], "Deployment")
    }
    assert set(deployments) == {
        "ingestion",
        "fine-tuning",
        "evaluation",
        "deployment",
        "gateway",
        "monitoring",
        "triton",
    }
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"], name
        assert container["resources"]["limits"]["memory"], name
        if name == "triton":
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # each replica of the pool
            assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
            continue
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["LLMOPS_KAFKA_SASL_USERNAME"] == k8s_name(SERVICE_PRINCIPALS[name])
        assert env["LLMOPS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["LLMOPS_KAFKA_TOPIC_PREFIX"] == "prod."
        assert env["LLMOPS_METRICS_HOST"] == "0.0.0.0"
        prefix = f"LLMOPS_{name.replace('-', '_').upper()}"
        port = int(env[f"{prefix}_METRICS_PORT"])
        assert {"name": "metrics", "containerPort": port} in container["ports"]
        assert env["LLMOPS_STATE_STORE_URL"] is None  # from the Secret, never in the manifest
        if name in ("deployment", "monitoring"):
            # One active replica (docs/scale-out.md): a standby opens /metrics only with the lease, so
            # /metrics is its readiness, and a liveness probe on it would kill every standby.
            assert env[f"{prefix}_SINGLE_ACTIVE"] == "true"
            assert "livenessProbe" not in container and "startupProbe" not in container
            assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        else:
            assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-password"]["secret"]["secretName"] == k8s_name(SERVICE_PRINCIPALS[name])
        assert volumes["kafka-ca"]["secret"]["secretName"] == "llmops-cluster-ca-cert"
        assert volumes["grpc-tls"]["secret"]["secretName"] == "llmops-grpc-tls"


@needs_helm
def test_scaling_keda_on_lag_for_ingestion_and_monitoring_hpa_for_the_gateway(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["production values"]
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s["spec"] for s in of_kind(objects, "ScaledObject")}
    assert set(scaled) == {"llmops-ingestion", "llmops-monitoring"}
    trigger = scaled["llmops-ingestion"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == "prod.llmops.records.raw.v1"
    assert trigger["metadata"]["consumerGroup"] == "ingestion"
    partitions = {spec.name: spec.partitions for spec in platform_topics()}
    assert scaled["llmops-ingestion"]["maxReplicaCount"] <= partitions["llmops.records.raw.v1"]
    assert scaled["llmops-monitoring"]["maxReplicaCount"] <= partitions["llmops.inference.v1"]
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "llmops-gateway"
    # The autoscalers own the replica counts of what they scale.
    for deployment in of_kind(objects, "Deployment"):
        if deployment["metadata"]["name"] in ("llmops-ingestion", "llmops-monitoring", "llmops-gateway"):
            assert "replicas" not in deployment["spec"]


@needs_helm
def test_training_job_is_torchrun_of_the_distributed_entry_point_on_gpus(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["production values"]
    (job,) = of_kind(objects, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["torchrun"]
    assert container["args"] == [
        "--nproc-per-node=2",
        "-m",
        "llmops_fine_tuning.distributed",
        "--request",
        "/etc/llmops/request.json",
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    (request,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("training-request")]
    envelope = Envelope[TrainingRequested].model_validate_json(request["data"]["request.json"])
    assert envelope.data.model_name == "support-intents"
    assert not of_kind(rendered["default values"], "Job"), "the Job is off by default"


@needs_helm
def test_model_repository_is_shared_with_the_deployment_service_or_an_object_store(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    def triton_args(objects: list[dict[str, Any]]) -> list[str]:
        (triton,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "llmops-triton"]
        return list(triton["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "--model-repository=/var/lib/llmops/triton/models" in triton_args(rendered["production values"])
    claims = {c["metadata"]["name"]: c["spec"] for c in of_kind(rendered["production values"], "PersistentVolumeClaim")}
    assert claims["llmops-model-repository"]["accessModes"] == ["ReadWriteMany"]
    external = rendered["production values, external Kafka, S3 model repository"]
    assert "--model-repository=s3://llmops-models/prod" in triton_args(external)
    assert not of_kind(external, "Kafka") and not of_kind(external, "KafkaTopic")
    (gateway,) = [d for d in of_kind(external, "Deployment") if d["metadata"]["name"] == "llmops-gateway"]
    env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LLMOPS_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1.example.com:9093,kafka-2.example.com:9093"


def _ingestion_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (ingestion,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "llmops-ingestion"]
    container: dict[str, Any] = ingestion["spec"]["template"]["spec"]["containers"][0]
    return container


@needs_helm
def test_the_triton_pool_is_found_by_dns_and_each_replica_loads_the_repository(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["production values"]
    (triton,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "llmops-triton"]
    assert triton["spec"]["replicas"] == 2
    assert "--load-model=*" in triton["spec"]["template"]["spec"]["containers"][0]["args"]
    services = {s["metadata"]["name"]: s["spec"] for s in of_kind(objects, "Service")}
    pool = services["llmops-triton-pool"]
    assert pool["clusterIP"] == "None" and pool["selector"] == services["llmops-triton"]["selector"]
    for name in ("llmops-gateway", "llmops-deployment"):
        (service,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == name]
        env = {e["name"]: e.get("value") for e in service["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (env["LLMOPS_TRITON_HOST"], env["LLMOPS_TRITON_POOL_DNS"]) == ("llmops-triton-pool", "true")
    assert {"triton_host", "triton_pool_dns"} <= set(PlatformSettings.model_fields)  # the names the code reads


@needs_helm
def test_ingestion_pushes_to_the_redis_of_the_feast_repository(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The mounted Feast repository and ingestion's settings name one Redis, one project and one key
    encoding, so a `feast` reader of that repository finds what ingestion pushed; the password comes
    from the Secret into the one variable both read, never into the manifest."""
    import yaml

    from llmops_features.online_store import PASSWORD_VARIABLE, FeastOnlineStoreSettings
    from llmops_ingestion.adapters.feast_store import ENTITY_KEY_SERIALIZATION_VERSION, PROJECT

    for label, address, secret in (
        ("production values", "redis-master.feast:6379", "feast-redis"),
        ("default values", "redis-master:6379", None),
    ):
        (feast,) = [c for c in of_kind(rendered[label], "ConfigMap") if c["metadata"]["name"] == "llmops-feast"]
        repository = yaml.safe_load(feast["data"]["feature_store.yaml"])
        assert feast["data"]["features.py"].strip() == (ROOT / "deploy/feast/features.py").read_text().strip()
        container = _ingestion_container(rendered[label])
        env = {item["name"]: item for item in container["env"]}
        assert env["LLMOPS_FEAST_ONLINE_STORE"]["value"] == "redis"
        assert env["LLMOPS_FEAST_REDIS_URL"]["value"] == address
        settings = FeastOnlineStoreSettings(
            online_store=env["LLMOPS_FEAST_ONLINE_STORE"]["value"],
            redis_url=env["LLMOPS_FEAST_REDIS_URL"]["value"],
            redis_password="stand-in" if secret else None,
        )
        ours = settings.redis_config(with_password=False)["connection_string"]
        theirs = repository["online_store"]["connection_string"]
        assert repository["online_store"]["type"] == "redis"
        # The same address first, the same password variable last; ingestion adds its timeouts.
        assert ours.split(",")[0] == theirs.split(",")[0] == address
        assert repository["project"] == PROJECT
        assert repository["entity_key_serialization_version"] == ENTITY_KEY_SERIALIZATION_VERSION
        if secret:
            placeholder = f"password=${{{PASSWORD_VARIABLE}}}"
            assert ours.endswith(placeholder) and theirs.endswith(placeholder)
            reference = env[PASSWORD_VARIABLE]["valueFrom"]["secretKeyRef"]
            assert reference == {"name": secret, "key": "password"} and "value" not in env[PASSWORD_VARIABLE]
        else:
            assert "password" not in theirs and PASSWORD_VARIABLE not in env
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["feast-repository"] == "/etc/llmops/feast"


@needs_helm
def test_without_the_feast_repository_ingestion_keeps_its_embedded_store() -> None:
    objects = render(HELM, ROOT / CHART, [ROOT / PRODUCTION_VALUES], ["feast.enabled=false"])
    assert not [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == "llmops-feast"]
    container = _ingestion_container(objects)
    assert not [item["name"] for item in container["env"] if item["name"].startswith("LLMOPS_FEAST_")]
    assert "feast-repository" not in {m["name"] for m in container["volumeMounts"]}


def test_production_values_file_is_json_clean_yaml() -> None:
    """The example an operator copies: its training request is a valid training.requested envelope."""
    import yaml

    values = yaml.safe_load((ROOT / PRODUCTION_VALUES).read_text())
    request = json.loads(values["training"]["job"]["request"])
    Envelope[TrainingRequested].model_validate(request)


def _ingestion_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (ingestion,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "llmops-ingestion"]
    pod: dict[str, Any] = ingestion["spec"]["template"]["spec"]
    return pod


def _feast_claim(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (claim,) = [
        c for c in of_kind(objects, "PersistentVolumeClaim") if c["metadata"]["name"] == "llmops-ingestion-feast"
    ]
    return claim


@needs_helm
def test_ingestion_replicas_share_one_sqlite_state_on_one_node_without_a_state_store(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Without ``stateStore``, ingestion's state is one SQLite database its replicas share
    (docs/scale-out.md): one claim, mounted at var/state by every replica, the replicas kept on one
    node, and the claim kept by helm when it is no longer rendered (the file a migration reads)."""
    objects = rendered["default values"]
    (claim,) = [
        c for c in of_kind(objects, "PersistentVolumeClaim") if c["metadata"]["name"] == "llmops-ingestion-state"
    ]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pod = _ingestion_pod(objects)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["ingestion-state"]["persistentVolumeClaim"]["claimName"] == "llmops-ingestion-state"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["ingestion-state"] == "/var/lib/llmops/state"
    (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert "LLMOPS_STATE_STORE_URL" not in {e["name"] for e in pod["containers"][0]["env"]}
    # The Feast repository's files too: one node, so ReadWriteOnce is enough.
    assert _feast_claim(objects)["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert mounts["ingestion-feast"] == "/var/lib/llmops/feast"


@needs_helm
def test_ingestion_replicas_spread_over_nodes_with_the_state_store(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """With ``stateStore`` (the production example) ingestion keeps its state in PostgreSQL: no state
    claim, no pod affinity; the Feast repository's files (the offline parts snapshots read) on a
    ReadWriteMany claim every replica mounts; the rest of var/ (caches) on the pod's own volume."""
    for label in ("production values", "production values, external Kafka, S3 model repository"):
        objects = rendered[label]
        claims = [c["metadata"]["name"] for c in of_kind(objects, "PersistentVolumeClaim")]
        assert "llmops-ingestion-state" not in claims, label
        pod = _ingestion_pod(objects)
        assert "affinity" not in pod, label
        assert "ingestion-state" not in {v["name"] for v in pod["volumes"]}, label
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert "ingestion-state" not in mounts and mounts["state"] == "/var/lib/llmops", label
        assert pod["volumes"][0] == {"name": "state", "emptyDir": {"sizeLimit": "10Gi"}}, label
        assert _feast_claim(objects)["spec"]["accessModes"] == ["ReadWriteMany"], label
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["ingestion-feast"]["persistentVolumeClaim"]["claimName"] == "llmops-ingestion-feast", label
        assert mounts["ingestion-feast"] == "/var/lib/llmops/feast", label
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["LLMOPS_STATE_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "llmops-state-store",
            "key": "url",
        }
