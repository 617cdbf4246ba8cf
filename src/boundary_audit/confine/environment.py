"""The command's environment: proxy variables, and a CA bundle that trusts our CA.

* Proxy variables: ``HTTP_PROXY``/``HTTPS_PROXY`` in both cases point at the
  proxy (curl ignores upper-case ``HTTP_PROXY``, Go and others read either),
  and npm's ``npm_config_proxy``/``npm_config_https_proxy``.
  ``NO_PROXY``/``no_proxy`` are removed so nothing is exempt from the audit.
  ``ALL_PROXY``/``all_proxy`` are removed and *not* set: several tools read
  them as a SOCKS proxy or use them for non-HTTP schemes, which our plain
  HTTP proxy cannot serve; an inherited value would also route traffic around
  the proxy when Landlock is unavailable.
* CA trust: ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``,
  ``NODE_EXTRA_CA_CERTS``, ``GIT_SSL_CAINFO`` (and ``CARGO_HTTP_CAINFO``,
  ``DENO_CERT``, ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``, ``PIP_CERT``,
  npm's ``npm_config_cafile``) point
  at one bundle: the system CA store plus our CA,
  written 0600 into a private 0700 temp dir that is removed when the run
  ends. Only certificates are copied (re-encoded), so a CA file that also
  holds the private key never leaks it to the child.
* ``NODE_USE_ENV_PROXY=1`` so Node.js's fetch uses the proxy variables.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..logs import get_logger
from .errors import EXIT_CANNOT_EXECUTE, LaunchError

#: Variables pointed at the proxy URL. npm takes the standard ones only as
#: defaults that an npmrc's ``proxy``/``https-proxy`` overrides; its own
#: environment settings outrank every npmrc (h-node, issue 13 item 3).
PROXY_ENV_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "npm_config_proxy",
    "npm_config_https_proxy",
)
#: Variables removed from the child's environment (see the module docstring).
CLEARED_ENV_VARS = ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
#: Variables pointed at the CA bundle: OpenSSL (Python ssl, Go, Ruby),
#: requests, curl, Node.js, git, and cargo and Deno, which read none of those.
CA_ENV_VARS = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
    "DENO_CERT",
    # h-proxy (issue 13 item 3): grpcio and pip read neither SSL_CERT_FILE
    # nor REQUESTS_CA_BUNDLE.
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "PIP_CERT",
    # h-node (issue 13 item 3): npm's `cafile` setting, when an npmrc sets
    # it (the global npmrc of this machine's npm points it at the system
    # bundle), replaces Node's trust store, NODE_EXTRA_CA_CERTS included;
    # this variable outranks every npmrc.
    "npm_config_cafile",
)
#: Set in the child (h-proxy, issue 13 item 3): Node.js >= 22.21 / 24 lets
#: fetch and http use the proxy variables only with this.
FIXED_ENV = {"NODE_USE_ENV_PROXY": "1"}
#: System CA bundles of common distributions, tried after what Python's
#: OpenSSL reports: Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE, RHEL's
#: extracted store, BSD/macOS-style.
WELL_KNOWN_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
#: Name of the bundle inside the private temp dir.
CA_BUNDLE_NAME = "ca-bundle.pem"
#: Private files: owner read/write only; the dir: owner only.
PRIVATE_FILE_MODE = 0o600


def find_system_ca_files() -> list[Path]:
    """The system's CA bundle(s): OpenSSL's default file, else well-known
    bundles, else the PEM files of OpenSSL's default directory."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *WELL_KNOWN_CA_FILES):
        if candidate and os.path.isfile(candidate):
            return [Path(candidate)]
    for directory in (paths.capath, paths.openssl_capath):
        if directory and os.path.isdir(directory):
            with os.scandir(directory) as entries:
                found = sorted(
                    {
                        Path(os.path.realpath(entry.path))
                        for entry in entries
                        if entry.name.endswith((".pem", ".crt")) and entry.is_file()
                    }
                )
            if found:
                return found
    return []


def _load_ca_certificates(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LaunchError(
            f"cannot read the proxy CA certificate {path}: {exc.strerror}",
            EXIT_CANNOT_EXECUTE,
        ) from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise LaunchError(
            f"{path} holds no valid PEM certificate: {exc}", EXIT_CANNOT_EXECUTE
        ) from exc
    return b"".join(cert.public_bytes(Encoding.PEM) for cert in certs)


def write_ca_bundle(
    ca_cert_path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    system_ca_files: Sequence[Path] | None = None,
) -> Path:
    """Write ``system CAs + our CA`` as a 0600 PEM file into ``directory``."""
    log = get_logger("run")
    ours = _load_ca_certificates(Path(ca_cert_path))
    sources = find_system_ca_files() if system_ca_files is None else list(system_ca_files)
    parts: list[bytes] = []
    for source in sources:
        try:
            text = source.read_bytes()
        except OSError as exc:
            log.warning("system CA file unreadable, skipped", path=str(source), error=str(exc))
            continue
        parts.append(text if text.endswith(b"\n") else text + b"\n")
    if not parts:
        log.warning(
            "no system CA store found; the child will trust only the proxy's CA",
            tried=list(WELL_KNOWN_CA_FILES),
        )
    parts.append(ours)
    bundle = Path(directory) / CA_BUNDLE_NAME
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(bundle, flags, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"".join(parts))
    return bundle


def build_child_env(
    proxy_url: str, ca_bundle: str | os.PathLike[str], base_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: ``base_env`` (default ours) with the proxy and
    CA variables set and the exemption variables removed."""
    env = dict(os.environ if base_env is None else base_env)
    for name in CLEARED_ENV_VARS:
        env.pop(name, None)
    for name in PROXY_ENV_VARS:
        env[name] = proxy_url
    for name in CA_ENV_VARS:
        env[name] = os.fspath(ca_bundle)
    env.update(FIXED_ENV)
    return env


def _remove_private_dir(directory: Path) -> None:
    def report(
        _func: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]
    ) -> None:
        get_logger("run").warning(
            "could not remove the run's private temp dir", path=path, error=str(exc_info[1])
        )

    shutil.rmtree(directory, onerror=report)


class ChildEnvironment:
    """Private temp dir holding the CA bundle, and the child env pointing at it.

    Use as a context manager; the directory is removed on exit.
    """

    def __init__(
        self,
        proxy_url: str,
        ca_cert_path: str | os.PathLike[str],
        base_env: Mapping[str, str] | None = None,
        system_ca_files: Sequence[Path] | None = None,
    ) -> None:
        self._proxy_url = proxy_url
        self._ca_cert_path = ca_cert_path
        self._base_env = base_env
        self._system_ca_files = system_ca_files
        self._dir: Path | None = None
        self.env: dict[str, str] = {}
        self.bundle_path: Path | None = None

    def __enter__(self) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="boundary-audit-run-"))
        try:
            self.bundle_path = write_ca_bundle(self._ca_cert_path, self._dir, self._system_ca_files)
        except BaseException:
            _remove_private_dir(self._dir)
            raise
        self.env = build_child_env(self._proxy_url, self.bundle_path, self._base_env)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._dir is not None:
            _remove_private_dir(self._dir)
            self._dir = None


__all__ = [
    "CA_ENV_VARS",
    "CLEARED_ENV_VARS",
    "PROXY_ENV_VARS",
    "WELL_KNOWN_CA_FILES",
    "ChildEnvironment",
    "build_child_env",
    "find_system_ca_files",
    "write_ca_bundle",
]
