"""Spill files: the agent delivers what a sender could not before its close timeout."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from boundary_audit.agent import Agent
from boundary_audit.auditor import SocketAuditor
from boundary_audit.wire import spill
from tests.support import aeventually, eventually
from tests.support.doubles import CollectorDouble
from tests.support.services import AgentProcess

from .helpers import ConfigFactory, logs_frame, metric, new_session
from .test_interop import event

pytestmark = pytest.mark.timeout(120)

#: Events the sender makes while the agent is frozen.
FROZEN_EVENTS = 300
#: The sender's close timeout: short, the agent is frozen and will not answer.
CLOSE_TIMEOUT_S = 1.0
#: Scan interval of the agent processes under test, so a resumed agent finds
#: the file quickly.
SCAN_INTERVAL_S = 0.2


@pytest.mark.parametrize("then", ["resume", "restart"])
def test_sender_closing_while_the_agent_is_frozen_spills_and_the_agent_delivers_it(
    sock_dir: Path, collector_double: CollectorDouble, then: str
) -> None:
    spill_dir = sock_dir / "spill"
    proc = AgentProcess(
        sock_dir,
        sock_dir,
        collector_double.url,
        collector_double.state.token,
        "--spill-dir",
        str(spill_dir),
        "--spill-scan-interval",
        str(SCAN_INTERVAL_S),
    )
    try:
        proc.start()
        session = str(uuid.uuid4())
        auditor = SocketAuditor(
            proc.socket_path, session_id=session, spill_dir=spill_dir, batch_interval=0.02
        )
        auditor.audit(event(0))
        eventually(lambda: collector_double.event_count() == 1, "the first event")
        proc.pause()
        for i in range(1, FROZEN_EVENTS):
            auditor.audit(event(i))
        auditor.close(CLOSE_TIMEOUT_S)
        stats = auditor.stats
        assert stats.spilled > 0, stats
        assert spill.list_spills(spill_dir)
        if then == "restart":
            proc.kill()  # what sat in the socket buffer dies with it
            proc.start()
        else:
            proc.resume()
        eventually(lambda: not spill.list_spills(spill_dir), "the spill file to be delivered")
        eventually(
            lambda: collector_double.event_count() == FROZEN_EVENTS - stats.dropped_total,
            "every event stored",
        )
        assert len(collector_double.order(session)) == FROZEN_EVENTS - stats.dropped_total
        # The socket's seal (spilled 0) may come first; the spill file's, which
        # supersedes it, ends the file and arrives with its last batch.
        eventually(
            lambda: any(r.seal.spilled == stats.spilled for r in collector_double.seals(session)),
            "the spill file's seal",
        )
        latest = max(
            collector_double.seals(session), key=lambda r: r.seal.sealed_at.ToNanoseconds()
        )
        assert latest.seal.events_made == FROZEN_EVENTS
        assert latest.seal.spilled == stats.spilled
        assert proc.metric("boundary_audit_agent_spill_files_total", outcome="delivered") >= 1
        assert proc.stop() == 0
    finally:
        proc.ensure_stopped()


def _write_spill(directory: Path, session: str, frames: list[bytes]) -> Path:
    return spill.write_spill(directory, spill.spill_name(session, 1), spill.encode_spill(frames))


async def test_spill_files_found_at_start_are_delivered_once(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    config = make_config()
    assert config.spill_dir is not None
    session = new_session()
    path = _write_spill(config.spill_dir, session, [logs_frame(session, 0, 5)])
    async with Agent(config) as agent:
        await aeventually(lambda: collector_double.order(session) == list(range(5)))
        await aeventually(lambda: not path.exists())
        assert await agent.scan_spills() == 0  # nothing left to deliver twice
    assert collector_double.state.duplicates == 0


async def test_a_spill_file_that_does_not_decode_is_quarantined_and_counted(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    config = make_config()
    assert config.spill_dir is not None
    good = new_session()
    bad = _write_spill(config.spill_dir, new_session(), [b"\x02\x00\x00\x05ab"])  # truncated
    _write_spill(config.spill_dir, good, [logs_frame(good, 0, 2)])
    async with Agent(config) as agent:
        await aeventually(
            lambda: (
                metric(agent, "boundary_audit_agent_spill_files_total", outcome="quarantined") == 1
            )
        )
        await aeventually(lambda: collector_double.order(good) == [0, 1])  # the next one goes on
    assert not bad.exists()
    assert bad.with_name(bad.name + spill.CORRUPT_SUFFIX).exists()


async def test_a_spill_file_claimed_by_a_sender_is_left_to_it(
    make_config: ConfigFactory, collector_double: CollectorDouble
) -> None:
    config = make_config()
    assert config.spill_dir is not None
    session = new_session()
    path = _write_spill(config.spill_dir, session, [logs_frame(session, 0, 3)])
    claim = spill.claim_spill(path)
    assert claim is not None
    try:
        async with Agent(config) as agent:
            assert await agent.scan_spills() == 0
            assert path.exists()
            assert collector_double.order(session) == []
            claim.release()
            await agent.scan_spills()  # this scan, or the timer's, delivers it
            await aeventually(lambda: collector_double.order(session) == [0, 1, 2])
            await aeventually(lambda: not path.exists())
    finally:
        claim.release()
    assert os.listdir(config.spill_dir) == []
