"""Mean confidence per served version, read from the inference log (for canary judgement)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_events import DecodeError, KafkaRecord, decode
from llmops_events.topics import INFERENCE
from llmops_events.v1 import InferenceLogged
from llmops_messaging.admin import topic_partitions

logger = logging.getLogger(__name__)


class ConfidenceTracker:
    """Follows ``llmops.inference.v1`` from its end; sums confidences per (model, version)."""

    def __init__(self, bootstrap_servers: str, *, client_id: str = "deployment") -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._sums: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0.0])
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def totals(self, model_name: str, version: int) -> tuple[int, float]:
        """(requests logged, sum of their confidences) since the tracker started."""
        count, total = self._sums.get((model_name, version), (0, 0.0))
        return int(count), float(total)

    async def start(self) -> None:
        partitions = [TopicPartition(INFERENCE, p) for p in await topic_partitions(self._bootstrap, INFERENCE)]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-confidence",
            group_id=f"{self._client_id}-confidence-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
        )
        await self._consumer.start()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000, max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reading the inference log failed; retrying")
                await asyncio.sleep(1)
                continue
            for messages in batches.values():
                for message in messages:
                    record = KafkaRecord(message.key, message.value or b"", tuple(message.headers or ()))
                    try:
                        logged = decode(record, InferenceLogged).data
                    except DecodeError:
                        continue  # ingestion and monitoring dead-letter it; here it only lacks a sample
                    entry = self._sums[(logged.model_name, logged.model_version)]
                    entry[0] += 1
                    entry[1] += logged.confidence
