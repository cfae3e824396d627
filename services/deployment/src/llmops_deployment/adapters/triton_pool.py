"""Every Triton serving the model repository, driven as one (``llmops_serving.triton_pool``).

A version is loaded, smoke-tested and unloaded on each member that answers; counters are summed
over them; a model is ready when it is ready on every member. With one member (the default) each
call is that server's own. A member that cannot be reached is left out while another answers: it
loads the repository when it starts (``--load-model=*`` in the chart) and the reconciler loads
the rest once it answers again. When none answers, the first member's error is the pool's, so
callers tell an unreachable Triton from a failing one exactly as with one server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from llmops_deployment.adapters.triton import Counts, Prediction, TritonControl
from llmops_deployment.domain.generation import SmokeGeneration
from llmops_deployment.errors import TritonUnavailable
from llmops_serving.triton_pool import TritonEndpoint

logger = logging.getLogger(__name__)

T = TypeVar("T")

Discover = Callable[[], list[TritonEndpoint]]
"""The members now (blocking: it may look a name up in DNS)."""


class TritonPool:
    def __init__(
        self,
        discover: Discover,
        *,
        refresh_s: float = 15.0,
        connect: Callable[[TritonEndpoint], TritonControl] | None = None,
        liveness_timeout_s: float = 2.0,
    ) -> None:
        self._discover = discover
        self._refresh_s = refresh_s
        self._connect = connect or (lambda e: TritonControl(e.grpc_url, e.metrics_url))
        self._liveness_timeout_s = liveness_timeout_s
        self._members: dict[TritonEndpoint, TritonControl] = {}
        self._refreshed_at = float("-inf")
        self._refresh_lock = asyncio.Lock()

    @property
    def endpoints(self) -> list[TritonEndpoint]:
        return list(self._members)

    async def refresh(self, *, force: bool = False) -> None:
        """Look the members up again (at most every ``refresh_s`` unless ``force``): clients for
        new ones, closed clients for those gone. A lookup that finds none keeps the members known."""
        async with self._refresh_lock:
            if not force and time.monotonic() - self._refreshed_at < self._refresh_s:
                return
            found = await asyncio.to_thread(self._discover)
            self._refreshed_at = time.monotonic()
            if not found:
                return
            for gone in [e for e in self._members if e not in found]:
                logger.info("a Triton left the pool", extra={"triton": gone.grpc_url})
                await self._members.pop(gone).close()
            for endpoint in found:
                if endpoint not in self._members:
                    if self._members:
                        logger.info("a Triton joined the pool", extra={"triton": endpoint.grpc_url})
                    self._members[endpoint] = self._connect(endpoint)

    async def close(self) -> None:
        for member in self._members.values():
            await member.close()
        self._members.clear()

    async def _all(self) -> list[TritonControl]:
        await self.refresh()
        return list(self._members.values())

    async def _answering(self) -> list[TritonControl]:
        """The members that answer their liveness check now; the first member alone when none
        does (its call then fails as one server's would)."""
        members = await self._all()
        if not members:
            raise TritonUnavailable("the Triton pool has no member (its name resolves to no address)")
        if len(members) == 1:
            return members
        live = await asyncio.gather(*(m.is_live(self._liveness_timeout_s) for m in members))
        answering = [m for m, ok in zip(members, live, strict=True) if ok]
        return answering or members[:1]

    async def _each(self, call: Callable[[TritonControl], Awaitable[T]]) -> list[T]:
        """``call`` on every answering member at once; the first failure is raised after all ended."""
        return await _all_ended([call(m) for m in await self._answering()])

    # ---- the TritonControl surface, over the pool ----------------------------------------------

    async def is_live(self, timeout_s: float = 5.0) -> bool:
        """Whether any member answers its liveness check."""
        members = await self._all()
        return any(await asyncio.gather(*(m.is_live(timeout_s) for m in members))) if members else False

    async def load(self, name: str) -> None:
        """Load ``name`` where it is not ready; where it is ready everywhere, on every member (an
        explicit load of a loaded model reloads it, as with one server)."""
        members = await self._answering()
        if len(members) > 1:
            ready = await asyncio.gather(*(m.is_ready(name) for m in members))
            missing = [m for m, ok in zip(members, ready, strict=True) if not ok]
            members = missing or members
        await _all_ended([m.load(name) for m in members])

    async def unload(self, name: str) -> None:
        await self._each(lambda m: m.unload(name))

    async def is_ready(self, name: str) -> bool:
        return all(await self._each(lambda m: m.is_ready(name)))

    async def ready_models(self) -> set[str]:
        """The models ready on every answering member."""
        found = await self._each(lambda m: m.ready_models())
        return set.intersection(*found) if found else set()

    async def failures(self) -> dict[str, int] | None:
        readings = [r for r in await self._each(lambda m: m.failures()) if r is not None]
        if not readings:
            return None
        summed: dict[str, int] = {}
        for reading in readings:
            for model, count in reading.items():
                summed[model] = summed.get(model, 0) + count
        return summed

    async def counts(self, name: str) -> Counts | None:
        """The model's counters summed over the members that have a reading (None: no member has)."""
        readings = [r for r in await self._each(lambda m: m.counts(name)) if r is not None]
        if not readings:
            return None
        return Counts(
            requests=sum(r.requests for r in readings),
            failure=sum(r.failure for r in readings),
            success_ns=sum(r.success_ns for r in readings),
        )

    async def generation_counts(self, adapter: str) -> tuple[float, ...] | None:
        readings = [r for r in await self._each(lambda m: m.generation_counts(adapter)) if r is not None]
        if not readings:
            return None
        return tuple(sum(values) for values in zip(*readings, strict=True))

    async def labels(self, name: str) -> list[str]:
        return await (await self._answering())[0].labels(name)

    async def parameters(self, name: str) -> dict[str, str]:
        return await (await self._answering())[0].parameters(name)

    async def predict(self, name: str, texts: list[str], *, timeout_s: float = 30.0) -> list[Prediction]:
        """The smoke test's batch on every member (each must serve it); the first member's answer."""
        return (await self._each(lambda m: m.predict(name, texts, timeout_s=timeout_s)))[0]

    async def generate(self, model: str, inputs: Mapping[str, Any], *, timeout_s: float) -> SmokeGeneration:
        """One generation on every member; a member's failed generation is the answer when there
        is one (the smoke test must see it), else the first member's."""
        generations = await self._each(lambda m: m.generate(model, inputs, timeout_s=timeout_s))
        return next((g for g in generations if g.error), generations[0])


async def _all_ended(calls: list[Awaitable[T]]) -> list[T]:
    """The results of ``calls`` run at once; the first failure is raised once every call ended (no
    member is left half-way through a load while another's error propagates)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
