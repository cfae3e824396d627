"""The service's orchestration and its ops API on fakes (no broker, no Triton): what is published,
loaded and unloaded for each command, and the gRPC status of each error, mapped in one place."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from llmops.ops.v1 import ops_pb2
from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.ops_server import STATUS, GateDecisions, OpsServicer, grpc_status
from llmops_deployment.adapters.triton import Counts, unreachable
from llmops_deployment.errors import (
    DeploymentError,
    ErrorCode,
    FailedPrecondition,
    FailureReason,
    GoLiveFailed,
    IllegalTransition,
    InvalidRequest,
    NotFound,
)
from llmops_deployment.golive import backoff_s
from llmops_deployment.handlers import DeploymentService
from llmops_deployment.reconciler import Reconciler
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope
from llmops_events.base import EventData
from llmops_events.v1 import (
    Decision,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    DeploymentRolledBack,
    EvaluationCompleted,
)
from llmops_models import evaluation_path
from llmops_serving import triton_name
from llmops_stack.certificates import client_certificate, new_authority, pem
from llmops_storage import ArtifactStore

MODEL = "intents"


@dataclass
class _Answer:
    label: str
    confidence: float
    scores: dict[str, float]


def _unreachable() -> InferenceServerException:
    """What tritonclient raises when nothing listens on Triton's port."""
    return InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")


@dataclass
class FakeTriton:
    loaded: set[str] = field(default_factory=set)
    broken: dict[str, Exception] = field(default_factory=dict)
    """Triton name → what loading it raises."""
    bad_answers: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    """Triton names that serve one more request each time their statistics are read."""
    served: dict[str, int] = field(default_factory=dict)
    readings: dict[str, list[Counts | None]] = field(default_factory=dict)
    """Triton name → its next statistics readings (None: unreadable); the last one stays."""
    down: bool = False
    """Nothing listens: every call fails as an unreachable Triton does."""
    unreachable_loads: int = 0
    """The next loads that fail as if Triton were unreachable (it restarts meanwhile)."""
    load_calls: int = 0

    async def is_live(self) -> bool:
        return not self.down

    async def ready_models(self) -> set[str]:
        if self.down:
            raise _unreachable()
        return set(self.loaded)

    async def load(self, name: str) -> None:
        self.load_calls += 1
        if self.down:
            raise _unreachable()
        if self.unreachable_loads > 0:
            self.unreachable_loads -= 1
            raise _unreachable()
        if name in self.broken:
            raise self.broken[name]
        self.loaded.add(name)

    async def unload(self, name: str) -> None:
        if self.down:
            raise _unreachable()
        self.loaded.discard(name)

    async def labels(self, name: str) -> list[str]:
        if self.down:
            raise _unreachable()
        return ["a", "b"]

    async def predict(self, name: str, texts: list[str]) -> list[_Answer]:
        if self.down:
            raise _unreachable()
        assert name in self.loaded
        label = "zzz" if name in self.bad_answers else "a"
        return [_Answer(label, 0.9, {"a": 0.9, "b": 0.1}) for _ in texts]

    async def counts(self, name: str) -> Counts | None:
        if self.down:
            return None
        script = self.readings.get(name)
        if script:
            return script.pop(0) if len(script) > 1 else script[0]
        if name in self.busy:
            self.served[name] = self.served.get(name, 0) + 1
        n = self.served.get(name, 0)
        return Counts(requests=n, success_ns=n * 1_000_000)


@dataclass
class FakeArtifacts:
    versions: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    corrupt: set[int] = field(default_factory=set)
    repository: set[str] = field(default_factory=set)
    io_error: Exception | None = None
    """What writing a version into the model repository raises (a full disk, a store outage)."""

    def published_versions(self, model_name: str) -> list[int]:
        return list(self.versions) if model_name == MODEL else []

    def uri(self, model_name: str, version: int) -> str:
        return f"store/models/{model_name}/{version}"

    def installed(self, model_name: str, version: int) -> bool:
        return triton_name(model_name, version) in self.repository

    def install(self, model_name: str, version: int, options: Any) -> None:
        if self.io_error is not None:
            raise self.io_error
        if version in self.corrupt:
            raise GoLiveFailed(FailureReason.ARTIFACT_CORRUPT, "model.safetensors: sha256 differs", version=version)
        self.repository.add(triton_name(model_name, version))

    def validation_texts(self, model_name: str, version: int, limit: int = 8) -> list[str]:
        return ["where is my card"]

    def installed_versions(self) -> dict[str, tuple[str, int]]:
        return {name: (MODEL, int(name.rsplit("__v", 1)[1])) for name in self.repository}

    def kind(self, model_name: str, version: int) -> str | None:
        return "classifier" if version in self.versions else None

    def installed_adapters(self) -> dict[str, tuple[str, int]]:
        return {}

    def uninstall(self, name: str) -> None:
        self.repository.discard(name)


