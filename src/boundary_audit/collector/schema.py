"""The schema: versioned migrations, applied in order at start (see :meth:`Storage.migrate`).

``{id}``, ``{int}``, ``{bool}`` and ``{blob}`` are filled in per engine;
everything else is portable SQL. A migration is never edited once released:
a change is a new version.
"""

from __future__ import annotations

#: Schema versions, applied in order.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE tokens (token_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,"
            " agent TEXT NOT NULL, workspace TEXT NOT NULL, scope TEXT NOT NULL,"
            " created_ns {int} NOT NULL, revoked_ns {int})",
            "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, agent TEXT NOT NULL,"
            " workspace TEXT NOT NULL, confined_process_name TEXT NOT NULL,"
            " first_seen_ns {int} NOT NULL, last_seen_ns {int} NOT NULL,"
            " allowed_count {int} NOT NULL DEFAULT 0, denied_count {int} NOT NULL DEFAULT 0,"
            " max_seq {int} NOT NULL DEFAULT -1, dropped_count {int} NOT NULL DEFAULT 0)",
            "CREATE INDEX sessions_first_seen ON sessions (first_seen_ns, session_id)",
            "CREATE INDEX sessions_last_seen ON sessions (last_seen_ns)",
            "CREATE TABLE events (id {id}, session_id TEXT NOT NULL,"
            " sequence_number {int} NOT NULL, time_ns {int} NOT NULL,"
            " received_ns {int} NOT NULL, allowed {bool} NOT NULL, method TEXT NOT NULL,"
            " url TEXT NOT NULL, host TEXT NOT NULL, matched_rule TEXT NOT NULL)",
            "CREATE UNIQUE INDEX events_session_seq ON events (session_id, sequence_number)",
            "CREATE INDEX events_host ON events (host, id)",
            "CREATE INDEX events_allowed ON events (allowed, id)",
            "CREATE INDEX events_time ON events (time_ns)",
            "CREATE TABLE drop_reports (report_id TEXT PRIMARY KEY, session_id TEXT NOT NULL,"
            " source TEXT NOT NULL, agent TEXT NOT NULL, workspace TEXT NOT NULL,"
            " time_ns {int} NOT NULL, received_ns {int} NOT NULL)",
            "CREATE INDEX drop_reports_session ON drop_reports (session_id)",
            "CREATE INDEX drop_reports_received ON drop_reports (received_ns)",
            "CREATE TABLE drop_counts (report_id TEXT NOT NULL, reason TEXT NOT NULL,"
            " count {int} NOT NULL, PRIMARY KEY (report_id, reason))",
        ],
    ),
    (
        2,
        [
            # What the sender sent, kept exactly so that a chain can be rebuilt
            # (wire/chain.py): its digest, its report's process name when it
            # differs from the session's (NULL: the session's), and which
            # fields were cut or escaped (EventFlag bits; 0 for none).
            "ALTER TABLE events ADD COLUMN chain_digest {blob}",
            "ALTER TABLE events ADD COLUMN process_name TEXT",
            "ALTER TABLE events ADD COLUMN flags {int} NOT NULL DEFAULT 0",
            # The session's open (first one seen; lowest first number) and its
            # seal (the latest sealed_at wins), from SessionRecords.
            "ALTER TABLE sessions ADD COLUMN open_sender TEXT",
            "ALTER TABLE sessions ADD COLUMN open_want_acks {bool}",
            "ALTER TABLE sessions ADD COLUMN open_first_sequence {int}",
            "ALTER TABLE sessions ADD COLUMN opened_ns {int}",
            "ALTER TABLE sessions ADD COLUMN seal_events_made {int}",
            "ALTER TABLE sessions ADD COLUMN seal_events_sent {int}",
            "ALTER TABLE sessions ADD COLUMN seal_dropped TEXT",
            "ALTER TABLE sessions ADD COLUMN seal_undelivered {int}",
            "ALTER TABLE sessions ADD COLUMN seal_spilled {int}",
            "ALTER TABLE sessions ADD COLUMN sealed_at_ns {int}",
            "ALTER TABLE sessions ADD COLUMN seal_chain_head {blob}",
            "ALTER TABLE sessions ADD COLUMN seal_chain_count {int}",
            # Events deleted by retention: still accounted for.
            "ALTER TABLE sessions ADD COLUMN pruned_count {int} NOT NULL DEFAULT 0",
            "CREATE TABLE session_records (record_id TEXT PRIMARY KEY,"
            " session_id TEXT NOT NULL, received_ns {int} NOT NULL)",
            "CREATE INDEX session_records_received ON session_records (received_ns)",
        ],
    ),
    (
        3,
        [
            # Each sealed session's chain verdict, recomputed at ingest
            # (chainstatus.py): NULL unverified, 'verified' or 'tampered'
            # (with the first bad sequence number, NULL when none is bad).
            "ALTER TABLE sessions ADD COLUMN chain_status TEXT",
            "ALTER TABLE sessions ADD COLUMN chain_bad_seq {int}",
        ],
    ),
    (
        4,
        [
            # Every seal received (the sessions row keeps only the latest):
            # what the store log's seal leaves commit to.
            "CREATE TABLE session_seals (record_id TEXT PRIMARY KEY, session_id TEXT NOT NULL,"
            " events_made {int} NOT NULL, events_sent {int} NOT NULL,"
            " undelivered {int} NOT NULL, spilled {int} NOT NULL, sealed_at_ns {int} NOT NULL,"
            " chain_head {blob}, chain_count {int} NOT NULL, dropped TEXT NOT NULL)",
            "CREATE INDEX session_seals_session ON session_seals (session_id)",
            # The store log (storelog.py): its leaves, append-only, and the
            # one row holding the tree's frontier (hex), locked for appends.
            "CREATE TABLE log_leaves (leaf_index {int} PRIMARY KEY, leaf {blob} NOT NULL)",
            "CREATE TABLE log_state (id INTEGER PRIMARY KEY, size {int} NOT NULL,"
            " frontier TEXT NOT NULL)",
            "INSERT INTO log_state (id, size, frontier) VALUES (1, 0, '0000000000000000')",
            # Signed checkpoints, all kept (older ones prove the log only grew).
            "CREATE TABLE checkpoints (id {id}, tree_size {int} NOT NULL,"
            " time_ns {int} NOT NULL, text TEXT NOT NULL)",
        ],
    ),
    (
        5,
        [
            # The chain over the session's stored events so far, extended at
            # each ingest (evidence/running.py), so a seal is judged without
            # reading the session back; count -1: out of order, scan it.
            "ALTER TABLE sessions ADD COLUMN chain_run_count {int} NOT NULL DEFAULT 0",
            "ALTER TABLE sessions ADD COLUMN chain_run_last {int} NOT NULL DEFAULT -1",
            "ALTER TABLE sessions ADD COLUMN chain_run_head {blob}",
            "ALTER TABLE sessions ADD COLUMN chain_run_bad {int}",
            # Sessions stored before have no run: scanned when judged.
            "UPDATE sessions SET chain_run_count = -1 WHERE max_seq >= 0",
        ],
    ),
    (
        6,
        [
            # The OTLP exporter's cursor (collector/otlp/source.py): the highest
            # events.id shipped, one row per exporter name, locked (PostgreSQL
            # FOR UPDATE) by the replica that ships, so replicas share it.
            "CREATE TABLE otlp_cursor (name TEXT PRIMARY KEY, event_id {int} NOT NULL,"
            " updated_ns {int} NOT NULL)",
            # Drop reports have no commit-ordered id: each one shipped is marked.
            "CREATE TABLE otlp_sent_drops (report_id TEXT PRIMARY KEY, sent_ns {int} NOT NULL)",
        ],
    ),
]
