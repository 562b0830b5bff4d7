"""Text a client sent, made safe to log and to hold: bounded in size, escaped.

A NACK's `error_detail.message`, a node id, a type URL: a client chooses them, so
they may be megabytes long or hold a newline that forges a log line. Everything a
client sends is passed through `shown` before it reaches a log line or an error
message, and `bounded` before it is kept in a stream's state.
"""

from __future__ import annotations

from typing import Final

LOG_LIMIT: Final = 512  # characters of client text in one log line or error message
KEEP_LIMIT: Final = 4096  # characters of a NACK message kept for `status`


def bounded(text: str, limit: int = KEEP_LIMIT) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _escape(char: str) -> str:
    if char.isprintable():
        return char
    return char.encode("unicode_escape").decode("ascii")


def shown(value: object, limit: int = LOG_LIMIT) -> str:
    """`value` as one line of printable text: control and other non-printable characters
    escaped (``\\n``, ``\\x1b``, ``\\u2028``), at most about `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    escaped = "".join(_escape(c) for c in text[:limit])
    if len(text) > limit or len(escaped) > limit:
        return f"{escaped[:limit]}... [{len(text)} characters in all]"
    return escaped
