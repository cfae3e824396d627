"""Generation through the gateway in-process, called over a real gRPC channel, against the real
tritonserver running the causal-LM base (SmolLM2) with LoRA adapters and the real Kafka broker:
streamed chunks with usage in the last, canary routing to adapters, the base alias, every status
code, cancellation that frees the model's slot, the redacted generation log, SubmitFeedback on
the feedback topic, and grpcurl as an outside client."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as grpcclient
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc
from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_config.tls import aio_channel, tls_files
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import FEEDBACK, INFERENCE
from llmops_events.v1 import DeploymentCanaryStarted, DeploymentPromoted, FeedbackSubmitted, InferenceLogged
from llmops_gateway.adapters.grpc_api import SERVICE_NAME
from llmops_gateway.main import GatewayRuntime
from llmops_gateway.settings import GatewaySettings
from llmops_messaging import EventPublisher
from llmops_messaging.admin import topic_partitions
from llmops_models.kinds import ServingOptions
from llmops_models.kinds.causal_lm import CAUSAL_LM
from llmops_models.kinds.causal_lm import serving as causal_lm_serving
from llmops_models.triton_repository import ModelRepository
from llmops_privacy import Redactor
from llmops_serving import choose_route, triton_name

pytestmark = pytest.mark.integration

KEY = "gen-key-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
SUFFIX = uuid.uuid4().hex[:8]
TRITON_MODEL = f"gw_causal_lm_{SUFFIX}"  # its own base model: other tests' configurations stay theirs
BOT = f"gw-bot-{SUFFIX}"  # causal_lm: champion v1, canary v2 (50 %)
QUIET = f"gw-quiet-{SUFFIX}"  # causal_lm: champion v1 only, used by the cancellation test alone
GHOST = f"gw-ghost-{SUFFIX}"  # causal_lm: promoted, but its adapter was never written
INTENTS = f"gw-intents-{SUFFIX}"  # a classifier (never called: the kind is checked first)
ALIAS = "smollm2-base"
REDACTED_TENANT = "redacted-health"  # the guardrails policy redacts this tenant's answers
MAX_RUNNING, MAX_QUEUED, MAX_NEW_TOKENS, MAX_PROMPT_TOKENS = 2, 2, 48, 160
COUNTING = "Count from 1 to 100, separated by commas."
REPO_ROOT = Path(__file__).resolve().parents[4]


def _write_adapter(folder: Path) -> None:
    """A LoRA adapter on the base, as PEFT initialises one (it answers as the base does: routing,
    not what adapters learn, is under test here; the Triton model's own tests cover that)."""
    from peft import LoraConfig, get_peft_model

    from llmops_models.kinds.causal_lm.network import load_base_model

    base, _ = load_base_model("smollm2")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(str(folder))


@pytest.fixture(scope="module")
def causal_lm(
    triton_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlatformSettings]:
    """The causal-LM base on Triton with the adapters of BOT v1/v2 and QUIET v1."""
    adapters = tmp_path_factory.mktemp("adapters")
    first, *others = (triton_name(BOT, 1), triton_name(BOT, 2), triton_name(QUIET, 1))
    _write_adapter(adapters / first)
    for name in others:
        shutil.copytree(adapters / first, adapters / name)
    model = CAUSAL_LM.base_triton_model(
        ServingOptions(torch_threads=2),
        adapters_dir=adapters,
        name=TRITON_MODEL,
        max_running=MAX_RUNNING,
        max_queued=MAX_QUEUED,
        max_new_tokens=MAX_NEW_TOKENS,
        max_prompt_tokens=MAX_PROMPT_TOKENS,
    )
    ModelRepository(triton_settings.model_repository).write_model(TRITON_MODEL, model)
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    client.load_model(TRITON_MODEL)
    try:
        yield triton_settings
    finally:
        client.unload_model(TRITON_MODEL)


@pytest.fixture(scope="module")
async def gateway(
    causal_lm: PlatformSettings,
    kafka_settings: PlatformSettings,
    redactor: Redactor,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[GatewayRuntime]:
    async with EventPublisher(kafka_settings, service="gateway-generation-test") as publisher:
        await publisher.publish(
            DeploymentCanaryStarted(
                model_name=BOT, model_version=2, champion_version=1, traffic_share=0.5, kind="causal_lm"
            )
        )
        for name in (QUIET, GHOST):
            await publisher.publish(DeploymentPromoted(model_name=name, model_version=1, kind="causal_lm"))
        await publisher.publish(DeploymentPromoted(model_name=INTENTS, model_version=1))
    policy = yaml.safe_load((REPO_ROOT / "deploy" / "policies" / "guardrails.yaml").read_text())
    policy["output_redaction"]["tenants"] = {REDACTED_TENANT: True}
    policy_file = tmp_path_factory.mktemp("guardrails") / "guardrails.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    settings = GatewaySettings(
        platform=causal_lm,
        api_keys=[KEY],
        causal_lm_model=TRITON_MODEL,
        base_model_alias=ALIAS,
        generate_max_tokens=256,  # above the model's own limit (48): Triton's refusal is tested too
        generate_default_max_tokens=16,
        guardrails_file=policy_file,
        metrics_port=0,
        host="127.0.0.1",
    )
    async with GatewayRuntime(settings, redactor=redactor, port=0) as runtime:
        yield runtime


@pytest.fixture
async def stub(gateway: GatewayRuntime) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    async with aio_channel(gateway.settings.platform, f"127.0.0.1:{gateway.port}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def _chat(*turns: tuple[str, str]) -> list[inference_pb2.ChatMessage]:
    return [inference_pb2.ChatMessage(role=role, content=content) for role, content in turns]


async def _stream(stub: inference_pb2_grpc.InferenceServiceStub, **fields: Any) -> list[Any]:
    call = stub.GenerateStream(inference_pb2.GenerateStreamRequest(**fields), metadata=AUTH, timeout=120)
    return [chunk async for chunk in call]


async def _status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    return raised.value.code(), raised.value.details() or ""


async def _read(
    settings: PlatformSettings, topic: str, found: Callable[[Envelope[Any]], bool], *, timeout: float = 60
) -> Envelope[Any]:
    """The first event on ``topic`` (from its beginning) for which ``found`` is true."""
    partitions = [
        TopicPartition(topic, p) for p in await topic_partitions(kafka_client_options(settings, service="test"), topic)
    ]
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings, service="test").aiokafka(),
        group_id=f"reader-{uuid.uuid4().hex}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(timeout):
            while True:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for m in records:
                        envelope = decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ())))
                        if found(envelope):
                            return envelope
    finally:
        await consumer.stop()


