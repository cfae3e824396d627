"""One active replica of a singleton service, elected by Kafka itself (docs/scale-out.md).

Every replica joins one consumer group (``<service>-active``) on a one-partition topic it may read;
the member the group assigns that partition to is the active one, the others wait as standbys. The
group coordinator detects a dead or hung member (no heartbeat within ``session_timeout_ms``) and
hands the partition to a standby; no home-made election, no extra store.

The assignment is sticky: a member that holds the lease says so in its join metadata and keeps it,
so a standby joining (a rollout, a scale-up) never moves the lease away from a healthy holder. A
holder that is told it no longer holds the partition (it was expelled after missing heartbeats)
has lost the lease and calls ``on_lost``, by default stopping its own process (SIGTERM: a clean
shutdown; the orchestrator restarts it, as a standby). Nothing reads the partition's messages: it
is paused once assigned.

The lease is only as exclusive as the group membership: an active replica that stalls past the
session timeout without knowing it may overlap with its successor until its next heartbeat. The
work it guards is idempotent (derived event ids, re-deciding from the same state), which is what
makes that window harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options

logger = logging.getLogger(__name__)

_HOLDING = b"holding"


def stop_this_process() -> None:
    """The default ``on_lost``: a clean stop (the orchestrator starts the process again, as a standby)."""
    os.kill(os.getpid(), signal.SIGTERM)


class ActiveLease:
    """``await acquire()`` returns once this replica is the active one; ``release()`` hands it on."""

    def __init__(
        self,
        platform: PlatformSettings,
        *,
        service: str,
        topic: str,
        group_id: str | None = None,
        session_timeout_ms: int = 10_000,
        on_lost: Callable[[], None] = stop_this_process,
    ) -> None:
        self._options = kafka_client_options(platform, service=service)
        self.topic = self._options.topic(topic)  # with the platform's topic-name prefix
        self.group_id = group_id or f"{service}-active"
        self.held = False
        self.assignments = 0
        """Assignments this member has received (one per rebalance of the group it took part in)."""
        self._service = service
        self._session_timeout_ms = session_timeout_ms
        self._on_lost = on_lost
        self._acquired = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._poller: asyncio.Task[None] | None = None

    async def acquire(self, *, timeout: float | None = None) -> None:
        """Join the group and wait (as a standby, for as long as it takes unless ``timeout``) until
        this replica is assigned the lease partition."""
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                **self._options.aiokafka(client_id=f"{self._service}-lease"),
                group_id=self.group_id,
                enable_auto_commit=False,
                session_timeout_ms=self._session_timeout_ms,
                heartbeat_interval_ms=max(self._session_timeout_ms // 4, 500),
                partition_assignment_strategy=(_sticky_assignor(self),),
            )
            self._consumer.subscribe([self.topic], listener=_Listener(self))
            await self._consumer.start()
            # Polling keeps the member within max.poll.interval (the partition is paused: no data).
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        logger.info("waiting for the active lease", extra={"consumer_group": self.group_id})
        async with asyncio.timeout(timeout):
            await self._acquired.wait()
        logger.info("holding the active lease", extra={"consumer_group": self.group_id})

    async def release(self) -> None:
        """Leave the group: a standby is assigned the lease at once (not after a session timeout)."""
        self.held = False
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _poll(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broker hiccup: aiokafka reconnects; the coordinator decides the lease
                logger.exception("polling the lease group failed; retrying", extra={"consumer_group": self.group_id})
                await asyncio.sleep(1)

    def _assigned(self, partitions: set[TopicPartition]) -> None:
        held = bool(partitions)
        self.assignments += 1
        if self._consumer is not None and partitions:
            self._consumer.pause(*partitions)
        if self.held and not held:
            self.held = False
            logger.error("the active lease was lost", extra={"consumer_group": self.group_id})
            self._on_lost()
            return
        self.held = held
        if held:
            self._acquired.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, lease: ActiveLease) -> None:
        self._lease = lease

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Every rebalance revokes everything first (eager protocol); what counts is the new assignment."""

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._lease._assigned(set(assigned))


def _sticky_assignor(lease: ActiveLease) -> type[AbstractPartitionAssignor]:
    """An assignor class for ``lease`` (aiokafka calls assignors' class methods): the lease topic's
    partitions all go to the member that says it holds them, else to the first member by id."""

    class StickyLeaseAssignor(AbstractPartitionAssignor):
        name = "llmops-lease"
        version = 0

        @classmethod
        def assign(
            cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            holders = sorted(member for member, metadata in members.items() if metadata.user_data == _HOLDING)
            owner = (holders or sorted(members))[0]
            topics: dict[str, list[int]] = defaultdict(list)
            for metadata in members.values():
                for topic in metadata.subscription:
                    topics[topic] = sorted(cluster.partitions_for_topic(topic) or ())
            return {
                member: ConsumerProtocolMemberAssignment(
                    cls.version, sorted(topics.items()) if member == owner else [], b""
                )
                for member in members
            }

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(cls.version, list(topics), _HOLDING if lease.held else b"")

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            pass

    return StickyLeaseAssignor
