"""The FastStream broker every service consumes with, configured from settings."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaClientOptions, kafka_client_options
from llmops_events.topics import prefixed


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
    # A list: FastStream hands a string to aiokafka as one host, commas and all (a cluster's servers).
    servers = [server.strip() for server in client.bootstrap_servers.split(",") if server.strip()]
    return PlatformBroker(servers, topic_prefix=client.topic_prefix, **defaults)


class PlatformBroker(KafkaBroker):
    """FastStream's Kafka broker whose subscribers and publishers take the platform's topic names
    and use their wire names (``LLMOPS_KAFKA_TOPIC_PREFIX``, see ``KafkaClientOptions.topic``)."""

    def __init__(self, *args: Any, topic_prefix: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.topic_prefix = topic_prefix

    def subscriber(self, *topics: str, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().subscriber(*(prefixed(topic, self.topic_prefix) for topic in topics), **kwargs)

    def publisher(self, topic: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().publisher(prefixed(topic, self.topic_prefix), *args, **kwargs)


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
