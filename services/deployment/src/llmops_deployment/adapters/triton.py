"""Triton over its gRPC API: explicit model control, statistics and the smoke test."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import httpx
import tritonclient.grpc.aio as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

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


class TritonControl:
    def __init__(self, url: str, metrics_url: str) -> None:
        self._client = grpcclient.InferenceServerClient(url)
        self._http = httpx.AsyncClient(timeout=5.0)
        self._metrics_url = metrics_url

    async def close(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def failures(self) -> dict[str, int] | None:
        """Triton model name → requests it answered with an error (``model.py``'s counter); None
        when the metrics endpoint cannot be read."""
        try:
            response = await self._http.get(self._metrics_url)
            response.raise_for_status()
            text = response.text
        except httpx.HTTPError:
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
