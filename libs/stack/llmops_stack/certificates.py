"""A local certificate authority for the embedded stack, so its default is TLS.

``make up`` calls :func:`ensure_local_certificates` once: the first time it makes, under
``<var_dir>/tls`` (or ``LLMOPS_TLS_DIR``), a CA, a server certificate for the gateway and the ops
API (``localhost``, ``127.0.0.1``, ``::1`` and this host's name), and the local operator's client
certificate (``CN=operator:<login>``, ``OU=admin``: whoever ran ``make up`` holds the CA key
anyway, so could mint any role). Later calls keep what is there (renewing only certificates that
are missing or expire within ``RENEW_BEFORE``). Keys are EC P-256, written with mode 0600.

:func:`issue_client_certificate` mints more operator certificates from that CA (a ``viewer`` for
a dashboard, another person's ``operator``); production uses its own PKI and points the
``LLMOPS_TLS_*`` settings at its files.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from llmops_config import PlatformSettings
from llmops_config.tls import TlsFiles, tls_files

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
ROLES = ("viewer", "operator", "admin")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA's certificate and key, to sign leaf certificates with."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    temporary.replace(path)


def _write_certificate(path: Path, certificate: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(pem(certificate))
    temporary.replace(path)


def _valid(path: Path) -> bool:
    """Whether ``path`` holds a certificate that is valid for at least ``RENEW_BEFORE`` more."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return bool(certificate.not_valid_after_utc - _now() > RENEW_BEFORE)


def new_authority() -> Authority:
    """A fresh CA, in memory (tests mint certificates from it without touching files)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmops local CA")])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def _make_authority(files: TlsFiles) -> Authority:
    authority = new_authority()
    _write_key(files.ca_key, authority.key)
    _write_certificate(files.ca, authority.certificate)
    return authority


def load_authority(files: TlsFiles) -> Authority:
    """The CA at ``files.ca`` / ``files.ca_key`` (raises ``FileNotFoundError`` without its key)."""
    certificate = x509.load_pem_x509_certificate(files.ca.read_bytes())
    key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.ca_key} is not an EC key")
    return Authority(certificate, key)


def _leaf(
    authority: Authority,
    subject: x509.Name,
    *,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(authority.key, hashes.SHA256()), key


def issue_server_certificate(authority: Authority, cert_file: Path, key_file: Path, hosts: list[str]) -> None:
    """A server certificate for ``hosts`` (DNS names or IP addresses)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    certificate, key = _leaf(authority, subject, usage=ExtendedKeyUsageOID.SERVER_AUTH, names=names)
    _write_key(key_file, key)
    _write_certificate(cert_file, certificate)


def issue_client_certificate(authority: Authority, cert_file: Path, key_file: Path, *, name: str, role: str) -> None:
    """An operator's client certificate: ``CN=operator:<name>``, ``OU=<role>`` (viewer, operator or admin)."""
    certificate, key = client_certificate(authority, name=name, role=role)
    _write_key(key_file, key)
    _write_certificate(cert_file, certificate)


def client_certificate(
    authority: Authority, *, name: str, role: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The certificate and key of :func:`issue_client_certificate`, in memory."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not _NAME.match(name):
        raise ValueError(f"operator name {name!r} must match {_NAME.pattern}")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"operator:{name}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    return _leaf(authority, subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def local_operator_name() -> str:
    """The login of whoever runs ``make up``, made safe for a certificate subject."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "local"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", login)[:64]
    return cleaned or "local"


def ensure_local_certificates(settings: PlatformSettings, *, operator: str | None = None) -> TlsFiles:
    """Make what is missing (or about to expire) of the local CA, server and operator certificates;
    returns their paths. Does nothing when ``LLMOPS_TLS_INSECURE`` is set, nor for a CA this stack
    did not make (a configured CA without its key beside it: production's PKI is left alone)."""
    files = tls_files(settings)
    if settings.tls.insecure:
        return files
    if files.ca.exists() and not files.ca_key.exists():
        return files
    if _valid(files.ca) and files.ca_key.exists():
        authority = load_authority(files)
        renew_leaves = False
    else:
        authority = _make_authority(files)
        renew_leaves = True  # certificates of an older CA would no longer verify
    if renew_leaves or not (_valid(files.server_cert) and files.server_key.exists()):
        hosts = ["localhost", "127.0.0.1", "::1"]
        hostname = socket.gethostname()
        if _HOSTNAME.match(hostname) and hostname not in hosts:
            hosts.append(hostname)
        issue_server_certificate(authority, files.server_cert, files.server_key, hosts)
    if renew_leaves or not (_valid(files.client_cert) and files.client_key.exists()):
        issue_client_certificate(
            authority, files.client_cert, files.client_key, name=operator or local_operator_name(), role="admin"
        )
    return files
