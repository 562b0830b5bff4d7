"""When to renew: leaf renewal times, and the root-rotation state machine.

Leaf renewal
    `renewal_time` puts a certificate's renewal at half its life, +-10 % jitter from an
    injectable random source (SPIRE's and Istio's default), so a fleet issued at once
    does not renew at once.

Root rotation without failed requests
    A `RootRotation` holds every root currently trusted, each in one state::

        PENDING --activate--> ACTIVE --activate(next)--> RETIRED --prune--> (gone)

    1. `begin(new_signer, now)` adds a new root as PENDING: it joins the trust bundle
       at once but signs nothing yet. Refused while another root is pending, or while
       `max_retired` retired roots are still trusted (the bundle stays bounded).
    2. Once every proxy has the new bundle — the server knows (it saw the ROOTCA ACKs);
       `min_overlap` is a floor — `activate(now)` makes it ACTIVE: new leaves are signed
       by it; the previous root becomes RETIRED, still in the bundle.
    3. `prune(now)` drops a RETIRED root once the last certificate it signed has expired
       (`signed_until`, the latest NotAfter it issued), or once the root itself expired.

    `signed_until` of the active root is tracked exactly in memory; the value written to
    disk (`to_dict`) is a high-water mark rounded up by `persist_slack`, so the store
    writes at most once per slack period and a restarted CA never prunes too early.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ca.bundle import TrustBundle
from ca.clock import ensure_utc
from ca.errors import RotationError
from ca.signer import Signer

__all__ = [
    "DEFAULT_MAX_RETIRED",
    "DEFAULT_MIN_OVERLAP",
    "DEFAULT_PERSIST_SLACK",
    "RENEW_FRACTION",
    "RENEW_JITTER",
    "RootEntry",
    "RootRotation",
    "RootState",
    "renewal_time",
    "root_rotation_due",
]

RENEW_FRACTION = 0.5
RENEW_JITTER = 0.1
DEFAULT_MIN_OVERLAP = timedelta(minutes=10)
DEFAULT_PERSIST_SLACK = timedelta(hours=1)
# Retired roots stay trusted until the last certificate each signed expires (a day, with
# the default SVID lifetime); more rotations meanwhile would grow every proxy's bundle.
DEFAULT_MAX_RETIRED = 2
ROOT_ROTATION_GRACE = 0.2  # rotate a root when less than 20 % of its life is left (Istio)
_STATE_FORMAT = 1


def renewal_time(
    issued_at: datetime,
    not_after: datetime,
    rng: Callable[[], float],
    *,
    fraction: float = RENEW_FRACTION,
    jitter: float = RENEW_JITTER,
) -> datetime:
    """When to renew a certificate used from `issued_at` to `not_after`.

    ``issued_at + lifetime * fraction * (1 + j)`` with ``j`` uniform in ``[-jitter, jitter]``
    drawn as ``(2 * rng() - 1) * jitter``; `rng` returns floats in ``[0, 1]`` (e.g.
    ``random.Random(seed).random``). With the defaults: between 45 % and 55 % of the life.
    """
    u = min(max(rng(), 0.0), 1.0)
    factor = fraction * (1.0 + (2.0 * u - 1.0) * jitter)
    return issued_at + (not_after - issued_at) * factor


def root_rotation_due(
    signer: Signer, now: datetime, *, grace_fraction: float = ROOT_ROTATION_GRACE
) -> bool:
    """True when less than `grace_fraction` of the signing root's lifetime remains."""
    total = signer.not_after - signer.not_before
    return signer.not_after - now < total * grace_fraction


class RootState(enum.Enum):
    PENDING = "pending"  # trusted, not yet signing
    ACTIVE = "active"  # trusted, signing
    RETIRED = "retired"  # trusted until its last certificate expires


