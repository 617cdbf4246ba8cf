"""SIEM export: stored events and drop reports as OpenTelemetry logs over OTLP/HTTP.

``mapping`` turns rows into log records (pure), ``source`` reads rows past a
durable cursor in commit order, ``exporter`` ships them, ``options`` holds
the ``collector`` command's flags. See docs/collector.md, "OTLP export".
"""

from __future__ import annotations

from .exporter import DEFAULT_BATCH_SIZE, Cycle, Exporter, OtlpMetrics, OtlpOptions
from .mapping import DropRow, EventRow, drop_record, event_record, export_request
from .options import add_arguments, options_from
from .source import Source

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Cycle",
    "DropRow",
    "EventRow",
    "Exporter",
    "OtlpMetrics",
    "OtlpOptions",
    "Source",
    "add_arguments",
    "drop_record",
    "event_record",
    "export_request",
    "options_from",
]
