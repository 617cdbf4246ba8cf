"""The collector: authenticated, idempotent storage of boundary logs, with query API and web UI.

Agents POST protobuf batches to ``/api/v1/boundary-logs``; each event is stored
exactly once per (session_id, sequence_number) in SQLite or PostgreSQL, and
people read it back through ``/api/v1/...``, the web UI or the CLI.

Layout, downhill: ``model`` (records, errors, cursors, API paths) <- ``ingest``
(sans-I/O validation) and ``filters`` (the one table of query filters) <-
``storage`` (+ ``sqlite``, ``postgres``) <- ``errors`` (the answer to each failure),
``context``, ``auth`` <- ``api`` (JSON routes; their table feeds ``openapi``) and
``ui`` (pages, login, chart layout) <- ``app`` (assembly) <- ``server``, ``client``, ``cli``.
"""

from .app import AppSettings, create_app
from .client import HttpSource, QueryError, StorageSource
from .connect import open_storage
from .ingest import MAX_INGEST_BODY_BYTES, parse_ingest_request
from .metrics import CollectorMetrics
from .model import (
    CollectorError,
    EventQuery,
    EventRecord,
    Identity,
    IngestBatch,
    IngestOutcome,
    InvalidRequestError,
    Page,
    SessionOwnershipError,
    SessionSummary,
    StorageUnavailableError,
)
from .server import CollectorServer, ServeOptions, serve
from .storage import Storage, default_db_url

__all__ = [
    "MAX_INGEST_BODY_BYTES",
    "AppSettings",
    "CollectorError",
    "CollectorMetrics",
    "CollectorServer",
    "EventQuery",
    "EventRecord",
    "HttpSource",
    "Identity",
    "IngestBatch",
    "IngestOutcome",
    "InvalidRequestError",
    "Page",
    "QueryError",
    "ServeOptions",
    "SessionOwnershipError",
    "SessionSummary",
    "Storage",
    "StorageSource",
    "StorageUnavailableError",
    "create_app",
    "default_db_url",
    "open_storage",
    "parse_ingest_request",
    "serve",
]
