"""The FastStream broker every service consumes with, configured from settings."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker

from llmops_config import PlatformSettings


def create_broker(settings: PlatformSettings, *, service: str, **options: Any) -> KafkaBroker:
    """A Kafka broker for ``service``: its client id, acks=all and an idempotent producer."""
    defaults: dict[str, Any] = {
        "client_id": f"{settings.kafka_client_id_prefix}-{service}",
        "acks": "all",
        "enable_idempotence": True,
        "allow_auto_create_topics": False,
        "graceful_timeout": 15.0,
    }
    defaults.update(options)
    return KafkaBroker(settings.kafka_bootstrap_servers, **defaults)
