"""Prometheus view of a SocketAuditor's counters.

The counters live on the auditor (cheap ints updated under the GIL); this
collector reads them at scrape time, so audit() pays nothing for metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from .socket import SocketAuditor

NAMESPACE = "boundary_audit_auditor"


class AuditorCollector(Collector):
    def __init__(self, auditor: SocketAuditor) -> None:
        self.auditor = auditor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.auditor.stats
        session = self.auditor.session_id

        def gauge(name: str, doc: str, value: int) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=["session_id"])
            family.add_metric([session], value)
            return family

        def counter(name: str, doc: str, value: int) -> CounterMetricFamily:
            family = CounterMetricFamily(f"{NAMESPACE}_{name}", doc, labels=["session_id"])
            family.add_metric([session], value)
            return family

        yield counter("events_queued", "Events accepted into the send queue.", s.queued)
        yield counter("events_sent", "Events written to the agent socket.", s.sent)
        yield counter(
            "events_delivered",
            "Events the agent acknowledged (or, if it never acknowledges, read).",
            s.delivered,
        )
        yield counter("events_spilled", "Events written to the spill file at close.", s.spilled)
        yield counter(
            "events_undelivered", "Events neither delivered nor spilled at close.", s.undelivered
        )
        yield counter(
            "spill_files_delivered",
            "Other sessions' spill files delivered to the agent and removed.",
            s.spill_files_delivered,
        )
        yield counter(
            "spill_errors", "Spill files that could not be written or read.", s.spill_errors
        )
        yield counter(
            "refused_listeners",
            "Connections refused because the socket or its listener was not trusted.",
            s.refused_listeners,
        )
        yield counter(
            "handover_timeouts",
            "Responses released before their audit event reached the agent (wait ran out).",
            s.handover_timeouts,
        )
        yield counter(
            "handover_skipped",
            "Responses released at once while the handover was stalled.",
            s.handover_skipped,
        )
        yield counter("acks_received", "Ack frames read from the agent.", s.acks_received)
        dropped = CounterMetricFamily(
            f"{NAMESPACE}_events_dropped",
            "Events dropped before reaching the agent, by reason.",
            labels=["session_id", "reason"],
        )
        for reason, value in s.dropped.items():
            dropped.add_metric([session, str(reason)], value)
        yield dropped
        yield counter("events_truncated", "Events whose URL was cut to fit a frame.", s.truncated)
        yield counter("events_replayed", "Events re-sent after a reconnect.", s.replayed_events)
        yield counter("frames_sent", "Frames written to the agent socket.", s.frames_sent)
        yield counter("bytes_sent", "Bytes written to the agent socket.", s.bytes_sent)
        yield counter("connects", "Successful connections to the agent.", s.connects)
        yield counter("connect_failures", "Failed connection attempts.", s.connect_failures)
        yield counter("write_errors", "Failed writes (the batch is kept).", s.write_errors)
        yield counter("status_reports_sent", "BoundaryStatus messages sent.", s.status_reports_sent)
        yield gauge("events_pending", "Events queued or batched, not yet sent.", s.pending)
        yield gauge("events_in_flight", "Events written and not yet known delivered.", s.in_flight)
        yield gauge("connected", "1 while connected to the agent.", 1 if s.connected else 0)


def register_auditor_metrics(auditor: SocketAuditor, registry: CollectorRegistry) -> None:
    """Expose ``auditor``'s counters in ``registry``."""
    registry.register(AuditorCollector(auditor))
