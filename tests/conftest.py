from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from boundary_audit.wire.spill import SPILL_DIR_ENV
from tests.receiver import Receiver

# Hypothesis' per-example deadline is a wall-clock limit: on shared, loaded
# machines it fails tests for being slow, not wrong. Off for every test.
settings.register_profile("boundary-audit", deadline=None)
settings.load_profile("boundary-audit")


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


@pytest.fixture(autouse=True)
def private_spill_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test's SocketAuditors spill to (and deliver from) a directory of their own.

    Without it they would use the user's real state dir, and a spill file
    left by one test would be delivered to the receiver of the next. Set in
    the environment, so the CLIs a test starts inherit it.
    """
    directory = tmp_path_factory.mktemp("spill")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SPILL_DIR_ENV, str(directory))
        yield directory
