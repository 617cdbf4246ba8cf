from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor

from boundary_audit import wire
from boundary_audit.wire import (
    EXTENSION_FIRST_FIELD,
    BoundaryLog,
    BoundaryMessage,
    ReportBoundaryLogsRequest,
    Tag,
    UndecodablePayloadError,
    decode_payload,
    encode_message,
)

REPO = Path(__file__).resolve().parents[2]
FD = descriptor.FieldDescriptor


def _fields(msg: Any) -> dict[str, tuple[int, int]]:
    return {f.name: (f.number, f.type) for f in msg.fields}


def test_schema_matches_coder_exactly() -> None:
    log = BoundaryLog.DESCRIPTOR
    assert log.full_name == "coder.agent.v2.BoundaryLog"
    log_ours = {k: v for k, v in _fields(log).items() if v[0] >= EXTENSION_FIRST_FIELD}
    assert log_ours == {"chain_digest": (16, FD.TYPE_BYTES)}
    assert {k: v for k, v in _fields(log).items() if v[0] < EXTENSION_FIRST_FIELD} == {
        "allowed": (1, FD.TYPE_BOOL),
        "time": (2, FD.TYPE_MESSAGE),
        "http_request": (3, FD.TYPE_MESSAGE),
        "sequence_number": (4, FD.TYPE_INT32),
    }
    assert log.fields_by_name["time"].message_type is not None
    assert log.fields_by_name["time"].message_type.full_name == "google.protobuf.Timestamp"
    assert [f.name for f in log.oneofs_by_name["resource"].fields] == ["http_request"]
    http = log.nested_types_by_name["HttpRequest"]
    assert http.full_name == "coder.agent.v2.BoundaryLog.HttpRequest"
    assert _fields(http) == {
        "method": (1, FD.TYPE_STRING),
        "url": (2, FD.TYPE_STRING),
        "matched_rule": (3, FD.TYPE_STRING),
    }
    req = ReportBoundaryLogsRequest.DESCRIPTOR
    assert req.full_name == "coder.agent.v2.ReportBoundaryLogsRequest"
    assert _fields(req) == {
        "logs": (1, FD.TYPE_MESSAGE),
        "session_id": (2, FD.TYPE_STRING),
        "confined_process_name": (3, FD.TYPE_STRING),
    }
    assert req.fields_by_name["logs"].is_repeated
    env = BoundaryMessage.DESCRIPTOR
    assert env.full_name == "coder.boundarylogproxy.codec.v1.BoundaryMessage"
    assert _fields(env) == {"logs": (1, FD.TYPE_MESSAGE), "status": (2, FD.TYPE_MESSAGE)}
    assert [f.name for f in env.oneofs_by_name["msg"].fields] == ["logs", "status"]
    status = wire.BoundaryStatus.DESCRIPTOR
    assert status.full_name == "coder.boundarylogproxy.codec.v1.BoundaryStatus"
    coder_fields = {k: v for k, v in _fields(status).items() if v[0] < EXTENSION_FIRST_FIELD}
    assert coder_fields == {
        "dropped_channel_full": (1, FD.TYPE_INT64),
        "dropped_batch_full": (2, FD.TYPE_INT64),
    }


def test_extensions_stay_where_coder_ignores_them() -> None:
    """Our fields live only inside BoundaryStatus, numbered from 16; no new oneof member."""
    status = _fields(wire.BoundaryStatus.DESCRIPTOR)
    ours = {name for name, (number, _) in status.items() if number >= EXTENSION_FIRST_FIELD}
    assert ours == {"session_id", "open", "seal", "ack"}
    assert [f.name for f in BoundaryMessage.DESCRIPTOR.oneofs_by_name["msg"].fields] == [
        "logs",
        "status",
    ]
    # An extended status decodes as Coder's two counters with nothing else set.
    msg = BoundaryMessage()
    msg.status.session_id = "5b4d0bd6-8f0e-4c39-9b0a-000000000000"
    msg.status.seal.events_made = 7
    msg.status.open.want_acks = True
    coder_view = BoundaryMessage()
    coder_view.ParseFromString(msg.SerializeToString())
    assert coder_view.status.dropped_channel_full == 0
    assert coder_view.status.dropped_batch_full == 0


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _sample_request(n: int = 3) -> ReportBoundaryLogsRequest:
    req = ReportBoundaryLogsRequest(session_id="6f1c1d4e-8b2a-4d36-9c1e-2b7a0d5e9f10")
    req.confined_process_name = "claude-code"
    for i in range(n):
        log = req.logs.add(allowed=i % 2 == 0, sequence_number=i)
        log.time.seconds = 1_700_000_000 + i
        log.http_request.method = "GET"
        log.http_request.url = f"https://example.com/{i}"
    return req