@dataclass(frozen=True, slots=True)
class RootEntry:
    """A snapshot of one trusted root and where it is in its life."""

    signer: Signer
    state: RootState
    added_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    signed_until: datetime | None  # latest NotAfter of any certificate it signed

    @property
    def key_id(self) -> str:
        return self.signer.key_id


class _Slot:
    """The mutable record behind a `RootEntry`."""

    __slots__ = (
        "activated_at",
        "added_at",
        "persisted_until",
        "retired_at",
        "signed_until",
        "signer",
        "state",
    )

    def __init__(
        self,
        signer: Signer,
        state: RootState,
        added_at: datetime,
        activated_at: datetime | None = None,
        retired_at: datetime | None = None,
        signed_until: datetime | None = None,
    ) -> None:
        self.signer = signer
        self.state = state
        self.added_at = added_at
        self.activated_at = activated_at
        self.retired_at = retired_at
        self.signed_until = signed_until
        self.persisted_until = signed_until

    def snapshot(self) -> RootEntry:
        return RootEntry(
            signer=self.signer,
            state=self.state,
            added_at=self.added_at,
            activated_at=self.activated_at,
            retired_at=self.retired_at,
            signed_until=self.signed_until,
        )


def _retired_until(slot: _Slot) -> datetime:
    """When a retired root may leave the bundle (see `RootRotation.prune`)."""
    if slot.signed_until is None:
        return slot.retired_at or slot.added_at
    return min(slot.signed_until, slot.signer.not_after)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RotationError(f"rotation state: {what} must be an ISO time string, got {value!r}")
    try:
        return ensure_utc(datetime.fromisoformat(value))
    except ValueError as exc:
        raise RotationError(f"rotation state: bad {what} {value!r}") from exc


