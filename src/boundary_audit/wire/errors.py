"""Typed protocol errors. Each says what went wrong and carries the numbers."""

from __future__ import annotations


class WireError(Exception):
    """Base class of every framing and decoding error."""


class ProtocolError(WireError):
    """The stream broke the protocol and cannot be resynchronised: close it."""


class OversizeFrameError(ProtocolError):
    """A frame announced (or a sender tried) a payload above the cap."""

    def __init__(self, length: int, limit: int, tag: int | None = None) -> None:
        self.length = length
        self.limit = limit
        self.tag = tag
        where = f" (tag {tag})" if tag is not None else ""
        super().__init__(f"frame payload of {length} bytes{where} exceeds the {limit}-byte limit")


class UnknownTagError(ProtocolError):
    """A frame header carried a tag this protocol does not define."""

    def __init__(self, tag: int, length: int | None = None) -> None:
        self.tag = tag
        self.length = length
        extra = f" (announced length {length})" if length is not None else ""
        super().__init__(f"unknown frame tag {tag}{extra}; known tags are 1 and 2")


class TruncatedFrameError(WireError):
    """The stream ended in the middle of a frame."""

    def __init__(self, expected: int, received: int, tag: int | None) -> None:
        self.expected = expected
        self.received = received
        self.tag = tag
        part = "header" if tag is None else f"payload of tag {tag}"
        super().__init__(f"stream ended inside a frame {part}: got {received} of {expected} bytes")


class UndecodablePayloadError(WireError):
    """A whole frame arrived but its payload is not the message its tag names.

    Not a protocol error: the framing is intact, so a reader may skip the
    frame and keep reading.
    """

    def __init__(self, tag: int, length: int, reason: str) -> None:
        self.tag = tag
        self.length = length
        self.reason = reason
        super().__init__(f"payload of {length} bytes with tag {tag} does not decode: {reason}")
