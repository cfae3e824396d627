"""A consumer process whose handler kills it on one message, for ``test_bus_crash``.

Run as a script (``python crashing_consumer.py BOOTSTRAP TOPIC GROUP STATE_DB HANDLED MAX_ATTEMPTS``):
it consumes ``TOPIC`` as ``GROUP`` with the platform's ``EventConsumer`` and its SQLite state in
``STATE_DB``; the handler appends each record's text to ``HANDLED``, and on the text ``poison``
ends the process with ``os._exit(137)``, which is what the kernel's out-of-memory killer leaves of
a process: no exception, no ``finally``, no cleanup. It exits 0 once it has handled ``last``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any


async def main(bootstrap: str, topic: str, group: str, state_db: str, handled: str, max_attempts: int) -> None:
    from llmops_config import PlatformSettings
    from llmops_events import Envelope
    from llmops_events.v1 import RecordSubmitted
    from llmops_messaging import (
        DeadLetterQueue,
        EventConsumer,
        EventPublisher,
        ProcessedEvents,
        RetryPolicy,
        create_broker,
        subscribe,
    )

    settings = PlatformSettings(kafka_bootstrap_servers=bootstrap)
    done = asyncio.Event()

    async def handle(envelope: Envelope[Any]) -> None:
        text = envelope.data.text
        if text == "poison":
            os._exit(137)
        with open(handled, "a", encoding="utf-8") as file:
            file.write(text + "\n")
            file.flush()
            os.fsync(file.fileno())
        if text == "last":
            done.set()

    publisher = EventPublisher(settings, service="crash-test")
    broker = create_broker(settings, service="crash-test")
    consumer = EventConsumer(
        group_id=group,
        handlers={RecordSubmitted: handle},
        dlq=DeadLetterQueue(publisher),
        processed=ProcessedEvents(state_db, consumer=group),
        retry=RetryPolicy(max_attempts=max_attempts, base_delay_s=0.05, max_delay_s=0.2, budget_s=30.0),
    )
    # A short session: the group notices the killed member quickly when its successor joins.
    subscribe(broker, consumer, topic, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    await publisher.start()
    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
        await asyncio.sleep(1.0)  # the delivery returns and its offsets are committed
    finally:
        await broker.stop()
        await publisher.stop()


if __name__ == "__main__":
    bootstrap, topic, group, state_db, handled, max_attempts = sys.argv[1:7]
    asyncio.run(main(bootstrap, topic, group, state_db, handled, int(max_attempts)))
