"""VirtualService delegation: a root's `http[].delegate` replaced by the delegate's routes.

Istio's `mergeVirtualServices` (pilot/pkg/model/virtualservice.go), one level deep:
each route of the delegate (a VirtualService without hosts) takes the root route's
place, its matches narrowed by the root's (every delegate match must fit within a
root match, else that delegate route is dropped: `hasConflict`), and the fields it
leaves unset (timeout, retries, fault, mirror, CORS, headers, rewrite) taken from the
root route. A delegate that is missing, has hosts, or is not exported to the root's
namespace delegates nothing; `traffic_checks` reports each of those as an error, so
a config that loads has every delegate resolved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from .model_traffic import (
    HeaderOps,
    HTTPMatch,
    HTTPRoute,
    KeyMatch,
    StringMatch,
    VirtualService,
    gateway_key,
)

__all__ = ["delegate_of", "merge_delegates", "merge_route"]


def merge_delegates(services: Iterable[VirtualService]) -> tuple[VirtualService, ...]:
    """Every VirtualService, roots with their delegates' routes in place."""
    services = tuple(services)
    by_key = {vs.meta.key: vs for vs in services}
    merged = []
    for vs in services:
        if vs.is_delegate or not any(r.delegate is not None for r in vs.http):
            merged.append(vs)
            continue
        routes: list[HTTPRoute] = []
        for route in vs.http:
            if route.delegate is None:
                routes.append(route)
                continue
            delegate = delegate_of(vs, route, by_key)
            if delegate is None:
                continue  # reported by traffic_checks; Istio drops the route
            for sub in delegate.http:
                joined = merge_route(route, vs.meta.namespace, sub, delegate.meta.namespace)
                if joined is not None:
                    routes.append(joined)
        merged.append(dataclasses.replace(vs, http=tuple(routes)))
    return tuple(merged)


def delegate_of(
    root: VirtualService, route: HTTPRoute, by_key: Mapping[str, VirtualService]
) -> VirtualService | None:
    """The delegate a root route names, if it exists, is one, and the root may see it."""
    if route.delegate is None:
        return None
    found = by_key.get(route.delegate.key)
    if found is None or not found.is_delegate or not found.exported_to(root.meta.namespace):
        return None
    return found


def merge_route(root: HTTPRoute, root_ns: str, sub: HTTPRoute, sub_ns: str) -> HTTPRoute | None:
    """Istio's mergeHTTPRoute; None when a delegate match fits within no root match."""
    matches = _merge_matches(
        tuple(_resolved(m, root_ns) for m in root.match),
        tuple(_resolved(m, sub_ns) for m in sub.match),
    )
    if matches is None:
        return None
    name = sub.name or root.name
    if sub.name and root.name:
        name = f"{root.name}-{sub.name}"
    headers_unset = sub.request_headers == HeaderOps() and sub.response_headers == HeaderOps()
    mirror, mirror_percent = sub.mirror, sub.mirror_percent
    if mirror is None:
        mirror, mirror_percent = root.mirror, root.mirror_percent
    return dataclasses.replace(
        sub,
        name=name,
        match=matches,
        rewrite=sub.rewrite or root.rewrite,
        direct_response=sub.direct_response or root.direct_response,
        timeout_ms=sub.timeout_ms if sub.timeout_ms is not None else root.timeout_ms,
        retries=sub.retries or root.retries,
        fault=sub.fault or root.fault,
        mirror=mirror,
        mirror_percent=mirror_percent,
        mirrors=sub.mirrors or root.mirrors,
        cors=sub.cors or root.cors,
        request_headers=root.request_headers if headers_unset else sub.request_headers,
        response_headers=root.response_headers if headers_unset else sub.response_headers,
        delegate=None,
    )


def _resolved(match: HTTPMatch, namespace: str) -> HTTPMatch:
    """Gateway names resolved in the namespace of the document that wrote them."""
    if not match.gateways:
        return match
    return dataclasses.replace(
        match, gateways=tuple(gateway_key(g, namespace) for g in match.gateways)
    )


