"""How every Kafka client of the platform connects: one settings class (``LLMOPS_KAFKA_*``) and one
builder (:func:`kafka_client_options`) that aiokafka producers, consumers and admin clients,
FastStream brokers, the CLI and the tests' kcat all take their connection options from.

Identities: each service is its own Kafka principal (:data:`SERVICE_PRINCIPALS`), the CLI and the
demo are ``operator``, the stack (topic creation) is ``admin``. On the embedded stack the broker
authenticates them with SASL/SCRAM-SHA-512 and ``make up`` writes each password to
``<var_dir>/kafka/credentials/<principal>`` (mode 0600); in production set
``LLMOPS_KAFKA_SASL_USERNAME``/``LLMOPS_KAFKA_SASL_PASSWORD`` (or ``..._PASSWORD_FILE``) per process.
What each principal may read and write is the ACL table in ``llmops_stack.acls``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_events.topics import prefixed

if TYPE_CHECKING:
    from llmops_config.settings import PlatformSettings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

BROKER_PRINCIPAL = "broker"
"""The embedded broker's own identity (inter-broker and controller connections); a super user."""
ADMIN_PRINCIPAL = "admin"
"""What the stack creates topics and ACLs as; a super user."""
OPERATOR_PRINCIPAL = "operator"
"""The CLI, the demo and other tools a person runs."""

SERVICE_PRINCIPALS: dict[str, str] = {
    "ingestion": "ingestion",
    "fine-tuning": "fine_tuning",
    "fine_tuning": "fine_tuning",
    "evaluation": "evaluation",
    "deployment": "deployment",
    "gateway": "gateway",
    "monitoring": "monitoring",
}
"""Client name (``service=`` of the messaging helpers) → Kafka principal, one per service."""

ADMIN_CLIENTS = frozenset({"stack", "topics", ADMIN_PRINCIPAL})
"""Client names that act as ``admin``; any other name not in :data:`SERVICE_PRINCIPALS` is ``operator``."""

PRINCIPALS: tuple[str, ...] = (
    BROKER_PRINCIPAL,
    ADMIN_PRINCIPAL,
    *dict.fromkeys(SERVICE_PRINCIPALS.values()),
    OPERATOR_PRINCIPAL,
)
"""Every principal the embedded broker knows (SCRAM users created at format time)."""

SUPER_USERS: tuple[str, ...] = (BROKER_PRINCIPAL, ADMIN_PRINCIPAL)


class KafkaConfigurationError(RuntimeError):
    """The Kafka settings are inconsistent or name a credential that cannot be read."""


