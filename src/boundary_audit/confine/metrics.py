"""Counters of the launcher (``boundary_audit_run_*``), on a per-instance registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class LaunchMetrics:
    """Counters of the launcher, on a per-instance registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.launches = Counter(
            "boundary_audit_run_launches",
            "Commands started, by whether Landlock confinement was applied",
            ["confined"],
            registry=self.registry,
        )
        self.launch_failures = Counter(
            "boundary_audit_run_launch_failures",
            "Commands that could not be started, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.relay_connections = Counter(
            "boundary_audit_run_relay_connections",
            "Connections of a network-isolated command relayed to the proxy",
            registry=self.registry,
        )
        self.relay_failures = Counter(
            "boundary_audit_run_relay_failures",
            "Connections of a network-isolated command that could not reach the proxy",
            registry=self.registry,
        )
        self.confinement_warnings = Counter(
            "boundary_audit_run_confinement_warnings",
            "Protections the kernel could not give a started command (each also logged)",
            registry=self.registry,
        )
        self.bypass_attempts = Counter(
            "boundary_audit_run_bypass_attempts",
            "Attempts of the confined command to get around the proxy, by recorded method",
            ["method"],
            registry=self.registry,
        )
        self.observation_failures = Counter(
            "boundary_audit_run_observation_failures",
            "Sandboxed connect/sendto calls whose address the supervisor could not read",
            registry=self.registry,
        )
        self.dns_stub_malformed = Counter(
            "boundary_audit_run_dns_stub_malformed",
            "Datagrams to the isolated command's DNS stub that were not a query (dropped)",
            registry=self.registry,
        )
        self.signals_forwarded = Counter(
            "boundary_audit_run_signals_forwarded",
            "Signals forwarded to the confined command",
            ["signal"],
            registry=self.registry,
        )
        self.signals_not_forwarded = Counter(
            "boundary_audit_run_signals_not_forwarded",
            "Signals received but not forwarded, by reason",
            ["signal", "reason"],
            registry=self.registry,
        )


__all__ = ["LaunchMetrics"]