async def _logged(settings: PlatformSettings, request_id: str) -> InferenceLogged:
    envelope = await _read(
        settings, INFERENCE, lambda e: isinstance(e.data, InferenceLogged) and e.data.request_id == request_id
    )
    data: InferenceLogged = envelope.data
    return data


def _requests(gateway: GatewayRuntime, method: str, code: str) -> float:
    return sum(
        sample.value
        for metric in gateway.metrics.requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["method"] == method and sample.labels["code"] == code
    )


# --------------------------------------------------------------------------- serving


async def test_a_stream_arrives_in_many_messages_and_ends_with_usage(
    gateway: GatewayRuntime, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    request_id = f"stream-{uuid.uuid4().hex}"
    chunks = await _stream(stub, model=BOT, request_id=request_id, prompt=COUNTING, max_tokens=24)
    assert len(chunks) > 1
    *streaming, last = chunks
    assert all(c.finish_reason == "" and not c.HasField("usage") for c in streaming)
    assert last.finish_reason in ("stop", "length") and last.HasField("usage")
    assert last.usage.prompt_tokens > 0 and 0 < last.usage.completion_tokens <= 24
    route = choose_route(gateway.feed.get(BOT), request_id)  # type: ignore[arg-type]
    assert route is not None
    assert {(c.model_name, c.model_version, c.request_id) for c in chunks} == {(BOT, route.version, request_id)}
    text = "".join(c.text for c in chunks)
    assert "1, 2" in text

    # The unary call, greedy, on the same route: the same text and usage in one response.
    answer = await stub.Generate(
        inference_pb2.GenerateRequest(model=BOT, request_id=request_id, prompt=COUNTING, max_tokens=24),
        metadata=AUTH,
        timeout=120,
    )
    assert (answer.text, answer.finish_reason, answer.model_version) == (text, last.finish_reason, route.version)
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        last.usage.prompt_tokens,
        last.usage.completion_tokens,
    )


