"""The FastStream broker every service consumes with, configured from settings."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaClientOptions, kafka_client_options


def create_broker(settings: PlatformSettings, *, service: str, **options: Any) -> KafkaBroker:
    """A Kafka broker for ``service``: its client id and credentials (``kafka_client_options``),
    acks=all and an idempotent producer."""
    client = kafka_client_options(settings, service=service)
    defaults: dict[str, Any] = {
        "client_id": client.client_id,
        "security": faststream_security(client),
        "acks": "all",
        "enable_idempotence": True,
        "allow_auto_create_topics": False,
        "graceful_timeout": 15.0,
    }
    defaults.update(options)
    return KafkaBroker(client.bootstrap_servers, **defaults)


def faststream_security(client: KafkaClientOptions) -> BaseSecurity | None:
    """``client``'s security as FastStream's security object (it maps it back to aiokafka's options)."""
    context = client.ssl_context()
    use_ssl = context is not None
    if client.sasl_mechanism is None:
        return BaseSecurity(ssl_context=context, use_ssl=True) if use_ssl else None
    security_class = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[
        client.sasl_mechanism
    ]
    return security_class(client.username or "", client.password or "", ssl_context=context, use_ssl=use_ssl)
