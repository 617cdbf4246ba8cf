"""The store log across replicas: two collectors on one PostgreSQL append to one log."""

from __future__ import annotations

import threading
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from boundary_audit.collector import open_storage
from boundary_audit.collector.ingest import parse_ingest_request
from boundary_audit.collector.testing import ThrowawayPostgres
from boundary_audit.collector.trail import read_checkpoints, read_leaves, verify_db
from boundary_audit.evidence import Frontier, parse_checkpoint

from .helpers import chained_request

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]
#: Requests each replica stores at once with the other: enough to interleave.
REQUESTS_PER_REPLICA = 30


def test_two_replicas_append_to_one_log_without_a_fork(pg_server: ThrowawayPostgres) -> None:
    url = pg_server.new_database()
    replicas = [open_storage(url), open_storage(url)]
    key = Ed25519PrivateKey.generate()
    try:
        ident = replicas[0].authenticate(replicas[0].create_token("agent-1"))
        assert ident is not None
        errors: list[BaseException] = []

        def run(storage_index: int) -> None:
            storage = replicas[storage_index]
            try:
                for _ in range(REQUESTS_PER_REPLICA):
                    sid = str(uuid.uuid4())
                    request = chained_request(sid, 5, sealed=True)
                    storage.ingest(parse_ingest_request(request.SerializeToString()), ident)
                    storage.checkpoint(key)
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        leaves = read_leaves(replicas[1])
        # One batch leaf and one seal leaf per request, indices 0..n-1 with no hole.
        assert len(leaves) == 2 * 2 * REQUESTS_PER_REPLICA
        assert all(leaves)
        frontier = Frontier()
        for leaf in leaves:
            frontier.append(leaf)
        ((state,),) = replicas[0].query("SELECT frontier FROM log_state")
        assert Frontier.from_bytes(bytes.fromhex(state)).root() == frontier.root()
        sizes = [parse_checkpoint(c).checkpoint.tree_size for c in read_checkpoints(replicas[0])]
        assert sizes == sorted(sizes)
        assert sizes[-1] == len(leaves)
        report = verify_db(replicas[1], key.public_key())
        assert report.ok, report.failures()
        assert report.events_checked == 5 * 2 * REQUESTS_PER_REPLICA
    finally:
        for storage in replicas:
            storage.close()
