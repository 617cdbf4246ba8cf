"""Free TCP ports on loopback for servers a test starts as separate processes.

Servers started in-process bind port 0 and report their port; this is for
the ones that must be told a port on their command line.
"""

from __future__ import annotations

import socket

#: Tests listen on loopback only: no test talks to the outside network.
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


__all__ = ["LOOPBACK", "free_port"]