async def test_a_stream_open_when_the_triton_pool_changes_ends_where_it_began(
    gateway: GatewayRuntime, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    """The gateway moves to new Triton members (``retarget_triton``, as its DNS pool follower does)
    while a stream runs: that stream finishes on its channel, new streams open on the new one, and
    the old client is closed once its last stream ended."""
    before = gateway.triton_target
    generator = gateway.generator
    call = stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(model=BOT, prompt=COUNTING, max_tokens=24), metadata=AUTH, timeout=120
    )
    chunks = [await call.read()]
    old_clients = set(generator._streams)
    try:
        await gateway.retarget_triton("ipv4:" + before)  # the same server, named as a pool is
        assert set(generator._streams) > old_clients  # a new client beside the one the stream holds
        while (chunk := await call.read()) is not grpc.aio.EOF:
            chunks.append(chunk)
        assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].usage.completion_tokens > 1
        async with asyncio.timeout(10):  # its last stream ended: the old client is closed
            while set(generator._streams) & old_clients:
                await asyncio.sleep(0.05)
        again = await _stream(stub, model=BOT, prompt=COUNTING, max_tokens=8)
        assert again[-1].finish_reason in ("stop", "length")
    finally:
        await gateway.retarget_triton(before)


async def test_the_generation_log_is_redacted_and_carries_counts_and_timings(
    gateway: GatewayRuntime, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    request_id = f"logged-{uuid.uuid4().hex}"
    messages = _chat(
        ("system", "You are the bank's support assistant."),
        ("user", "I am Jane Doe, jane.doe@example.com, +44 20 7946 0018. Repeat my email address."),
    )
    answer = await stub.Generate(
        inference_pb2.GenerateRequest(
            model=BOT, tenant="acme", request_id=request_id, messages=messages, max_tokens=16
        ),
        metadata=AUTH,
        timeout=120,
    )
    event = await _logged(gateway.settings.platform, request_id)
    generation = event.generation
    assert generation is not None
    assert (event.model_name, event.model_version, event.tenant) == (BOT, answer.model_version, "acme")
    assert [t.role for t in generation.messages] == ["system", "user"]
    logged_chat = " ".join(t.content for t in generation.messages) + " " + event.text + " " + generation.output
    for secret in ("jane.doe@example.com", "+44 20 7946 0018"):
        assert secret not in logged_chat
    assert "<EMAIL>" in event.text and "<PHONE>" in event.text, event.text
    assert generation.messages[0].content == "You are the bank's support assistant."
    assert (generation.prompt_tokens, generation.completion_tokens) == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )
    assert generation.finish_reason == answer.finish_reason
    assert generation.time_to_first_token_ms is not None and generation.time_to_first_token_ms > 0
    assert event.latency_ms >= generation.time_to_first_token_ms
    if generation.completion_tokens >= 2:
        assert generation.tokens_per_s is not None and generation.tokens_per_s > 0


