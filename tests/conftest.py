from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.receiver import Receiver


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="ba-") as d:
        yield Path(d)


@pytest.fixture
def receiver(sock_dir: Path) -> Iterator[Receiver]:
    r = Receiver(sock_dir / "agent.sock").start()
    yield r
    r.stop()
