"""Triton over its gRPC API: explicit model control, statistics and the smoke test (a classifier's
batch, or an adapter's streamed generations on the causal-LM model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import httpx
import tritonclient.grpc.aio as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from llmops_deployment.domain.generation import SmokeGeneration
from llmops_deployment.errors import TritonUnavailable, first_line
from llmops_models.kinds.causal_lm import serving as lm_serving
from llmops_models.kinds.classifier import serving as classifier_serving
from llmops_models.kinds.classifier.serving import ClassOutput

FAILURES_METRIC = "llmops_model_request_failures_total"
"""Must match the kinds' Triton ``model.py``."""


UNREACHABLE_CODES = frozenset({"StatusCode.UNAVAILABLE"})
"""gRPC statuses that say the server could not be reached (nothing listens, the connection broke),
as tritonclient's ``InferenceServerException.status()`` spells them. A timeout
(``DEADLINE_EXCEEDED``) is not one by itself: a hung server and a slow model look alike, so the
caller asks Triton's liveness check (``TritonControl.is_live``) to tell them apart."""


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says Triton could not be reached, rather than that it answered with an
    error (a model it failed to load, a request it refused) or did not answer in time."""
    if isinstance(error, InferenceServerException):
        return error.status() in UNREACHABLE_CODES
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.code()) in UNREACHABLE_CODES
    return isinstance(error, OSError | httpx.TransportError)


class _Liveness(Protocol):
    async def is_live(self) -> bool: ...


async def raise_if_unreachable(triton: _Liveness, error: BaseException, doing: str) -> None:
    """Raise ``TritonUnavailable`` if ``error`` came from not reaching Triton: its status says so,
    or Triton does not answer its liveness check now (a timeout, a connection that broke)."""
    if unreachable(error) or not await triton.is_live():
        raise TritonUnavailable(f"Triton is unreachable ({doing}): {first_line(error)}") from error


@dataclass(frozen=True, slots=True)
class Counts:
    """Cumulative counters of one loaded model, each monotonic until Triton restarts or reloads the
    model (then they start again from zero: read them with ``domain.canary.CounterSeries``).
    ``requests`` is every request executed: Triton's success count, which includes the requests
    our model answered with an error (Triton 2.51 counts error responses as successes), plus its
    fail count; ``success_ns`` is the time of the former. ``failure`` is Triton's fail count plus
    the counter our ``model.py`` exports on Triton's metrics endpoint."""

    requests: int = 0
    failure: int = 0
    success_ns: int = 0

    @property
    def sample(self) -> tuple[int, int, int]:
        """(requests, errors, busy ns): one reading of the series."""
        return self.requests, self.failure, self.success_ns


Prediction = ClassOutput

GENERATION_METRICS = (
    lm_serving.REQUESTS_METRIC,
    lm_serving.FAILURES_METRIC,
    lm_serving.TTFT_SECONDS_METRIC,
    lm_serving.COMPLETION_TOKENS_METRIC,
    lm_serving.DECODE_SECONDS_METRIC,
    lm_serving.CANCELLED_METRIC,
)
"""Read in this order: ``domain.canary.GENERATION_COUNTERS``."""


def generation_counters(metrics_text: str, adapter: str) -> tuple[float, ...]:
    """One adapter's counters on Triton's metrics page, in the order of ``GENERATION_METRICS``
    (zeros for an adapter that has served nothing since the model loaded: its series are absent)."""
    values = dict.fromkeys(GENERATION_METRICS, 0.0)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in values and sample.labels.get(lm_serving.ADAPTER_LABEL) == adapter:
                values[sample.name] += float(sample.value)
    return tuple(values.values())