@dataclass
class FakePublisher:
    events: list[tuple[EventData, str | None]] = field(default_factory=list)

    async def publish(self, data: EventData, correlationid: str | None = None) -> None:
        self.events.append((data, correlationid))


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


_AUTHORITY = new_authority()


def _certificate_of(name: str, role: str) -> bytes:
    return pem(client_certificate(_AUTHORITY, name=name, role=role)[0])


class FakeContext:
    """A call whose TLS handshake verified ``operator:ann``'s client certificate (role operator);
    the ``x-operator`` header it also sends is ignored."""

    def __init__(self, certificate: bytes | None = None) -> None:
        self._certificate = _certificate_of("ann", "operator") if certificate is None else certificate

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-operator", "mallory"),)

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._certificate]} if self._certificate else {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


@dataclass
class World:
    service: DeploymentService
    triton: FakeTriton
    artifacts: FakeArtifacts
    publisher: FakePublisher

    def published(self, since: int = 0) -> list[tuple[str, int, Any]]:
        """(event type, version, the interesting field) of what was published."""
        rows: list[tuple[str, int, Any]] = []
        for data, _ in self.publisher.events[since:]:
            match data:
                case DeploymentRequested():
                    rows.append(("requested", data.model_version, data.champion_version))
                case DeploymentCanaryStarted():
                    rows.append(("canary_started", data.model_version, data.champion_version))
                case DeploymentPromoted():
                    rows.append(("promoted", data.model_version, data.previous_version))
                case DeploymentRolledBack():
                    rows.append(("rolled_back", data.model_version, data.restored_version))
        return rows

    async def approve(self, version: int, correlationid: str = "corr") -> None:
        await self.service.on_evaluation_completed(
            Envelope(
                data=EvaluationCompleted(
                    model_name=MODEL, model_version=version, candidate_artifact_uri="x", decision=Decision.APPROVED
                ),
                correlationid=correlationid,
                source="test",
                type=EvaluationCompleted.event_type,
            )
        )

    def reconciler(self) -> Reconciler:
        return Reconciler(
            self.service,
            triton=self.triton,  # type: ignore[arg-type]
            artifacts=self.artifacts,  # type: ignore[arg-type]
            metrics=DeploymentMetrics(),
            interval_s=1,
        )


@contextlib.asynccontextmanager
async def make_world(**overrides: Any) -> AsyncIterator[World]:
    options: dict[str, Any] = {
        "canary_min_requests": 3,
        "check_interval_s": 0.01,
        "retire_grace_s": 0,
        "warmup_requests": 1,
        "metrics_port": 0,
        "triton_retry_base_delay_s": 0.01,
        "triton_retry_max_delay_s": 0.05,
        "triton_retry_budget_s": 0.3,
    }
    settings = DeploymentSettings(**(options | overrides))
    triton, artifacts, publisher = FakeTriton(), FakeArtifacts(), FakePublisher()
    service = DeploymentService(
        settings=settings,
        artifacts=artifacts,  # type: ignore[arg-type]
        triton=triton,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
    )
    try:
        yield World(service, triton, artifacts, publisher)
    finally:
        await service.stop()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with make_world() as w:
        yield w


async def _until(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_first_version_then_a_canary_promoted_on_its_traffic_and_the_old_champion_retired(world: World) -> None:
    await world.approve(1)
    assert world.published() == [("requested", 1, None), ("promoted", 1, None)]
    assert world.publisher.events[1][1] == "corr"
    await world.approve(1)  # again: already live, nothing happens
    assert len(world.publisher.events) == 2

    await world.approve(2)
    assert world.published(2) == [("requested", 2, 1), ("canary_started", 2, 1)]
    assert world.service.state(MODEL).canary_version == 2
    world.triton.busy.add(triton_name(MODEL, 2))
    await _until(lambda: world.service.state(MODEL).champion_version == 2)
    assert world.published(4) == [("promoted", 2, 1)]
    assert "healthy over 3 requests: no errors" in world.publisher.events[4][0].reason  # type: ignore[attr-defined]
    await _until(lambda: triton_name(MODEL, 1) not in world.triton.loaded)
    assert triton_name(MODEL, 1) not in world.artifacts.repository
    assert world.service.lifecycle(MODEL).state_of(1) == "retired"


async def test_a_version_failing_its_smoke_test_is_rolled_back_and_removed_at_once(world: World) -> None:
    await world.approve(1)
    world.triton.bad_answers.add(triton_name(MODEL, 2))
    await world.approve(2)
    assert world.published(2) == [("requested", 2, 1), ("rolled_back", 2, 1)]
    reason = world.publisher.events[-1][0].reason  # type: ignore[attr-defined]
    assert reason.startswith("smoke_test_failed: text 0: label 'zzz' is not one of the model's labels")
    assert triton_name(MODEL, 2) not in world.triton.loaded | world.artifacts.repository
    assert world.service.state(MODEL).champion_version == 1


async def test_a_new_candidate_supersedes_the_canary(world: World) -> None:
    await world.approve(1)
    await world.approve(2)
    await world.approve(3)
    assert world.published(2) == [
        ("requested", 2, 1),
        ("canary_started", 2, 1),
        ("rolled_back", 2, 1),
        ("requested", 3, 1),
        ("canary_started", 3, 1),
    ]
    assert world.publisher.events[4][0].reason == "superseded by version 3"  # type: ignore[attr-defined]


async def test_the_reconciler_reloads_what_triton_lost_and_unloads_strays(world: World) -> None:
    reconciler = Reconciler(
        world.service,
        triton=world.triton,  # type: ignore[arg-type]
        artifacts=world.artifacts,  # type: ignore[arg-type]
        metrics=DeploymentMetrics(),
        interval_s=1,
    )
    await world.approve(1)
    await world.approve(2)
    assert await reconciler.reconcile() == []
    world.triton.loaded.clear()  # Triton restarted
    world.artifacts.repository.add(triton_name(MODEL, 4))  # left behind by a crash
    world.service.watcher.cancel(MODEL)  # as after a restart of the service
    assert await reconciler.reconcile() == [
        f"loaded {triton_name(MODEL, 1)}",
        f"loaded {triton_name(MODEL, 2)}",
        f"watching canary {triton_name(MODEL, 2)}",
        f"unloaded {triton_name(MODEL, 4)}",
    ]
    assert world.triton.loaded == {triton_name(MODEL, 1), triton_name(MODEL, 2)}
    assert world.service.watcher.watching(MODEL) and not world.published(4), "nothing published"


# ---- issue 20: counters that reset, canaries without evidence ----------------------------------


async def test_a_triton_restart_under_the_canary_is_read_as_a_counter_reset() -> None:
    """The canary's statistics fall from 200 requests (8 errors) to 20 (4 errors): Triton restarted.
    Read as deltas they were -180 and -4 and the canary was promoted when its time ran out."""
    async with make_world(canary_min_requests=50, canary_max_seconds=0.5) as world:
        await world.approve(1)
        world.triton.readings[triton_name(MODEL, 2)] = [
            Counts(requests=200, failure=8, success_ns=2_000_000_000),  # the baseline, at the start
            Counts(requests=20, failure=4, success_ns=200_000_000),  # after the restart
        ]
        await world.approve(2)
        await _until(lambda: world.service.state(MODEL).canary_version is None)
        assert world.published(2) == [("requested", 2, 1), ("canary_started", 2, 1), ("rolled_back", 2, 1)]
        reason = world.publisher.events[-1][0].reason  # type: ignore[attr-defined]
        assert reason == "error rate 20.0% (4 of 20 requests) is above the maximum 5.0%"


async def test_a_canary_that_never_served_is_rolled_back_when_its_time_runs_out() -> None:
    async with make_world(canary_min_requests=50, canary_max_seconds=0.2) as world:
        await world.approve(1)
        await world.approve(2)
        await _until(lambda: world.service.state(MODEL).canary_version is None)
        assert world.published(2)[-1] == ("rolled_back", 2, 1)
        reason = world.publisher.events[-1][0].reason  # type: ignore[attr-defined]
        assert reason == "too few requests: 0 of the 50 needed in the 0.2 s time limit"
        assert world.service.state(MODEL).champion_version == 1


async def test_statistics_that_cannot_be_read_are_skipped_not_read_as_zero(world: World) -> None:
    """An unreadable reading (Triton busy or briefly unreachable) is no sample: read as zeros it
    would look like a reset, and the 100 requests before it would be counted again."""
    await world.approve(1)
    world.triton.readings[triton_name(MODEL, 2)] = [Counts(requests=100), None, None, Counts(requests=103)]
    await world.approve(2)
    await _until(lambda: world.service.state(MODEL).champion_version == 2)
    assert world.publisher.events[-1][0].reason == "healthy over 3 requests: no errors"  # type: ignore[attr-defined]


# ---- issue 20: Triton unreachable is not a verdict on the model --------------------------------


async def test_triton_unreachable_during_a_deploy_is_retried_not_rolled_back() -> None:
    async with make_world(triton_retry_budget_s=5) as world:
        await world.approve(1)
        world.triton.unreachable_loads = 3  # Triton restarts under the deployment
        await world.approve(2)
        assert world.published(2) == [("requested", 2, 1), ("canary_started", 2, 1)]
        assert world.triton.load_calls == 2 + 3


async def test_triton_down_past_the_retry_budget_leaves_the_version_deploying_for_the_reconciler() -> None:
    async with make_world(triton_retry_budget_s=0.1) as world:
        reconciler = world.reconciler()
        await world.approve(1)
        world.triton.down = True
        await world.approve(2)  # handled: the message is not redelivered, nor dead-lettered
        assert world.published(2) == [("requested", 2, 1)]
        assert world.service.lifecycle(MODEL).state_of(2) == "deploying"
        assert await reconciler.reconcile() == [], "Triton is down: nothing to try"
        world.triton.down = False
        assert await reconciler.reconcile() == [f"resumed {triton_name(MODEL, 2)}: canary"]
        assert world.published(2) == [("requested", 2, 1), ("canary_started", 2, 1)]


def test_the_backoff_while_triton_is_unreachable_is_capped_exponential_with_full_jitter() -> None:
    always_top = type("Top", (), {"random": staticmethod(lambda: 1.0)})()
    caps = [backoff_s(n, 0.5, 10.0, always_top) for n in range(1, 8)]  # type: ignore[arg-type]
    assert caps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    rng = random.Random(7)
    waits = [backoff_s(3, 0.5, 10.0, rng) for _ in range(200)]
    assert all(0 <= w <= 2.0 for w in waits) and max(waits) > 1.5 and min(waits) < 0.5
    assert backoff_s(10_000, 0.5, 10.0) <= 10.0


def test_an_unreachable_triton_is_told_from_its_answers() -> None:
    assert unreachable(_unreachable())
    assert unreachable(ConnectionRefusedError(111, "Connection refused"))
    assert not unreachable(InferenceServerException("failed to load 'm__v1'", status="StatusCode.INTERNAL"))
    assert not unreachable(InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")), (
        "a timeout alone is ambiguous: the liveness check decides"
    )
    assert not unreachable(RuntimeError("boom"))


async def test_a_load_that_a_reachable_triton_refuses_is_a_verdict(world: World) -> None:
    await world.approve(1)
    world.triton.broken[triton_name(MODEL, 2)] = InferenceServerException(
        "failed to load 'intents__v2', failed to open model.py", status="StatusCode.INTERNAL"
    )
    await world.approve(2)
    assert world.published(2) == [("requested", 2, 1), ("rolled_back", 2, 1)]
    reason = world.publisher.events[-1][0].reason  # type: ignore[attr-defined]
    assert reason.startswith("load_failed: ") and "failed to load 'intents__v2'" in reason
    assert world.triton.load_calls == 2, "a verdict is not retried"


async def test_an_operator_promote_while_triton_is_down_is_unavailable_and_resumed_later() -> None:
    async with make_world() as world:
        ops = OpsServicer(world.service)
        await world.approve(1)
        world.triton.down = True
        code, message = await _status(ops, "Promote", ops_pb2.PromoteRequest(model=MODEL, version=3))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert message.startswith(f"Triton is unreachable: {MODEL} version 3 stays deploying")
        assert world.service.lifecycle(MODEL).state_of(3) == "deploying"
        world.triton.down = False
        assert await world.reconciler().reconcile() == [f"resumed {triton_name(MODEL, 3)}: canary"]


# ---- issue 20 (10): nothing stays in deploying -------------------------------------------------


async def test_the_reconciler_resumes_a_deployment_whose_go_live_is_not_running(world: World) -> None:
    """As after a crash between ``deployment.requested`` and the go-live's outcome."""
    await world.approve(1)
    world.service.replay(DeploymentRequested(model_name=MODEL, model_version=2, artifact_uri="x", champion_version=1))
    assert world.service.lifecycle(MODEL).state_of(2) == "deploying"
    reconciler = world.reconciler()
    async with world.service.lock(MODEL):  # its go-live runs: left alone
        assert await reconciler.reconcile() == []
    assert await reconciler.reconcile() == [f"resumed {triton_name(MODEL, 2)}: canary"]
    assert world.published(2) == [("canary_started", 2, 1)], "requested is on the topic already"
    assert world.service.watcher.watching(MODEL)
    assert await reconciler.reconcile() == []


async def test_an_io_error_after_requested_is_resumed_then_rolled_back_after_the_bound() -> None:
    async with make_world(resume_max_attempts=3) as world:
        reconciler = world.reconciler()
        await world.approve(1)
        world.artifacts.io_error = OSError(28, "No space left on device")
        await world.approve(2)  # handled: the deployment is the reconciler's now
        assert world.published(2) == [("requested", 2, 1)]
        name = triton_name(MODEL, 2)
        failed = f"resume of {name} failed (attempt {{}} of 3): OSError: [Errno 28] No space left on device"
        assert await reconciler.reconcile() == [failed.format(1)]
        assert await reconciler.reconcile() == [failed.format(2)]
        assert await reconciler.reconcile() == [f"rolled back {name}: resume_exhausted"]
        assert world.published(2) == [("requested", 2, 1), ("rolled_back", 2, 1)]
        assert world.publisher.events[-1][0].reason == (  # type: ignore[attr-defined]
            "resume_exhausted: 3 attempts to resume the deployment failed; "
            "the last: OSError: [Errno 28] No space left on device"
        )
        assert world.service.lifecycle(MODEL).state_of(2) == "rolled_back"
        assert await reconciler.reconcile() == []


async def test_a_resume_that_ends_in_a_verdict_rolls_back_at_once(world: World) -> None:
    await world.approve(1)
    world.triton.bad_answers.add(triton_name(MODEL, 2))
    world.service.replay(DeploymentRequested(model_name=MODEL, model_version=2, artifact_uri="x", champion_version=1))
    assert await world.reconciler().reconcile() == [f"rolled back {triton_name(MODEL, 2)}: smoke_test_failed"]
    assert world.published(2) == [("rolled_back", 2, 1)]


async def _call(servicer: OpsServicer, method: str, request: Any, context: FakeContext | None = None) -> Any:
    return await getattr(servicer, method)(request, context or FakeContext())


async def _status(
    servicer: OpsServicer, method: str, request: Any, context: FakeContext | None = None
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Aborted) as aborted:
        await _call(servicer, method, request, context)
    return aborted.value.code, aborted.value.details


class FakeAudit:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, data: Any, *, correlationid: str | None = None, id: str | None = None) -> Any:
        self.events.append(data)
        return data


async def test_the_operator_and_role_come_from_the_client_certificate_not_a_header(world: World) -> None:
    await world.approve(1)
    await world.approve(2)
    viewer = FakeContext(_certificate_of("victor", "viewer"))
    ops = OpsServicer(world.service)
    assert (await _call(ops, "GetStatus", ops_pb2.GetStatusRequest(), viewer)).models[0].champion_version == 1
    assert await _status(ops, "Promote", ops_pb2.PromoteRequest(model=MODEL), viewer) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "operator:victor has the role viewer; this needs operator",
    )
    code, _ = await _status(ops, "GetStatus", ops_pb2.GetStatusRequest(), FakeContext(b""))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    robot = FakeContext(pem(new_authority().certificate))  # a certificate that names no operator
    assert (await _status(ops, "GetStatus", ops_pb2.GetStatusRequest(), robot))[0] == grpc.StatusCode.PERMISSION_DENIED
    await _call(ops, "Promote", ops_pb2.PromoteRequest(model=MODEL))
    assert world.publisher.events[-1][0].promoted_by == "operator:ann"  # type: ignore[attr-defined]


