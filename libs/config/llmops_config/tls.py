"""TLS for every gRPC endpoint of the platform (the gateway, the ops API) and every client of them.

One place builds server credentials, client channels and the identity a client certificate
proves, from files named by settings (``LLMOPS_TLS_*``). The embedded default is TLS: ``make up``
makes a local CA and certificates under ``<var_dir>/tls`` (``llmops_stack.certificates``).
Plaintext only when ``LLMOPS_TLS_INSECURE=true``, and then every server logs a warning at start.

Files in the TLS folder (each overridable by its own setting):

- ``ca.crt``: the CA that signed the server and client certificates (clients trust it; servers
  asking for client certificates accept only those it signed);
- ``server.crt`` / ``server.key``: what the gateway and the ops API present;
- ``client.crt`` / ``client.key``: the local operator's certificate (subject ``CN=operator:<name>``,
  ``OU=<role>``), sent by the CLI to the ops API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import grpc
    import grpc.aio

    from llmops_config.settings import PlatformSettings

logger = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"


class TlsConfigurationError(RuntimeError):
    """A TLS file the settings name is missing or unreadable."""


class TlsSettings(BaseSettings):
    """Where the gRPC TLS files are (``LLMOPS_TLS_*``). Empty paths mean ``<dir>/<default name>``."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_TLS_", extra="ignore", use_attribute_docstrings=True)

    insecure: bool = False
    """Serve and call gRPC in plaintext. Only for a trusted loopback (a benchmark measuring the
    server without TLS): API keys then cross the wire in clear and the ops API has no operator
    identity (promote and rollback are refused). Every server logs a warning at start."""

    dir: Path | None = None
    """Folder of the TLS files; empty: ``<LLMOPS_VAR_DIR>/tls`` (made by ``make up``)."""

    ca_file: Path | None = None
    """CA certificate (PEM) clients trust and servers check client certificates against; default ``<dir>/ca.crt``."""

    server_cert_file: Path | None = None
    """Server certificate chain (PEM); default ``<dir>/server.crt``."""

    server_key_file: Path | None = None
    """Server private key (PEM); default ``<dir>/server.key``."""

    client_cert_file: Path | None = None
    """Client certificate (PEM) sent by the CLI and tools (mTLS to the ops API); default ``<dir>/client.crt``."""

    client_key_file: Path | None = None
    """Client private key (PEM); default ``<dir>/client.key``."""

    server_name: str = ""
    """Name checked against the server certificate when it differs from the host clients dial
    (``grpc.ssl_target_name_override``); empty: the dialled host (the local certificate names
    ``localhost``, ``127.0.0.1`` and ``::1``)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The resolved paths of one TLS configuration."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @property
    def ca_key(self) -> Path:
        """The local CA's key (only ``make up``'s own CA has one beside its certificate)."""
        return self.ca.with_name(CA_KEY)


def tls_files(platform: PlatformSettings) -> TlsFiles:
    tls = platform.tls
    folder = tls.dir or platform.var_dir / "tls"
    return TlsFiles(
        ca=tls.ca_file or folder / CA_CERT,
        server_cert=tls.server_cert_file or folder / SERVER_CERT,
        server_key=tls.server_key_file or folder / SERVER_KEY,
        client_cert=tls.client_cert_file or folder / CLIENT_CERT,
        client_key=tls.client_key_file or folder / CLIENT_KEY,
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsConfigurationError(
            f"{what} {path} cannot be read ({error.strerror or error}): run `make up` (it makes a local CA and"
            " certificates), point LLMOPS_TLS_* at your files, or set LLMOPS_TLS_INSECURE=true for plaintext"
        ) from error


def server_credentials(platform: PlatformSettings, *, require_client_cert: bool) -> grpc.ServerCredentials:
    """The server's certificate and key; with ``require_client_cert`` a client must present a
    certificate signed by the CA (mutual TLS), else the handshake fails."""
    import grpc

    files = tls_files(platform)
    key = _read(files.server_key, "the server key")
    chain = _read(files.server_cert, "the server certificate")
    ca = _read(files.ca, "the CA certificate") if require_client_cert else None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=require_client_cert)


def add_server_port(
    server: grpc.aio.Server, address: str, platform: PlatformSettings, *, require_client_cert: bool, name: str
) -> int:
    """Bind ``server`` on ``address`` with TLS (mutual when ``require_client_cert``), or in
    plaintext with a warning when ``LLMOPS_TLS_INSECURE`` is set; returns the bound port."""
    if platform.tls.insecure:
        logger.warning(
            "%s serves gRPC in PLAINTEXT (LLMOPS_TLS_INSECURE=true): credentials cross the network in clear", name
        )
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(platform, require_client_cert=require_client_cert))


def channel_credentials(platform: PlatformSettings, *, client_cert: bool = False) -> grpc.ChannelCredentials:
    """Trust the configured CA; with ``client_cert`` also present the client certificate (mTLS)."""
    import grpc

    files = tls_files(platform)
    ca = _read(files.ca, "the CA certificate")
    if not client_cert:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    key = _read(files.client_key, "the client key")
    chain = _read(files.client_cert, "the client certificate")
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)


def _options(platform: PlatformSettings, options: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    name = platform.tls.server_name
    return (*options, ("grpc.ssl_target_name_override", name)) if name else options


def aio_channel(
    platform: PlatformSettings,
    target: str,
    *,
    client_cert: bool = False,
    options: tuple[tuple[str, Any], ...] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to a platform endpoint: TLS from the settings (plaintext only when
    ``LLMOPS_TLS_INSECURE`` is set); ``client_cert`` for mTLS endpoints (the ops API)."""
    import grpc

    if platform.tls.insecure:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = channel_credentials(platform, client_cert=client_cert)
    return grpc.aio.secure_channel(target, credentials, options=_options(platform, options))


def sync_channel(
    platform: PlatformSettings,
    target: str,
    *,
    client_cert: bool = False,
    options: tuple[tuple[str, Any], ...] = (),
) -> grpc.Channel:
    """The blocking twin of :func:`aio_channel` (the CLI)."""
    import grpc

    if platform.tls.insecure:
        return grpc.insecure_channel(target, options=options)
    credentials = channel_credentials(platform, client_cert=client_cert)
    return grpc.secure_channel(target, credentials, options=_options(platform, options))


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What a verified client certificate says: its subject's common name and organisational units."""

    common_name: str
    organizational_units: tuple[str, ...]


def peer_certificate(auth_context: dict[str, list[bytes]]) -> PeerCertificate | None:
    """The client certificate of a call (``context.auth_context()``); None without one. gRPC only
    puts a certificate here after verifying it against the CA, so its subject can be trusted."""
    pem = next(iter(auth_context.get("x509_pem_cert") or ()), None)
    if not pem:
        return None
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    certificate = x509.load_pem_x509_certificate(pem)
    subject = certificate.subject

    def values(oid: x509.ObjectIdentifier) -> tuple[str, ...]:
        return tuple(str(attribute.value) for attribute in subject.get_attributes_for_oid(oid))

    names = values(NameOID.COMMON_NAME)
    return PeerCertificate(
        common_name=names[0] if names else "", organizational_units=values(NameOID.ORGANIZATIONAL_UNIT_NAME)
    )
