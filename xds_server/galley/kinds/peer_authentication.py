"""PeerAuthentication: which mTLS mode a workload's inbound side takes (STRICT, ...)."""

from __future__ import annotations

from collections.abc import Mapping

from ..fields import Shape, keyed, not_yet, obj, shape, supported
from ..model import ObjectMeta
from ..model_security import MTLS_MODES, PeerAuthentication
from ..schema import DocChecker, Located
from .common import MAX_PORT, freeze, parse_labels

MATCH_LABELS: Shape = shape(matchLabels=supported("empty: every workload of the namespace"))
MTLS: Shape = shape(mode=supported("STRICT, PERMISSIVE, DISABLE, UNSET (inherit)"))
SPEC: Shape = shape(
    selector=obj(MATCH_LABELS),
    mtls=obj(MTLS),
    portLevelMtls=keyed(MTLS, "workload port -> mode; needs a selector (as in Istio)"),
    targetRef=not_yet(),
    targetRefs=not_yet(),
)


def parse_match_labels(ck: DocChecker, at: Located) -> Mapping[str, str] | None:
    """`selector: {matchLabels: {...}}` (security kinds); empty selects the namespace."""
    fields = ck.fields(at, MATCH_LABELS)
    if fields is None:
        return None
    labels = parse_labels(ck, fields.get("matchLabels"))
    if not labels:
        ck.warn(at, "has no matchLabels: it applies to every workload of the namespace")
        return None
    return freeze(labels)


def _mode(ck: DocChecker, at: Located) -> str | None:
    fields = ck.fields(at, MTLS)
    if fields is None:
        return None
    mode_at = fields.get("mode")
    return "UNSET" if mode_at is None else ck.enum(mode_at, MTLS_MODES)


def parse_peer_authentication(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> PeerAuthentication | None:
    before = len(ck.errors)
    selector: Mapping[str, str] | None = None
    mode: str | None = "UNSET"
    port_level: dict[int, str] = {}
    if spec is not None:
        fields = ck.fields(spec, SPEC)
        if fields is None:
            return None
        if (at := fields.get("selector")) is not None:
            selector = parse_match_labels(ck, at)
        if (at := fields.get("mtls")) is not None:
            mode = _mode(ck, at)
        if (at := fields.get("portLevelMtls")) is not None:
            if selector is None:
                ck.error(at, "portLevelMtls needs a selector with matchLabels (as in Istio)")
            entries = ck.children(at) or {}
            if not entries and isinstance(at.value, dict):
                ck.error(at, "portLevelMtls, if set, needs at least one port (as in Istio)")
            for key, entry in entries.items():
                port = _port_key(key)
                if port is None:
                    ck.error(entry, f"port {key!r} must be a number from 1 to {MAX_PORT}")
                    continue
                port_mode = _mode(ck, entry)
                if port_mode is not None:
                    port_level[port] = port_mode
    if mode is None or len(ck.errors) > before:
        return None
    return PeerAuthentication(
        meta=meta, selector=selector, mode=mode, port_level=freeze(port_level)
    )


def _port_key(key: object) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    if isinstance(key, int) and 1 <= key <= MAX_PORT:
        return key
    return None