async def test_an_override_needs_an_admin_and_is_audited(world: World) -> None:
    await world.approve(1)
    audit = FakeAudit()
    ops = OpsServicer(world.service, audit=audit)
    request = ops_pb2.PromoteRequest(model=MODEL, version=3, override_reason="hotfix approved by the risk board")
    code, message = await _status(ops, "Promote", request)  # ann is an operator, not an admin
    assert code == grpc.StatusCode.PERMISSION_DENIED and message.endswith("this needs admin")
    [denied] = audit.events
    assert (denied.action, denied.principal, denied.details["denial"]) == ("key_denied", "operator:ann", "role")
    audit.events.clear()
    promoted = await _call(ops, "Promote", request, FakeContext(_certificate_of("ada", "admin")))
    assert promoted.status.champion_version == 3
    [override] = audit.events
    assert (override.action, override.principal, override.model, override.version) == (
        "override",
        "operator:ada",
        MODEL,
        3,
    )
    assert override.reason == "hotfix approved by the risk board"


async def test_a_version_the_gate_rejected_needs_an_override(world: World, tmp_path: Path) -> None:
    await world.approve(1)
    store = ArtifactStore(str(tmp_path))
    rejected = {"decision": "rejected", "reasons": [{"rule": "min_accuracy", "message": "accuracy 0.41 < 0.80"}]}
    store.write_json(f"{evaluation_path(MODEL, 3)}/decision.json", rejected)
    store.write_json(f"{evaluation_path(MODEL, 2)}/decision.json", {"decision": "approved", "reasons": []})
    audit = FakeAudit()
    ops = OpsServicer(world.service, audit=audit, gates=GateDecisions(store))
    code, message = await _status(ops, "Promote", ops_pb2.PromoteRequest(model=MODEL, version=3))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "rejected by the evaluation gate (min_accuracy: accuracy 0.41 < 0.80)" in message
    assert "--override-reason" in message and audit.events == []

    admin = FakeContext(_certificate_of("ada", "admin"))
    request = ops_pb2.PromoteRequest(model=MODEL, version=3, override_reason="known regression, hotfix")
    assert (await _call(ops, "Promote", request, admin)).status.champion_version == 3
    assert audit.events[0].details == {"gate_rejection": "min_accuracy: accuracy 0.41 < 0.80"}
    promoted = await _call(ops, "Promote", ops_pb2.PromoteRequest(model=MODEL, version=2))  # approved: no override
    assert promoted.status.champion_version == 2


