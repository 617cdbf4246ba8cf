"""The agent: receives audit batches on a Unix socket, spools them durably,
forwards them to the collector, and makes every loss visible.

    config = AgentConfig(collector_url="http://127.0.0.1:7468", token=token)
    async with Agent(config) as agent:
        await agent.serve()        # until agent.request_stop() / SIGTERM
"""

from .._retry import Backoff
from .agent import Agent, ShutdownReport
from .config import AgentConfig
from .forwarder import parse_retry_after
from .metrics import AgentMetrics
from .receiver import PeerCredentials, SocketInUseError
from .spool import Spool, SpoolError, SpoolStats

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentMetrics",
    "Backoff",
    "PeerCredentials",
    "ShutdownReport",
    "SocketInUseError",
    "Spool",
    "SpoolError",
    "SpoolStats",
    "parse_retry_after",
]
