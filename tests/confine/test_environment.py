"""The command's environment: proxy variables, and the CA bundle it trusts."""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from boundary_audit.confine import (
    CA_ENV_VARS,
    CLEARED_ENV_VARS,
    PROXY_ENV_VARS,
    ChildEnvironment,
    LaunchError,
    build_child_env,
    environment,
    find_system_ca_files,
    write_ca_bundle,
)

from .helpers import PEM_BEGIN


def test_child_env_points_at_proxy_and_bundle() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "NO_PROXY": "localhost",
        "no_proxy": "*",
        "ALL_PROXY": "socks5://elsewhere:1080",
        "all_proxy": "socks5://elsewhere:1080",
        "HTTPS_PROXY": "http://corporate:3128",
        "SSL_CERT_FILE": "/old/bundle.pem",
    }
    env = build_child_env("http://127.0.0.1:4321", "/tmp/x/ca-bundle.pem", base)
    assert {name: env[name] for name in PROXY_ENV_VARS} == dict.fromkeys(
        PROXY_ENV_VARS, "http://127.0.0.1:4321"
    )
    assert {name: env[name] for name in CA_ENV_VARS} == dict.fromkeys(
        CA_ENV_VARS, "/tmp/x/ca-bundle.pem"
    )
    for name in (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        assert name in env, name
    assert not set(CLEARED_ENV_VARS) & set(env)
    assert env["PATH"] == "/usr/bin"
    assert env["HOME"] == "/home/u"
    assert base["NO_PROXY"] == "localhost", "the caller's mapping must not change"


def test_child_env_defaults_to_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOUNDARY_TEST_MARKER", "kept")
    monkeypatch.setenv("no_proxy", "example.com")
    env = build_child_env("http://127.0.0.1:1", "/b.pem")
    assert env["BOUNDARY_TEST_MARKER"] == "kept"
    assert "no_proxy" not in env


def test_system_ca_store_is_found() -> None:
    files = find_system_ca_files()
    assert files, "this machine has a system CA store (ca-certificates)"
    assert all(path.is_file() for path in files)
    assert files[0].read_bytes().count(PEM_BEGIN) > 1


def test_bundle_is_private_and_holds_system_cas_plus_ours(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    system = find_system_ca_files()
    with ChildEnvironment("http://127.0.0.1:9", ca_file, base_env={}) as child:
        assert child.bundle_path is not None
        bundle = child.bundle_path
        directory = bundle.parent
        assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        # Counted by PEM markers: some system roots have serials that newer
        # cryptography releases refuse to parse, and the bundle is not ours to judge.
        text = bundle.read_bytes()
        last = x509.load_pem_x509_certificate(PEM_BEGIN + text.split(PEM_BEGIN)[-1])
        assert last == x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        assert text.count(PEM_BEGIN) == system[0].read_bytes().count(PEM_BEGIN) + 1
        assert text.startswith(system[0].read_bytes())
        assert child.env["SSL_CERT_FILE"] == str(bundle)
    assert not directory.exists(), "the private dir is removed after the run"


def test_private_key_in_ca_file_never_reaches_the_bundle(ca: trustme.CA, tmp_path: Path) -> None:
    combined = tmp_path / "ca-with-key.pem"
    combined.write_bytes(ca.cert_pem.bytes() + ca.private_key_pem.bytes())
    bundle = write_ca_bundle(combined, tmp_path, system_ca_files=[])
    text = bundle.read_bytes()
    assert b"PRIVATE KEY" not in text
    assert x509.load_pem_x509_certificates(text) == [
        x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ]


def test_bad_ca_files_fail_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(LaunchError, match="holds no valid PEM certificate") as info:
        write_ca_bundle(garbage, tmp_path, system_ca_files=[])
    assert str(garbage) in str(info.value)
    with pytest.raises(LaunchError, match="cannot read the proxy CA certificate"):
        write_ca_bundle(tmp_path / "missing.pem", tmp_path, system_ca_files=[])
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("boundary-audit-run-*"))
    with pytest.raises(LaunchError), ChildEnvironment("http://127.0.0.1:9", garbage):
        pass
    after = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("boundary-audit-run-*"))
    assert after <= before, "a failed set-up leaves no temp dir behind"


def test_ca_directory_is_used_when_no_bundle_file_exists(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distributions with only a hashed cert directory: its PEM files are
    concatenated (only the lookup paths are redirected here)."""
    certs = tmp_path / "certs"
    certs.mkdir()
    other = trustme.CA()
    ca.cert_pem.write_to_path(str(certs / "one.pem"))
    other.cert_pem.write_to_path(str(certs / "two.crt"))
    (certs / "README").write_text("not a certificate\n")
    (certs / "link.pem").symlink_to(certs / "one.pem")  # hashed-name links are deduplicated
    missing = str(tmp_path / "none.pem")
    paths = ssl.DefaultVerifyPaths(
        missing, str(certs), "SSL_CERT_FILE", missing, "SSL_CERT_DIR", str(certs)
    )
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)
    monkeypatch.setattr(environment, "WELL_KNOWN_CA_FILES", ())
    assert environment.find_system_ca_files() == [certs / "one.pem", certs / "two.crt"]
    out = tmp_path / "out"
    out.mkdir()
    bundle = write_ca_bundle(certs / "one.pem", out).read_bytes()
    assert bundle.count(PEM_BEGIN) == 3
