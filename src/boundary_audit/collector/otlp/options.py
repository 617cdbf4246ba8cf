"""The ``collector`` command's OTLP flags, and headers from flags, environment and a file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .exporter import DEFAULT_BATCH_SIZE, OtlpOptions

#: Headers as ``NAME=VALUE,NAME=VALUE`` (a vendor token need not be on the command line).
HEADERS_ENV = "BOUNDARY_AUDIT_OTLP_HEADERS"
ENDPOINT_ENV = "BOUNDARY_AUDIT_OTLP_ENDPOINT"


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"OTLP header {text!r} is not NAME=VALUE")
    return name, value.strip()


def collect_headers(flags: list[str], env: str | None, file: str | None) -> dict[str, str]:
    """Headers from the file (one NAME=VALUE a line, # comments), then env, then flags."""
    items: list[str] = []
    if file:
        for line in Path(file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                items.append(line)
    if env:
        items.extend(part for part in env.split(",") if part.strip())
    items.extend(flags)
    return dict(parse_header(item) for item in items)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("OTLP export (SIEM)")
    g.add_argument(
        "--otlp-endpoint",
        default=None,
        metavar="URL",
        help="ship every stored event and drop report as OpenTelemetry log records to this "
        f"OTLP/HTTP logs URL, e.g. http://127.0.0.1:4318/v1/logs (env {ENDPOINT_ENV})",
    )
    g.add_argument(
        "--otlp-header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"header sent with every export request, repeatable (also env {HEADERS_ENV} "
        "as NAME=VALUE,NAME=VALUE, and --otlp-headers-file)",
    )
    g.add_argument(
        "--otlp-headers-file",
        default=None,
        metavar="PATH",
        help="file of NAME=VALUE lines (e.g. an API token kept off the command line)",
    )
    g.add_argument(
        "--otlp-batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"log records per export request (default {DEFAULT_BATCH_SIZE})",
    )


def options_from(args: argparse.Namespace) -> OtlpOptions | None:
    """The export's options, or None when no endpoint is configured."""
    endpoint = args.otlp_endpoint or os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"--otlp-endpoint {endpoint!r} is not an http(s) URL")
    if args.otlp_batch_size < 1:
        raise ValueError("--otlp-batch-size must be at least 1")
    headers = collect_headers(args.otlp_header, os.environ.get(HEADERS_ENV), args.otlp_headers_file)
    return OtlpOptions(endpoint=endpoint, headers=headers, batch_size=args.otlp_batch_size)


__all__ = ["ENDPOINT_ENV", "HEADERS_ENV", "add_arguments", "collect_headers", "options_from"]
