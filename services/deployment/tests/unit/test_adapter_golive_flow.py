"""Deploying ``causal_lm`` versions as LoRA adapters, on fakes (no broker, no Triton): the base
model is written and loaded once and never again while it serves; each version's adapter folder is
written, smoke-tested through streamed generations naming it, and removed when it stops serving;
an adapter trained on other base weights is refused; the canary is judged on the per-adapter
counters; the reconciler restores the base after a Triton restart and removes stray adapters."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.domain.generation import BASE_HASH_KEY, SmokeGeneration
from llmops_deployment.domain.lifecycle import Command, decide
from llmops_deployment.handlers import DeploymentService
from llmops_deployment.reconciler import Reconciler
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope
from llmops_events.base import EventData
from llmops_events.v1 import Decision, EvaluationCompleted
from llmops_models.kinds.causal_lm import serving as lm_serving
from llmops_serving import triton_name

MODEL = "support-bot"
BASE = lm_serving.MODEL_NAME
SERVED = "sha256:" + "b" * 64
OTHER = "sha256:" + "0" * 64


@dataclass
class FakeTriton:
    loaded: set[str] = field(default_factory=set)
    parameters_of: dict[str, dict[str, str]] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)
    unloads: list[str] = field(default_factory=list)
    generations: list[tuple[str, str]] = field(default_factory=list)
    """(model, adapter) of every generation asked for."""
    broken_adapters: set[str] = field(default_factory=set)
    counters: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Adapter → (requests, failures, TTFT s, completion tokens, decode s, cancelled) as the metrics page shows."""
    serving: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Adapter → what one more request adds each time the counters are read (traffic flowing)."""
    artifacts: FakeArtifacts | None = None

    async def is_live(self) -> bool:
        return True

    async def is_ready(self, name: str) -> bool:
        return name in self.loaded

    async def ready_models(self) -> set[str]:
        return set(self.loaded)

    async def load(self, name: str) -> None:
        self.loads.append(name)
        assert self.artifacts is not None and name in self.artifacts.models, "loaded before it was written"
        self.parameters_of[name] = dict(self.artifacts.models[name])
        self.loaded.add(name)

    async def unload(self, name: str) -> None:
        self.unloads.append(name)
        self.loaded.discard(name)

    async def parameters(self, name: str) -> dict[str, str]:
        return self.parameters_of[name]

    async def generate(self, model: str, inputs: dict[str, Any], *, timeout_s: float) -> SmokeGeneration:
        adapter = inputs[lm_serving.ADAPTER_INPUT][0].decode()
        self.generations.append((model, adapter))
        assert model in self.loaded
        assert self.artifacts is not None and adapter in self.artifacts.adapters, "generated before it was written"
        if adapter in self.broken_adapters:
            return SmokeGeneration(error=f"invalid argument: adapter {adapter!r} cannot be loaded")
        json.loads(inputs[lm_serving.MESSAGES_INPUT][0])
        return SmokeGeneration("card_arrival", "stop", 3, 2)

    async def generation_counts(self, adapter: str) -> tuple[float, ...] | None:
        now = self.counters.get(adapter, (0, 0, 0.0, 0, 0.0, 0))
        step = self.serving.get(adapter)
        if step is not None:
            self.counters[adapter] = now = tuple(a + b for a, b in zip(now, step, strict=True))
        return now


@dataclass
class FakeArtifacts:
    trained_on: dict[int, str] = field(default_factory=lambda: {1: SERVED, 2: SERVED, 3: OTHER, 4: SERVED})
    models: dict[str, dict[str, str]] = field(default_factory=dict)
    """Triton models written into the repository → their string parameters."""
    adapters: set[str] = field(default_factory=set)

    def published_versions(self, model_name: str) -> list[int]:
        return sorted(self.trained_on) if model_name == MODEL else []

    def uri(self, model_name: str, version: int) -> str:
        return f"store/models/{model_name}/{version}"

    def kind(self, model_name: str, version: int) -> str | None:
        return "causal_lm" if version in self.trained_on else None

    def fetch(self, model_name: str, version: int, folder: Path) -> dict[str, Any]:
        return {"base_model": "smollm2", BASE_HASH_KEY: self.trained_on[version]}

    def write_model(self, name: str, model: Any) -> None:
        self.models[name] = {key: value.string_value for key, value in model.config.parameters.items()}

    def adapter_installed(self, name: str) -> bool:
        return name in self.adapters

    def install_adapter(self, name: str, artifact_folder: Path) -> None:
        self.adapters.add(name)

    def uninstall_adapter(self, name: str) -> None:
        self.adapters.discard(name)

    def installed_adapters(self) -> dict[str, tuple[str, int]]:
        return {name: (MODEL, int(name.rsplit("__v", 1)[1])) for name in self.adapters}

    def conversations(self, model_name: str, version: int, limit: int) -> list[list[dict[str, str]]]:
        return [[{"role": "user", "content": "Where is my new card?"}]]

    def installed_versions(self) -> dict[str, tuple[str, int]]:
        return {}


@dataclass
class FakePublisher:
    events: list[EventData] = field(default_factory=list)

    async def publish(self, data: EventData, correlationid: str | None = None) -> None:
        self.events.append(data)


@dataclass
class World:
    service: DeploymentService
    triton: FakeTriton
    artifacts: FakeArtifacts
    publisher: FakePublisher

    def published(self, since: int = 0) -> list[tuple[str, int, str]]:
        return [
            (type(e).__name__.removeprefix("Deployment"), e.model_version, e.kind)  # type: ignore[attr-defined]
            for e in self.publisher.events[since:]
        ]

    async def approve(self, version: int) -> None:
        await self.service.on_evaluation_completed(
            Envelope(
                data=EvaluationCompleted(
                    model_name=MODEL, model_version=version, candidate_artifact_uri="x", decision=Decision.APPROVED
                ),
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
async def make_world(tmp_path: Path, **overrides: Any) -> AsyncIterator[World]:
    options: dict[str, Any] = {
        "check_interval_s": 0.01,
        "retire_grace_s": 0,
        "metrics_port": 0,
        "causal_lm_adapters_dir": tmp_path / "adapters",
        "canary_policy_file": tmp_path / "canary.yaml",
        "smoke_generations": 2,
    }
    (tmp_path / "canary.yaml").write_text("causal_lm:\n  min_requests: 3\n")
    settings = DeploymentSettings(**(options | overrides))
    artifacts = FakeArtifacts()
    triton, publisher = FakeTriton(artifacts=artifacts), FakePublisher()
    service = DeploymentService(
        settings=settings,
        artifacts=artifacts,  # type: ignore[arg-type]
        triton=triton,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
    )
    # The base's Triton model as written for the packaged GGUF, without dequantizing or hashing it.
    service.go_live.adapters.base_model = lambda: lm_serving.triton_model(
        settings.serving_options,
        name=settings.causal_lm_model,
        adapters_dir=settings.adapters_dir,
        base_model="/cache/SmolLM2-135M-Instruct",
        base_model_hash=SERVED,
    )
    try:
        yield World(service, triton, artifacts, publisher)
    finally:
        await service.stop()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with make_world(tmp_path) as w:
        yield w


async def _until(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_adapters_go_live_on_one_base_loaded_once_and_a_healthy_canary_is_promoted(world: World) -> None:
    await world.approve(1)
    assert world.published() == [("Requested", 1, "causal_lm"), ("Promoted", 1, "causal_lm")]
    assert world.triton.loads == [BASE], "the base, once; no Triton model of the version's own"
    parameters = world.artifacts.models[BASE]
    assert parameters[lm_serving.BASE_MODEL_HASH_PARAMETER] == SERVED
    assert parameters[lm_serving.ADAPTERS_DIR_PARAMETER] == str(world.service._settings.adapters_dir)
    v1, v2 = triton_name(MODEL, 1), triton_name(MODEL, 2)
    assert world.artifacts.adapters == {v1}
    assert world.triton.generations == [(BASE, v1)] * 2, "the smoke test names the adapter"
    assert world.service.state(MODEL).kind == "causal_lm"

    await world.approve(2)
    assert world.published(2) == [("Requested", 2, "causal_lm"), ("CanaryStarted", 2, "causal_lm")]
    assert world.triton.loads == [BASE], "adding an adapter never reloads the base"
    assert world.artifacts.adapters == {v1, v2}

    # Both serve alike: one request per reading, 0.2 s to the first token, 10 tokens in 0.4 s.
    world.triton.serving[v1] = world.triton.serving[v2] = (1, 0, 0.2, 10, 0.4, 0)
    await _until(lambda: world.service.state(MODEL).champion_version == 2)
    promoted = world.publisher.events[-1]
    assert world.published(4) == [("Promoted", 2, "causal_lm")]
    assert "healthy over" in promoted.reason and "mean output 10.0 tokens" in promoted.reason  # type: ignore[attr-defined]
    await _until(lambda: v1 not in world.artifacts.adapters)
    assert world.triton.unloads == [] and BASE in world.triton.loaded, "retiring never touches the base"


async def test_an_adapter_for_other_base_weights_is_rolled_back_without_touching_triton(world: World) -> None:
    await world.approve(1)
    await world.approve(3)
    assert world.published(2) == [("Requested", 3, "causal_lm"), ("RolledBack", 3, "causal_lm")]
    reason = world.publisher.events[-1].reason  # type: ignore[attr-defined]
    assert reason.startswith("base_model_mismatch: trained on base model 'smollm2' with weights sha256:000")
    assert SERVED in reason
    assert triton_name(MODEL, 3) not in world.artifacts.adapters
    assert world.triton.loads == [BASE] and world.service.state(MODEL).champion_version == 1


async def test_a_first_adapter_for_other_weights_loads_no_base(world: World) -> None:
    await world.approve(3)
    assert world.published() == [("Requested", 3, "causal_lm"), ("RolledBack", 3, "causal_lm")]
    assert world.triton.loads == [] and world.artifacts.models == {}


async def test_an_adapter_failing_its_smoke_test_is_rolled_back_and_its_folder_removed(world: World) -> None:
    await world.approve(1)
    world.triton.broken_adapters.add(triton_name(MODEL, 2))
    await world.approve(2)
    assert world.published(2) == [("Requested", 2, "causal_lm"), ("RolledBack", 2, "causal_lm")]
    reason = world.publisher.events[-1].reason  # type: ignore[attr-defined]
    assert reason.startswith("smoke_test_failed: generation 0: invalid argument: adapter")
    assert world.artifacts.adapters == {triton_name(MODEL, 1)} and BASE in world.triton.loaded


async def test_a_canary_adapter_that_answers_slowly_is_rolled_back(world: World) -> None:
    await world.approve(1)
    await world.approve(2)
    v1, v2 = triton_name(MODEL, 1), triton_name(MODEL, 2)
    world.triton.serving[v1] = (1, 0, 0.2, 10, 0.4, 0)
    world.triton.serving[v2] = (1, 0, 2.0, 10, 0.4, 0)  # 2 s to the first token, against 0.2 s
    await _until(lambda: world.service.state(MODEL).canary_version is None)
    assert world.published(4) == [("RolledBack", 2, "causal_lm")]
    assert "time to first token 2000 ms" in world.publisher.events[-1].reason  # type: ignore[attr-defined]
    await _until(lambda: v2 not in world.artifacts.adapters)
    assert world.service.state(MODEL).champion_version == 1


async def test_the_reconciler_restores_the_base_once_and_removes_stray_adapters(world: World) -> None:
    await world.approve(1)
    await world.approve(2)
    reconciler = world.reconciler()
    assert await reconciler.reconcile() == []
    world.triton.loaded.clear()  # Triton restarted: nothing is loaded in explicit mode
    world.artifacts.adapters.add(triton_name(MODEL, 4))  # left behind by a crash mid-deployment
    world.service.watcher.cancel(MODEL)  # as after a restart of the service
    assert await reconciler.reconcile() == [
        f"loaded {triton_name(MODEL, 1)}",
        f"loaded {triton_name(MODEL, 2)}",
        f"watching canary {triton_name(MODEL, 2)}",
        f"removed adapter {triton_name(MODEL, 4)}",
    ]
    assert world.triton.loads == [BASE, BASE], "loaded again once after the restart, not once per adapter"
    assert world.artifacts.adapters == {triton_name(MODEL, 1), triton_name(MODEL, 2)}
    assert len(world.publisher.events) == 4, "nothing published"


async def test_a_half_done_adapter_deployment_is_resumed(world: World) -> None:
    await world.approve(1)
    requested = world.service.lifecycle(MODEL)
    # The service stopped right after publishing ``requested`` for version 2 (nothing written yet).
    decision = decide(requested, 2, Command.DEPLOY, model_kind="causal_lm")
    world.service.replay(decision.effects[0].event)  # type: ignore[arg-type]
    assert world.service.lifecycle(MODEL).state_of(2) == "deploying"
    actions = await world.reconciler().reconcile()
    assert actions == [f"resumed {triton_name(MODEL, 2)}: canary"]
    assert world.published(2) == [("CanaryStarted", 2, "causal_lm")]
    assert triton_name(MODEL, 2) in world.artifacts.adapters and world.triton.loads == [BASE]


async def test_a_base_loaded_without_its_hash_is_checked_against_the_weights_it_names(world: World) -> None:
    world.artifacts.models[BASE] = {lm_serving.BASE_MODEL_PARAMETER: "/models/other-base"}
    await world.triton.load(BASE)  # written and loaded by someone else, before this service
    named: list[str] = []

    def weights(base_model: str) -> str:
        named.append(base_model)
        return OTHER

    world.service.go_live.adapters.base_hash = weights
    await world.approve(1)
    assert world.published() == [("Requested", 1, "causal_lm"), ("RolledBack", 1, "causal_lm")]
    assert world.publisher.events[-1].reason.startswith("base_model_mismatch:")  # type: ignore[attr-defined]
    assert named == ["/models/other-base"] and world.triton.loads == [BASE], "checked, never reloaded"
