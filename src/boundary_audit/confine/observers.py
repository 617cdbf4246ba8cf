"""The launcher's watchers of a started command: the seccomp supervisor and the DNS stub.

Both live as long as the run (closed on its exit stack) and report what the
command tried through ``on_attempt`` on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from ..logs import get_logger
from . import landlock
from .attempts import METHOD_DNS, Attempt, Policy
from .dnsstub import answer
from .metrics import LaunchMetrics
from .protect import CoverPlan
from .spawn import Handed
from .supervisor import Supervisor

#: Largest DNS query read (a UDP DNS message without EDNS is at most 512
#: bytes; EDNS clients send a little more).
MAX_QUERY = 4096
#: Contents of the isolated command's /etc/resolv.conf: the stub only.
RESOLV_CONF_TEXT = "nameserver 127.0.0.1\noptions attempts:1\n"


class DnsStub:
    """Answers the isolated command's DNS queries (:mod:`.dnsstub`) and records each."""

    def __init__(
        self,
        sock: socket.socket,
        on_attempt: Callable[[Attempt], object] | None,
        loop: asyncio.AbstractEventLoop,
        metrics: LaunchMetrics,
    ) -> None:
        self._sock = sock
        self._on_attempt = on_attempt
        self._loop = loop
        self._metrics = metrics
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                query, peer = self._sock.recvfrom(MAX_QUERY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                get_logger("run").warning("DNS stub cannot read", error=str(exc))
                return
            reply = answer(query)
            if reply is None:
                self._metrics.dns_stub_malformed.inc()
                get_logger("run").warning("DNS stub dropped a malformed query", size=len(query))
                continue
            with contextlib.suppress(OSError):
                self._sock.sendto(reply.response, peer)
            self._metrics.bypass_attempts.labels(method=METHOD_DNS).inc()
            if self._on_attempt is not None:
                url = f"dns://{reply.name}?type={reply.qtype}"
                self._on_attempt(Attempt(METHOD_DNS, url, reply.name, allowed=False))

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


def start_observers(
    handed: Handed,
    *,
    proxy_port: int,
    isolate: bool,
    covers: CoverPlan,
    on_attempt: Callable[[Attempt], object] | None,
    metrics: LaunchMetrics,
    stack: contextlib.AsyncExitStack,
) -> None:
    """Start what ``handed`` allows; each stops with ``stack``."""
    loop = asyncio.get_running_loop()
    has_stub = handed.dns is not None
    if handed.dns is not None:
        stub = DnsStub(handed.dns, on_attempt, loop, metrics)
        handed.dns = None
        stack.callback(stub.close)
    if handed.observer is not None:
        if on_attempt is None:
            handed.close()
            return
        abi = landlock.landlock_status().abi or 0
        policy = Policy(
            proxy_port=proxy_port,
            isolated=isolate,
            hidden=(*covers.dirs, *covers.files),
            abstract_scoped=landlock.missing_scopes(abi) is None,
            dns_stub=has_stub,
        )
        supervisor = Supervisor(handed.observer, policy, on_attempt, loop, metrics)
        handed.observer = None
        supervisor.start()
        stack.callback(supervisor.close)


__all__ = ["RESOLV_CONF_TEXT", "DnsStub", "start_observers"]
