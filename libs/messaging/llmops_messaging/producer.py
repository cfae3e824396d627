"""Publishing events: acks=all, idempotent producer, exact bytes and headers on the wire."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import ContentMode, Envelope, EventData, KafkaRecord, encode
from llmops_messaging.tracing import current_traceparent

logger = logging.getLogger(__name__)


class EventPublisher:
    """Publishes envelopes (or prepared records) and waits for the broker's acknowledgement.

    aiokafka is used directly rather than through FastStream's publisher because the DLQ
    must forward the original message byte for byte, headers included, and FastStream
    only sends text headers.
    """

    def __init__(self, settings: PlatformSettings, *, service: str, **producer_options: Any) -> None:
        self._settings = settings
        self._source = f"/llmops/{service}"
        # Credentials are read here, at construction: a missing password fails the caller early.
        self._options = kafka_client_options(settings, service=service)
        self._producer_options: dict[str, Any] = {
            **self._options.aiokafka(),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            **producer_options,
        }
        self._producer: AIOKafkaProducer | None = None

    @property
    def source(self) -> str:
        return self._source

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds a producer to the running event loop.
        self._producer = AIOKafkaProducer(**self._producer_options)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def publish(
        self,
        data: EventData | Envelope[Any],
        *,
        mode: ContentMode = ContentMode.BINARY,
        correlationid: str | None = None,
        subject: str | None = None,
        id: str | None = None,
    ) -> Envelope[Any]:
        """Publish a payload (wrapped in a new envelope) or an envelope (``correlationid``,
        ``subject`` and ``id``, when given, replace its own); returns what was sent. ``id``: the
        event's id when the caller derives it (a re-publish then carries the same id, which
        consumers recognise as a duplicate); a new UUID by default."""
        if isinstance(data, Envelope):
            updates = {"correlationid": correlationid, "subject": subject, "id": id}
            envelope = data.model_copy(update={k: v for k, v in updates.items() if v is not None})
        else:
            envelope = Envelope.wrap(
                data,
                source=self._source,
                subject=subject,
                correlationid=correlationid,
                traceparent=current_traceparent(),
                id=id,
            )
        await self.publish_record(envelope.topic, encode(envelope, mode))
        return envelope

    async def publish_many(self, payloads: Sequence[EventData]) -> list[BaseException | None]:
        """Publish payloads, each in a new envelope, and wait for every acknowledgement at once.

        Each is appended to the producer's batches in turn and the acknowledgements are awaited
        together: no task per event, as ``publish`` in concurrent tasks would need (the gateway
        logs one event per prediction). Returns, per payload in order, None once the broker has
        it or the error that stopped it."""
        self._started()  # a programming error, raised rather than counted per payload
        traceparent = current_traceparent()
        outcomes: list[BaseException | None] = []
        waiting: list[tuple[int, asyncio.Future[RecordMetadata]]] = []
        for index, data in enumerate(payloads):
            try:
                envelope = Envelope.wrap(data, source=self._source, traceparent=traceparent)
                record = encode(envelope)
                acknowledged = await self._send(envelope.topic, record)
            except Exception as error:  # this payload is lost to the caller's count, not the others
                outcomes.append(error)
                continue
            outcomes.append(None)
            waiting.append((index, acknowledged))
        results = await asyncio.gather(*(future for _, future in waiting), return_exceptions=True)
        for (index, _), result in zip(waiting, results, strict=True):
            if isinstance(result, BaseException):
                outcomes[index] = result
        return outcomes

    async def publish_record(self, topic: str, record: KafkaRecord) -> RecordMetadata:
        """Send a ready-made record and wait until the broker has it (acks=all)."""
        return await (await self._send(topic, record))

    async def _send(self, topic: str, record: KafkaRecord) -> asyncio.Future[RecordMetadata]:
        """Append ``record`` to the producer's batches for the platform topic ``topic``; the future
        resolves once the broker has it (acks=all)."""
        return await self._started().send(
            self._options.topic(topic), value=record.value, key=record.key, headers=list(record.headers)
        )

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventPublisher.start() was not called")
        return self._producer
