"""Prometheus metrics of one proxy (``boundary_audit_proxy_*``), on its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ProxyMetrics:
    """Prometheus metrics of one proxy, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "boundary_audit_proxy_requests",
            "HTTP requests decided, by decision",
            ["decision"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "boundary_audit_proxy_upstream_errors",
            "Failures talking to upstream servers, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.bad_clients = Counter(
            "boundary_audit_proxy_bad_clients",
            "Client connections refused or cut for misbehaving, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.active_connections = Gauge(
            "boundary_audit_proxy_active_connections",
            "Client connections currently open",
            registry=self.registry,
        )
        self.tunnels = Counter(
            "boundary_audit_proxy_tunnels",
            "CONNECT tunnels whose TLS was terminated",
            registry=self.registry,
        )
        self.plain_tunnels = Counter(
            "boundary_audit_proxy_plain_tunnels",
            "CONNECT tunnels that carried plain HTTP (no TLS)",
            registry=self.registry,
        )
        self.refused_peers = Counter(
            "boundary_audit_proxy_refused_peers",
            "Client connections refused because another user owns them, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.websockets = Counter(
            "boundary_audit_proxy_websockets",
            "WebSocket connections relayed after a 101, by how they ended",
            ["outcome"],
            registry=self.registry,
        )
        self.websocket_bytes = Counter(
            "boundary_audit_proxy_websocket_bytes",
            "Bytes relayed over WebSockets, by direction",
            ["direction"],
            registry=self.registry,
        )


__all__ = ["ProxyMetrics"]
