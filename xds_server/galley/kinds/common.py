"""Pieces several kinds share: metadata, labels, selectors, port numbers, protocols."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

from ..fields import Shape, shape, supported
from ..model import DEFAULT_NAMESPACE, EMPTY_LABELS, ObjectMeta, Source
from ..names import (
    dns1123_label_problem,
    dns1123_subdomain_problem,
    label_key_problem,
    label_value_problem,
)
from ..schema import DocChecker, Located

K = TypeVar("K")
V = TypeVar("V")

# Istio protocols pocketmesh understands, in their canonical upper-case spelling.
PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "REDIS", "MYSQL"}
)
MAX_PORT = 65535
SNIFFED = ""  # a port without a protocol: HTTP or TCP, told apart per connection

META_FIELDS = frozenset({"name", "namespace", "labels", "annotations"})
# The rest of Kubernetes' ObjectMeta: accepted (kubectl output has them), not used.
META_IGNORED = frozenset(
    {
        "generateName",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


# `workloadSelector: {labels: {...}}` (networking kinds).
SELECTOR: Shape = shape(labels=supported())


def freeze(mapping: Mapping[K, V]) -> Mapping[K, V]:
    """A read-only copy, so model values cannot be changed behind the config's back."""
    return MappingProxyType(dict(mapping))


def parse_meta(ck: DocChecker, metadata: Located | None, doc: Located) -> ObjectMeta | None:
    """`metadata`: name (required), namespace (default "default"), labels, annotations.

    Sets `ck.name` as soon as name and namespace are read, so that every later
    finding about this document names it.
    """
    if metadata is None:
        ck.error(doc, "required field missing", path="metadata")
        return None
    fields = ck.fields(metadata, META_FIELDS, ignored=META_IGNORED)
    if fields is None:
        return None
    name_at = fields.get("name")
    name = ck.string(name_at) if name_at is not None else None
    namespace = DEFAULT_NAMESPACE
    namespace_at = fields.get("namespace")
    if namespace_at is not None and isinstance(namespace_at.value, str):
        namespace = namespace_at.value or DEFAULT_NAMESPACE
    if name is not None:
        ck.name = f"{namespace}/{name}"
    if name_at is None:
        ck.error(metadata, "required field missing", path="metadata.name")
    elif name is not None:
        ck.string(name_at, dns1123_subdomain_problem)
    if namespace_at is not None and namespace_at.value != "":
        ck.string(namespace_at, dns1123_label_problem)
    labels = parse_labels(ck, fields.get("labels"))
    annotations: dict[str, str] = {}
    if (annotations_at := fields.get("annotations")) is not None:
        annotations = ck.string_map(annotations_at) or {}
    if name is None:
        return None
    return ObjectMeta(
        kind=ck.kind,
        name=name,
        namespace=namespace,
        source=Source(ck.file, doc.line),
        labels=freeze(labels),
        annotations=freeze(annotations) if annotations else EMPTY_LABELS,
    )


def parse_labels(ck: DocChecker, at: Located | None) -> dict[str, str]:
    if at is None:
        return {}
    return ck.string_map(at, label_key_problem, label_value_problem) or {}


def parse_selector(ck: DocChecker, at: Located, *, allow_empty: bool) -> Mapping[str, str]:
    """`workloadSelector: {labels: {...}}`."""
    fields = ck.fields(at, SELECTOR)
    if fields is None:
        return EMPTY_LABELS
    labels_at = fields.get("labels")
    labels = parse_labels(ck, labels_at)
    if labels_at is None or labels_at.value == {}:
        if allow_empty:
            ck.warn(at, "has no labels: it selects every WorkloadEntry in the namespace")
        else:
            ck.error(at, "labels must not be empty")
    return freeze(labels)


def parse_port_number(ck: DocChecker, at: Located | None) -> int | None:
    return None if at is None else ck.integer(at, 1, MAX_PORT)


def parse_protocol(ck: DocChecker, at: Located | None) -> str | None:
    return None if at is None else ck.enum(at, PROTOCOLS, fold_case=True)


def parse_optional_protocol(ck: DocChecker, at: Located | None) -> str | None:
    """A port protocol that may be left out: "" is Istio's unset protocol, detected
    per connection (protocol sniffing); None if the value is wrong."""
    if at is None or at.value == "":
        return SNIFFED
    return parse_protocol(ck, at)


def parse_port_name(ck: DocChecker, at: Located | None) -> str | None:
    return None if at is None else ck.string(at, dns1123_label_problem)


def export_to_problem(value: str) -> str | None:
    if value in {".", "*", "~"} or dns1123_label_problem(value) is None:
        return None
    return "must be '.', '*', '~' or a namespace name"


def parse_export_to(
    ck: DocChecker, at: Located, namespace: str, *, none_allowed: bool
) -> tuple[list[str], int]:
    """`exportTo` as Istio's validateExportTo reads it, up to which entries may be
    combined (each kind says): its values, each once (`.` and the namespace's own name
    are one), and how many valid entries were written, repeats included. `~` (exported
    to no namespace) only where `none_allowed` (ServiceEntries)."""
    found = ck.strings(at, export_to_problem) or []
    seen: set[str] = set()
    values: list[str] = []
    for value, item in found:
        if value == "~" and not none_allowed:
            ck.error(item, "'~' (exported to no namespace) is allowed in ServiceEntries only")
            continue
        key = namespace if value == "." else value
        if key in seen:
            ck.error(item, f"duplicate entry {value!r} (also '.' or {namespace!r})")
            continue
        seen.add(key)
        values.append(value)
    return values, len(found)
