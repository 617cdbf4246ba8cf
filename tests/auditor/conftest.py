from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.receiver import Receiver


@pytest.fixture
def receiver(sock_dir: Path) -> Iterator[Receiver]:
    """An agent that acknowledges, like ours (the sender learns it at once)."""
    r = Receiver(sock_dir / "agent.sock", acks=True).start()
    yield r
    r.stop()


@pytest.fixture
def coder_receiver(sock_dir: Path) -> Iterator[Receiver]:
    """An agent that never writes to the socket, like Coder's."""
    r = Receiver(sock_dir / "coder.sock").start()
    yield r
    r.stop()
