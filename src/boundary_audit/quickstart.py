"""``boundary-audit quickstart``: the whole pipeline on one machine.

Starts a collector (SQLite) and an agent as separate processes, makes the
agent's token, serves a small local upstream (HTTP and HTTPS), runs a
confined command through ``boundary-audit run`` with a mix of allowed and
denied requests, and prints the session the collector stored, exactly as
``boundary-audit logs`` shows it. With ``--serve`` the services stay up for
the web UI until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console

from ._process import stop_process
from .collector.storage import quickstart_db_path
from .proxy.ca import CertificateAuthority
from .wire.private import open_private_dir

#: How long each service may take to come up before quickstart gives up:
#: generous, since first start-up compiles bytecode and creates databases.
START_TIMEOUT = 60.0
#: How long to wait for the run's events to be stored at the collector; the
#: agent forwards within a second or two, so this only bounds a failure.
DELIVERY_TIMEOUT = 60.0
#: Poll interval while waiting for a service or for delivery.
POLL_INTERVAL = 0.1
#: With --serve, how often to check that the services are still up.
SERVE_POLL_INTERVAL = 0.5
#: SIGTERM grace for the services at the end before SIGKILL.
STOP_TIMEOUT = 15.0
#: Longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
AF_UNIX_PATH_MAX = 107
#: Characters tempfile.mkdtemp appends to its prefix.
RANDOM_SUFFIX_CHARS = 8
#: Agent name (and workspace: this host) the quickstart's token is made for.
AGENT_NAME = "quickstart"
#: Process name the default demo command is audited under.
DEMO_PROCESS_NAME = "quickstart-demo"

# Requests the default confined command makes: (method, scheme, host, path).
# The rules below allow some and deny others, including a dot-segment trick.
DEMO_REQUESTS: tuple[tuple[str, str, str, str], ...] = (
    ("GET", "http", "127.0.0.1", "/repos/coder/coder"),
    ("GET", "http", "127.0.0.1", "/repos/coder/boundary/pulls"),
    ("POST", "http", "127.0.0.1", "/upload"),
    ("GET", "https", "localhost", "/api/v1/status"),
    ("GET", "https", "localhost", "/api/../admin/secrets"),
    ("DELETE", "https", "localhost", "/api/v1/workspaces/1"),
    ("GET", "http", "localhost", "/metadata/token"),
)
DEMO_RULES = (
    "domain=127.0.0.1 path=/repos/*",
    "method=GET,HEAD domain=localhost path=/api/*",
)

# The confined demo client: plain urllib, which honours HTTP(S)_PROXY and
# (through OpenSSL) SSL_CERT_FILE, as most tools do.
_CLIENT = r"""
import json, sys, urllib.request, urllib.error
for method, url in json.loads(sys.argv[1]):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        status = f"error: {exc}"
    print(f"  {method:6} {url} -> {status}")
"""


class QuickstartError(RuntimeError):
    """A step failed; the message says which and where its log is."""


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def stop(self) -> None:
        stop_process(self.process, STOP_TIMEOUT)
        self.log_file.close()


@dataclass
class Stack:
    runtime_dir: Path
    db_path: Path
    collector_url: str = ""
    socket_path: Path = field(default_factory=Path)
    services: list[Service] = field(default_factory=list)

    def stop(self) -> None:
        # Agent first, so it can forward what it holds to a live collector.
        for service in reversed(self.services):
            service.stop()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "boundary_audit", "--log-format", "json", *args]


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
        for raw in fh:
            with contextlib.suppress(ValueError):
                item = json.loads(raw)
                if isinstance(item, dict):
                    yield item


def _wait_for_log(service: Service, event: str) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in _json_lines(service.log_path):
            if line.get("event") == event:
                return line
        if service.process.poll() is not None:
            raise QuickstartError(
                f"the {service.name} exited with status {service.process.returncode}; "
                f"see {service.log_path}"
            )
        time.sleep(POLL_INTERVAL)
    raise QuickstartError(f"the {service.name} did not start in time; see {service.log_path}")


def _start(stack: Stack, name: str, args: list[str]) -> Service:
    log_path = stack.runtime_dir / f"{name}.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        _cli(*args), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
    )
    service = Service(name, process, log_path, log_file)
    stack.services.append(service)
    return service


def start_stack(stack: Stack) -> None:
    """Token, collector, agent; ``stack`` records each service as it starts,
    so the caller can stop whatever did start when a later step fails."""
    runtime_dir, db_path = stack.runtime_dir, stack.db_path
    db_url = f"sqlite:///{db_path}"
    token = subprocess.run(
        _cli(
            "tokens",
            "create",
            "--agent",
            AGENT_NAME,
            "--workspace",
            socket.gethostname(),
            "--db",
            db_url,
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if token.returncode != 0:
        raise QuickstartError(f"could not create the agent token: {token.stderr.strip()}")
    collector = _start(stack, "collector", ["collector", "--db", db_url, "--listen", "127.0.0.1:0"])
    stack.collector_url = str(_wait_for_log(collector, "collector_listening")["url"])
    stack.socket_path = runtime_dir / "agent.sock"
    token_file = runtime_dir / "agent.token"
    token_file.write_text(token.stdout.strip() + "\n")
    token_file.chmod(0o600)
    agent = _start(
        stack,
        "agent",
        [
            "agent",
            "--socket",
            str(stack.socket_path),
            "--collector-url",
            stack.collector_url,
            "--token-file",
            str(token_file),
            "--spool-dir",
            str(runtime_dir / "spool"),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
    _wait_for_log(agent, "agent started")


class _Upstream(http.server.BaseHTTPRequestHandler):
    """Answers every request with a short text, like any small API."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = f"upstream saw {self.command} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def local_upstream(runtime_dir: Path) -> Iterator[tuple[int, int, Path]]:
    """HTTP and HTTPS servers on loopback; yields (http port, https port, CA file)."""
    ca = CertificateAuthority.load_or_create(runtime_dir / "upstream-ca")
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    tls = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    context: ssl.SSLContext = ca.leaf_context("localhost")
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (plain, tls)]
    for t in threads:
        t.start()
    try:
        yield plain.server_address[1], tls.server_address[1], ca.cert_path
    finally:
        for server in (plain, tls):
            server.shutdown()
            server.server_close()


