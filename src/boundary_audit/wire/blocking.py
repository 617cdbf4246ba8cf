"""Blocking-socket helpers over the sans-I/O framing."""

from __future__ import annotations

import socket

from .errors import TruncatedFrameError
from .framing import HEADER_SIZE, Frame, encode_frame, parse_header
from .messages import WireMessage, decode_payload, encode_message


def _recv_exactly(sock: socket.socket, n: int, tag: int | None) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0 and tag is None:
                raise EOFError("connection closed at a frame boundary")
            raise TruncatedFrameError(expected=n, received=got, tag=tag)
        got += k
    return bytes(buf)


def write_frame(sock: socket.socket, tag: int, payload: bytes) -> None:
    sock.sendall(encode_frame(tag, payload))


def read_frame(sock: socket.socket) -> Frame:
    """Read one whole frame. ``EOFError`` on a clean close between frames."""
    tag, length = parse_header(_recv_exactly(sock, HEADER_SIZE, None))
    payload = _recv_exactly(sock, length, tag) if length else b""
    return Frame(tag, payload)


def write_message(sock: socket.socket, message: WireMessage) -> None:
    sock.sendall(encode_message(message))


def read_message(sock: socket.socket) -> WireMessage:
    frame = read_frame(sock)
    return decode_payload(frame.tag, frame.payload)