class TritonControl:
    def __init__(self, url: str, metrics_url: str) -> None:
        self._client = grpcclient.InferenceServerClient(url)
        self._http = httpx.AsyncClient(timeout=5.0)
        self._metrics_url = metrics_url

    async def close(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def _metrics_text(self) -> str | None:
        try:
            response = await self._http.get(self._metrics_url)
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return response.text

    async def failures(self) -> dict[str, int] | None:
        """Triton model name → requests it answered with an error (``model.py``'s counter); None
        when the metrics endpoint cannot be read."""
        text = await self._metrics_text()
        if text is None:
            return None
        found: dict[str, int] = {}
        for family in text_string_to_metric_families(text):
            if family.name == FAILURES_METRIC.removesuffix("_total"):
                for sample in family.samples:
                    if sample.name == FAILURES_METRIC:
                        found[sample.labels.get("model", "")] = int(sample.value)
        return found

    async def is_live(self, timeout_s: float = 5.0) -> bool:
        """Whether Triton answers its liveness check within ``timeout_s``."""
        try:
            return bool(await self._client.is_server_live(client_timeout=timeout_s))
        except (TimeoutError, InferenceServerException, OSError):
            return False

    async def load(self, name: str) -> None:
        await self._client.load_model(name)

    async def unload(self, name: str) -> None:
        await self._client.unload_model(name)

    async def is_ready(self, name: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(name))
        except InferenceServerException:
            return False

    async def ready_models(self) -> set[str]:
        index = await self._client.get_model_repository_index(as_json=True)
        return {m["name"] for m in index.get("models", []) if m.get("state") == "READY"}

    async def counts(self, name: str) -> Counts | None:
        """The model's counters now; None when they cannot be read (Triton unreachable, the model
        not loaded, the metrics endpoint down): no reading, which is not a reading of zeros."""
        try:
            stats = await self._client.get_inference_statistics(name, as_json=True, client_timeout=5.0)
        except InferenceServerException:
            return None
        failures = await self.failures()
        if failures is None:
            return None
        requests = failure = success_ns = 0
        for model in stats.get("model_stats", []):
            inference = model.get("inference_stats", {})
            requests += int(inference.get("success", {}).get("count", 0))
            failure += int(inference.get("fail", {}).get("count", 0))
            success_ns += int(inference.get("success", {}).get("ns", 0))
        # Requests Triton itself failed are not in its success count; ours are (and in our counter).
        return Counts(requests=requests + failure, failure=failure + failures.get(name, 0), success_ns=success_ns)

    async def labels(self, name: str) -> list[str]:
        return classifier_serving.labels_from_config(await self._client.get_model_config(name, as_json=True))

    async def predict(self, name: str, texts: list[str], *, timeout_s: float = 30.0) -> list[ClassOutput]:
        labels = await self.labels(name)
        text = grpcclient.InferInput(classifier_serving.TEXT_INPUT, [len(texts), 1], "BYTES")
        text.set_data_from_numpy(classifier_serving.text_batch(texts))
        outputs = [grpcclient.InferRequestedOutput(n) for n in classifier_serving.OUTPUTS]
        result = await self._client.infer(name, [text], outputs=outputs, client_timeout=timeout_s)
        return classifier_serving.read_outputs(result.as_numpy, labels)

    # ---- the causal-LM model: one base, an adapter per version --------------------------------

    async def parameters(self, name: str) -> dict[str, str]:
        """The string parameters of a loaded model's configuration."""
        config = await self._client.get_model_config(name, as_json=True, client_timeout=10.0)
        parameters = config.get("config", config).get("parameters", {})
        return {key: str(value.get("string_value", "")) for key, value in parameters.items()}

    async def generation_counts(self, adapter: str) -> tuple[float, ...] | None:
        """An adapter's counters now (``generation_counters``); None when the metrics endpoint
        cannot be read: no reading, which is not a reading of zeros."""
        text = await self._metrics_text()
        return None if text is None else generation_counters(text, adapter)

    async def generate(self, model: str, inputs: Mapping[str, Any], *, timeout_s: float) -> SmokeGeneration:
        """One streamed generation (``inputs``: ``lm_serving.generation_inputs``) read to its final
        response (the one with a finish reason). An error response ends it as a generation with
        ``error`` set; a stream that breaks (Triton unreachable: ``unreachable``) or outlives
        ``timeout_s`` (``TimeoutError``) raises."""
        tensors = []
        for input_name, array in inputs.items():
            tensor = grpcclient.InferInput(input_name, list(array.shape), lm_serving.TRITON_DATATYPES[input_name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": tensors}

        text: list[str] = []
        finish, tokens, chunks = "", 0, 0
        responses = self._client.stream_infer(one_request(), stream_timeout=timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                async for result, error in responses:
                    if error is not None:
                        return SmokeGeneration("".join(text), finish, tokens, chunks, error=first_message(error))
                    chunks += 1
                    chunk = lm_serving.read_chunk(result.as_numpy)
                    text.append(chunk.text)
                    tokens = max(tokens, chunk.completion_tokens)
                    if chunk.final:  # the contract: the last response carries the finish reason
                        finish = chunk.finish_reason
                        break
        finally:
            responses.cancel()  # a no-op once the stream ended; else it frees the server's slot
        return SmokeGeneration("".join(text), finish, tokens, chunks)


def first_message(error: BaseException) -> str:
    """The first line of an error's message (tritonclient's exceptions have ``message()``)."""
    message = error.message() if isinstance(error, InferenceServerException) else str(error)
    text = (message or type(error).__name__).strip()
    return text.splitlines()[0][:500] if text else type(error).__name__
