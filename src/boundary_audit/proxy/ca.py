"""The local certificate authority that lets the proxy read requests inside TLS.

The CA is made once (an ECDSA P-256 key, fast to sign with) and kept in the
user's config directory, key 0600 and directory 0700, so the trust the user
grants it once survives restarts. Leaf certificates are issued per host on
demand, share one leaf key, and are cached in a bounded LRU.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import ssl
import stat
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CAError", "CertificateAuthority", "default_ca_directory"]

APP_NAME = "boundary-audit"
CERT_FILE = "ca-cert.pem"
KEY_FILE = "ca-key.pem"
LOCK_FILE = ".lock"
DIR_MODE = 0o700
KEY_MODE = 0o600
CA_COMMON_NAME = "boundary-audit local CA"
#: Ten years: the user trusts the CA once; re-trusting it yearly helps nobody.
CA_VALIDITY = dt.timedelta(days=3650)
#: 397 days is the longest leaf lifetime browsers accept (CA/B Forum baseline).
LEAF_VALIDITY = dt.timedelta(days=397)
#: Back-date certificates so a client whose clock runs a little slow accepts them.
CLOCK_SKEW = dt.timedelta(days=1)
#: Hosts whose TLS context stays cached; one agent talks to tens of hosts, and
#: at a few kB each this bounds memory even against a host-spraying client.
LEAF_CACHE_SIZE = 512
#: RFC 5280 ub-common-name: longer names live only in the SAN.
MAX_COMMON_NAME = 64
#: Offered to clients inside a TLS tunnel: HTTP/2 first (proxy.h2tunnel),
#: HTTP/1.1 for the rest (h11).
ALPN_PROTOCOLS = ["h2", "http/1.1"]
#: Offered to an upstream when the client speaks HTTP/1.1: h11 forwards it.
ALPN_HTTP1 = ["http/1.1"]


class CAError(RuntimeError):
    """The CA directory holds something unusable (half-written, wrong permissions...)."""


def default_ca_directory() -> Path:
    """``boundary-audit/ca`` under the user's config directory."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "ca"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise creation between processes starting at the same moment."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, KEY_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to ``path`` with mode 0600 from the first byte."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, KEY_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signing only (ECDSA keys encipher nothing); a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


class CertificateAuthority:
    """A CA certificate and key on disk, and the per-host leaf contexts it signs."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.directory = directory
        self.cert = cert
        self._key = key
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._ca_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()

    @property
    def cert_path(self) -> Path:
        """The CA certificate (PEM) that clients must trust."""
        return self.directory / CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def cert_pem(self) -> bytes:
        return self._ca_pem

    @classmethod
    def load_or_create(cls, directory: Path | None = None) -> CertificateAuthority:
        """Load the CA from ``directory`` (default: the config dir), making it on first use."""
        directory = Path(directory) if directory is not None else default_ca_directory()
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(directory, DIR_MODE)
        with _locked(directory):
            cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
            if cert_path.exists() and key_path.exists():
                return cls._load(directory, cert_path, key_path)
            if cert_path.exists() or key_path.exists():
                raise CAError(
                    f"CA directory {directory} has only one of {CERT_FILE} and {KEY_FILE}; "
                    "remove it to make a new CA"
                )
            return cls._create(directory, cert_path, key_path)

    @classmethod
    def _load(cls, directory: Path, cert_path: Path, key_path: Path) -> CertificateAuthority:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            raise CAError(
                f"CA key {key_path} is readable by others (mode {mode:o}); "
                f"run chmod 600 on it or remove {directory}"
            )
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError as exc:
            raise CAError(f"CA files in {directory} cannot be read: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"CA key {key_path} is not an EC key")
        if cert.public_key() != key.public_key():
            raise CAError(f"CA certificate and key in {directory} do not belong together")
        return cls(directory, cert, key)

    @classmethod
    def _create(cls, directory: Path, cert_path: Path, key_path: Path) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, APP_NAME),
            ]
        )
        now = _now()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(key_path, key_pem)
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(cert_path, 0o644)
        return cls(directory, cert, key)

    def issue(self, host: str) -> x509.Certificate:
        """A leaf certificate for ``host`` (DNS name or IP address) signed by this CA."""
        san: x509.GeneralName
        try:
            san = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        now = _now()
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:MAX_COMMON_NAME])])
            )
            .issuer_name(self.cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + LEAF_VALIDITY, self.cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def leaf_context(self, host: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate for ``host`` (cached)."""
        host = host.lower().rstrip(".")
        context = self._contexts.get(host)
        if context is not None:
            self._contexts.move_to_end(host)
            return context
        leaf = self.issue(host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(ALPN_PROTOCOLS)
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self._ca_pem
        # SSLContext only loads certificates from files: write a private
        # temporary one and remove it at once.
        fd, tmp = tempfile.mkstemp(prefix="boundary-leaf-", suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(chain + self._leaf_key_pem)
            context.load_cert_chain(tmp)
        finally:
            os.unlink(tmp)
        self._contexts[host] = context
        if len(self._contexts) > LEAF_CACHE_SIZE:
            self._contexts.popitem(last=False)
        return context
