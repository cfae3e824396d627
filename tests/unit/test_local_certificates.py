"""The local CA ``make up`` makes (``llmops_stack.certificates``): idempotent, renewing only what
is missing, and what it makes verifies (server names, the operator's subject and role)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from llmops_config import PlatformSettings
from llmops_config.tls import TlsSettings, peer_certificate, tls_files
from llmops_stack.certificates import ensure_local_certificates


def _settings(folder: Path, **tls: object) -> PlatformSettings:
    return PlatformSettings(var_dir=folder, tls=TlsSettings(dir=folder / "tls", **tls))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_local_ca_server_and_operator_certificates(tmp_path: Path) -> None:
    files = ensure_local_certificates(_settings(tmp_path), operator="ann")
    ca, server, client = _load(files.ca), _load(files.server_cert), _load(files.client_cert)
    assert server.issuer == ca.subject == client.issuer
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "operator:ann"
    assert peer_certificate({"x509_pem_cert": [files.client_cert.read_bytes()]}) is not None
    for key in (files.ca_key, files.server_key, files.client_key):
        assert key.stat().st_mode & 0o777 == 0o600


def test_a_second_call_keeps_everything_and_a_missing_leaf_is_remade_from_the_same_ca(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files = ensure_local_certificates(settings)
    before = {path: path.read_bytes() for path in (files.ca, files.server_cert, files.client_cert)}
    ensure_local_certificates(settings)
    assert {path: path.read_bytes() for path in before} == before
    files.server_cert.unlink()
    ensure_local_certificates(settings)
    assert files.ca.read_bytes() == before[files.ca] and files.client_cert.read_bytes() == before[files.client_cert]
    assert _load(files.server_cert).issuer == _load(files.ca).subject


def test_nothing_is_made_in_plaintext_mode_nor_for_a_ca_the_stack_did_not_make(tmp_path: Path) -> None:
    insecure = _settings(tmp_path / "a", insecure=True)
    ensure_local_certificates(insecure)
    assert not tls_files(insecure).ca.exists()
    foreign = _settings(tmp_path / "b")
    files = tls_files(foreign)
    files.ca.parent.mkdir(parents=True)
    files.ca.write_text("production CA, no key beside it")
    ensure_local_certificates(foreign)
    assert not files.server_cert.exists()
