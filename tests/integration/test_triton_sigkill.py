"""Chaos (issue 20): Triton SIGKILLed during a canary and during a deploy.

A Triton of the test's own (own model repository, free ports), the deployment runtime in-process
against the session's broker (its own consumer group and ``var/``), and the gateway in-process (a
real gRPC server) pointing at that Triton and following the deployments topic. Calls go through
the gateway with no client deadline: the gateway's default deadline (10 s) is what keeps them from
hanging; the test only adds a hang guard of its own around each call.

* **During a canary** (model A): v1 champion, v2 canary at 50 % with ``canary_min_requests`` = 30
  and a 600 s time limit (so only traffic decides). 20 requests are routed to the canary and the
  watch is seen to count them; then the tritonserver process is SIGKILLed (``os.kill(pid,
  SIGKILL)``: no graceful unload) while the champion is probed, and started again on the same
  ports and repository. The reconciler loads both versions back (a reload warms up and
  smoke-tests, so those requests count too); then canary requests are sent one at a time until the
  watch promotes v2. Triton's counters started again from zero: read as plain deltas they would go
  negative (``judge`` refuses those), read from a new baseline they would need 30 requests after
  the restart. The canary must be promoted on at least 30 requests having served fewer than 30
  since the restart, i.e. the 20 before the kill still count, and the watch's request gauge must
  never go down.
* **During a deploy** (model B): v1 champion; v2 approved and Triton SIGKILLed as soon as
  ``deployment.requested`` for v2 is on the topic (its go-live is running: install, load, smoke
  test), then started again 3 s later. The go-live retries (backoff capped at 2 s here, the budget
  the default 60 s; the reconciler would resume past it): v2 becomes the canary, it is never
  rolled back, and the champion serves again.

While Triton is down every gateway call must answer ``UNAVAILABLE`` (nothing listens; after the
restart, until the reconciler loaded the version, Triton says the model is unknown: also
``UNAVAILABLE``). ``DEADLINE_EXCEEDED`` is accepted while Triton is down (a call caught by the kill
in flight may run to the gateway's default deadline) and counted; any other code fails the test.
Recovery (from the restarted Triton being ready, and from the kill, to the first OK of the
champion again) is printed and written to ``var/chaos/triton-sigkill.json``; only a hang guard of
``RECOVERY_BOUND_S`` is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_config.tls import aio_channel
from llmops_deployment.main import DeploymentRuntime
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import DEPLOYMENTS
from llmops_events.v1 import (
    Decision,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    DeploymentRolledBack,
    EvaluationCompleted,
)
from llmops_gateway.main import GatewayRuntime
from llmops_messaging import EventPublisher
from llmops_serving import choose_route, request_bucket
from llmops_stack import NullProgress, TritonComponent, TritonServer, free_port, repo_paths
from llmops_stack.processes import port_open
from llmops_storage import ArtifactStore
from tests.serving_inprocess import deployment_running, gateway_running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LATEST_RESULTS = REPO / "var" / "chaos" / "triton-sigkill.json"
KEY = "chaos-key-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
CANARY_MIN = 30
SHARE = 0.5
BEFORE_KILL = 20
"""Canary requests served (and counted by the watch) before the kill: fewer than ``CANARY_MIN``."""
RECOVERY_BOUND_S = 120.0
"""Hang guard on the champion answering OK again after Triton is back (the measured value is printed)."""
CALL_GUARD_S = 30.0
"""Hang guard around one gateway call (the gateway's own default deadline is 10 s)."""
ACCEPTED_WHILE_DOWN = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def say(message: str) -> None:
    print(f"[triton-sigkill] {message}", flush=True)


@dataclass
class ScenarioCounts:
    sent: int = 0
    ok: int = 0
    unavailable: int = 0
    deadline_exceeded: int = 0
    other: dict[str, int] = field(default_factory=dict)
    down_s: float = 0.0
    """From the kill to the restarted Triton being ready."""
    recovery_after_ready_s: float = 0.0
    """From the restarted Triton being ready to the champion's first OK through the gateway."""
    recovery_after_kill_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


RESULTS: dict[str, ScenarioCounts] = {}


def save(name: str, counts: ScenarioCounts) -> None:
    RESULTS[name] = counts
    LATEST_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    LATEST_RESULTS.write_text(json.dumps({k: vars(v) for k, v in RESULTS.items()}, indent=2) + "\n")
    say(
        f"{name}: sent {counts.sent}, OK {counts.ok}, UNAVAILABLE {counts.unavailable}, "
        f"DEADLINE_EXCEEDED {counts.deadline_exceeded}, other {counts.other}; down {counts.down_s:.1f} s, "
        f"champion OK again {counts.recovery_after_ready_s:.1f} s after Triton was ready "
        f"({counts.recovery_after_kill_s:.1f} s after the kill); {counts.notes} → {LATEST_RESULTS}"
    )


def _publish_version(store: ArtifactStore, source: str, model: str, version: int) -> None:
    staging = Path(tempfile.mkdtemp())
    folder = store.download_folder(source, staging / "v")
    (folder / "_COMPLETE").unlink(missing_ok=True)
    store.publish_folder(folder, f"models/{model}/{version}")
    shutil.rmtree(staging)


@dataclass
class World:
    platform: PlatformSettings
    triton: TritonComponent
    runtime: DeploymentRuntime
    gateway: GatewayRuntime
    stub: inference_pb2_grpc.InferenceServiceStub
    events: list[Envelope[Any]]
    killed_groups: list[int] = field(default_factory=list)

    def found(self, kind: type, model: str, version: int) -> list[Envelope[Any]]:
        return [
            e
            for e in self.events
            if isinstance(e.data, kind)
            and getattr(e.data, "model_name", None) == model
            and getattr(e.data, "model_version", None) == version
        ]

    async def wait_for(self, kind: type, model: str, version: int, timeout: float = 240) -> Envelope[Any]:
        async with asyncio.timeout(timeout):
            while not (found := self.found(kind, model, version)):
                await asyncio.sleep(0.1)
        return found[0]

    async def approve(self, model: str, version: int) -> None:
        async with EventPublisher(self.platform, service="chaos-test") as publisher:
            await publisher.publish(
                EvaluationCompleted(
                    model_name=model, model_version=version, candidate_artifact_uri="unused", decision=Decision.APPROVED
                ),
                correlationid=f"corr-{uuid.uuid4().hex[:8]}",
            )

    def canary_gauge(self, model: str) -> float:
        return float(self.runtime.metrics.canary_requests.labels(model=model)._value.get())

    def request_ids(self, model: str, role: str, count: int) -> list[str]:
        """Request ids the gateway routes to ``role`` of ``model`` now (routing is sticky per id)."""
        deployment = self.gateway.feed.get(model)
        assert deployment is not None
        ids: list[str] = []
        while len(ids) < count:
            rid = f"{role}-{uuid.uuid4().hex}"
            route = choose_route(deployment, rid)
            # A champion id stays the champion's when a canary starts at the configured share.
            if route is not None and route.role == role and (role != "champion" or request_bucket(rid) >= SHARE):
                ids.append(rid)
        return ids

    async def call(self, model: str, request_id: str) -> tuple[str, int]:
        """One Predict through the gateway, no client deadline; (status code name, version answered)."""
        request = inference_pb2.PredictRequest(text="where is my new card", model=model, request_id=request_id)
        try:
            async with asyncio.timeout(CALL_GUARD_S):
                answer = await self.stub.Predict(request, metadata=AUTH)
        except TimeoutError:
            return "HANG", 0
        except grpc.aio.AioRpcError as error:
            return error.code().name, 0
        return "OK", answer.model_version

    def sigkill(self) -> int:
        pid = self.triton.server.process.pid()
        assert pid is not None, "Triton is not running"
        os.kill(pid, signal.SIGKILL)
        self.killed_groups.append(pid)
        return pid

    async def restart(self) -> None:
        """Start Triton again on the same ports and model repository (explicit mode: nothing loaded)."""
        settings = self.platform
        async with asyncio.timeout(60):  # the killed server's sockets close with it
            while any(
                port_open(settings.triton_host, p)
                for p in (settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port)
            ):
                await asyncio.sleep(0.2)
        await asyncio.to_thread(self.triton.ensure_up, NullProgress())


@dataclass
class Windows:
    """A probe's status codes, by where each call fell against the outage."""

    before: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)

    def tally(self, counts: ScenarioCounts) -> None:
        tally(counts, self.before + self.after, down=False)
        tally(counts, self.in_flight + self.down, down=True)

    def check(self) -> None:
        """Every call answered OK outside the outage and UNAVAILABLE (or timed out) while sent into it."""
        assert set(self.before) | set(self.after) == {"OK"}, (self.before, self.after)
        assert set(self.in_flight) <= ACCEPTED_WHILE_DOWN | {"OK"}, Counter(self.in_flight)
        assert "UNAVAILABLE" in self.down and set(self.down) <= ACCEPTED_WHILE_DOWN, Counter(self.down)


