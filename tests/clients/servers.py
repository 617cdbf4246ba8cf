"""Local HTTPS servers for the client matrix: ``git http-backend``, a
package index (PEP 503 simple pages and one wheel built here) and an npm
registry (one package document and a tarball ``npm pack`` built here)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import ssl
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

#: Bounds git's own commands when the fixture builds the repository.
GIT_TIMEOUT = 30
#: The package the index serves.
PACKAGE = "ba-probe"
VERSION = "1.0"
#: The name Node clients use for the loopback servers. Node.js verifies a
#: TLS connection opened on a given socket without ``host`` against
#: "localhost", and ``https-proxy-agent`` 7 (npm's own, and what ``ws`` uses
#: through a proxy) drops ``host`` and, for an IP literal, ``servername``:
#: to https://127.0.0.1 through any proxy it fails with
#: ERR_TLS_CERT_ALTNAME_INVALID. With a name it sends SNI and verifies it.
LOCALHOST = "localhost"
#: The npm package the registry serves, and its version.
NPM_PACKAGE = "ba-probe"
NPM_VERSION = "1.0.0"
#: Bounds ``npm pack`` (local, a second or two; a hang fails the fixture).
NPM_TIMEOUT = 60


class LocalhostCA(trustme.CA):
    """A CA whose every leaf also names :data:`LOCALHOST`, so the servers
    of other test packages (``serve_ws``, ``serve_upstream``) answer it too."""

    def issue_cert(self, *identities: str, **kwargs: Any) -> trustme.LeafCert:
        return super().issue_cert(*identities, LOCALHOST, **kwargs)


@dataclass(frozen=True)
class Served:
    port: int
    root: Path
    host: str = "127.0.0.1"

    def url(self, path: str) -> str:
        return f"https://{self.host}:{self.port}{path}"


def _tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@contextlib.contextmanager
def _serve(
    handler: type[http.server.BaseHTTPRequestHandler],
    ca: trustme.CA,
    root: Path,
    host: str = "127.0.0.1",
    **attrs: Any,
) -> Iterator[Served]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = _tls(ca).wrap_socket(server.socket, server_side=True)
    for name, value in attrs.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server.server_address[1], root, host)
    finally:
        server.shutdown()
        server.server_close()


class _GitHandler(http.server.BaseHTTPRequestHandler):
    """CGI glue: each request runs ``git http-backend`` (smart HTTP)."""

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def _backend(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.git_root),  # type: ignore[attr-defined]
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run(
            ["git", "http-backend"],
            input=body,
            env=env,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=GIT_TIMEOUT)


@contextlib.contextmanager
def serve_git(ca: trustme.CA, tmp: Path) -> Iterator[Served]:
    """A bare repository ``repo.git`` (one commit with ``hello.txt``) over HTTPS."""
    root, work = tmp / "git-root", tmp / "git-work"
    root.mkdir()
    work.mkdir()
    _git("init", "--bare", "repo.git", cwd=root)
    _git("init", "-b", "main", cwd=work)
    (work / "hello.txt").write_text("hello from git http-backend\n")
    _git("add", "hello.txt", cwd=work)
    _git("-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-m", "one", cwd=work)
    _git("push", str(root / "repo.git"), "main", cwd=work)
    _git("symbolic-ref", "HEAD", "refs/heads/main", cwd=root / "repo.git")
    with _serve(_GitHandler, ca, root, git_root=root) as served:
        yield served


def build_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel of :data:`PACKAGE` (one module)."""
    name = PACKAGE.replace("-", "_")
    wheel = directory / f"{name}-{VERSION}-py3-none-any.whl"
    dist = f"{name}-{VERSION}.dist-info"
    files = {
        f"{name}/__init__.py": b"PROBE = 'installed through the proxy'\n",
        f"{dist}/METADATA": (
            f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n".encode()
        ),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(
        f"{path},sha256={_urlsafe_digest(data)},{len(data)}\n" for path, data in files.items()
    )
    record += f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist}/RECORD", record)
    return wheel


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@contextlib.contextmanager
def serve_index(ca: trustme.CA, tmp: Path) -> Iterator[Served]:
    """``/simple/ba-probe/`` linking ``/files/<wheel>``, as a static tree."""
    root = tmp / "index"
    (root / "files").mkdir(parents=True)
    wheel = build_wheel(root / "files")
    page = root / "simple" / PACKAGE
    page.mkdir(parents=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (page / "index.html").write_text(
        f'<a href="/files/{wheel.name}#sha256={digest}">{wheel.name}</a>\n'
    )

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    with _serve(Handler, ca, root) as served:
        yield served


def npm_pack(directory: Path) -> tuple[Path, dict[str, str]]:
    """``npm pack`` of a one-file :data:`NPM_PACKAGE`; the tarball and its
    ``integrity`` and ``shasum`` as npm computed them."""
    source = directory / "source"
    source.mkdir()
    manifest = {"name": NPM_PACKAGE, "version": NPM_VERSION, "main": "index.js"}
    (source / "package.json").write_text(json.dumps(manifest))
    (source / "index.js").write_text("module.exports = 'installed through the proxy';\n")
    out = subprocess.run(
        ["npm", "pack", "--json", "--pack-destination", str(directory)],
        cwd=source,
        env={**os.environ, "npm_config_cache": str(directory / "npm-cache")},
        capture_output=True,
        text=True,
        check=True,
        timeout=NPM_TIMEOUT,
    )
    packed = json.loads(out.stdout)[0]
    return directory / packed["filename"], {
        "integrity": packed["integrity"],
        "shasum": packed["shasum"],
    }


@contextlib.contextmanager
def serve_npm_registry(ca: trustme.CA, tmp: Path) -> Iterator[Served]:
    """``/ba-probe`` (the package document) and ``/ba-probe/-/<tarball>``,
    named :data:`LOCALHOST` (see there)."""
    tarball, dist = npm_pack(tmp)
    files: dict[str, tuple[str, bytes]] = {
        f"/{NPM_PACKAGE}/-/{tarball.name}": ("application/octet-stream", tarball.read_bytes())
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_GET(self) -> None:
            found = files.get(self.path)
            if found is None:
                self.send_error(404)
                return
            kind, body = found
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with _serve(Handler, ca, tmp, LOCALHOST) as served:
        version = {
            "name": NPM_PACKAGE,
            "version": NPM_VERSION,
            "main": "index.js",
            "dist": {**dist, "tarball": served.url(f"/{NPM_PACKAGE}/-/{tarball.name}")},
        }
        document = {
            "name": NPM_PACKAGE,
            "dist-tags": {"latest": NPM_VERSION},
            "versions": {NPM_VERSION: version},
        }
        files[f"/{NPM_PACKAGE}"] = ("application/json", json.dumps(document).encode())
        yield served
