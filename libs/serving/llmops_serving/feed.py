"""Follow the deployments topic from its first event and keep a :class:`DeploymentBook` current.

Every reader of deployment state (the gateway's router, the deployment service's reconciler,
monitoring's champion lookup) replays the whole topic on start instead of resuming from a
committed offset: the state is the fold of all events, not of the ones since the last run.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_events import DecodeError, Envelope, KafkaRecord, decode
from llmops_events.topics import DEPLOYMENTS
from llmops_messaging.admin import topic_partitions
from llmops_serving.state import DeploymentBook, ModelDeployment

logger = logging.getLogger(__name__)

ChangeCallback = Callable[[ModelDeployment, Envelope[Any]], Awaitable[None] | None]


class DeploymentFeed:
    """A group-less reader of the deployments topic; ``book`` holds the folded state."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        on_change: ChangeCallback | None = None,
        topic: str = DEPLOYMENTS,
    ) -> None:
        self.book = DeploymentBook()
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._on_change = on_change
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._follower: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()

    def get(self, model_name: str) -> ModelDeployment | None:
        return self.book.get(model_name)

    async def start(self, *, timeout: float = 30.0, follow: bool = True) -> None:
        """Replay the topic up to its current end (so ``book`` is complete), then keep following
        it (unless ``follow`` is false: a one-off replay, e.g. for the topic's only writer)."""
        partitions = [TopicPartition(self._topic, p) for p in await topic_partitions(self._bootstrap, self._topic)]
        # A group id without subscribing or committing: aiokafka's group-less consumer has close bugs.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=f"{self._client_id}-feed-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        try:
            self._consumer.assign(partitions)
            await self._consumer.seek_to_beginning(*partitions)
            end = await self._consumer.end_offsets(partitions) if partitions else {}
            async with asyncio.timeout(timeout):
                while not await self._reached(end):
                    await self._read_once(timeout_ms=500)
        except BaseException:
            await self._consumer.stop()
            raise
        self.caught_up.set()
        if follow:
            self._follower = asyncio.get_running_loop().create_task(self._follow())
        else:
            await self._consumer.stop()
            self._consumer = None

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._consumer is not None:
            await self._consumer.stop()

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
            except Exception:  # a broker hiccup must not end the feed; aiokafka reconnects
                logger.exception("reading the deployments topic failed; retrying")
                await asyncio.sleep(1)

    async def _read_once(self, *, timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for messages in batches.values():
            for message in messages:
                await self._apply(KafkaRecord(message.key, message.value or b"", tuple(message.headers or ())))

    async def _apply(self, record: KafkaRecord) -> None:
        try:
            envelope: Envelope[Any] = decode(record)
        except DecodeError as error:  # the topic's owner dead-letters it; readers skip it
            logger.warning("skipping an undecodable deployment event", extra={"reason": error.reason})
            return
        state = self.book.apply(envelope.data)
        if state is not None and self._on_change is not None:
            result = self._on_change(state, envelope)
            if inspect.isawaitable(result):
                await result
