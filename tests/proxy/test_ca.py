"""The local CA: made once with safe permissions, reused, issuing verifiable leaves."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from boundary_audit.proxy import ca as ca_module
from boundary_audit.proxy.ca import CAError, CertificateAuthority, default_ca_directory


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_once_with_private_permissions_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "config" / "ca"
    first = CertificateAuthority.load_or_create(directory)
    assert first.cert_path == directory / "ca-cert.pem"
    assert _mode(directory) == 0o700
    assert _mode(first.key_path) == 0o600
    second = CertificateAuthority.load_or_create(directory)
    assert second.cert == first.cert
    assert second.cert_path.read_bytes() == first.cert_pem
    basic = first.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca
    assert [p.name for p in directory.iterdir() if p.name.startswith(".tmp-")] == []


def test_default_directory_is_in_the_user_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_ca_directory() == tmp_path / "xdg" / "boundary-audit" / "ca"
    made = CertificateAuthority.load_or_create()
    assert made.cert_path.is_file()
    assert made.directory == tmp_path / "xdg" / "boundary-audit" / "ca"


def test_concurrent_first_use_yields_one_ca(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    results: list[CertificateAuthority] = []

    def load() -> None:
        results.append(CertificateAuthority.load_or_create(directory))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.cert.serial_number for r in results}) == 1


def test_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    os.chmod(authority.key_path, 0o644)
    with pytest.raises(CAError, match="readable by others"):
        CertificateAuthority.load_or_create(tmp_path / "ca")


def test_refuses_half_a_ca(tmp_path: Path) -> None:
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    authority.key_path.unlink()
    with pytest.raises(CAError, match="only one of"):
        CertificateAuthority.load_or_create(tmp_path / "ca")


def test_refuses_mismatched_cert_and_key(tmp_path: Path) -> None:
    one = CertificateAuthority.load_or_create(tmp_path / "one")
    two = CertificateAuthority.load_or_create(tmp_path / "two")
    two.cert_path.write_bytes(one.cert_pem)
    with pytest.raises(CAError, match="do not belong together"):
        CertificateAuthority.load_or_create(tmp_path / "two")


def test_leaf_has_proper_san_and_validity(tmp_path: Path) -> None:
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    dns = authority.issue("api.example.com")
    names = dns.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.example.com"]
    ip = authority.issue("10.1.2.3")
    names = ip.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    now = dt.datetime.now(dt.UTC)
    assert dns.not_valid_before_utc < now < dns.not_valid_after_utc
    assert dns.not_valid_after_utc - dns.not_valid_before_utc <= (
        ca_module.LEAF_VALIDITY + ca_module.CLOCK_SKEW
    )
    assert dns.issuer == authority.cert.subject
    dns.verify_directly_issued_by(authority.cert)


@pytest.mark.parametrize("host", ["leaf.example.test", "127.0.0.1", "::1"])
def test_leaf_context_passes_a_real_tls_handshake(tmp_path: Path, host: str) -> None:
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    server_context = authority.leaf_context(host)
    client_context = ssl.create_default_context(cafile=str(authority.cert_path))
    client_context.set_alpn_protocols(["h2", "http/1.1"])
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(right, server_side=True) as tls:
                tls.sendall(b"hello")
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    with client_context.wrap_socket(left, server_hostname=host) as tls:
        assert tls.recv(5) == b"hello"
        assert tls.selected_alpn_protocol() == "h2"  # the proxy speaks HTTP/2 in tunnels
    thread.join()
    assert errors == []


def test_leaf_contexts_are_cached_in_a_bounded_lru(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ca_module, "LEAF_CACHE_SIZE", 3)
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    first = authority.leaf_context("a.test")
    assert authority.leaf_context("A.test.") is first
    for name in ("b.test", "c.test", "d.test"):
        authority.leaf_context(name)
    # a.test was least recently used and fell out; a fresh context is made.
    assert authority.leaf_context("a.test") is not first
    assert authority.leaf_context("d.test") is authority.leaf_context("d.test")
