"""The protocol-neutral core (the gRPC adapter is a thin layer over it): route validated items,
call the model backend once per route, recover from a failed canary or a just-unloaded version,
and queue one inference log per served item."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.models import PredictItem, ServedPrediction
from llmops_gateway.domain.ports import InferenceLog, Predictor
from llmops_gateway.domain.routing import Lookup, group_by_route
from llmops_gateway.errors import DeadlineExceeded, GatewayError, InvalidRequest, ModelNotLoaded
from llmops_serving import Route

Remaining = Callable[[], float | None]
"""Seconds left before the caller's deadline (None: no deadline)."""


class InferenceCore:
    def __init__(
        self,
        *,
        predictor: Predictor,
        log: InferenceLog,
        lookup: Lookup,
        known_models: Callable[[], Sequence[str]],
        default_model: str,
        metrics: GatewayMetrics,
    ) -> None:
        self._predictor = predictor
        self._log = log
        self._lookup = lookup
        self._known_models = known_models
        self._default_model = default_model
        self._metrics = metrics

    def routes(self, items: Sequence[PredictItem]) -> dict[Route, list[int]]:
        return group_by_route(items, default_model=self._default_model, known=self._known_models(), lookup=self._lookup)

    async def predict(self, items: Sequence[PredictItem], *, remaining: Remaining) -> list[ServedPrediction]:
        """Serve every item (answers in request order); raises ``GatewayError``."""
        started = time.perf_counter()
        groups = self.routes(items)
        answered = await asyncio.gather(
            *(self._serve(route, indexes, items, remaining, recover=True) for route, indexes in groups.items())
        )
        served: list[ServedPrediction | None] = [None] * len(items)
        for pairs in answered:
            for index, prediction in pairs:
                served[index] = prediction
        latency_ms = (time.perf_counter() - started) * 1000
        complete = [s for s in served if s is not None]
        for prediction in complete:
            self._log.record(prediction, latency_ms=latency_ms)
            self._metrics.predictions.labels(
                prediction.model_name, str(prediction.model_version), prediction.route
            ).inc()
        return complete

    async def _serve(
        self, route: Route, indexes: list[int], items: Sequence[PredictItem], remaining: Remaining, *, recover: bool
    ) -> list[tuple[int, ServedPrediction]]:
        timeout = remaining()
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("the deadline expired before the model was called")
        try:
            predictions = await self._predictor.predict(
                route.model_name, route.version, [items[i].text for i in indexes], timeout=timeout
            )
        except (DeadlineExceeded, InvalidRequest):
            raise
        except GatewayError as error:
            if not recover:
                raise
            if isinstance(error, ModelNotLoaded):
                # Right after a promotion or rollback Triton may have unloaded the routed version
                # before this process read the event: route again with the state as it is now.
                regrouped = self.routes([items[i] for i in indexes])
                if list(regrouped) != [route]:
                    self._metrics.reroutes.labels(route.model_name).inc()
                    answered = await asyncio.gather(
                        *(
                            self._serve(new_route, [indexes[j] for j in sub], items, remaining, recover=False)
                            for new_route, sub in regrouped.items()
                        )
                    )
                    return [pair for pairs in answered for pair in pairs]
            champion = self._champion_of(route)
            if route.role == "canary" and champion is not None:
                # A failing canary must not fail the caller: the champion answers instead.
                self._metrics.canary_fallbacks.labels(route.model_name).inc()
                return await self._serve(champion, indexes, items, remaining, recover=False)
            raise
        return [
            (index, ServedPrediction(items[index], prediction, route.model_name, route.version, route.role))
            for index, prediction in zip(indexes, predictions, strict=True)
        ]

    def _champion_of(self, route: Route) -> Route | None:
        deployment = self._lookup(route.model_name)
        if deployment is None or deployment.champion_version in (None, route.version):
            return None
        assert deployment.champion_version is not None
        return Route(route.model_name, deployment.champion_version, "champion")