class KafkaSettings(BaseSettings):
    """Security and topic layout of the Kafka cluster (``LLMOPS_KAFKA_*``). The bootstrap servers stay
    in ``PlatformSettings.kafka_bootstrap_servers`` (``LLMOPS_KAFKA_BOOTSTRAP_SERVERS``)."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_KAFKA_", extra="ignore", use_attribute_docstrings=True)

    security_protocol: SecurityProtocol = "SASL_PLAINTEXT"
    """``SASL_PLAINTEXT`` (the embedded default: SCRAM on loopback), ``SASL_SSL`` or ``SSL`` for a
    production cluster, ``PLAINTEXT`` only for a throw-away broker (the test session's)."""

    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    """SASL mechanism: ``SCRAM-SHA-512``/``SCRAM-SHA-256`` or ``PLAIN`` (the embedded broker offers all
    three; PLAIN sends the password itself, so only over ``SASL_SSL`` or to a loopback broker)."""

    sasl_username: str = ""
    """Principal to authenticate as; empty: the principal of the client's service (``SERVICE_PRINCIPALS``;
    ``operator`` for the CLI, ``admin`` for the stack). Set it per process in production."""

    sasl_password: SecretStr = SecretStr("")
    """Password of ``sasl_username``; empty: read from ``sasl_password_file``, else from
    ``<credentials_dir>/<principal>``."""

    sasl_password_file: Path | None = None
    """File holding the password (a Kubernetes secret mount); read at each client start."""

    credentials_dir: Path | None = None
    """Folder of the embedded stack's generated passwords, one file per principal (mode 0600);
    empty: ``<LLMOPS_VAR_DIR>/kafka/credentials`` (written by ``make up``)."""

    ssl_cafile: Path | None = None
    """CA bundle (PEM) that signed the brokers' certificates (``SSL``/``SASL_SSL``); empty: the system's."""

    ssl_certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS with the brokers."""

    ssl_keyfile: Path | None = None
    """Private key (PEM) of ``ssl_certfile``."""

    ssl_check_hostname: bool = True
    """Check the broker certificate's name against the host dialled."""

    replication_factor: int = Field(default=1, ge=1)
    """Replication factor of the topics ``make up`` creates (1 on the embedded single broker; 3 on a cluster)."""

    min_insync_replicas: int = Field(default=1, ge=1)
    """``min.insync.replicas`` of those topics (with acks=all, a write needs this many replicas); 2 on a cluster."""

    cluster_size: int = Field(default=1, ge=1, le=9)
    """Brokers of the embedded stack: 1 (the default, one JVM) or 3 (``make up CLUSTER=3``: three
    KRaft nodes on this machine, topics with replication factor 3 and ``min.insync.replicas=2``).
    Unset, ``make status``/``make down`` find a cluster ``make up CLUSTER=3`` started by its pid files."""

    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    """Prepended to every topic name on the wire (``team-a.`` → ``team-a.llmops.records.raw.v1``), so
    several platforms can share one cluster; applied where clients subscribe, produce, create, grant
    ACLs and list (``KafkaClientOptions.topic``), never to the constants in ``llmops_events.topics``."""

    allow_single_replica: bool = False
    """Let ``make up`` create topics with replication factor 1 on an external broker (it refuses by
    default: one broker lost would lose data). The embedded broker is always allowed."""

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")


def principal_for(client: str) -> str:
    """The Kafka principal a client named ``client`` (a service name, ``cli``, ``stack``...) uses."""
    if client in SERVICE_PRINCIPALS:
        return SERVICE_PRINCIPALS[client]
    return ADMIN_PRINCIPAL if client in ADMIN_CLIENTS else OPERATOR_PRINCIPAL


def credentials_dir(settings: PlatformSettings) -> Path:
    """Where the embedded stack keeps one password file per principal."""
    configured = settings.kafka.credentials_dir
    return (configured or Path(settings.var_dir) / "kafka" / "credentials").resolve()


@dataclass(frozen=True, slots=True)
class KafkaClientOptions:
    """Connection options of one Kafka client, in the forms each library wants."""

    bootstrap_servers: str
    client_id: str
    security_protocol: SecurityProtocol
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    topic_prefix: str = ""
    """``LLMOPS_KAFKA_TOPIC_PREFIX``: what :meth:`topic` puts before every topic name on the wire."""

    def topic(self, name: str) -> str:
        """The wire name of the platform topic ``name``: the one place the topic prefix is applied
        (producers, subscribers, followers, topic creation, ACLs and listings all ask here)."""
        return prefixed(name, self.topic_prefix)

    def __repr__(self) -> str:  # never print the password
        return (
            f"KafkaClientOptions({self.bootstrap_servers!r}, client_id={self.client_id!r}, "
            f"{self.security_protocol}, {self.sasl_mechanism}, user={self.username!r})"
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``SSL``/``SASL_SSL`` (CA, optional client certificate), else None."""
        if not self.security_protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile:
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None)
        return context

    def security(self) -> dict[str, Any]:
        """The security keyword arguments of aiokafka's clients (no bootstrap, no client id)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism is not None:
            options.update(
                sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username, sasl_plain_password=self.password
            )
        if (context := self.ssl_context()) is not None:
            options["ssl_context"] = context
        return options

    def aiokafka(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``."""
        connection = {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id}
        return {**connection, **self.security(), **overrides}

    def librdkafka(self, *, sasl_mechanism: SaslMechanism | None = None) -> dict[str, str]:
        """The same options as librdkafka properties (kcat's ``-X``, confluent-kafka); ``sasl_mechanism``
        overrides the configured one (librdkafka before 2.6.1, Debian's kcat, fails SCRAM against
        Kafka 4: use ``PLAIN`` with it on the embedded broker's loopback listener)."""
        properties = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl_mechanism is not None:
            properties |= {
                "sasl.mechanisms": sasl_mechanism or self.sasl_mechanism,
                "sasl.username": self.username or "",
                "sasl.password": self.password or "",
            }
        if self.security_protocol.endswith("SSL"):
            if self.ssl_cafile:
                properties["ssl.ca.location"] = str(self.ssl_cafile)
            if self.ssl_certfile:
                properties["ssl.certificate.location"] = str(self.ssl_certfile)
            if self.ssl_keyfile:
                properties["ssl.key.location"] = str(self.ssl_keyfile)
            if not self.ssl_check_hostname:
                properties["ssl.endpoint.identification.algorithm"] = "none"
        return properties

    def kcat(self, *, sasl_mechanism: SaslMechanism | None = None) -> list[str]:
        """kcat's connection arguments: ``-b <servers> -X key=value ...`` (see :meth:`librdkafka`)."""
        properties = self.librdkafka(sasl_mechanism=sasl_mechanism)
        arguments = ["-b", properties.pop("bootstrap.servers")]
        for key, value in properties.items():
            arguments += ["-X", f"{key}={value}"]
        return arguments


def kafka_client_options(
    settings: PlatformSettings, *, service: str, principal: str | None = None
) -> KafkaClientOptions:
    """The options every Kafka client of ``service`` connects with: bootstrap servers, client id
    ``<prefix>-<service>``, and the security settings with this client's credentials.

    The principal is ``principal`` if given (tests acting as someone else), else the configured
    ``sasl_username``, else the service's own (:func:`principal_for`)."""
    kafka = settings.kafka
    options = KafkaClientOptions(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id_prefix}-{service}",
        security_protocol=kafka.security_protocol,
        ssl_cafile=kafka.ssl_cafile,
        ssl_certfile=kafka.ssl_certfile,
        ssl_keyfile=kafka.ssl_keyfile,
        ssl_check_hostname=kafka.ssl_check_hostname,
        topic_prefix=kafka.topic_prefix,
    )
    if not kafka.sasl:
        return options
    if kafka.sasl_mechanism == "PLAIN" and kafka.security_protocol != "SASL_SSL" and not _loopback(options):
        raise KafkaConfigurationError(
            "LLMOPS_KAFKA_SASL_MECHANISM=PLAIN sends passwords in clear: use it with SASL_SSL, or use SCRAM "
            "(plain SASL_PLAINTEXT is only accepted for a broker on this machine's loopback)"
        )
    username = principal or kafka.sasl_username or principal_for(service)
    return replace(
        options,
        sasl_mechanism=kafka.sasl_mechanism,
        username=username,
        password=_password(settings, username, explicit=principal is None),
    )


def _loopback(options: KafkaClientOptions) -> bool:
    """Whether every bootstrap server is on the loopback interface (the embedded broker)."""
    hosts = [server.strip().rpartition(":")[0].strip("[]") for server in options.bootstrap_servers.split(",")]
    return all(host in ("127.0.0.1", "localhost", "::1") for host in hosts)


def _password(settings: PlatformSettings, username: str, *, explicit: bool) -> str:
    kafka = settings.kafka
    # A configured password belongs to the configured user; a test asking for another principal
    # reads that principal's file.
    if explicit and kafka.sasl_password.get_secret_value():
        return kafka.sasl_password.get_secret_value()
    if explicit and kafka.sasl_password_file is not None:
        return _read_secret(kafka.sasl_password_file)
    return _read_secret(credentials_dir(settings) / username)


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as error:
        raise KafkaConfigurationError(
            f"Kafka password file {path} cannot be read ({error.strerror}): run `make up` to create the "
            "embedded stack's credentials, or set LLMOPS_KAFKA_SASL_PASSWORD / LLMOPS_KAFKA_SASL_PASSWORD_FILE"
        ) from error


def kafka_environment(settings: PlatformSettings) -> dict[str, str]:
    """``LLMOPS_KAFKA_*`` variables that give a child process (a service a test or benchmark starts)
    the same cluster and security as ``settings``; its own principal follows from its service name."""
    kafka = settings.kafka
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "LLMOPS_KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
        "LLMOPS_KAFKA_CLIENT_ID_PREFIX": settings.kafka_client_id_prefix,
        "LLMOPS_KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
        "LLMOPS_KAFKA_SASL_MECHANISM": kafka.sasl_mechanism,
        "LLMOPS_KAFKA_CREDENTIALS_DIR": str(credentials_dir(settings)),
        "LLMOPS_KAFKA_SSL_CHECK_HOSTNAME": str(kafka.ssl_check_hostname).lower(),
        "LLMOPS_KAFKA_REPLICATION_FACTOR": str(kafka.replication_factor),
        "LLMOPS_KAFKA_MIN_INSYNC_REPLICAS": str(kafka.min_insync_replicas),
        "LLMOPS_KAFKA_CLUSTER_SIZE": str(kafka.cluster_size),
        "LLMOPS_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if (value := getattr(kafka, name)) is not None:
            env[f"LLMOPS_KAFKA_{name.upper()}"] = str(value)
    return env
