"""Run COMMAND behind the proxy: environment, confinement, signals, exit code.

Everything here is for the parent side of ``boundary-audit run``; it runs in
the same asyncio loop as the proxy, whose URL is all it knows of it. The
pieces, each in its module with its reasons: the environment and CA bundle
(:mod:`.environment`), starting the command through the exec helper that
confines it (:mod:`.spawn`, :mod:`.helper`), the relay of a network-isolated
command (:mod:`.relay`) and signal forwarding (:mod:`.signals`).

Exit code: the child's; a child killed by signal N gives ``128 + N`` (the
shell's convention). Re-raising the signal on ourselves would skip the
proxy's shutdown and the auditor's flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..logs import get_logger
from . import landlock
from .attempts import Attempt
from .environment import ChildEnvironment
from .errors import EXIT_CANNOT_EXECUTE, ConfinementError, ConfinementUnavailable, LaunchError
from .landlock import MAX_PORT
from .metrics import LaunchMetrics
from .netns import LOOPBACK_ADDRESS
from .observers import RESOLV_CONF_TEXT, start_observers
from .protect import CoverPlan, prepare, protected_paths
from .relay import Relay
from .signals import SignalForwarder
from .spawn import exit_code_from_returncode, spawn_confined, spawn_direct

#: How long a cancelled run waits for the command to exit after SIGTERM
#: before SIGKILL: long enough for a tool to save state, short enough that a
#: shutdown does not appear to hang.
CANCEL_GRACE_SECONDS = 5.0


def check_enforcement(require: bool, metrics: LaunchMetrics | None = None) -> bool:
    """Whether Landlock will confine the child. Raises
    :class:`ConfinementUnavailable` when ``require`` and it cannot; otherwise
    warns once, plainly, that the command is not confined."""
    try:
        abi = landlock.require_network_confinement()
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
    missing = landlock.missing_scopes(abi)
    if missing is not None:
        get_logger("run").warning("launcher not protected: " + missing, abi=abi)
    get_logger("run").debug("Landlock network confinement available", abi=abi)
    return True


def _proxy_port(proxy_url: str) -> int:
    try:
        port = urlsplit(proxy_url).port
    except ValueError as exc:
        raise ValueError(f"bad proxy URL {proxy_url!r}: {exc}") from exc
    if port is None:
        raise ValueError(f"proxy URL {proxy_url!r} has no port")
    return port


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
    covers: CoverPlan,
    on_attempt: Callable[[Attempt], object] | None = None,
    resolv_conf: str | None = None,
) -> asyncio.subprocess.Process:
    """Start COMMAND the way asked; a relay for an isolated command is
    registered on ``stack`` so it stops when the run ends."""
    if isolate and not enforced:
        metrics.launch_failures.labels(reason="confinement_unavailable").inc()
        raise LaunchError(
            "network isolation was asked for but Landlock is unavailable",
            EXIT_CANNOT_EXECUTE,
        )
    if not enforced:
        return await spawn_direct(command, env, cwd, metrics)
    process, handed = await spawn_confined(
        command,
        port=proxy[1],
        env=env,
        cwd=cwd,
        metrics=metrics,
        isolate=isolate,
        cover_dirs=covers.dirs,
        cover_files=covers.files,
        observe=on_attempt is not None,
        resolv_conf=resolv_conf,
    )
    start_observers(
        handed,
        proxy_port=proxy[1],
        isolate=isolate,
        covers=covers,
        on_attempt=on_attempt,
        metrics=metrics,
        stack=stack,
    )
    listener = handed.listener
    if listener is not None:
        relay = Relay(listener, proxy[0], proxy[1], metrics)
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


def _prepare_sandbox(
    child_env: ChildEnvironment,
    *,
    enforced: bool,
    isolate: bool,
    keep: str,
    protect: Sequence[str | os.PathLike[str]],
    agent_sockets: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None,
) -> tuple[CoverPlan, str | None]:
    """The covers of a confined command, and the resolv.conf of an isolated one."""
    if not enforced or child_env.bundle_path is None:
        return CoverPlan(), None
    private = child_env.bundle_path.parent
    resolv_conf: str | None = None
    if isolate:
        resolv_conf = str(private / "resolv.conf")
        Path(resolv_conf).write_text(RESOLV_CONF_TEXT, encoding="ascii")
    covers = prepare(
        protected_paths(protect, env), agent_sockets, keep_visible=[keep, str(private)], env=env
    )
    return covers, resolv_conf


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
    protect: Sequence[str | os.PathLike[str]] = (),
    agent_sockets: Sequence[str | os.PathLike[str]] = (),
    on_attempt: Callable[[Attempt], object] | None = None,
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

    A confined command never sees boundary-audit's per-user directories,
    the directories in ``protect`` (the CA dir in use) or the agent sockets
    in ``agent_sockets`` (:mod:`.protect`, :mod:`.mounts`). With
    ``on_attempt``, each attempt of a confined command to get around the
    proxy (:mod:`.attempts`) is passed to it, on this loop.
    """
    if not command:
        raise ValueError("no command to run")
    metrics = metrics if metrics is not None else LaunchMetrics()
    port = proxy_port if proxy_port is not None else _proxy_port(proxy_url)
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"proxy port must be in 1..{MAX_PORT}, got {port}")
    proxy_host = urlsplit(proxy_url).hostname or LOOPBACK_ADDRESS
    if enforced is None:
        enforced = check_enforcement(require_enforcement, metrics)
    log = get_logger("run", command=command[0])
    forwarder = SignalForwarder(asyncio.get_running_loop(), metrics)
    async with contextlib.AsyncExitStack() as stack:
        try:
            child_env = stack.enter_context(
                ChildEnvironment(proxy_url, ca_cert_path, base_env, system_ca_files)
            )
        except (LaunchError, OSError) as exc:
            metrics.launch_failures.labels(reason="environment").inc()
            log.error("cannot prepare the command's environment", error=str(exc))
            raise
        covers, resolv_conf = _prepare_sandbox(
            child_env,
            enforced=enforced,
            isolate=isolate_network,
            keep=cwd or os.getcwd(),
            protect=protect,
            agent_sockets=agent_sockets,
            env=base_env,
        )
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
                    covers=covers,
                    on_attempt=on_attempt,
                    resolv_conf=resolv_conf,
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


__all__ = ["CANCEL_GRACE_SECONDS", "check_enforcement", "run_confined"]
