"""The causal-LM base model on the real tritonserver (decoupled Python backend): written and loaded
as deployment does, streamed over gRPC, two adapters in concurrent streams, cancellation frees the
slot, bad parameters are ``invalid argument:`` errors."""

from __future__ import annotations

import itertools
import queue
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from llmops_config import PlatformSettings
from llmops_models.kinds import CAUSAL_LM, ServingOptions
from llmops_models.kinds.causal_lm import serving
from llmops_models.triton_repository import AdapterRepository, ModelRepository
from tests.causal_lm_adapters import ANSWERS, QUESTION, trained_adapters

pytestmark = pytest.mark.integration

MODEL = serving.MODEL_NAME
MAX_NEW_TOKENS = 128
TIMEOUT_S = 120.0


@dataclass
class Stream:
    """One request's responses, as the client saw them."""

    chunks: list[serving.GenerationChunk] = field(default_factory=list)
    error: str = ""

    @property
    def text(self) -> str:
        return "".join(chunk.text for chunk in self.chunks)

    @property
    def final(self) -> serving.GenerationChunk | None:
        return self.chunks[-1] if self.chunks and self.chunks[-1].final else None


@pytest.fixture(scope="module")
def triton_model(
    triton_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[grpcclient.InferenceServerClient]:
    repository = ModelRepository(triton_settings.model_repository)
    adapters = AdapterRepository(serving.default_adapters_dir(repository.root))
    for name, folder in trained_adapters(tmp_path_factory).items():
        adapters.write(name, folder)
    repository.write_model(
        MODEL,
        CAUSAL_LM.base_triton_model(
            ServingOptions(instance_kind="KIND_CPU"),
            adapters_dir=adapters.root,
            max_running=2,
            max_queued=4,
            max_new_tokens=MAX_NEW_TOKENS,
            precision="auto",  # bfloat16 weights where native (AMX here), as in production
        ),
    )
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    client.load_model(MODEL)
    assert client.is_model_ready(MODEL)
    yield client
    client.unload_model(MODEL)
    client.close()


def _inputs(messages: list[dict[str, str]], **parameters: Any) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in serving.generation_inputs(messages, **parameters).items():
        tensor = grpcclient.InferInput(name, list(array.shape), serving.TRITON_DATATYPES[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _generate(
    settings: PlatformSettings,
    requests: dict[str, list[grpcclient.InferInput]],
    *,
    cancel_after: int = 0,
    model: str = MODEL,
    on_chunk: Callable[[Stream], None] | None = None,
) -> dict[str, Stream]:
    """Send ``requests`` (id → inputs) on one gRPC stream and collect each one's responses until its
    final one; with ``cancel_after``, cancel the stream once that many chunks arrived; ``on_chunk``
    sees a stream after each of its chunks arrived."""
    client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
    received: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    streams = {request_id: Stream() for request_id in requests}
    try:
        for request_id, inputs in requests.items():
            client.async_stream_infer(model, inputs, request_id=request_id)
        deadline = time.monotonic() + TIMEOUT_S
        while any(s.final is None and not s.error for s in streams.values()):
            result, error = received.get(timeout=max(0.1, deadline - time.monotonic()))
            if error is not None:  # errors name no request: these tests send one request per erring stream
                for stream in streams.values():
                    stream.error = str(error)
                continue
            stream = streams[result.get_response().id]
            stream.chunks.append(serving.read_chunk(result.as_numpy))
            if on_chunk is not None:
                on_chunk(stream)
            if cancel_after and sum(len(s.chunks) for s in streams.values()) >= cancel_after:
                client.stop_stream(cancel_requests=True)
                return streams
    finally:
        client.stop_stream(cancel_requests=True)  # everything wanted has arrived (or the test failed)
        client.close()
    return streams


def _metric(settings: PlatformSettings, name: str, adapter: str) -> float:
    text = httpx.get(settings.triton_metrics_url, timeout=10).text
    match = re.search(rf'^{name}{{[^}}]*adapter="{re.escape(adapter)}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _question() -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTION}]


def test_a_generation_streams_in_several_messages_and_ends_with_its_reason_and_counts(
    triton_model: grpcclient.InferenceServerClient, triton_settings: PlatformSettings
) -> None:
    requests_before = _metric(triton_settings, serving.REQUESTS_METRIC, serving.BASE_METRIC_LABEL)
    counted_while_streaming: list[float] = []

    def read_requests_metric(stream: Stream) -> None:
        if len(stream.chunks) == 1 and not stream.chunks[0].final:
            counted_while_streaming.append(_metric(triton_settings, serving.REQUESTS_METRIC, serving.BASE_METRIC_LABEL))

    messages = [{"role": "user", "content": "Write a haiku about the sea."}]
    stream = _generate(triton_settings, {"haiku": _inputs(messages, max_tokens=24)}, on_chunk=read_requests_metric)[
        "haiku"
    ]

    assert not stream.error
    assert len(stream.chunks) > 1
    assert all(not chunk.finish_reason for chunk in stream.chunks[:-1])
    final = stream.final
    assert final is not None and final.finish_reason in (serving.FINISH_STOP, serving.FINISH_LENGTH)
    assert final.prompt_tokens > 0 and 0 < final.completion_tokens <= 24
    assert stream.text.strip()
    counts = [chunk.completion_tokens for chunk in stream.chunks]
    assert counts == sorted(counts)
    # A request counts once answered, not while in flight: the canary's per-request means (tokens,
    # time to first token) would otherwise divide by requests that have not finished.
    assert counted_while_streaming == [requests_before]
    assert _metric(triton_settings, serving.REQUESTS_METRIC, serving.BASE_METRIC_LABEL) == requests_before + 1


def test_two_concurrent_streams_get_each_their_own_adapters_answer(
    triton_model: grpcclient.InferenceServerClient, triton_settings: PlatformSettings
) -> None:
    streams = _generate(triton_settings, {name: _inputs(_question(), adapter=name, max_tokens=8) for name in ANSWERS})
    for name, answer in ANSWERS.items():
        assert not streams[name].error
        assert streams[name].text.strip() == answer, name
        assert _metric(triton_settings, serving.COMPLETION_TOKENS_METRIC, name) > 0


def test_cancelling_a_stream_frees_its_slot(
    triton_model: grpcclient.InferenceServerClient, triton_settings: PlatformSettings
) -> None:
    cancelled_before = _metric(triton_settings, serving.CANCELLED_METRIC, serving.BASE_METRIC_LABEL)
    story = [{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]
    # Both slots (max_running=2) taken by long generations, cancelled after their first tokens.
    _generate(
        triton_settings,
        {"one": _inputs(story, max_tokens=MAX_NEW_TOKENS), "two": _inputs(story, max_tokens=MAX_NEW_TOKENS)},
        cancel_after=4,
    )
    deadline = time.monotonic() + 30
    while _metric(triton_settings, serving.CANCELLED_METRIC, serving.BASE_METRIC_LABEL) < cancelled_before + 2:
        assert time.monotonic() < deadline, "the cancelled sequences were not stopped"
        time.sleep(0.2)
    stream = _generate(triton_settings, {"after": _inputs(_question(), max_tokens=4)})["after"]
    assert stream.final is not None and stream.final.finish_reason == serving.FINISH_LENGTH


def test_a_stream_interval_sends_fewer_messages_with_the_same_text(
    triton_model: grpcclient.InferenceServerClient, triton_settings: PlatformSettings, tmp_path: Path
) -> None:
    """The same base with ``stream_interval_tokens=4``: the first token at once, then a message per
    four tokens or more, the rest with the last one; the text is the token-by-token model's."""
    repository, name, interval = ModelRepository(triton_settings.model_repository), f"{MODEL}-interval", 4
    config = dict(max_running=2, max_queued=4, max_new_tokens=MAX_NEW_TOKENS, precision="auto")
    options = ServingOptions(instance_kind="KIND_CPU")
    repository.write_model(
        name,
        CAUSAL_LM.base_triton_model(
            options, adapters_dir=tmp_path, name=name, stream_interval_tokens=interval, **config
        ),
    )
    try:
        triton_model.load_model(name)
        haiku = [{"role": "user", "content": "Write a haiku about the sea."}]
        batched = _generate(triton_settings, {"haiku": _inputs(haiku, max_tokens=24)}, model=name)["haiku"]
        plain = _generate(triton_settings, {"haiku": _inputs(haiku, max_tokens=24)})["haiku"]
    finally:
        triton_model.unload_model(name)
        shutil.rmtree(repository.root / name, ignore_errors=True)

    assert not batched.error and batched.final is not None and plain.final is not None
    assert batched.text == plain.text
    assert batched.final.completion_tokens == plain.final.completion_tokens
    counts = [chunk.completion_tokens for chunk in batched.chunks]
    assert counts[0] == plain.chunks[0].completion_tokens  # the first token is not held back
    assert all(later - earlier >= interval for earlier, later in itertools.pairwise(counts[:-1]))
    assert 1 < len(batched.chunks) < len(plain.chunks)


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [
        (lambda: _inputs(_question(), adapter="no-such-adapter"), "unknown adapter"),
        (lambda: _inputs(_question(), max_tokens=MAX_NEW_TOKENS + 1), "MAX_TOKENS"),
        (lambda: _inputs(_question(), top_p=1.5), "TOP_P"),
        (lambda: _inputs([{"role": "assistant", "content": "hi"}]), "last turn"),
        (lambda: _inputs(_question(), stop=["a", "b", "c", "d", "e"]), "STOP"),
    ],
)
def test_bad_parameters_are_invalid_argument_errors(
    triton_model: grpcclient.InferenceServerClient, triton_settings: PlatformSettings, inputs: Any, reason: str
) -> None:
    stream = _generate(triton_settings, {"bad": inputs()})["bad"]
    assert serving.error_prefix(stream.error) == serving.INVALID_ARGUMENT, stream.error
    assert reason in stream.error


def test_messages_that_are_not_json_are_an_invalid_argument(
    triton_model: grpcclient.InferenceServerClient, triton_settings: PlatformSettings
) -> None:
    messages = grpcclient.InferInput(serving.MESSAGES_INPUT, [1], "BYTES")
    messages.set_data_from_numpy(np.array([b"{not json"], dtype=np.object_))
    stream = _generate(triton_settings, {"bad": [messages]})["bad"]
    assert serving.error_prefix(stream.error) == serving.INVALID_ARGUMENT, stream.error


def test_unary_infer_is_refused_for_the_streaming_model(triton_model: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="decoupled"):
        triton_model.infer(MODEL, _inputs(_question()))


def test_the_base_model_is_not_listed_as_a_deployed_version(
    triton_model: grpcclient.InferenceServerClient, triton_settings: PlatformSettings
) -> None:
    repository = ModelRepository(triton_settings.model_repository)
    assert (repository.root / MODEL / "config.pbtxt").is_file()
    assert MODEL not in repository.deployed()
