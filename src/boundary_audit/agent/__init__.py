"""The agent: receives audit batches on a Unix socket, spools them durably,
forwards them to the collector, and makes every loss visible.

    config = AgentConfig(collector_url="http://127.0.0.1:7468", token=token)
    async with Agent(config) as agent:
        await agent.serve()        # until agent.request_stop() / SIGTERM

Modules, along the data flow: ``socketfile`` (claiming the socket path),
``receiver`` (reading senders) with ``frames`` (what a frame means, pure),
``writer`` (group commit) into ``spool`` (SQLite; ``AsyncSpool`` runs it on
its own thread), ``forwarder`` (to the collector) with ``deadletter`` (what
it refuses for good); ``drops`` counts losses, ``metrics`` and ``http``
expose them, ``config`` and ``cli`` set it all up, ``agent`` wires it.
"""

from .._retry import Backoff
from .agent import Agent, ShutdownReport
from .config import AgentConfig
from .forwarder import parse_retry_after, retry_delay
from .metrics import AgentMetrics
from .sessions import PeerCredentials
from .socketfile import SocketInUseError
from .spool import AsyncSpool, Spool, SpoolError, SpoolStats

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentMetrics",
    "AsyncSpool",
    "Backoff",
    "PeerCredentials",
    "ShutdownReport",
    "SocketInUseError",
    "Spool",
    "SpoolError",
    "SpoolStats",
    "parse_retry_after",
    "retry_delay",
]