async def test_operators_promote_and_roll_back_through_the_ops_api(world: World) -> None:
    ops = OpsServicer(world.service)
    await world.approve(1)
    await world.approve(2)
    rolled = await _call(ops, "Rollback", ops_pb2.RollbackRequest(model=MODEL))  # ends the canary
    assert (rolled.status.champion_version, rolled.status.canary_version, rolled.status.state) == (1, 0, "serving")
    assert world.publisher.events[-1][0].rolled_back_by == "operator:ann"  # type: ignore[attr-defined]

    promoted = await _call(ops, "Promote", ops_pb2.PromoteRequest(model=MODEL, version=3))  # skips the canary
    assert promoted.status.champion_version == 3
    assert world.published(5) == [("requested", 3, 1), ("promoted", 3, 1)]

    back = await _call(ops, "Rollback", ops_pb2.RollbackRequest(model=MODEL, reason="drill"))
    assert back.status.champion_version == 1 and world.published(7) == [("rolled_back", 3, 1)]
    assert await _status(ops, "Rollback", ops_pb2.RollbackRequest(model=MODEL)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"{MODEL} has no earlier version to roll back to",
    )
    status = await _call(ops, "GetStatus", ops_pb2.GetStatusRequest())
    assert [(m.model_name, m.champion_version, list(m.available_versions)) for m in status.models] == [
        (MODEL, 1, [1, 2, 3, 4])
    ]


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [
        ("Promote", ops_pb2.PromoteRequest(), grpc.StatusCode.INVALID_ARGUMENT, "model is required"),
        (
            "Rollback",
            ops_pb2.RollbackRequest(model=MODEL, version=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "version must be positive (or 0 for the default)",
        ),
        ("Promote", ops_pb2.PromoteRequest(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
        ("GetStatus", ops_pb2.GetStatusRequest(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
        (
            "Promote",
            ops_pb2.PromoteRequest(model=MODEL, version=9),
            grpc.StatusCode.NOT_FOUND,
            f"{MODEL} version 9 has no artifacts to deploy",
        ),
        (
            "Rollback",
            ops_pb2.RollbackRequest(model=MODEL, version=9),
            grpc.StatusCode.NOT_FOUND,
            f"{MODEL} version 9 has no artifacts to deploy",
        ),
        (
            "Promote",
            ops_pb2.PromoteRequest(model=MODEL),
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{MODEL} has no canary to promote; name a version",
        ),
    ],
)
async def test_ops_errors_have_one_status_each(
    world: World, method: str, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    await world.approve(1)
    assert await _status(OpsServicer(world.service), method, request_) == (code, message)


async def test_a_restore_that_cannot_go_live_publishes_nothing(world: World) -> None:
    ops = OpsServicer(world.service)
    await world.approve(1)
    await world.approve(2)
    await _call(ops, "Promote", ops_pb2.PromoteRequest(model=MODEL))
    before = len(world.publisher.events)
    world.artifacts.repository.clear()
    world.artifacts.corrupt.add(1)
    code, message = await _status(ops, "Rollback", ops_pb2.RollbackRequest(model=MODEL))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert message == "version 1 could not go live: artifact_corrupt: model.safetensors: sha256 differs"
    world.triton.broken[triton_name(MODEL, 4)] = RuntimeError("failed to load 'intents__v4'\nstack trace")
    code, message = await _status(ops, "Rollback", ops_pb2.RollbackRequest(model=MODEL, version=4))
    assert (code, message) == (
        grpc.StatusCode.UNAVAILABLE,
        "version 4 could not go live: load_failed: failed to load 'intents__v4'",
    )
    assert len(world.publisher.events) == before and world.service.state(MODEL).champion_version == 2


async def test_unexpected_errors_are_internal_and_name_only_their_type(world: World) -> None:
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("secret")

    world.service.promote = boom  # type: ignore[method-assign]
    code, message = await _status(OpsServicer(world.service), "Promote", ops_pb2.PromoteRequest(model=MODEL))
    assert (code, message) == (grpc.StatusCode.INTERNAL, "internal error: KeyError")


def test_every_error_code_has_a_status_and_every_error_a_code() -> None:
    assert set(STATUS) == set(ErrorCode)
    assert {name for name in STATUS.values()} <= set(grpc.StatusCode)
    cases: list[tuple[DeploymentError, grpc.StatusCode]] = [
        (InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (IllegalTransition("x", state="canary", command="restore"), grpc.StatusCode.FAILED_PRECONDITION),
        (DeploymentError("x"), grpc.StatusCode.INTERNAL),
    ]
    cases += [
        (
            GoLiveFailed(reason, "x"),
            grpc.StatusCode.UNAVAILABLE
            if reason in (FailureReason.LOAD_FAILED, FailureReason.LOAD_TIMEOUT)
            else grpc.StatusCode.FAILED_PRECONDITION,
        )
        for reason in FailureReason
    ]
    for error, status in cases:
        assert grpc_status(error) == status, error