def _run_summary(log_path: Path, session_id: str) -> dict[str, Any]:
    for line in _json_lines(log_path):
        if line.get("event") == "audit summary" and line.get("session_id") == session_id:
            return line
    raise QuickstartError(f"the confined run left no audit summary; see {log_path}")


def wait_for_session(collector_url: str, session_id: str, events: int) -> dict[str, Any]:
    """Poll the query API until the session holds ``events`` (stored or reported dropped)."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    last: dict[str, Any] = {}
    with httpx.Client(base_url=collector_url, timeout=10) as client:
        while time.monotonic() < deadline:
            resp = client.get(f"/api/v1/sessions/{session_id}")
            if resp.status_code == 200:
                last = resp.json()
                if last["allowed"] + last["denied"] + last["dropped"] >= events:
                    return last
            time.sleep(POLL_INTERVAL)
    raise QuickstartError(
        f"only {last.get('allowed', 0) + last.get('denied', 0)} of {events} events reached "
        f"the collector in {DELIVERY_TIMEOUT:g} s"
    )


def _private_runtime_dir() -> Path:
    """A fresh 0700 directory for the socket, spool and logs.

    Under ``$XDG_RUNTIME_DIR`` when that leaves room for the socket's name
    in a Unix socket address, else under the OS temp dir.
    """
    prefix = "boundary-audit-quickstart-"
    base = os.environ.get("XDG_RUNTIME_DIR")
    room = len(prefix) + RANDOM_SUFFIX_CHARS + len("/agent.sock")
    if base and Path(base).is_dir() and len(os.fsencode(base)) + 1 + room <= AF_UNIX_PATH_MAX:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    return Path(tempfile.mkdtemp(prefix=prefix))


def _demo_command(http_port: int, https_port: int) -> list[str]:
    ports = {"http": http_port, "https": https_port}
    urls = [
        (m, f"{scheme}://{host}:{ports[scheme]}{path}") for m, scheme, host, path in DEMO_REQUESTS
    ]
    return [sys.executable, "-c", _CLIENT, json.dumps(urls)]


def _confined_run(
    stack: Stack, args: argparse.Namespace, console: Console, session_id: str
) -> tuple[Path, int]:
    """Run the user's COMMAND (or the demo) under ``boundary-audit run``; return
    its log and exit status."""
    command = list(args.command[1:] if args.command[:1] == ["--"] else args.command)
    run_log = stack.runtime_dir / "run.log"
    with local_upstream(stack.runtime_dir) as (http_port, https_port, upstream_ca):
        if command:
            rules = list(args.allow)
            process_name = args.process_name or Path(command[0]).name
        else:
            rules = list(DEMO_RULES)
            process_name = DEMO_PROCESS_NAME
            command = _demo_command(http_port, https_port)
            _ok(
                console,
                f"local upstream on http://127.0.0.1:{http_port} and https://localhost:{https_port}",
            )
        console.print(
            f"running the confined command, allowing: {', '.join(rules) or 'nothing'}",
            soft_wrap=True,
        )
        run_args = [
            "run",
            # The audit summary read back below is an info line.
            "--log-level",
            "info",
            "--audit-socket",
            str(stack.socket_path),
            "--session-id",
            session_id,
            "--process-name",
            process_name,
            "--upstream-ca-file",
            str(upstream_ca),
            # Per-request lines go to the collector; keep the terminal for the command.
            "--audit-log-level",
            "error",
        ]
        for rule in rules:
            run_args += ["--allow", rule]
        with run_log.open("ab") as log_file:
            done = subprocess.run(_cli(*run_args, "--", *command), stderr=log_file, check=False)
        if done.returncode == 0:
            _ok(console, "command exited with status 0")
        else:
            console.print(f"[red]✗[/] {_failure(command, done.returncode)}", soft_wrap=True)
    return run_log, done.returncode


#: ``run``'s status when the command could not be started (as a shell says).
NOT_FOUND_STATUS = 127
NOT_EXECUTABLE_STATUS = 126


def _failure(command: Sequence[str], status: int) -> str:
    if status == NOT_FOUND_STATUS:
        return f"command not found: {command[0]} (status {status})"
    if status == NOT_EXECUTABLE_STATUS:
        return f"command cannot be executed: {command[0]} (status {status})"
    return f"command exited with status {status}"


def printed_command() -> str:
    """How to type ``boundary-audit`` so that it runs this installation.

    ``boundary-audit`` when that is what PATH finds; else the script beside
    this interpreter (``.venv/bin/boundary-audit``, relative to the working
    directory when inside it), else ``python -m boundary_audit``.
    """
    script = Path(sys.executable).parent / "boundary-audit"
    found = shutil.which("boundary-audit")
    if script.exists():
        if found and Path(found).resolve() == script.resolve():
            return "boundary-audit"
        with contextlib.suppress(ValueError):
            return shlex.quote(str(script.relative_to(Path.cwd())))
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m boundary_audit"


def _ok(console: Console, text: str) -> None:
    console.print(f"[green]✓[/] {text}", soft_wrap=True)


def _show_session(stack: Stack, console: Console, session_id: str, run_log: Path) -> None:
    summary = _run_summary(run_log, session_id)
    if int(summary["events"]) == 0:
        console.print("the command made no HTTP requests, so there is nothing to show")
        return
    with console.status("waiting for the agent to forward the events..."):
        session = wait_for_session(stack.collector_url, session_id, int(summary["events"]))
    _ok(
        console,
        f"session stored: {session['allowed']} allowed, {session['denied']} denied, "
        f"{session['dropped']} dropped, {session['gaps']} gaps\n",
    )
    console.file.flush()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "boundary_audit",
            "logs",
            "--collector-url",
            stack.collector_url,
            "--session",
            session_id,
        ],
        check=False,
    )
    for label, value in (
        ("web UI", f"{stack.collector_url}/sessions/{session_id}"),
        ("database", str(stack.db_path)),
        (
            "query",
            f"{printed_command()} logs --db {shlex.quote(f'sqlite:///{stack.db_path}')}"
            f" --session {session_id}",
        ),
    ):
        console.print(f"{label + ':':11} {value}", soft_wrap=True)


def _serve_until_stopped(stack: Stack) -> None:
    """Wait for Ctrl-C or SIGTERM (also when started with SIGINT ignored, as
    a background job is), or for a service to exit on its own."""
    stop = threading.Event()
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in stop_signals}
    try:
        while not stop.is_set() and all(s.process.poll() is None for s in stack.services):
            stop.wait(SERVE_POLL_INTERVAL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_quickstart(args: argparse.Namespace, console: Console) -> int:
    db_path = quickstart_db_path(Path(args.data_dir) if args.data_dir else None)
    # The database is the trail: 0700 whatever the umask (the collector
    # makes its files 0600 inside it).
    os.close(open_private_dir(db_path.parent))
    runtime_dir = _private_runtime_dir()
    stack = Stack(runtime_dir=runtime_dir, db_path=db_path)
    succeeded = False
    try:
        with console.status("starting the collector (SQLite) and the agent..."):
            start_stack(stack)
        _ok(console, f"collector at {stack.collector_url}, database {db_path}")
        _ok(console, f"agent on {stack.socket_path} (token made for it)")
        session_id = str(uuid.uuid4())
        run_log, status = _confined_run(stack, args, console, session_id)
        _show_session(stack, console, session_id, run_log)
        if args.serve:
            console.print("\nserving; press Ctrl-C to stop")
            _serve_until_stopped(stack)
        succeeded = True
        # The command's failure is the quickstart's (a signal, negative, is 1).
        return status if status > 0 else (1 if status else 0)
    except QuickstartError as exc:
        console.print(f"[red]quickstart failed:[/] {exc}", soft_wrap=True)
        return 1
    finally:
        with console.status("stopping the agent and the collector..."):
            stack.stop()
        if succeeded:
            # Socket, spool and logs were for this run only; the database stays.
            shutil.rmtree(runtime_dir, ignore_errors=True)
        else:
            console.print(f"logs of this run kept in {runtime_dir}", soft_wrap=True)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="run the whole pipeline on this machine and show the audit trail",
        description=__doc__,
        epilog=(
            "examples: boundary-audit quickstart | boundary-audit quickstart --serve | "
            "boundary-audit quickstart --allow domain=example.com -- curl -s https://example.com"
        ),
    )
    parser.add_argument(
        "--serve", action="store_true", help="keep the collector and agent running until Ctrl-C"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the collector's database lives (default: the user data dir)",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help="allow rule for your own COMMAND (the built-in demo has its own rules)",
    )
    parser.add_argument("--process-name", default=None, help="process name for your COMMAND")
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND [ARGS...]",
        help="run this instead of the built-in demo requests",
    )
    parser.set_defaults(func=lambda args: run_quickstart(args, Console()))


__all__: Sequence[str] = ("QuickstartError", "register", "run_quickstart")
