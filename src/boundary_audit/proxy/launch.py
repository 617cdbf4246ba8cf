"""Run COMMAND behind the proxy: environment, CA trust, confinement, signals.

Everything here is for the parent side of ``boundary-audit run``; it runs in
the same asyncio loop as the proxy. The decisions, with their reasons:

* Proxy variables: ``HTTP_PROXY``/``HTTPS_PROXY`` in both cases point at the
  proxy (curl ignores upper-case ``HTTP_PROXY``, Go and others read either).
  ``NO_PROXY``/``no_proxy`` are removed so nothing is exempt from the audit.
  ``ALL_PROXY``/``all_proxy`` are removed and *not* set: several tools read
  them as a SOCKS proxy or use them for non-HTTP schemes, which our plain
  HTTP proxy cannot serve; an inherited value would also route traffic around
  the proxy when Landlock is unavailable.
* CA trust: ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``,
  ``NODE_EXTRA_CA_CERTS``, ``GIT_SSL_CAINFO`` (and ``CARGO_HTTP_CAINFO``,
  ``DENO_CERT``) point at one bundle: the system CA store plus our CA,
  written 0600 into a private 0700 temp dir that is removed when the run
  ends. Only certificates are copied (re-encoded), so a CA file that also
  holds the private key never leaks it to the child.
* Confinement is applied in the child only, by exec'ing a stdlib-only helper
  (:mod:`.confine`) that restricts itself and then execs COMMAND. A
  ``preexec_fn`` would run Python in a forked copy of this multi-threaded
  process (auditor and child-watcher threads), which can deadlock.
* Signals: SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 received by
  this process are forwarded to the child through the loop's signal handlers.
  The child stays in our process group so terminal job control keeps working;
  therefore a SIGINT/SIGQUIT typed at the terminal already reaches the child
  directly, and is not forwarded a second time while the child's group is the
  terminal's foreground group (a double Ctrl-C means "quit" to many tools).
* Exit code: the child's; a child killed by signal N gives ``128 + N`` (the
  shell's convention). Re-raising the signal on ourselves would skip the
  proxy's shutdown and the auditor's flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CollectorRegistry, Counter

from ..logs import get_logger
from . import confine
from .confine import ConfinementError, ConfinementUnavailable

#: Variables pointed at the proxy URL.
PROXY_ENV_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
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
)
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
#: Signals forwarded to the child.
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
#: Signals a terminal sends to its whole foreground process group.
TERMINAL_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT})
#: Offset of the exit code reported for a child killed by a signal (shells).
SIGNAL_EXIT_BASE = 128
#: Most bytes read from the exec helper's status pipe; its messages are one
#: short line (an error and a path).
STATUS_READ_LIMIT = 65536
#: Descriptors accepted on the status channel (the helper sends one).
MAX_STATUS_FDS = 4
#: Bytes copied per read by the isolated command's relay: large enough to
#: keep syscalls per MB low, small enough to stay cache-friendly.
RELAY_CHUNK = 65536
#: How long a cancelled run waits for the command to exit after SIGTERM
#: before SIGKILL: long enough for a tool to save state, short enough that a
#: shutdown does not appear to hang.
CANCEL_GRACE_SECONDS = 5.0
#: The controlling terminal, to tell whether tty signals reach the child.
CONTROLLING_TTY = "/dev/tty"


class LaunchError(RuntimeError):
    """COMMAND could not be started; ``exit_code`` is what a shell would return
    (127 not found, 126 cannot execute or cannot be confined)."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class LaunchMetrics:
    """Counters of the launcher, on a per-instance registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.launches = Counter(
            "boundary_audit_run_launches",
            "Commands started, by whether Landlock confinement was applied",
            ["confined"],
            registry=self.registry,
        )
        self.launch_failures = Counter(
            "boundary_audit_run_launch_failures",
            "Commands that could not be started, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.relay_connections = Counter(
            "boundary_audit_run_relay_connections",
            "Connections of a network-isolated command relayed to the proxy",
            registry=self.registry,
        )
        self.relay_failures = Counter(
            "boundary_audit_run_relay_failures",
            "Connections of a network-isolated command that could not reach the proxy",
            registry=self.registry,
        )
        self.signals_forwarded = Counter(
            "boundary_audit_run_signals_forwarded",
            "Signals forwarded to the confined command",
            ["signal"],
            registry=self.registry,
        )
        self.signals_not_forwarded = Counter(
            "boundary_audit_run_signals_not_forwarded",
            "Signals received but not forwarded, by reason",
            ["signal", "reason"],
            registry=self.registry,
        )


def exit_code_from_returncode(returncode: int) -> int:
    """Map a ``Popen.returncode`` to a process exit code (signal N -> 128 + N)."""
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


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
            confine.EXIT_CANNOT_EXECUTE,
        ) from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise LaunchError(
            f"{path} holds no valid PEM certificate: {exc}", confine.EXIT_CANNOT_EXECUTE
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._dir is not None:
            _remove_private_dir(self._dir)
            self._dir = None


def check_enforcement(require: bool, metrics: LaunchMetrics | None = None) -> bool:
    """Whether Landlock will confine the child. Raises
    :class:`ConfinementUnavailable` when ``require`` and it cannot; otherwise
    warns once, plainly, that the command is not confined."""
    try:
        abi = confine.require_network_confinement()
    except ConfinementUnavailable as exc:
        log = get_logger("run")
        if require:
            log.error("refusing to run: --require-enforcement and " + str(exc), reason=exc.reason)
            if metrics is not None:
                metrics.launch_failures.labels(reason="confinement_unavailable").inc()
            raise
        log.warning(
            "NOT ENFORCED: the command can bypass the proxy with direct connections; "
            "requests through the proxy are still audited. " + str(exc),
            reason=exc.reason,
        )
        return False
    get_logger("run").debug("Landlock network confinement available", abi=abi)
    return True


def _terminal_reaches_child(pid: int | None) -> bool:
    """True when the child's process group (ours until it starts: it inherits
    it) is the controlling terminal's foreground group, so a tty-generated
    signal was delivered to the child directly. A child that moved to its own
    group or session is not reached by the terminal and gets it forwarded."""
    try:
        fd = os.open(CONTROLLING_TTY, os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        group = os.getpgrp() if pid is None else os.getpgid(pid)
        return os.tcgetpgrp(fd) == group
    except OSError:
        return False
    finally:
        os.close(fd)


class _SignalForwarder:
    """Loop signal handlers that relay to the child (queued until it exists)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: LaunchMetrics) -> None:
        self._loop = loop
        self._metrics = metrics
        self._log = get_logger("run")
        self._process: asyncio.subprocess.Process | None = None
        self._pending: list[signal.Signals] = []
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        for sig in FORWARDED_SIGNALS:
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                # Not the main thread, or a loop without signal support.
                self._log.warning("cannot forward signal", signal=sig.name, error=str(exc))
                continue
            self._installed.append(sig)

    def attach(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        pending, self._pending = self._pending, []
        for sig in pending:
            self._forward(sig)

    def remove(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed = []
        for sig in self._pending:
            self._drop(sig, "child_never_started")

    def _drop(self, sig: signal.Signals, reason: str) -> None:
        self._metrics.signals_not_forwarded.labels(signal=sig.name, reason=reason).inc()
        self._log.info("signal not forwarded", signal=sig.name, reason=reason)

    def _on_signal(self, sig: signal.Signals) -> None:
        pid = self._process.pid if self._process is not None else None
        if sig in TERMINAL_SIGNALS and _terminal_reaches_child(pid):
            self._drop(sig, "terminal_delivered")
            return
        if self._process is None:
            self._pending.append(sig)
            return
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        assert self._process is not None
        if self._process.returncode is not None:
            self._drop(sig, "child_exited")
            return
        try:
            self._process.send_signal(sig)
        except ProcessLookupError:
            self._drop(sig, "child_exited")
            return
        self._metrics.signals_forwarded.labels(signal=sig.name).inc()
        self._log.debug("signal forwarded", signal=sig.name, pid=self._process.pid)


async def _wait_readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _read_status(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Read the helper's status channel to EOF (it is close-on-exec in the
    helper, so EOF comes with the exec or the helper's death): its messages
    and any descriptors passed along (the isolated listener)."""
    sock.setblocking(False)
    data = bytearray()
    fds: list[int] = []
    while len(data) < STATUS_READ_LIMIT:
        try:
            chunk, new_fds, _flags, _addr = socket.recv_fds(sock, STATUS_READ_LIMIT, MAX_STATUS_FDS)
        except BlockingIOError:
            await _wait_readable(sock)
            continue
        fds.extend(new_fds)
        if not chunk:
            break
        data += chunk
    return bytes(data), fds


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then pass the half-close on."""
    try:
        while chunk := await reader.read(RELAY_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class _Relay:
    """Serves the listener made inside the command's network namespace: each
    connection is joined to the real proxy outside it."""

    def __init__(
        self, listener: socket.socket, proxy_host: str, proxy_port: int, metrics: LaunchMetrics
    ) -> None:
        self._listener = listener
        self._proxy = (proxy_host, proxy_port)
        self._metrics = metrics
        self._log = get_logger("run")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._listener)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._proxy)
            except OSError as exc:
                self._metrics.relay_failures.inc()
                self._log.error(
                    "cannot reach the proxy for the isolated command",
                    proxy=f"{self._proxy[0]}:{self._proxy[1]}",
                    error=str(exc),
                )
                return
            self._metrics.relay_connections.inc()
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._tasks.discard(task)


def _proxy_port(proxy_url: str) -> int:
    try:
        port = urlsplit(proxy_url).port
    except ValueError as exc:
        raise ValueError(f"bad proxy URL {proxy_url!r}: {exc}") from exc
    if port is None:
        raise ValueError(f"proxy URL {proxy_url!r} has no port")
    return port


async def _create(
    argv: Sequence[str],
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    metrics: LaunchMetrics,
    pass_fds: Sequence[int] = (),
) -> asyncio.subprocess.Process:
    """Start ``argv``; turn the fork/exec errors into :class:`LaunchError`."""
    try:
        return await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, pass_fds=pass_fds)
    except OSError as exc:
        if cwd is not None and exc.filename == cwd:
            reason, code = "bad_cwd", confine.EXIT_CANNOT_EXECUTE
            message = f"cannot change to directory {cwd}: {exc.strerror}"
        elif argv[0] != command[0]:  # the confinement helper's interpreter
            reason, code = "helper_failed", confine.EXIT_CANNOT_EXECUTE
            message = f"cannot start the confinement helper {argv[0]}: {exc.strerror}"
        elif isinstance(exc, FileNotFoundError):
            reason, code = "not_found", confine.EXIT_NOT_FOUND
            message = f"{command[0]}: command not found"
        else:
            reason, code = "cannot_execute", confine.EXIT_CANNOT_EXECUTE
            message = f"{command[0]}: cannot execute: {exc.strerror}"
        metrics.launch_failures.labels(reason=reason).inc()
        raise LaunchError(message, code) from exc


async def _spawn_direct(
    command: Sequence[str], env: Mapping[str, str], cwd: str | None, metrics: LaunchMetrics
) -> asyncio.subprocess.Process:
    return await _create(command, command, env=env, cwd=cwd, metrics=metrics)


async def _spawn_confined(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    cwd: str | None,
    metrics: LaunchMetrics,
    isolate: bool = False,
) -> tuple[asyncio.subprocess.Process, socket.socket | None]:
    """Start COMMAND through the exec helper; with ``isolate`` also return the
    listener the helper made in the command's network namespace."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        argv = confine.helper_argv(
            sys.executable, [port], theirs.fileno(), command, port if isolate else None
        )
        process = await _create(
            argv, command, env=env, cwd=cwd, metrics=metrics, pass_fds=(theirs.fileno(),)
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        with ours:
            status, fds = await _read_status(ours)
    except BaseException:
        # Cancelled before COMMAND even started: do not leave it behind.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    listener: socket.socket | None = None
    if status.startswith(confine.LISTENER_MESSAGE) and len(fds) == 1:
        listener = socket.socket(fileno=fds.pop())
        status = status.removeprefix(confine.LISTENER_MESSAGE)
    for fd in fds:  # nothing else is expected; do not leak it
        os.close(fd)
    if status == confine.EXEC_MARKER and (listener is not None or not isolate):
        return process, listener
    if listener is not None:
        listener.close()
    returncode = await process.wait()
    exited = exit_code_from_returncode(returncode)
    if not status:
        metrics.launch_failures.labels(reason="helper_failed").inc()
        raise LaunchError(
            f"the confinement helper {confine.__file__} died before starting "
            f"{command[0]} (exit code {exited})",
            confine.EXIT_CANNOT_EXECUTE,
        )
    message = status.removeprefix(confine.EXEC_MARKER).decode("utf-8", "replace")
    kind, _, detail = message.partition(": ")
    if kind == "confine":
        metrics.launch_failures.labels(reason="confinement_failed").inc()
        raise LaunchError(f"could not confine {command[0]}: {detail}", exited)
    errno_text, _, reason = detail.partition(": ")
    if exited == confine.EXIT_NOT_FOUND:
        metrics.launch_failures.labels(reason="not_found").inc()
        raise LaunchError(f"{command[0]}: command not found", exited)
    metrics.launch_failures.labels(reason="cannot_execute").inc()
    raise LaunchError(f"cannot execute {reason} (errno {errno_text})", exited)


async def _start_command(
    command: Sequence[str],
    *,
    proxy: tuple[str, int],
    env: Mapping[str, str],
    cwd: str | None,
    metrics: LaunchMetrics,
    enforced: bool,
    isolate: bool,
    stack: contextlib.AsyncExitStack,
) -> asyncio.subprocess.Process:
    """Start COMMAND the way asked; a relay for an isolated command is
    registered on ``stack`` so it stops when the run ends."""
    if isolate and not enforced:
        metrics.launch_failures.labels(reason="confinement_unavailable").inc()
        raise LaunchError(
            "network isolation was asked for but Landlock is unavailable",
            confine.EXIT_CANNOT_EXECUTE,
        )
    if not enforced:
        return await _spawn_direct(command, env, cwd, metrics)
    process, listener = await _spawn_confined(
        command, port=proxy[1], env=env, cwd=cwd, metrics=metrics, isolate=isolate
    )
    if listener is not None:
        relay = _Relay(listener, proxy[0], proxy[1], metrics)
        try:
            await relay.start()
        except BaseException:
            listener.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        stack.push_async_callback(relay.aclose)
    return process


async def _stop_child(process: asyncio.subprocess.Process, log: Any, grace: float) -> None:
    """Our caller gave up (cancelled): do not leave the command running
    unsupervised. SIGTERM, then SIGKILL after a grace period."""
    if process.returncode is not None:
        return
    log.warning("run cancelled, terminating the command", pid=process.pid)
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        log.warning("command ignored SIGTERM, killing it", pid=process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def run_confined(
    command: Sequence[str],
    *,
    proxy_url: str,
    ca_cert_path: str | os.PathLike[str],
    proxy_port: int | None = None,
    require_enforcement: bool = False,
    base_env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    metrics: LaunchMetrics | None = None,
    system_ca_files: Sequence[Path] | None = None,
    enforced: bool | None = None,
    cancel_grace: float = CANCEL_GRACE_SECONDS,
    isolate_network: bool = False,
) -> int:
    """Run ``command`` with stdio passed through, its TCP connects confined to
    the proxy's port (when Landlock allows), signals forwarded; return its exit
    code (128 + N for a death by signal N).

    ``proxy_port`` defaults to the port of ``proxy_url``. ``enforced`` is the
    result of an earlier :func:`check_enforcement` (a caller that wants to
    refuse before starting its proxy); ``None`` checks here. Raises
    :class:`ConfinementUnavailable` when ``require_enforcement`` and Landlock
    cannot confine, :class:`LaunchError` when the command cannot be started
    (never started unconfined when ``enforced`` is true). Cancelled, it
    sends the command SIGTERM, and SIGKILL after ``cancel_grace`` seconds.

    ``isolate_network`` additionally runs the command in a private network
    namespace where only the proxy (relayed) is reachable; it needs Landlock
    and unprivileged user namespaces, and fails with :class:`LaunchError`
    rather than running with less isolation than asked for.
    """
    if not command:
        raise ValueError("no command to run")
    metrics = metrics if metrics is not None else LaunchMetrics()
    port = proxy_port if proxy_port is not None else _proxy_port(proxy_url)
    if not 1 <= port <= confine.MAX_PORT:
        raise ValueError(f"proxy port must be in 1..{confine.MAX_PORT}, got {port}")
    proxy_host = urlsplit(proxy_url).hostname or confine.LOOPBACK_ADDRESS
    if enforced is None:
        enforced = check_enforcement(require_enforcement, metrics)
    log = get_logger("run", command=command[0])
    forwarder = _SignalForwarder(asyncio.get_running_loop(), metrics)
    async with contextlib.AsyncExitStack() as stack:
        try:
            child_env = stack.enter_context(
                ChildEnvironment(proxy_url, ca_cert_path, base_env, system_ca_files)
            )
        except (LaunchError, OSError) as exc:
            metrics.launch_failures.labels(reason="environment").inc()
            log.error("cannot prepare the command's environment", error=str(exc))
            raise
        forwarder.install()
        try:
            try:
                process = await _start_command(
                    command,
                    proxy=(proxy_host, port),
                    env=child_env.env,
                    cwd=cwd,
                    metrics=metrics,
                    enforced=enforced,
                    isolate=isolate_network,
                    stack=stack,
                )
            except (LaunchError, ConfinementError) as exc:
                log.error("command not started", error=str(exc))
                raise
            metrics.launches.labels(confined=str(enforced).lower()).inc()
            log.info("command started", pid=process.pid, confined=enforced, proxy_port=port)
            forwarder.attach(process)
            try:
                returncode = await process.wait()
            except asyncio.CancelledError:
                await _stop_child(process, log, cancel_grace)
                raise
        finally:
            forwarder.remove()
    code = exit_code_from_returncode(returncode)
    extra: dict[str, Any] = {}
    if returncode < 0:
        with contextlib.suppress(ValueError):
            extra["signal"] = signal.Signals(-returncode).name
    log.info("command exited", pid=process.pid, exit_code=code, **extra)
    return code