def _merge_matches(
    root: tuple[HTTPMatch, ...], sub: tuple[HTTPMatch, ...]
) -> tuple[HTTPMatch, ...] | None:
    """Istio's mergeHTTPMatchRequests: each delegate match joined with every root match it
    fits in; None (a conflict) if one fits in none."""
    if not root:
        return sub
    if not sub:
        return root
    out: list[HTTPMatch] = []
    for leaf in sub:
        fits = [r for r in root if not _conflict(r, leaf)]
        if not fits:
            return None
        out += [_join(r, leaf) for r in fits]
    return tuple(out)


def _join(root: HTTPMatch, leaf: HTTPMatch) -> HTTPMatch:
    """Istio's mergeHTTPMatchRequest: the delegate's match, filled in from the root's."""
    name = leaf.name or root.name
    if leaf.name and root.name:
        name = f"{root.name}-{leaf.name}"
    labels: Mapping[str, str] | None = None
    if root.source_labels is not None or leaf.source_labels is not None:
        labels = MappingProxyType({**(root.source_labels or {}), **(leaf.source_labels or {})})
    return dataclasses.replace(
        leaf,
        name=name,
        uri=leaf.uri or root.uri,
        scheme=leaf.scheme or root.scheme,
        method=leaf.method or root.method,
        authority=leaf.authority or root.authority,
        headers=_merge_keys(root.headers, leaf.headers),
        without_headers=_merge_keys(root.without_headers, leaf.without_headers),
        query_params=_merge_keys(root.query_params, leaf.query_params),
        port=leaf.port if leaf.port is not None else root.port,
        source_labels=labels,
        source_namespace=leaf.source_namespace or root.source_namespace,
        gateways=leaf.gateways or root.gateways,
    )


def _merge_keys(root: tuple[KeyMatch, ...], leaf: tuple[KeyMatch, ...]) -> tuple[KeyMatch, ...]:
    """Istio's maps.MergeCopy: the root's entries, the delegate's winning on a name."""
    merged = {k.name: k for k in root}
    merged.update({k.name: k for k in leaf})
    return tuple(merged.values())


def _conflict(root: HTTPMatch, leaf: HTTPMatch) -> bool:
    """Istio's hasConflict: whether the delegate match `leaf` fails to fit in `root`."""
    pairs = (
        (root.uri, leaf.uri),
        (root.scheme, leaf.scheme),
        (root.method, leaf.method),
        (root.authority, leaf.authority),
    )
    if any(_string_conflict(_kind(r), _kind(lf)) for r, lf in pairs):
        return True
    for mine, theirs in (
        (root.headers, leaf.headers),
        (root.without_headers, leaf.without_headers),
        (root.query_params, leaf.query_params),
    ):
        by_name = {k.name: k for k in mine}
        for key in theirs:
            if key.name in by_name and _string_conflict(
                _kind(by_name[key.name].match, present=True), _kind(key.match, present=True)
            ):
                return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port is not None and leaf.port is not None and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    root_labels = root.source_labels or {}
    for label, value in (leaf.source_labels or {}).items():
        if label in root_labels and root_labels[label] != value:
            return True
    if root.gateways and leaf.gateways:
        return not set(leaf.gateways) <= set(root.gateways)
    return False


_Kind = tuple[str, str] | None  # (exact|prefix|regex|"" for "present"), or None: not set


def _kind(match: StringMatch | None, *, present: bool = False) -> _Kind:
    if match is None:
        return ("", "") if present else None
    return (match.kind, match.value)


def _string_conflict(root: _Kind, leaf: _Kind) -> bool:
    """Istio's stringMatchConflict, literally (a "present" match has no kind)."""
    if root is None or leaf is None:
        return False
    (root_kind, root_value), (leaf_kind, leaf_value) = root, leaf
    if root_kind == "regex" and leaf_kind:
        return True
    if leaf_kind == "regex" and root_kind:
        return True
    if root_kind == "exact":
        return not (leaf_kind == "exact" and leaf_value == root_value)
    if root_kind == "prefix" and leaf_kind in ("prefix", "exact"):
        return not leaf_value.startswith(root_value)
    return True
