"""Text fields as stored: cut past a storage limit (visibly), escaped where engines cannot.

Pure functions over strings. The collector refuses no event a valid frame can
carry, so instead of refusing a value it:

* **cuts** one longer than :data:`STORED_TEXT_CHARS` (more than a whole
  frame's payload, so no value from a frame is ever cut): the first
  characters, then :data:`CUT_MARKER`; the event is flagged ``EventFlag.CUT``.
* **escapes** one holding a NUL (PostgreSQL's text cannot) or invalid UTF-8
  (decoded with ``surrogateescape``, so each bad byte is a lone surrogate
  U+DC80..U+DCFF): ``\\`` becomes ``\\\\``, NUL becomes ``\\0`` and each bad
  byte ``\\xHH``; the event is flagged ``EventFlag.ESCAPED``.
  :func:`unescape` gives the value back exactly, so a chain can be rebuilt.
  Values without either are stored as they are (and never unescaped).
"""

from __future__ import annotations

import re

from boundary_audit.wire import MAX_PAYLOAD_SIZE

from .model import EventFlag

#: Longest text stored whole: a frame's whole payload, so anything a valid
#: frame carries fits; longer values can only come from other senders.
STORED_TEXT_CHARS = MAX_PAYLOAD_SIZE
#: Appended to a cut value, so people see it was cut (the flag says so too).
CUT_MARKER = "…[cut by the collector]"

_NEEDS_ESCAPE = re.compile("[\x00\udc80-\udcff]")
_ESCAPED = re.compile(r"\\(\\|0|x[0-9a-f]{2})")


def needs_escape(value: str) -> bool:
    return _NEEDS_ESCAPE.search(value) is not None


def escape(value: str) -> str:
    """The reversible escape of a value that :func:`needs_escape`."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\x00":
            out.append("\\0")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _unescape_one(match: re.Match[str]) -> str:
    code = match.group(1)
    if code == "\\":
        return "\\"
    if code == "0":
        return "\x00"
    return chr(0xDC00 + int(code[1:], 16))


def unescape(value: str) -> str:
    """The value as sent, from the stored form of an ``ESCAPED`` event's field."""
    return _ESCAPED.sub(_unescape_one, value)


def as_bytes(value: str) -> bytes:
    """The UTF-8 bytes as sent (bad bytes included) of an unescaped value."""
    return value.encode("utf-8", "surrogateescape")


def stored_text(value: str, limit: int = STORED_TEXT_CHARS) -> tuple[str, int]:
    """``value`` as it can be stored, and the EventFlag bits saying what was done to it."""
    flags = 0
    if needs_escape(value):
        value = escape(value)
        flags |= EventFlag.ESCAPED
    if len(value) > limit:
        value = value[: limit - len(CUT_MARKER)] + CUT_MARKER
        flags |= EventFlag.CUT
    return value, flags


def clean_text(value: str, limit: int) -> str:
    """An id, name or reason as it can be stored (escaped and cut as above, no flag kept)."""
    return stored_text(value, limit)[0]