class RootRotation:
    """The trusted roots and which one signs. Thread-safe; no I/O, no clock of its own."""

    def __init__(
        self,
        slots: Sequence[_Slot],
        *,
        min_overlap: timedelta = DEFAULT_MIN_OVERLAP,
        persist_slack: timedelta = DEFAULT_PERSIST_SLACK,
        max_retired: int = DEFAULT_MAX_RETIRED,
    ) -> None:
        """Internal; build one with `single` (a new CA) or `from_dict` (saved state)."""
        actives = [s for s in slots if s.state is RootState.ACTIVE]
        if len(actives) != 1:
            raise RotationError(f"exactly one root must be active, found {len(actives)}")
        if sum(s.state is RootState.PENDING for s in slots) > 1:
            raise RotationError("at most one root may be pending")
        key_ids = [s.signer.key_id for s in slots]
        if len(set(key_ids)) != len(key_ids):
            raise RotationError("two roots share a key")
        if min_overlap < timedelta(0) or persist_slack < timedelta(0):
            raise RotationError("min_overlap and persist_slack must not be negative")
        self._lock = threading.RLock()
        self._slots: list[_Slot] = list(slots)
        self._active = actives[0]
        self._bundle: TrustBundle | None = None
        self.min_overlap = min_overlap
        self.persist_slack = persist_slack
        self.max_retired = max_retired

    @classmethod
    def single(
        cls,
        signer: Signer,
        now: datetime,
        *,
        min_overlap: timedelta = DEFAULT_MIN_OVERLAP,
        persist_slack: timedelta = DEFAULT_PERSIST_SLACK,
    ) -> RootRotation:
        """The state of a fresh CA: one active root."""
        slot = _Slot(signer, RootState.ACTIVE, added_at=now, activated_at=now)
        return cls([slot], min_overlap=min_overlap, persist_slack=persist_slack)

    # -- reading -------------------------------------------------------------------

    @property
    def signer(self) -> Signer:
        """The signer new certificates are issued with (the ACTIVE root's)."""
        return self._active.signer

    @property
    def active(self) -> RootEntry:
        return self._active.snapshot()

    @property
    def pending(self) -> RootEntry | None:
        with self._lock:
            for s in self._slots:
                if s.state is RootState.PENDING:
                    return s.snapshot()
        return None

    @property
    def entries(self) -> tuple[RootEntry, ...]:
        """Every trusted root: active, then pending, then retired (newest first)."""
        with self._lock:
            return tuple(s.snapshot() for s in self._ordered())

    def _ordered(self) -> list[_Slot]:
        rank = {RootState.ACTIVE: 0, RootState.PENDING: 1, RootState.RETIRED: 2}
        return sorted(
            self._slots,
            key=lambda s: (rank[s.state], -(s.retired_at or s.added_at).timestamp()),
        )

    @property
    def bundle(self) -> TrustBundle:
        """Every root currently trusted (pending, active, retired)."""
        bundle = self._bundle
        if bundle is None:
            with self._lock:
                anchors = [a for s in self._ordered() for a in s.signer.anchors]
                bundle = self._bundle = TrustBundle(anchors)
        return bundle

    # -- transitions ---------------------------------------------------------------

    def begin(self, signer: Signer, now: datetime) -> RootEntry:
        """Add `signer` as the PENDING root: trusted from now on, signing nothing yet."""
        with self._lock:
            if any(s.state is RootState.PENDING for s in self._slots):
                raise RotationError(
                    "a root rotation is already in progress (a root is pending); it "
                    "completes once every connected proxy has the new trust bundle"
                )
            retired = [s for s in self._slots if s.state is RootState.RETIRED]
            if len(retired) >= self.max_retired:
                until = min(_retired_until(s) for s in retired)
                raise RotationError(
                    f"{len(retired)} retired roots are still trusted (the limit); the first "
                    f"leaves the trust bundle at {until.isoformat()}, once every "
                    "certificate it signed has expired: rotate again after that"
                )
            if any(s.signer.key_id == signer.key_id for s in self._slots):
                raise RotationError("the new root's key is already in the trust bundle")
            slot = _Slot(signer, RootState.PENDING, added_at=now)
            self._slots.append(slot)
            self._bundle = None
            return slot.snapshot()

    def overlap_remaining(self, now: datetime) -> timedelta | None:
        """Time left before the pending root may be activated; None when none is pending."""
        pending = self.pending
        if pending is None:
            return None
        return max(pending.added_at + self.min_overlap - now, timedelta(0))

    def can_activate(self, now: datetime) -> bool:
        remaining = self.overlap_remaining(now)
        return remaining is not None and remaining == timedelta(0)

    def activate(self, now: datetime, *, force: bool = False) -> RootEntry:
        """Make the pending root sign; retire the previous one (it stays trusted).

        Raises:
            RotationError: nothing pending, or `min_overlap` not yet over (unless `force`).
        """
        with self._lock:
            pending = next((s for s in self._slots if s.state is RootState.PENDING), None)
            if pending is None:
                raise RotationError("no pending root to activate; call begin first")
            ready_at = pending.added_at + self.min_overlap
            if now < ready_at and not force:
                raise RotationError(
                    f"the new root has been in the trust bundle only since "
                    f"{pending.added_at.isoformat()}; the minimum overlap ends at "
                    f"{ready_at.isoformat()} (pass force=True if every proxy has it)"
                )
            old = self._active
            old.state = RootState.RETIRED
            old.retired_at = now
            pending.state = RootState.ACTIVE
            pending.activated_at = now
            self._active = pending
            self._bundle = None
            return pending.snapshot()

    def prune(self, now: datetime) -> tuple[RootEntry, ...]:
        """Drop RETIRED roots whose every certificate has expired; return what was dropped.

        A retired root stays while ``now <= signed_until`` (and while it is itself valid),
        so certificates it signed verify against the bundle until they expire.
        """
        with self._lock:
            gone = [
                s
                for s in self._slots
                if s.state is RootState.RETIRED
                and (s.signed_until is None or now > s.signed_until or now > s.signer.not_after)
            ]
            if gone:
                self._slots = [s for s in self._slots if s not in gone]
                self._bundle = None
            return tuple(s.snapshot() for s in gone)

    def replace_active_signer(self, signer: Signer) -> RootEntry:
        """Swap the active root's certificate for a re-issue with the same key."""
        with self._lock:
            if signer.key_id != self._active.signer.key_id:
                raise RotationError("a re-issued root must keep the same key")
            self._active.signer = signer
            self._bundle = None
            return self._active.snapshot()

    def record_issued(self, not_after: datetime) -> bool:
        """Note that the active root signed a certificate ending at `not_after`.

        Returns True when the persisted high-water mark had to move, i.e. the caller
        should save the state (at most about once per `persist_slack`).
        """
        slot = self._active
        with self._lock:
            if slot.signed_until is None or not_after > slot.signed_until:
                slot.signed_until = not_after
            if slot.persisted_until is None or not_after > slot.persisted_until:
                slot.persisted_until = not_after + self.persist_slack
                return True
        return False

    # -- undo (a transition whose state could not be saved is taken back) -------------

    def checkpoint(self) -> object:
        """An opaque copy of the state, for `restore`."""
        with self._lock:
            fields = [(s, *(getattr(s, f) for f in _Slot.__slots__)) for s in self._slots]
            return (fields, self._active)

    def restore(self, checkpoint: object) -> None:
        """Go back to the state of `checkpoint` (made by this rotation's `checkpoint`)."""
        fields: list[tuple[Any, ...]]
        active: _Slot
        fields, active = checkpoint  # type: ignore[misc]
        with self._lock:
            for slot, *values in fields:
                for name, value in zip(_Slot.__slots__, values, strict=True):
                    setattr(slot, name, value)
            self._slots = [slot for slot, *_ in fields]
            self._active = active
            self._bundle = None

    # -- persistence (plain data; files are store.py's business) ---------------------

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            roots = []
            for s in self._ordered():
                until = s.signed_until
                if s.state is RootState.ACTIVE and s.persisted_until is not None:
                    until = max(until or s.persisted_until, s.persisted_until)
                roots.append(
                    {
                        "key_id": s.signer.key_id,
                        "state": s.state.value,
                        "added_at": _iso(s.added_at),
                        "activated_at": _iso(s.activated_at),
                        "retired_at": _iso(s.retired_at),
                        "signed_until": _iso(until),
                    }
                )
            return {"format": _STATE_FORMAT, "roots": roots}

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        signers: Mapping[str, Signer],
        *,
        min_overlap: timedelta = DEFAULT_MIN_OVERLAP,
        persist_slack: timedelta = DEFAULT_PERSIST_SLACK,
    ) -> RootRotation:
        """Rebuild from `to_dict` output; `signers` maps key IDs to loaded signers."""
        if data.get("format") != _STATE_FORMAT:
            raise RotationError(f"unsupported rotation state format {data.get('format')!r}")
        roots = data.get("roots")
        if not isinstance(roots, list) or not roots:
            raise RotationError("rotation state lists no roots")
        slots = []
        for item in roots:
            key_id = item.get("key_id")
            signer = signers.get(key_id) if isinstance(key_id, str) else None
            if signer is None:
                raise RotationError(f"rotation state names root {key_id!r} but it was not loaded")
            try:
                state = RootState(item.get("state"))
            except ValueError as exc:
                raise RotationError(f"unknown root state {item.get('state')!r}") from exc
            added_at = _parse_time(item.get("added_at"), "added_at")
            if added_at is None:
                raise RotationError(f"root {key_id}: added_at missing")
            slots.append(
                _Slot(
                    signer,
                    state,
                    added_at=added_at,
                    activated_at=_parse_time(item.get("activated_at"), "activated_at"),
                    retired_at=_parse_time(item.get("retired_at"), "retired_at"),
                    signed_until=_parse_time(item.get("signed_until"), "signed_until"),
                )
            )
        return cls(slots, min_overlap=min_overlap, persist_slack=persist_slack)
