"""The shared test helpers themselves: polling, ports, the process stopper."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import pytest

from tests.support import aeventually, eventually, free_port, stop_process


def test_eventually_returns_the_first_truthy_value() -> None:
    values = iter([0, None, "", 7, 8])
    assert eventually(lambda: next(values), "a truthy value") == 7


def test_eventually_names_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"the answer \(last value: \[\]\)"):
        eventually(list, "the answer", within=0.05)


def test_eventually_reraises_the_last_assertion() -> None:
    def check() -> bool:
        raise AssertionError("still 3 rows")

    with pytest.raises(AssertionError, match="still 3 rows"):
        eventually(check, within=0.05)


async def test_aeventually_awaits_async_checks() -> None:
    calls = 0

    async def check() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return calls if calls >= 3 else 0

    assert await aeventually(check) == 3


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_stop_process_kills_what_ignores_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert stop_process(proc, timeout=0.2) == -signal.SIGKILL
    assert time.monotonic() - started < 30


def test_stop_process_resumes_a_stopped_process_so_it_can_exit() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.send_signal(signal.SIGSTOP)
    assert stop_process(proc, timeout=10) == -signal.SIGTERM