async def test_a_tenant_with_output_redaction_gets_the_models_answer_redacted_in_the_stream(
    stub: inference_pb2_grpc.InferenceServiceStub, redactor: Redactor, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real model asked to repeat an e-mail address: the same greedy answer, streamed to a
    tenant whose policy redacts answers, is what redacting the whole answer gives (the stream is
    redacted through a look-behind, chunk by chunk)."""
    from collections import Counter

    from llmops_gateway.domain.guardrails import redact_text

    messages = _chat(("user", "Write an e-mail signature for Jane Doe, jane.doe@example.com."))  # SmolLM2 repeats it
    plain = await stub.Generate(
        inference_pb2.GenerateRequest(model=ALIAS, tenant="acme", messages=messages, max_tokens=24),
        metadata=AUTH,
        timeout=120,
    )
    request = inference_pb2.GenerateStreamRequest(model=ALIAS, tenant=REDACTED_TENANT, messages=messages, max_tokens=24)
    chunks = [chunk async for chunk in stub.GenerateStream(request, metadata=AUTH, timeout=120)]
    streamed = "".join(chunk.text for chunk in chunks)
    with capsys.disabled():
        print(f"\nthe model answered {plain.text!r}; streamed to {REDACTED_TENANT}: {streamed!r}")
    assert streamed == redact_text(redactor, plain.text, Counter()), (plain.text, streamed)
    assert "jane.doe@example.com" not in streamed
    if "jane.doe@example.com" in plain.text:
        assert "<EMAIL>" in streamed
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


async def test_the_canary_and_the_champion_each_generate_with_their_adapter(
    gateway: GatewayRuntime, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    deployment = gateway.feed.get(BOT)
    assert deployment is not None
    ids = [f"sticky-{SUFFIX}-{i}" for i in range(40)]
    routes = {i: choose_route(deployment, i) for i in ids}
    chosen = [next(i for i in ids if routes[i].version == v) for v in (1, 2)]  # type: ignore[union-attr]
    for request_id in chosen:  # one at a time: the model admits few requests at once here
        answer = await stub.Generate(
            inference_pb2.GenerateRequest(model=BOT, request_id=request_id, prompt="Say hello.", max_tokens=4),
            metadata=AUTH,
            timeout=120,
        )
        assert answer.model_version == routes[request_id].version  # type: ignore[union-attr]
        event = await _logged(gateway.settings.platform, request_id)
        assert event.route == routes[request_id].role  # type: ignore[union-attr]
    # Triton counted each version under its own adapter's name.
    with urllib.request.urlopen(gateway.settings.platform.triton_metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    for version in (1, 2):
        assert f'{causal_lm_serving.ADAPTER_LABEL}="{triton_name(BOT, version)}"' in metrics


async def test_the_base_alias_generates_with_the_base_model_as_version_0(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    answer = await stub.Generate(
        inference_pb2.GenerateRequest(model=ALIAS, prompt="Say hello.", max_tokens=4), metadata=AUTH, timeout=120
    )
    assert (answer.model_name, answer.model_version) == (ALIAS, 0) and answer.usage.completion_tokens > 0


# --------------------------------------------------------------------------- status codes


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": "hi", "messages": _chat(("user", "hi"))}, "either messages or prompt, not both"),
        ({"messages": _chat(("user", "hi"), ("assistant", "hello"))}, "it must be the user's"),
        ({"prompt": "hi", "top_p": 0.0}, "top_p is 0.0"),
        ({"prompt": "hi", "temperature": -1.0}, "temperature is -1.0"),
        ({"prompt": "hi", "max_tokens": 257}, "max_tokens is 257; it must be between 1 and 256"),
        ({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "5 stop strings; the limit is 4"),
        # Refused by the model itself ("invalid argument:" on Triton), within the gateway's limits:
        ({"prompt": "hi", "max_tokens": 100}, f"between 1 and {MAX_NEW_TOKENS}, got 100"),
        ({"prompt": "word " * 400}, f"at most {MAX_PROMPT_TOKENS}"),
    ],
)
async def test_bad_parameters_are_invalid_arguments(
    stub: inference_pb2_grpc.InferenceServiceStub, fields: dict[str, Any], message: str
) -> None:
    for call in (
        stub.Generate(inference_pb2.GenerateRequest(model=BOT, **fields), metadata=AUTH, timeout=60),
        stub.GenerateStream(inference_pb2.GenerateStreamRequest(model=BOT, **fields), metadata=AUTH, timeout=60),
    ):
        code, details = await _status_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert message in details


async def test_each_kind_serves_only_its_own_calls(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    code, details = await _status_of(
        stub.Generate(inference_pb2.GenerateRequest(model=INTENTS, prompt="hi"), metadata=AUTH, timeout=30)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "call Predict or PredictBatch" in details
    code, details = await _status_of(
        stub.Predict(inference_pb2.PredictRequest(model=BOT, text="hi"), metadata=AUTH, timeout=30)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "call Generate or GenerateStream" in details


async def test_a_version_whose_adapter_is_missing_is_unavailable(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    code, details = await _status_of(
        stub.GenerateStream(inference_pb2.GenerateStreamRequest(model=GHOST, prompt="hi"), metadata=AUTH, timeout=60)
    )
    assert code == grpc.StatusCode.UNAVAILABLE and triton_name(GHOST, 1) in details


async def test_calls_without_a_key_are_refused(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    for call in (
        stub.GenerateStream(inference_pb2.GenerateStreamRequest(model=BOT, prompt="hi"), timeout=30),
        stub.Generate(
            inference_pb2.GenerateRequest(model=BOT, prompt="hi"), metadata=(("authorization", "Bearer no"),)
        ),
        stub.SubmitFeedback(inference_pb2.SubmitFeedbackRequest(request_id="r", rating=5), timeout=30),
    ):
        code, _ = await _status_of(call)
        assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_deadline_that_passes_mid_stream_is_deadline_exceeded(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    call = stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(model=BOT, prompt=COUNTING, max_tokens=MAX_NEW_TOKENS),
        metadata=AUTH,
        timeout=0.5,
    )
    code, _ = await _status_of(call)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_more_streams_than_the_model_admits_are_resource_exhausted(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    async def one(i: int) -> grpc.StatusCode:
        call = stub.GenerateStream(
            inference_pb2.GenerateStreamRequest(model=ALIAS, prompt=COUNTING, max_tokens=32, request_id=f"flood-{i}"),
            metadata=AUTH,
            timeout=120,
        )
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(one(i) for i in range(3 * (MAX_RUNNING + MAX_QUEUED))))
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.OK) >= MAX_RUNNING


def _on_triton(settings: PlatformSettings, metric: str, adapter: str) -> float | None:
    """A per-adapter counter of the causal-LM model on Triton's metrics endpoint (None: not yet)."""
    with urllib.request.urlopen(settings.triton_metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(metric + "{") and f'{causal_lm_serving.ADAPTER_LABEL}="{adapter}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_cancelled_stream_stops_on_triton_and_is_logged_as_cancelled(
    gateway: GatewayRuntime, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    request_id = f"cancel-{uuid.uuid4().hex}"
    adapter, platform = triton_name(QUIET, 1), gateway.settings.platform
    cancelled_before = _requests(gateway, "GenerateStream", "CANCELLED")
    call = stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(
            model=QUIET, request_id=request_id, prompt=COUNTING, max_tokens=MAX_NEW_TOKENS
        ),
        metadata=AUTH,
        timeout=120,
    )
    first = await call.read()
    assert first.finish_reason == ""  # still generating
    call.cancel()  # the client goes away after its first message
    with pytest.raises(asyncio.CancelledError):
        await call.read()

    # The gateway cancelled its Triton stream: the model ended the sequence as cancelled (and
    # dropped it from its batch) long before max_tokens, counting the tokens it had made.
    async with asyncio.timeout(60):
        while _on_triton(platform, causal_lm_serving.CANCELLED_METRIC, adapter) != 1:
            await asyncio.sleep(0.2)
    tokens = _on_triton(platform, causal_lm_serving.COMPLETION_TOKENS_METRIC, adapter)
    assert tokens is not None and tokens < MAX_NEW_TOKENS
    event = await _logged(gateway.settings.platform, request_id)
    assert event.generation is not None and event.generation.finish_reason == "cancelled"
    assert event.generation.completion_tokens < MAX_NEW_TOKENS
    assert _requests(gateway, "GenerateStream", "CANCELLED") == cancelled_before + 1
    # The freed slot serves the next request.
    answer = await stub.Generate(
        inference_pb2.GenerateRequest(model=QUIET, prompt="Say hello.", max_tokens=4), metadata=AUTH, timeout=120
    )
    assert answer.usage.completion_tokens > 0


# --------------------------------------------------------------------------- feedback


async def test_feedback_reaches_the_feedback_topic_once_per_retry(
    gateway: GatewayRuntime, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    request_id = f"feedback-{uuid.uuid4().hex}"
    request = inference_pb2.SubmitFeedbackRequest(
        request_id=request_id, rating=2, corrected_answer="Order a new card in the app.", comment="too vague"
    )
    answer = await stub.SubmitFeedback(request, metadata=AUTH, timeout=30)
    again = await stub.SubmitFeedback(request, metadata=AUTH, timeout=30)
    assert answer.event_id and again.event_id == answer.event_id  # a retry is a recognisable duplicate
    envelope = await _read(
        gateway.settings.platform,
        FEEDBACK,
        lambda e: isinstance(e.data, FeedbackSubmitted) and e.data.request_id == request_id,
    )
    assert envelope.id == answer.event_id
    feedback: FeedbackSubmitted = envelope.data
    assert (feedback.rating, feedback.corrected_answer, feedback.true_label, feedback.comment) == (
        2,
        "Order a new card in the app.",
        None,
        "too vague",
    )
    code, details = await _status_of(
        stub.SubmitFeedback(inference_pb2.SubmitFeedbackRequest(request_id=request_id), metadata=AUTH, timeout=30)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "says nothing" in details


# --------------------------------------------------------------------------- an outside client


def _grpcurl() -> str:
    found = shutil.which("grpcurl") or str(REPO_ROOT / "build" / "go" / "bin" / "grpcurl")
    if not Path(found).is_file():
        pytest.skip("grpcurl not installed: `make setup` installs it into build/go/bin when Go is available")
    return found


async def test_grpcurl_streams_a_generation_with_a_key(gateway: GatewayRuntime) -> None:
    request = json.dumps({"model": BOT, "prompt": COUNTING, "max_tokens": 16})
    process = await asyncio.create_subprocess_exec(
        _grpcurl(),
        "-cacert",
        str(tls_files(gateway.settings.platform).ca),
        "-max-time",  # the call's deadline (the gateway's default for generations is 60 s): a busy CPU is slow
        "240",
        "-H",
        f"authorization: Bearer {KEY}",
        "-d",
        request,
        f"127.0.0.1:{gateway.port}",
        f"{SERVICE_NAME}/GenerateStream",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, err.decode()
    decoder, text, messages = json.JSONDecoder(), out.decode().strip(), []
    while text:  # grpcurl prints one JSON object per streamed message
        message, end = decoder.raw_decode(text)
        messages.append(message)
        text = text[end:].strip()
    assert len(messages) > 1
    last = messages[-1]
    assert last.get("finishReason", last.get("finish_reason")) in ("stop", "length")
    assert int(last["usage"].get("completionTokens", last["usage"].get("completion_tokens", 0))) > 0


async def test_the_python_client_example_streams(gateway: GatewayRuntime) -> None:
    example = REPO_ROOT / "services" / "gateway" / "examples" / "generate_stream.py"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(example),
        "--address",
        f"127.0.0.1:{gateway.port}",
        "--key",
        KEY,
        "--model",
        BOT,
        "--max-tokens",
        "8",
        "--cacert",
        str(tls_files(gateway.settings.platform).ca),
        COUNTING,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    assert f"[{BOT} v" in out.decode() and "completion tokens]" in out.decode()
