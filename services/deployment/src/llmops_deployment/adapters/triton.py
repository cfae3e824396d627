"""Triton over its gRPC API: explicit model control, statistics and the smoke test."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import tritonclient.grpc.aio as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from llmops_models.kinds.classifier import serving as classifier_serving
from llmops_models.kinds.classifier.serving import ClassOutput

FAILURES_METRIC = "llmops_model_request_failures_total"
"""Must match the kinds' Triton ``model.py``."""


@dataclass(frozen=True, slots=True)
class Counts:
    """Cumulative request counts of one loaded model (reset when it is reloaded). ``success``
    includes failed requests (Triton 2.51 counts error responses as successes); ``failure``
    comes from the counter our ``model.py`` exports on Triton's metrics endpoint."""

    success: int = 0
    failure: int = 0
    success_ns: int = 0


Prediction = ClassOutput


class TritonControl:
    def __init__(self, url: str, metrics_url: str) -> None:
        self._client = grpcclient.InferenceServerClient(url)
        self._http = httpx.AsyncClient(timeout=5.0)
        self._metrics_url = metrics_url

    async def close(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def failures(self) -> dict[str, int]:
        """Triton model name → requests it answered with an error (``model.py``'s counter)."""
        try:
            text = (await self._http.get(self._metrics_url)).text
        except httpx.HTTPError:
            return {}
        found: dict[str, int] = {}
        for family in text_string_to_metric_families(text):
            if family.name == FAILURES_METRIC.removesuffix("_total"):
                for sample in family.samples:
                    if sample.name == FAILURES_METRIC:
                        found[sample.labels.get("model", "")] = int(sample.value)
        return found

    async def is_live(self) -> bool:
        try:
            return bool(await self._client.is_server_live())
        except InferenceServerException:
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

    async def counts(self, name: str) -> Counts:
        try:
            stats = await self._client.get_inference_statistics(name, as_json=True)
        except InferenceServerException:
            return Counts()
        success = failure = success_ns = 0
        for model in stats.get("model_stats", []):
            inference = model.get("inference_stats", {})
            success += int(inference.get("success", {}).get("count", 0))
            failure += int(inference.get("fail", {}).get("count", 0))
            success_ns += int(inference.get("success", {}).get("ns", 0))
        failure += (await self.failures()).get(name, 0)
        return Counts(success=max(success - failure, 0), failure=failure, success_ns=success_ns)

    async def labels(self, name: str) -> list[str]:
        return classifier_serving.labels_from_config(await self._client.get_model_config(name, as_json=True))

    async def predict(self, name: str, texts: list[str], *, timeout_s: float = 30.0) -> list[ClassOutput]:
        labels = await self.labels(name)
        text = grpcclient.InferInput(classifier_serving.TEXT_INPUT, [len(texts), 1], "BYTES")
        text.set_data_from_numpy(classifier_serving.text_batch(texts))
        outputs = [grpcclient.InferRequestedOutput(n) for n in classifier_serving.OUTPUTS]
        result = await self._client.infer(name, [text], outputs=outputs, client_timeout=timeout_s)
        return classifier_serving.read_outputs(result.as_numpy, labels)
