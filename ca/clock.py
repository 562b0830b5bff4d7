"""Time as an injectable dependency.

Every function in `ca` that needs "now" takes a `Clock` (a zero-argument callable
returning an aware UTC datetime) instead of calling `datetime.now()` itself, so
tests can drive a rotation timeline with `ManualClock`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "ManualClock", "ensure_utc", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock: the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime; naive values are taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class ManualClock:
    """A clock that only moves when told to; for tests and simulations."""

    __slots__ = ("_now",)

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by `delta` (which may not be negative) and return the new time."""
        if delta < timedelta(0):
            raise ValueError(f"a clock cannot go backwards (delta {delta})")
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to `when` (forwards or backwards)."""
        self._now = ensure_utc(when)