class Probe:
    """Champion-routed Predict calls, one after another, each recorded with its time."""

    def __init__(self, world: World, model: str) -> None:
        self.world = world
        self.model = model
        self.ids = world.request_ids(model, "champion", 4)
        self.results: list[tuple[float, float, str]] = []
        """(sent at, answered at, status code) per call."""
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        i = 0
        while True:
            sent_at = time.monotonic()
            code, _ = await self.world.call(self.model, self.ids[i % len(self.ids)])
            self.results.append((sent_at, time.monotonic(), code))
            i += 1
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait_ok_after(self, since: float, timeout: float) -> float:
        """The time of the first OK after ``since``."""
        async with asyncio.timeout(timeout):
            while True:
                for _, at, code in self.results:
                    if at > since and code == "OK":
                        return at
                await asyncio.sleep(0.1)

    def windows(self, killed_at: float, ok_at: float) -> Windows:
        """The calls answered before the kill, in flight across it, sent while down, and answered after recovery.

        A call is placed by when it was sent as well as when it answered: one answered just before
        the kill can be recorded after it (the probe resumes on a later turn of the event loop), and
        a call in flight at the kill may have been served or not.
        """
        w = Windows()
        for sent_at, at, code in self.results:
            if at < killed_at:
                w.before.append(code)
            elif sent_at < killed_at:
                w.in_flight.append(code)
            elif at < ok_at:
                w.down.append(code)
            else:
                w.after.append(code)
        return w


