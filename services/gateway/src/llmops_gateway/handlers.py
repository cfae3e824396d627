"""The protocol-neutral core (the gRPC adapter is a thin layer over it): route validated items,
call the model backend once per route (a stream per generation), recover from a failed canary or a
just-unloaded version, and queue one inference log per served item or generation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing

from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.domain.generation import (
    CANCELLED,
    ERROR,
    Chunk,
    GenerateItem,
    GenerationClock,
    ServedChunk,
    ServedGeneration,
)
from llmops_gateway.domain.models import PredictItem, ServedPrediction
from llmops_gateway.domain.ports import GenerationLog, Generator, InferenceLog, Predictor
from llmops_gateway.domain.routing import CAUSAL_LM, Lookup, group_by_route, resolve_model, route_item
from llmops_gateway.errors import DeadlineExceeded, GatewayError, InvalidRequest, ModelNotLoaded, Overloaded
from llmops_serving import Route, triton_name

BASE_VERSION = 0
"""The version a generation on the base model alone (no adapter) is reported and logged with."""

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
        if len(groups) == 1:  # the common case: awaited in place, no task per call
            ((route, indexes),) = groups.items()
            answered = [await self._serve(route, indexes, items, remaining, recover=True)]
        else:
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
        return _champion_of(self._lookup, route)


class GenerationCore:
    """Generations on the causal-LM backend: one stream per request, routed to the champion or
    canary adapter of its model as ``Predict`` is. Before the first chunk a failed canary falls back
    to the champion and a just-unloaded version is re-routed; after it, a backend failure ends the
    stream with the finish reason ``error`` (the text already sent stands)."""

    def __init__(
        self,
        *,
        generator: Generator,
        log: GenerationLog,
        lookup: Lookup,
        known_models: Callable[[], Sequence[str]],
        default_model: str,
        base_model_alias: str,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._generator = generator
        self._log = log
        self._lookup = lookup
        self._known_models = known_models
        self._default_model = default_model
        self._base_alias = base_model_alias
        self._metrics = metrics
        self._clock = clock

    def route(self, item: GenerateItem) -> Route:
        """The version that generates for ``item``; the base alias (if configured) is the base model."""
        known = list(self._known_models())
        if self._base_alias and self._base_alias not in known:
            known.append(self._base_alias)
        model = resolve_model(item.model, default_model=self._default_model, known=known)
        if self._base_alias and model == self._base_alias:
            return Route(model, BASE_VERSION, "champion")
        return route_item(item.request_id, model, self._lookup, kind=CAUSAL_LM)

    async def generate(self, item: GenerateItem, *, remaining: Remaining) -> AsyncGenerator[ServedChunk, None]:
        """Stream ``item``'s generation, ending with the chunk that has the finish reason; the
        generation is logged when it finishes or is cancelled (the caller went away, or its deadline
        passed). Close it with ``contextlib.aclosing`` so the backend stream is cancelled at once."""
        route = self.route(item)
        clock = GenerationClock(started=self._clock())
        parts: list[str] = []
        last: ServedChunk | None = None
        outcome: str | None = None
        try:
            async with aclosing(self._stream(route, item, remaining)) as chunks:
                async for served in chunks:
                    if served.chunk.text:
                        clock.saw_text(self._clock())
                        parts.append(served.chunk.text)
                    last = served
                    yield served
                    if served.chunk.final:
                        outcome = served.chunk.finish_reason
                        return
        except (asyncio.CancelledError, GeneratorExit, DeadlineExceeded):
            outcome = CANCELLED if last is not None else None
            raise
        finally:
            if outcome is not None and last is not None:
                self._record(item, last, "".join(parts), outcome, clock)

    async def _stream(
        self, route: Route, item: GenerateItem, remaining: Remaining
    ) -> AsyncGenerator[ServedChunk, None]:
        recover = True
        while True:
            timeout = remaining()
            if timeout is not None and timeout <= 0:
                raise DeadlineExceeded("the deadline expired before the model was called")
            produced: Chunk | None = None
            chunks = self._generator.generate(adapter=adapter_of(route), item=item, timeout=timeout)
            try:
                async with aclosing(chunks):
                    async for chunk in chunks:
                        produced = chunk
                        yield ServedChunk(chunk, route.model_name, route.version, route.role)
                return
            except (DeadlineExceeded, InvalidRequest, Overloaded):
                raise
            except GatewayError as error:
                if produced is None:
                    next_route = self._recovery(route, item, error) if recover else None
                    if next_route is None:
                        raise
                    route, recover = next_route, False
                    continue
                failed = Chunk("", ERROR, produced.prompt_tokens, produced.completion_tokens)
            # The caller already has part of the answer: end it, saying so, rather than fail the call.
            yield ServedChunk(failed, route.model_name, route.version, route.role)
            return

    def _recovery(self, route: Route, item: GenerateItem, error: GatewayError) -> Route | None:
        """Where to try again after ``error`` before anything was generated; None: nowhere."""
        if isinstance(error, ModelNotLoaded):
            current = self.route(item)
            if current != route:
                self._metrics.reroutes.labels(route.model_name).inc()
                return current
        champion = _champion_of(self._lookup, route)
        if route.role == "canary" and champion is not None:
            self._metrics.canary_fallbacks.labels(route.model_name).inc()
            return champion
        return None

    def _record(self, item: GenerateItem, last: ServedChunk, output: str, outcome: str, clock: GenerationClock) -> None:
        chunk = last.chunk
        served = ServedGeneration(
            item=item,
            output=output,
            finish_reason=outcome,
            prompt_tokens=chunk.prompt_tokens,
            completion_tokens=chunk.completion_tokens,
            model_name=last.model_name,
            model_version=last.model_version,
            route=last.route,
            ttft_s=clock.ttft_s,
            tokens_per_s=clock.tokens_per_s(chunk.completion_tokens),
        )
        self._log.record_generation(served, latency_ms=(self._clock() - clock.started) * 1000)
        version = str(last.model_version)
        self._metrics.generations.labels(last.model_name, version, last.route, outcome).inc()
        self._metrics.completion_tokens.labels(last.model_name, version).inc(chunk.completion_tokens)
        if clock.ttft_s is not None:
            self._metrics.time_to_first_token.labels(last.model_name, version).observe(clock.ttft_s)


def adapter_of(route: Route) -> str:
    """The LoRA adapter of a routed version on the causal-LM model; empty for the base model."""
    return "" if route.version == BASE_VERSION else triton_name(route.model_name, route.version)


def _champion_of(lookup: Lookup, route: Route) -> Route | None:
    deployment = lookup(route.model_name)
    if deployment is None or deployment.champion_version in (None, route.version):
        return None
    assert deployment.champion_version is not None
    return Route(route.model_name, deployment.champion_version, "champion")
