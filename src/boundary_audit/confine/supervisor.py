"""The launcher's side of the observation filter: record every attempt around the proxy.

The exec helper hands over the seccomp notification listener of
:func:`.seccomp.install_observer`. A thread here receives each notification
(a connect(), or a sendto() with an address, by any process of the
sandbox), reads the address from the caller's memory, asks the caller's
socket its type (``pidfd_getfd``), lets the call continue into the kernel's
checks (Landlock decides; the supervisor never does), and passes what was
tried (:func:`.attempts.classify`) to ``on_attempt`` on the asyncio loop.

Observation only, so there is no check-then-use race on what the kernel
enforces: a second thread of the caller may change the address between the
read and the kernel's own, which can make a record name another
destination than the one tried, never let a call through that Landlock
refuses. Every notification is answered, also those the supervisor cannot
read (logged and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import threading
from collections.abc import Callable

from ..logs import get_logger
from .attempts import Attempt, Policy, classify, needs_socket_type, raw_attempt
from .metrics import LaunchMetrics
from .seccomp import SECCOMP_ARCHES

#: struct seccomp_notif: id, pid, flags, then seccomp_data (nr, arch, ip, args[6]).
_NOTIF = struct.Struct("=QIIiIQ6Q")
#: struct seccomp_notif_resp: id, val, error, flags.
_RESP = struct.Struct("=QqiI")
#: ioctls of the listener (linux/seccomp.h): _IOWR('!', 0/1, ...), _IOW('!', 2, u64).
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
#: Answer "go on with the call as if there were no filter".
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
#: Largest sockaddr read from the caller (sizeof(struct sockaddr_storage)).
MAX_SOCKADDR = 128
#: pidfd_getfd(2), the same number on x86_64 and aarch64; pidfd_open's flag
#: for a thread (not only a process leader) since Linux 6.9.
PIDFD_GETFD = 438
PIDFD_THREAD = os.O_EXCL


def _socket_type(pid: int, fd: int) -> int | None:
    """SO_TYPE of the caller's descriptor ``fd``, or None if it cannot be read."""
    try:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = os.pidfd_open(pid, PIDFD_THREAD)
    except OSError:
        return None
    try:
        lib = ctypes.CDLL(None, use_errno=True)
        copy = lib.syscall(ctypes.c_long(PIDFD_GETFD), pidfd, ctypes.c_int(fd), ctypes.c_uint(0))
        if copy < 0:
            return None
        try:
            with socket.socket(fileno=os.dup(copy)) as sock:
                return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE))
        except OSError:
            return None
        finally:
            os.close(copy)
    finally:
        os.close(pidfd)


class Supervisor:
    """Answers the sandbox's notifications until its processes are gone or :meth:`close`."""

    def __init__(
        self,
        listener_fd: int,
        policy: Policy,
        on_attempt: Callable[[Attempt], object],
        loop: asyncio.AbstractEventLoop,
        metrics: LaunchMetrics,
    ) -> None:
        arch = SECCOMP_ARCHES.get(os.uname().machine)
        self._nrs = (arch.connect, arch.sendto, arch.socket) if arch is not None else (-1, -1, -1)
        self._fd = listener_fd
        self._policy = policy
        self._on_attempt = on_attempt
        self._loop = loop
        self._metrics = metrics
        self._stop_r, self._stop_w = os.pipe()
        self._log = get_logger("run")
        self._thread = threading.Thread(target=self._run, name="confine-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join()
        for fd in (self._fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            for fd, events in poller.poll():
                if fd == self._stop_r:
                    return
                if events & select.POLLIN:
                    self._handle_one()
                elif events & (select.POLLHUP | select.POLLERR):
                    return  # every process of the sandbox is gone

    def _handle_one(self) -> None:
        buf = bytearray(_NOTIF.size)
        try:
            fcntl.ioctl(self._fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: the caller died meanwhile
                self._log.warning("seccomp notification not received", error=str(exc))
            return
        notif_id, pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf)
        if nr == self._nrs[2]:
            # A raw IP or packet socket: refused here, as the bypass filter
            # would without the observer (same errno).
            self._answer(notif_id, -errno.EACCES, 0)
            self._report(raw_attempt(args[0], args[1], args[2]))
            return
        addr, sock_type = b"", None
        try:
            if nr == self._nrs[0]:
                addr = self._read(pid, args[1], args[2])
            elif nr == self._nrs[1]:
                addr = self._read(pid, args[4], args[5])
            if needs_socket_type(addr, self._policy):
                sock_type = _socket_type(pid, args[0])
            fcntl.ioctl(self._fd, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("=Q", notif_id))
        except OSError as exc:
            addr = b""
            if exc.errno != errno.ENOENT:
                self._metrics.observation_failures.inc()
                self._log.warning("cannot read a sandboxed call's address", pid=pid, error=str(exc))
        finally:
            self._answer(notif_id, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        attempt = classify(addr, sock_type, self._policy)
        if attempt is not None:
            self._report(attempt)

    def _report(self, attempt: Attempt) -> None:
        self._metrics.bypass_attempts.labels(method=attempt.method).inc()
        self._loop.call_soon_threadsafe(self._on_attempt, attempt)

    def _read(self, pid: int, address: int, length: int) -> bytes:
        if address == 0 or length <= 0:
            return b""
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            return os.pread(mem.fileno(), min(length, MAX_SOCKADDR), address)

    def _answer(self, notif_id: int, error: int, flags: int) -> None:
        resp = bytearray(_RESP.pack(notif_id, 0, error, flags))
        try:
            fcntl.ioctl(self._fd, SECCOMP_IOCTL_NOTIF_SEND, resp, True)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._log.warning("seccomp notification not answered", error=str(exc))


__all__ = ["Supervisor"]
