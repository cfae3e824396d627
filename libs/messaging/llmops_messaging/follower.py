"""Reading every partition of a topic without a consumer group's offsets: for state folded from
all of a topic's events (replayed from the beginning on every start) or for watching what
happens from now on (from the end).

Consumer groups are for work shared between replicas, each event handled once; a follower is
for every replica seeing every event, such as each gateway knowing every deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import DecodeError, Envelope, KafkaRecord, decode
from llmops_messaging.admin import topic_partitions

logger = logging.getLogger(__name__)

EventCallback = Callable[[Envelope[Any]], Awaitable[None] | None]


class TopicFollower:
    """Calls ``on_event`` with each decodable event of ``topic``, in order per partition, from
    its beginning or its end; an undecodable message is skipped with a warning (the topic's
    consuming services dead-letter it)."""

    def __init__(
        self,
        platform: PlatformSettings,
        topic: str,
        *,
        client_id: str,
        service: str | None = None,
        on_event: EventCallback,
        start_at: Literal["beginning", "end"],
        max_records: int = 2000,
    ) -> None:
        self.caught_up = asyncio.Event()
        """Set once the events present at ``start`` were read (at once when starting at the end)."""
        # The service (its Kafka principal) defaults to the client id: "gateway", "deployment".
        self._options = kafka_client_options(platform, service=service or client_id)
        self.topic = self._options.topic(topic)
        self._client_id = client_id
        self._on_event = on_event
        self._start_at = start_at
        self._max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self._follower: asyncio.Task[None] | None = None
        self._handled: dict[TopicPartition, int] = {}
        """Per partition, the offset after the last message handed to ``on_event`` (what ``sync`` waits on)."""

    async def start(self, *, timeout: float = 30.0, follow: bool = True) -> None:
        """Position on every partition; from the beginning, read up to the current end before
        returning; then keep following (unless ``follow`` is false: a one-off replay)."""
        partitions = [TopicPartition(self.topic, p) for p in await topic_partitions(self._options, self.topic)]
        # A group id without subscribing or committing: aiokafka's group-less consumer has close bugs.
        self._consumer = AIOKafkaConsumer(
            **self._options.aiokafka(client_id=self._client_id),
            group_id=f"{self._client_id}-follower-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self._start_at == "beginning" else "latest",
        )
        await self._consumer.start()
        try:
            self._consumer.assign(partitions)
            if self._start_at == "end":
                await self._consumer.seek_to_end(*partitions)
            else:
                await self._consumer.seek_to_beginning(*partitions)
                end = await self._consumer.end_offsets(partitions) if partitions else {}
                async with asyncio.timeout(timeout):
                    while not await self._reached(end):
                        await self._read_once(timeout_ms=500)
        except BaseException:
            await self._consumer.stop()
            self._consumer = None
            raise
        self.caught_up.set()
        if follow:
            self._follower = asyncio.get_running_loop().create_task(self._follow())
        else:
            await self._consumer.stop()
            self._consumer = None

    async def sync(self, *, timeout: float) -> None:
        """Wait until every event on the topic when this is called has been handed to ``on_event``:
        a replica about to act on the folded state (evaluation comparing against the champion) then
        sees every event published before it acts, not only those its reader had got to. Raises
        ``TimeoutError`` after ``timeout`` seconds."""
        if self._consumer is None or self._follower is None:
            raise RuntimeError("sync() needs a started, following reader")
        partitions = list(self._consumer.assignment())
        end = await self._consumer.end_offsets(partitions) if partitions else {}
        async with asyncio.timeout(timeout):
            while any(self._handled.get(partition, 0) < offset for partition, offset in end.items()):
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _reached(self, end: dict[TopicPartition, int]) -> bool:
        assert self._consumer is not None
        for partition, offset in end.items():
            if await self._consumer.position(partition) < offset:
                return False
        return True

    async def _follow(self) -> None:
        while True:
            try:
                await self._read_once(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broker hiccup must not end the follower; aiokafka reconnects
                logger.exception("reading a topic failed; retrying", extra={"topic": self.topic})
                await asyncio.sleep(1)

    async def _read_once(self, *, timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        for messages in batches.values():
            for message in messages:
                record = KafkaRecord(message.key, message.value or b"", tuple(message.headers or ()))
                try:
                    envelope: Envelope[Any] = decode(record)
                except DecodeError as error:
                    logger.warning("skipping an undecodable event", extra={"topic": self.topic, "reason": error.reason})
                    continue
                result = self._on_event(envelope)
                if inspect.isawaitable(result):
                    await result
        # Positions only move when getmany returns messages, so after handling them the position
        # is how far ``on_event`` has got (empty or compacted-away offsets included).
        for partition in self._consumer.assignment():
            self._handled[partition] = await self._consumer.position(partition)