def test_message_tags_and_round_trip() -> None:
    req = _sample_request()
    frame = encode_message(req)
    assert frame[0] == Tag.V1_LOGS
    env = BoundaryMessage()
    env.status.dropped_channel_full = 5
    assert encode_message(env)[0] == Tag.V2_ENVELOPE
    decoded = decode_payload(Tag.V1_LOGS, frame[4:])
    assert decoded == req
    assert wire.as_envelope(decoded).logs == req


def test_undecodable_payload_carries_numbers() -> None:
    with pytest.raises(UndecodablePayloadError) as exc:
        decode_payload(Tag.V2_ENVELOPE, b"\xff\xff\xff\xff")
    assert exc.value.tag == 2
    assert exc.value.length == 4
    assert "does not decode" in str(exc.value)
    with pytest.raises(wire.UnknownTagError):
        decode_payload(9, b"")


def test_blocking_helpers_over_a_real_socket(sock_dir: Path) -> None:
    path = str(sock_dir / "b.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    server, _ = listener.accept()
    with listener, client, server:
        wire.write_message(client, _sample_request(5))
        wire.write_frame(client, Tag.V2_ENVELOPE, b"")
        assert wire.read_message(server) == _sample_request(5)
        assert wire.read_frame(server) == wire.Frame(2, b"")
        client.sendall(encode_message(_sample_request())[:6])
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(wire.TruncatedFrameError):
            wire.read_frame(server)


def test_blocking_read_rejects_oversize_before_reading_payload(sock_dir: Path) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(((2 << 24) | 0xFFFFFF).to_bytes(4, "big"))
        with pytest.raises(wire.OversizeFrameError) as exc:
            wire.read_frame(b)
        assert exc.value.length == 0xFFFFFF
        a.close()
        with pytest.raises(EOFError):
            wire.read_frame(b)


async def test_asyncio_helpers_over_a_real_socket(sock_dir: Path) -> None:
    path = str(sock_dir / "a.sock")
    received: list[wire.WireMessage] = []
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                received.append(await wire.aio.read_message(reader))
        except EOFError:
            pass
        writer.close()
        done.set()

    server = await asyncio.start_unix_server(handle, path)
    async with server:
        _, writer = await asyncio.open_unix_connection(path)
        await wire.aio.write_message(writer, _sample_request(2))
        env = BoundaryMessage()
        env.logs.CopyFrom(_sample_request(1))
        await wire.aio.write_message(writer, env)
        await wire.aio.write_frame(writer, Tag.V2_ENVELOPE, env.SerializeToString())
        writer.close()
        await asyncio.wait_for(done.wait(), 10)
    assert received == [_sample_request(2), env, env]


def test_socket_path_resolution(tmp_path: Path) -> None:
    env = {"CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH": "/run/x/agent.sock"}
    assert wire.resolve_socket_path("/explicit.sock", env) == Path("/explicit.sock")
    assert wire.resolve_socket_path(None, env) == Path("/run/x/agent.sock")
    # Like Coder's: the temp dir, whatever XDG_RUNTIME_DIR says.
    runtime = {"XDG_RUNTIME_DIR": str(tmp_path)}
    default = wire.resolve_socket_path(None, runtime)
    assert default == Path(tempfile.gettempdir()) / "boundary-audit.sock"
    # A configured path is the only place a sender looks...
    assert wire.socket_path_candidates("/explicit.sock", runtime) == [Path("/explicit.sock")]
    assert wire.socket_path_candidates(None, {**runtime, **env}) == [Path("/run/x/agent.sock")]
    # ...otherwise Coder's default first, then our old one.
    assert wire.socket_path_candidates(None, runtime) == [default, tmp_path / "boundary-audit.sock"]
    assert wire.legacy_socket_path({"XDG_RUNTIME_DIR": str(tmp_path / "nope")}) is None
    assert wire.socket_path_candidates(None, {}) == [default]


def test_the_default_socket_is_in_the_temp_dir_as_tmpdir_resolves_it(tmp_path: Path) -> None:
    """Never an assumed /tmp: TMPDIR moves it (checked in a fresh interpreter,
    since tempfile caches the temp dir per process)."""
    code = "from boundary_audit import wire; print(wire.resolve_socket_path(None, {}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert out == str(tmp_path / "boundary-audit.sock")