def tally(counts: ScenarioCounts, codes: list[str], *, down: bool) -> None:
    for code in codes:
        counts.sent += 1
        if code == "OK":
            counts.ok += 1
        elif code == "UNAVAILABLE":
            counts.unavailable += 1
        elif code == "DEADLINE_EXCEEDED" and down:
            counts.deadline_exceeded += 1
        else:
            counts.other[code] = counts.other.get(code, 0) + 1


async def _read_events(platform: PlatformSettings, models: set[str], sink: list[Envelope[Any]]) -> None:
    consumer = AIOKafkaConsumer(
        DEPLOYMENTS,
        **kafka_client_options(platform, service="test").aiokafka(),
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex}",
    )
    await consumer.start()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for m in records:
                    envelope = decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ())))
                    if getattr(envelope.data, "model_name", None) in models:
                        sink.append(envelope)
                        data = envelope.data
                        say(f"event {type(data).__name__} v{data.model_version}: {getattr(data, 'reason', '')}")
    finally:
        await consumer.stop()


SUFFIX = uuid.uuid4().hex[:6]
CANARY_MODEL = f"sigkill-canary-{SUFFIX}"
DEPLOY_MODEL = f"sigkill-deploy-{SUFFIX}"


@pytest.fixture(scope="module")
async def world(
    kafka_settings: PlatformSettings, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    var_dir = tmp_path_factory.mktemp("triton-sigkill")
    platform = kafka_settings.model_copy(
        update={
            "var_dir": var_dir,
            "artifact_store_uri": kafka_settings.resolved_artifact_store_uri,
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "ops_port": free_port(),
        }
    )
    paths = repo_paths()
    triton = TritonComponent(TritonServer(platform, paths.triton_venv, paths.triton_backend_dir))
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    source = f"models/{tiny_model.model_name}/{tiny_model.model_version}"
    for model in (CANARY_MODEL, DEPLOY_MODEL):
        for version in (1, 2):
            _publish_version(store, source, model, version)
    await asyncio.to_thread(triton.ensure_up, NullProgress())

    settings = DeploymentSettings(
        platform=platform,
        group_id=f"deployment-{uuid.uuid4().hex[:8]}",
        model_names=[CANARY_MODEL, DEPLOY_MODEL],
        metrics_port=0,
        canary_traffic_share=SHARE,
        canary_min_requests=CANARY_MIN,
        canary_max_seconds=600,
        canary_on_too_few_requests="rollback",
        check_interval_s=0.5,
        reconcile_interval_s=1.0,
        retire_grace_s=0.5,
        warmup_requests=1,
        triton_retry_max_delay_s=2.0,
    )
    events: list[Envelope[Any]] = []
    reader = asyncio.get_running_loop().create_task(_read_events(platform, {CANARY_MODEL, DEPLOY_MODEL}, events))
    w: World | None = None
    try:
        async with (
            deployment_running(settings, service="deployment-chaos") as runtime,
            gateway_running(platform, api_key=KEY) as gateway,
        ):
            channel = aio_channel(platform, f"127.0.0.1:{gateway.port}")
            w = World(platform, triton, runtime, gateway, inference_pb2_grpc.InferenceServiceStub(channel), events)
            try:
                yield w
            finally:
                await channel.close()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.to_thread(triton.stop)
        for group in w.killed_groups if w is not None else []:  # backend stubs the killed servers left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)


async def _until_ok(world: World, model: str, request_id: str, timeout: float, version: int | None = None) -> None:
    """Call until OK (answered by ``version``: a canary not loaded yet falls back to the champion)."""
    async with asyncio.timeout(timeout):
        while (answer := await world.call(model, request_id))[0] != "OK" or version not in (None, answer[1]):
            await asyncio.sleep(0.2)


async def _leftover_stubs(group: int) -> int:
    """Processes still in the killed server's process group (its Python backend stubs)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == group:
                    count += 1
    return count


async def test_triton_killed_during_a_canary(world: World) -> None:
    model, counts = CANARY_MODEL, ScenarioCounts()
    await world.approve(model, 1)
    await world.wait_for(DeploymentPromoted, model, 1)
    await world.approve(model, 2)
    await world.wait_for(DeploymentCanaryStarted, model, 2)
    async with asyncio.timeout(30):  # the gateway follows the topic
        while (d := world.gateway.feed.get(model)) is None or d.canary_version != 2:
            await asyncio.sleep(0.1)

    # Before the kill: 20 canary requests (and as many to the champion), counted by the watch.
    before = [await world.call(model, rid) for rid in world.request_ids(model, "canary", BEFORE_KILL)]
    before += [await world.call(model, rid) for rid in world.request_ids(model, "champion", BEFORE_KILL)]
    tally(counts, [code for code, _ in before], down=False)
    assert [v for _, v in before] == [2] * BEFORE_KILL + [1] * BEFORE_KILL, before
    gauge: list[float] = []
    async with asyncio.timeout(30):
        while world.canary_gauge(model) < BEFORE_KILL:
            await asyncio.sleep(0.1)
    assert world.canary_gauge(model) == BEFORE_KILL

    async def sample_gauge() -> None:
        while True:
            gauge.append(world.canary_gauge(model))
            await asyncio.sleep(0.1)

    sampler = asyncio.get_running_loop().create_task(sample_gauge())
    probe = Probe(world, model)
    probe.start()
    await asyncio.sleep(1)
    killed_at = time.monotonic()
    group = world.sigkill()
    say(f"canary: SIGKILLed tritonserver pid {group} with v1 champion, v2 canary ({BEFORE_KILL} canary requests)")
    await asyncio.sleep(3)  # down: every call must answer, UNAVAILABLE
    counts.notes["stub_processes_left_3s_after_kill"] = await _leftover_stubs(group)
    await world.restart()
    ready_at = time.monotonic()
    counts.down_s = ready_at - killed_at
    ok_at = await probe.wait_ok_after(ready_at, RECOVERY_BOUND_S)
    counts.recovery_after_ready_s, counts.recovery_after_kill_s = ok_at - ready_at, ok_at - killed_at
    await asyncio.sleep(1)
    await probe.stop()
    windows = probe.windows(killed_at, ok_at)
    windows.tally(counts)
    windows.check()

    # After the restart: the canary version is back too; canary requests one at a time until promoted.
    await _until_ok(world, model, world.request_ids(model, "canary", 1)[0], RECOVERY_BOUND_S, version=2)
    after_restart = 1
    canary_ids = world.request_ids(model, "canary", CANARY_MIN)
    async with asyncio.timeout(120):
        for rid in canary_ids:
            if world.found(DeploymentPromoted, model, 2) or world.found(DeploymentRolledBack, model, 2):
                break
            code, version = await world.call(model, rid)
            tally(counts, [code], down=False)
            assert (code, version) == ("OK", 2)
            after_restart += 1
            await asyncio.sleep(0.7)  # a check (0.5 s) reads it before the next one
        promoted = (await world.wait_for(DeploymentPromoted, model, 2, timeout=30)).data
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    assert not world.found(DeploymentRolledBack, model, 2)
    match = re.search(r"healthy over (\d+) requests", promoted.reason)
    assert match, promoted.reason
    judged_on = int(match.group(1))
    counts.notes |= {
        "canary_requests_before_kill": BEFORE_KILL,
        "canary_requests_after_restart": after_restart,
        "promoted_on": judged_on,
        "promotion_reason": promoted.reason,
        "gauge_min_after_kill": min(gauge),
    }
    save("during_canary", counts)
    # Reset-aware: promoted on ≥ 30 requests with fewer than 30 served since the restart (the 20
    # before the kill still count; the reload's warm-up and smoke test are canary requests too).
    assert judged_on >= CANARY_MIN and after_restart < CANARY_MIN, counts.notes
    assert judged_on <= BEFORE_KILL + after_restart + 2 * 2, counts.notes  # + one reload's warm-up and smoke test
    assert all(b >= a for a, b in itertools.pairwise(gauge)), gauge  # never down, never negative
    assert counts.other == {}, counts.other


async def test_triton_killed_during_a_deploy(world: World) -> None:
    model, counts = DEPLOY_MODEL, ScenarioCounts()
    await world.approve(model, 1)
    await world.wait_for(DeploymentPromoted, model, 1)
    async with asyncio.timeout(30):
        while (d := world.gateway.feed.get(model)) is None or d.champion_version != 1:
            await asyncio.sleep(0.1)
    await _until_ok(world, model, "warm", 60)
    probe = Probe(world, model)
    probe.start()
    await asyncio.sleep(1)

    await world.approve(model, 2)
    await world.wait_for(DeploymentRequested, model, 2, timeout=60)
    killed_at = time.monotonic()
    group = world.sigkill()
    say(f"deploy: SIGKILLed tritonserver pid {group} as v2's go-live started")
    await asyncio.sleep(3)
    counts.notes["stub_processes_left_3s_after_kill"] = await _leftover_stubs(group)
    assert not world.found(DeploymentRolledBack, model, 2)
    await world.restart()
    ready_at = time.monotonic()
    counts.down_s = ready_at - killed_at
    ok_at = await probe.wait_ok_after(ready_at, RECOVERY_BOUND_S)
    counts.recovery_after_ready_s, counts.recovery_after_kill_s = ok_at - ready_at, ok_at - killed_at
    canary = (await world.wait_for(DeploymentCanaryStarted, model, 2, timeout=RECOVERY_BOUND_S)).data
    counts.notes["canary_started_after_ready_s"] = round(time.monotonic() - ready_at, 1)
    await asyncio.sleep(2)
    await probe.stop()
    windows = probe.windows(killed_at, ok_at)
    windows.tally(counts)
    counts.notes["v2"] = "canary_started, champion 1"
    save("during_deploy", counts)  # before the checks, so a failing run leaves its counts behind
    assert canary.champion_version == 1
    assert not world.found(DeploymentRolledBack, model, 2)
    windows.check()
    assert counts.other == {}, counts.other
