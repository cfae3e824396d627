"""Generation and feedback in the gateway without I/O: request validation, the kind check, routing
to adapters, recovery before the first chunk, the error and cancellation paths, Triton's error
prefixes, the log event (redacted, with token counts and timings) and feedback ids."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest

from llmops.inference.v1 import inference_pb2
from llmops_gateway.adapters.grpc_api import _chunk_response, _raw_generation, grpc_status
from llmops_gateway.adapters.inference_log import generation_event
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.adapters.triton import classify_generation_error
from llmops_gateway.domain.feedback import FeedbackLimits, RawFeedback, validate_feedback
from llmops_gateway.domain.generation import (
    Chunk,
    GenerateItem,
    GenerationClock,
    GenerationLimits,
    RawGeneration,
    ServedChunk,
    ServedGeneration,
    Turn,
    validate_generation,
)
from llmops_gateway.domain.models import PredictItem
from llmops_gateway.domain.routing import group_by_route
from llmops_gateway.errors import (
    BackendError,
    GatewayError,
    InvalidRequest,
    ModelNotLoaded,
    Overloaded,
    WrongModelKind,
)
from llmops_gateway.handlers import GenerationCore
from llmops_gateway.settings import GatewaySettings
from llmops_models.kinds.causal_lm import serving as causal_lm_serving
from llmops_serving import ModelDeployment, choose_route

LIMITS = GenerationLimits(
    max_messages=4, max_chars=50, max_tokens=64, default_max_tokens=16, max_stop=2, max_stop_chars=5
)


# --------------------------------------------------------------------------- validation


def test_a_prompt_is_one_user_turn_and_unset_parameters_take_the_defaults() -> None:
    item = validate_generation(RawGeneration(prompt="hello there", tenant=" acme "), LIMITS)
    assert item.messages == (Turn("user", "hello there"),)
    assert (item.max_tokens, item.temperature, item.top_p, item.seed, item.stop) == (16, 0.0, 1.0, None, ())
    assert item.tenant == "acme" and len(item.request_id) == 36


def test_a_chat_and_every_parameter_pass_through() -> None:
    raw = RawGeneration(
        messages=[Turn("system", "be brief"), Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "card?")],
        request_id="r-1",
        max_tokens=64,
        temperature=0.7,
        top_p=0.9,
        seed=7,
        stop=["\n", "END"],
    )
    item = validate_generation(raw, LIMITS)
    assert [t.role for t in item.messages] == ["system", "user", "assistant", "user"]
    assert (item.max_tokens, item.temperature, item.top_p, item.seed, item.stop) == (64, 0.7, 0.9, 7, ("\n", "END"))
    assert item.request_id == "r-1" and item.last_user_text == "card?"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (RawGeneration(), "messages and prompt are both empty"),
        (RawGeneration(prompt="  "), "messages and prompt are both empty"),
        (RawGeneration(prompt="a", messages=[Turn("user", "b")]), "either messages or prompt, not both"),
        (RawGeneration(messages=[Turn("user", "a")] * 5), "5 messages; the limit is 4"),
        (RawGeneration(messages=[Turn("robot", "a")]), "messages[0].role is 'robot'"),
        (RawGeneration(messages=[Turn("user", "a"), Turn("system", "b"), Turn("user", "c")]), "messages[1]: a system"),
        (RawGeneration(messages=[Turn("user", " ")]), "messages[0].content is empty"),
        (RawGeneration(messages=[Turn("user", "a"), Turn("assistant", "b")]), "it must be the user's"),
        (RawGeneration(prompt="x" * 51), "51 characters; the limit is 50"),
        (RawGeneration(prompt="a", max_tokens=0), "max_tokens is 0; it must be between 1 and 64"),
        (RawGeneration(prompt="a", max_tokens=65), "max_tokens is 65"),
        (RawGeneration(prompt="a", temperature=-0.1), "temperature is -0.1"),
        (RawGeneration(prompt="a", temperature=2.5), "between 0 (greedy) and 2.0"),
        (RawGeneration(prompt="a", temperature=math.nan), "temperature is nan"),
        (RawGeneration(prompt="a", top_p=0.0), "top_p is 0.0; it must be in (0, 1]"),
        (RawGeneration(prompt="a", top_p=1.5), "top_p is 1.5"),
        (RawGeneration(prompt="a", seed=-1), "seed is -1"),
        (RawGeneration(prompt="a", stop=["a", "b", "c"]), "3 stop strings; the limit is 2"),
        (RawGeneration(prompt="a", stop=[""]), "stop[0] is empty"),
        (RawGeneration(prompt="a", stop=["toolong"]), "stop[0] has 7 characters; the limit is 5"),
    ],
)
def test_bad_generation_requests_say_what_is_wrong(raw: RawGeneration, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate_generation(raw, LIMITS)
    assert message in raised.value.message
    assert grpc_status(raised.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_generation_settings_are_checked_together() -> None:
    with pytest.raises(ValueError, match="generate_default_max_tokens"):
        GatewaySettings(generate_default_max_tokens=300, generate_max_tokens=256)
    with pytest.raises(ValueError, match="generate_default_deadline_s"):
        GatewaySettings(generate_default_deadline_s=400, generate_max_deadline_s=300)
    assert GatewaySettings().causal_lm_model == causal_lm_serving.MODEL_NAME


# --------------------------------------------------------------------------- feedback


def test_feedback_must_say_something_within_limits() -> None:
    limits = FeedbackLimits(max_comment_chars=5)
    with pytest.raises(InvalidRequest, match="says nothing"):
        validate_feedback(RawFeedback(request_id="r", comment="only a comment"[:5]), limits)
    with pytest.raises(InvalidRequest, match="request_id is empty"):
        validate_feedback(RawFeedback(request_id=" ", rating=3), limits)
    with pytest.raises(InvalidRequest, match="rating is 6"):
        validate_feedback(RawFeedback(request_id="r", rating=6), limits)
    with pytest.raises(InvalidRequest, match="comment has 6 characters"):
        validate_feedback(RawFeedback(request_id="r", rating=3, comment="sixsix"), limits)
    feedback = validate_feedback(RawFeedback(request_id="r", corrected_answer="Order a new card."), limits)
    assert (feedback.rating, feedback.true_label, feedback.comment) == (None, None, None)
    assert feedback.corrected_answer == "Order a new card."


def test_a_retried_feedback_gets_the_same_event_id_and_other_feedback_another() -> None:
    limits = FeedbackLimits()
    first = validate_feedback(RawFeedback(request_id="r", rating=4, comment="ok"), limits)
    again = validate_feedback(RawFeedback(request_id="r", rating=4, comment="ok"), limits)
    other = validate_feedback(RawFeedback(request_id="r", rating=5, comment="ok"), limits)
    assert first.event_id == again.event_id != other.event_id


# --------------------------------------------------------------------------- the kind of a model


def test_predict_on_a_causal_lm_is_a_failed_precondition() -> None:
    book = {"bot": ModelDeployment("bot", champion_version=1, kind="causal_lm")}
    item = PredictItem(text="hi", model="bot", tenant="t", request_id="r")
    with pytest.raises(WrongModelKind, match="'bot' is a causal_lm model: call Generate or GenerateStream") as raised:
        group_by_route([item], default_model="", known=["bot"], lookup=book.get)
    assert grpc_status(raised.value) == grpc.StatusCode.FAILED_PRECONDITION


# --------------------------------------------------------------------------- the core


class FakeGenerator:
    """Streams ``pieces`` for each adapter; ``failing`` adapters raise before (or after ``fail_after``
    chunks); records every call and whether its stream was closed."""

    def __init__(
        self, pieces: list[str], *, failing: dict[str, GatewayError] | None = None, fail_after: int = 0
    ) -> None:
        self.pieces = pieces
        self.failing = failing or {}
        self.fail_after = fail_after
        self.calls: list[str] = []
        self.closed: list[str] = []
        self.started = asyncio.Event()

    async def generate(self, *, adapter: str, item: GenerateItem, timeout: float | None) -> AsyncGenerator[Chunk, None]:
        self.calls.append(adapter)
        try:
            for index, piece in enumerate(self.pieces):
                if adapter in self.failing and index == self.fail_after:
                    raise self.failing[adapter]
                self.started.set()
                final = index == len(self.pieces) - 1
                yield Chunk(piece, "stop" if final else "", 5, index + 1)
                await asyncio.sleep(0)
        finally:
            self.closed.append(adapter)


class FakeLog:
    def __init__(self) -> None:
        self.generations: list[ServedGeneration] = []

    def record_generation(self, served: ServedGeneration, *, latency_ms: float) -> None:
        self.generations.append(served)


class Ticks:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _core(
    book: dict[str, ModelDeployment], generator: FakeGenerator, *, alias: str = ""
) -> tuple[GenerationCore, FakeLog, GatewayMetrics]:
    log, metrics = FakeLog(), GatewayMetrics()
    core = GenerationCore(
        generator=generator,
        log=log,
        lookup=book.get,
        known_models=lambda: [m for m, d in book.items() if d.kind == "causal_lm"],
        default_model="",
        base_model_alias=alias,
        metrics=metrics,
        clock=Ticks(),
    )
    return core, log, metrics


def _item(model: str = "bot", request_id: str = "r-1") -> GenerateItem:
    return validate_generation(RawGeneration(prompt="hi", model=model, request_id=request_id), LIMITS)


async def _all(core: GenerationCore, item: GenerateItem) -> list[ServedChunk]:
    async with aclosing(core.generate(item, remaining=lambda: 5.0)) as chunks:
        return [chunk async for chunk in chunks]


def _value(metrics: GatewayMetrics, name: str) -> float:
    return sum(s.value for m in metrics.registry.collect() for s in m.samples if s.name == name)


async def test_a_generation_streams_from_the_routed_adapter_and_is_logged_once() -> None:
    book = {"bot": ModelDeployment("bot", champion_version=1, canary_version=2, canary_share=0.5, kind="causal_lm")}
    generator = FakeGenerator(["Hel", "lo", "!"])
    core, log, metrics = _core(book, generator)
    for request_id in (f"r-{i}" for i in range(8)):
        route = choose_route(book["bot"], request_id)
        assert route is not None
        chunks = await _all(core, _item(request_id=request_id))
        assert [c.chunk.text for c in chunks] == ["Hel", "lo", "!"]
        assert {(c.model_version, c.route) for c in chunks} == {(route.version, route.role)}
        assert generator.calls[-1] == f"bot__v{route.version}"
    assert {log.generations[i].model_version for i in range(8)} == {1, 2}  # both versions served
    served = log.generations[0]
    assert (served.output, served.finish_reason, served.prompt_tokens, served.completion_tokens) == (
        "Hello!",
        "stop",
        5,
        3,
    )
    # Ticks: started 1, text at 2, 3, 4: TTFT 1 s, then 2 more tokens in 2 s.
    assert served.ttft_s == 1.0 and served.tokens_per_s == 1.0
    assert _value(metrics, "llmops_gateway_completion_tokens_total") == 24


async def test_generate_on_a_classifier_is_a_failed_precondition_and_calls_nothing() -> None:
    book = {"intents": ModelDeployment("intents", champion_version=1)}
    generator = FakeGenerator(["x"])
    core, _, _ = _core(book, generator)
    with pytest.raises(WrongModelKind, match="'intents' is a classifier model: call Predict or PredictBatch"):
        await _all(core, _item(model="intents"))
    assert generator.calls == []


async def test_the_base_alias_generates_with_no_adapter_as_version_0() -> None:
    generator = FakeGenerator(["ok"])
    core, log, _ = _core({}, generator, alias="smollm2-base")
    chunks = await _all(core, _item(model=""))  # no model deployed: the alias is the only one known
    assert generator.calls == [""] and chunks[-1].model_name == "smollm2-base" and chunks[-1].model_version == 0
    assert log.generations[0].model_version == 0


async def test_a_canary_failing_before_its_first_chunk_is_answered_by_the_champion() -> None:
    book = {"bot": ModelDeployment("bot", champion_version=1, canary_version=2, canary_share=1.0, kind="causal_lm")}
    generator = FakeGenerator(["a", "b"], failing={"bot__v2": BackendError("boom")})
    core, log, metrics = _core(book, generator)
    chunks = await _all(core, _item())
    assert generator.calls == ["bot__v2", "bot__v1"] and generator.closed == ["bot__v2", "bot__v1"]
    assert {(c.model_version, c.route) for c in chunks} == {(1, "champion")}
    assert _value(metrics, "llmops_gateway_canary_fallbacks_total") == 1 and len(log.generations) == 1


async def test_a_failure_after_the_first_chunk_ends_the_stream_with_error() -> None:
    book = {"bot": ModelDeployment("bot", champion_version=1, canary_version=2, canary_share=1.0, kind="causal_lm")}
    generator = FakeGenerator(["a", "b", "c"], failing={"bot__v2": BackendError("boom")}, fail_after=1)
    core, log, _ = _core(book, generator)
    chunks = await _all(core, _item())
    assert [(c.chunk.text, c.chunk.finish_reason) for c in chunks] == [("a", ""), ("", "error")]
    assert chunks[-1].chunk.completion_tokens == 1 and generator.calls == ["bot__v2"]  # no fallback: "a" was sent
    assert log.generations[0].finish_reason == "error" and log.generations[0].output == "a"


async def test_a_just_unloaded_adapter_is_rerouted_with_the_current_state() -> None:
    book = {"bot": ModelDeployment("bot", champion_version=1, kind="causal_lm")}
    generator = FakeGenerator(["a"], failing={"bot__v1": ModelNotLoaded("gone")})
    core, _, metrics = _core(book, generator)
    original = generator.generate

    def promote_then_generate(
        *, adapter: str, item: GenerateItem, timeout: float | None
    ) -> AsyncGenerator[Chunk, None]:
        book["bot"] = ModelDeployment("bot", champion_version=2, kind="causal_lm")
        return original(adapter=adapter, item=item, timeout=timeout)

    generator.generate = promote_then_generate  # type: ignore[method-assign]
    chunks = await _all(core, _item())
    assert generator.calls == ["bot__v1", "bot__v2"] and chunks[-1].model_version == 2
    assert _value(metrics, "llmops_gateway_reroutes_total") == 1


async def test_overload_and_bad_arguments_reach_the_caller_without_a_retry() -> None:
    book = {"bot": ModelDeployment("bot", champion_version=1, canary_version=2, canary_share=1.0, kind="causal_lm")}
    for error in (Overloaded("full"), InvalidRequest("prompt too long")):
        generator = FakeGenerator(["a"], failing={"bot__v2": error})
        core, log, _ = _core(book, generator)
        with pytest.raises(type(error)):
            await _all(core, _item())
        assert generator.calls == ["bot__v2"] and log.generations == []


async def test_closing_a_stream_early_cancels_the_backend_and_logs_what_was_generated() -> None:
    book = {"bot": ModelDeployment("bot", champion_version=1, kind="causal_lm")}
    generator = FakeGenerator(["a", "b", "c", "d"])
    core, log, metrics = _core(book, generator)
    async with aclosing(core.generate(_item(), remaining=lambda: 5.0)) as chunks:
        async for served in chunks:
            if served.chunk.text == "b":
                break  # the client went away
    assert generator.closed == ["bot__v1"]
    assert (log.generations[0].finish_reason, log.generations[0].output) == ("cancelled", "ab")
    assert _value(metrics, "llmops_gateway_generations_total") == 1


async def test_a_task_cancelled_mid_stream_cancels_the_backend() -> None:
    book = {"bot": ModelDeployment("bot", champion_version=1, kind="causal_lm")}
    generator = FakeGenerator(["a"] * 10_000)
    core, log, _ = _core(book, generator)
    task = asyncio.create_task(_all(core, _item()))
    await generator.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert generator.closed == ["bot__v1"] and log.generations[0].finish_reason == "cancelled"


def test_the_decoding_rate_needs_two_tokens_and_a_span() -> None:
    clock = GenerationClock(started=0.0)
    assert clock.ttft_s is None and clock.tokens_per_s(5) is None
    clock.saw_text(0.5)
    assert clock.ttft_s == 0.5 and clock.tokens_per_s(1) is None and clock.tokens_per_s(3) is None
    clock.saw_text(1.5)
    assert clock.tokens_per_s(3) == 2.0


# --------------------------------------------------------------------------- Triton's errors


def test_triton_error_prefixes_map_to_status_codes() -> None:
    full = classify_generation_error(
        "resource exhausted: 64 requests are waiting", model="llmops_causal_lm", adapter="bot__v1"
    )
    assert isinstance(full, Overloaded) and grpc_status(full) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "64 requests are waiting" in full.message
    bad = classify_generation_error(
        "in ensemble: invalid argument: prompt has 2000 tokens; at most 1024", model="m", adapter="bot__v1"
    )
    assert isinstance(bad, InvalidRequest) and bad.message == "prompt has 2000 tokens; at most 1024"
    missing = classify_generation_error("invalid argument: unknown adapter 'bot__v3'", model="m", adapter="bot__v3")
    assert isinstance(missing, ModelNotLoaded) and grpc_status(missing) == grpc.StatusCode.UNAVAILABLE
    assert classify_generation_error("CUDA out of memory", model="m", adapter="") is None


# --------------------------------------------------------------------------- the log event


class MaskingRedactor:
    def redact(self, text: str) -> str:
        return text.replace("jane@example.com", "<EMAIL>")


def test_the_log_event_of_a_generation_is_redacted_with_counts_and_timings() -> None:
    item = validate_generation(
        RawGeneration(
            messages=[Turn("system", "be brief"), Turn("user", "mail jane@example.com please")], request_id="r-9"
        ),
        LIMITS,
    )
    served = ServedGeneration(
        item=item,
        output="Sent to jane@example.com.",
        finish_reason="length",
        prompt_tokens=12,
        completion_tokens=7,
        model_name="bot",
        model_version=3,
        route="canary",
        ttft_s=0.25,
        tokens_per_s=20.0,
    )
    event = generation_event(MaskingRedactor(), served, latency_ms=600.0, served_at=datetime.now(UTC))
    generation = event.generation
    assert generation is not None
    assert event.text == "mail <EMAIL> please" and event.label == "" and event.route == "canary"
    assert [(t.role, t.content) for t in generation.messages] == [
        ("system", "be brief"),
        ("user", "mail <EMAIL> please"),
    ]
    assert generation.output == "Sent to <EMAIL>." and generation.finish_reason == "length"
    assert (generation.prompt_tokens, generation.completion_tokens) == (12, 7)
    assert generation.time_to_first_token_ms == 250.0 and generation.tokens_per_s == 20.0
    unknown = generation_event(
        MaskingRedactor(), replace(served, finish_reason="weird"), latency_ms=1.0, served_at=datetime.now(UTC)
    )
    assert unknown.generation is not None and unknown.generation.finish_reason == "error"


# --------------------------------------------------------------------------- the wire


def test_unset_optional_parameters_are_told_apart_from_zero() -> None:
    unset = _raw_generation(inference_pb2.GenerateStreamRequest(prompt="hi"))
    assert (unset.max_tokens, unset.temperature, unset.top_p, unset.seed) == (None, None, None, None)
    zero = _raw_generation(
        inference_pb2.GenerateRequest(
            messages=[inference_pb2.ChatMessage(role="user", content="hi")],
            temperature=0.0,
            seed=0,
            max_tokens=0,
            stop=["\n"],
        )
    )
    assert (zero.temperature, zero.seed, zero.max_tokens, zero.stop) == (0.0, 0, 0, ["\n"])
    assert zero.messages == [Turn("user", "hi")]


def test_only_the_last_chunk_carries_usage() -> None:
    streaming = _chunk_response(ServedChunk(Chunk("Hel", "", 5, 1), "bot", 2, "canary"), "r")
    final = _chunk_response(ServedChunk(Chunk("lo", "length", 5, 2), "bot", 2, "canary"), "r")
    assert not streaming.HasField("usage") and streaming.finish_reason == ""
    assert final.HasField("usage") and (final.usage.prompt_tokens, final.usage.completion_tokens) == (5, 2)
    assert (final.model_name, final.model_version, final.request_id) == ("bot", 2, "r")
