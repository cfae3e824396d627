"""The single-active lease on the real broker (#18): one of several replicas holds it, a standby
joining never takes it from a healthy holder, and it passes to a standby when the holder leaves."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from llmops_config import PlatformSettings
from llmops_events.topics import DEPLOYMENTS
from llmops_messaging.lease import ActiveLease

pytestmark = pytest.mark.integration


def _never_lost() -> None:
    raise AssertionError("a healthy holder lost the lease")


async def test_one_holder_sticky_on_join_handed_on_when_it_leaves(kafka_settings: PlatformSettings) -> None:
    group = f"lease-{uuid.uuid4().hex[:8]}"

    def lease() -> ActiveLease:
        return ActiveLease(kafka_settings, service="test", topic=DEPLOYMENTS, group_id=group, on_lost=_never_lost)

    first, second, third = lease(), lease(), lease()
    tasks: list[asyncio.Task[None]] = []
    try:
        await first.acquire(timeout=120)
        assert first.held

        waiting = asyncio.get_running_loop().create_task(second.acquire())
        tasks.append(waiting)
        # The join of the second member makes a rebalance: the first keeps the lease through it.
        seen = first.assignments
        async with asyncio.timeout(120):
            while first.assignments == seen or second.assignments == 0:
                await asyncio.sleep(0.1)
        assert first.held and not second.held and not waiting.done()

        # A third member joins: still sticky.
        also_waiting = asyncio.get_running_loop().create_task(third.acquire())
        tasks.append(also_waiting)
        seen = first.assignments
        async with asyncio.timeout(120):
            while first.assignments == seen or third.assignments == 0:
                await asyncio.sleep(0.1)
        assert first.held and not second.held and not third.held

        # The holder leaves: exactly one standby takes over.
        await first.release()
        done, _ = await asyncio.wait({waiting, also_waiting}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        assert sorted(member.held for member in (second, third)) == [False, True]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for member in (first, second, third):
            await member.release()
