"""An HTTP request through one route configuration, as Envoy walks it, mapped back to the
VirtualService rules that made each route.

Every route a generator built from a VirtualService carries `istio.config` metadata
naming it (as Istio's routes do) and is named after its rule (`http[].name`, else
`<ns>/<vs>.<index>`, plus the match block's name or index when there are several).
Rules that were not built for this proxy at all (`sourceLabels`, `sourceNamespace`,
`port`, `gateways` that exclude it) are named too, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from xds_server.explain import envoy_read
from xds_server.explain.envoy_match import route_checks, select_virtual_host, verdict
from xds_server.explain.request import Request
from xds_server.galley.model import MeshConfig
from xds_server.galley.model_traffic import MESH_GATEWAY, HTTPMatch, VirtualService
from xds_server.generators import naming
from xds_server.generators.http_routes import named_matches, unmet_match_field


def find_virtual_service(mesh: MeshConfig, config: str) -> VirtualService | None:
    """The VirtualService an `istio.config` path names."""
    for vs in mesh.virtual_services:
        if naming.config_path(vs.meta) == config:
            return vs
    return None


def rule_names(vs: VirtualService) -> dict[str, tuple[int, int, HTTPMatch]]:
    """Envoy route name -> (http index, match index, match) for every rule of `vs`
    (the names `generators.http_routes.virtual_service_routes` gives)."""
    names: dict[str, tuple[int, int, HTTPMatch]] = {}
    for i, j, match, name in named_matches(vs):
        names.setdefault(name, (i, j, match))
    return names


def not_built_reason(
    match: HTTPMatch,
    vs: VirtualService,
    *,
    port: int,
    labels: Mapping[str, str],
    namespace: str,
    gateway: str,
) -> str:
    """Why a match block has no Envoy route on this proxy (`http_routes.unmet_match_field`)."""
    unmet = unmet_match_field(match, vs, port, labels, namespace, gateway)
    if unmet == "port":
        return f"port: {match.port}, and the request is on port {port}"
    if unmet == "sourceNamespace":
        return f"sourceNamespace: {match.source_namespace}, and this proxy is in {namespace}"
    if unmet == "gateways":
        return f"gateways: {list(match.gateways)}, and this proxy is {gateway}"
    if unmet == "sourceLabels":
        return (
            f"sourceLabels {dict(match.source_labels or {})} do not match this proxy's labels "
            f"{dict(labels)}"
        )
    return "not built for this proxy"


def walk(
    mesh: MeshConfig,
    config: route_pb2.RouteConfiguration,
    request: Request,
    *,
    labels: Mapping[str, str],
    namespace: str,
    gateway: str = MESH_GATEWAY,
    listener_port: int | None = None,
    tls: bool = False,
) -> dict[str, Any]:
    """The virtual host, every route tried up to the one that matches, and its action."""
    out: dict[str, Any] = {"route_config": config.name}
    choice = select_virtual_host(config, request.authority)
    out["virtual_host"] = choice.to_json()
    vhost = choice.vhost
    if vhost is None:
        near = sorted(
            {d for v in config.virtual_hosts for d in v.domains if request.host in d.lower()}
        )
        out["outcome"] = {
            "result": "404",
            "why": f"no virtual host has the domain {request.authority!r} (Envoy: 404, NR)",
            "similar_domains": near[:10],
        }
        return out
    out["virtual_host"]["domains"] = list(vhost.domains)
    if vhost.require_tls != rc.VirtualHost.NONE and not tls:
        out["outcome"] = {
            "result": "301",
            "why": "the virtual host requires TLS (Gateway httpsRedirect): Envoy redirects "
            f"to https://{request.host}{request.path}",
        }
        return out
    port = listener_port if listener_port is not None else _vhost_port(vhost.name)
    tried, chosen, undecided = [], None, False
    for index, route in enumerate(vhost.routes):
        checks = route_checks(route.match, request)
        matched = verdict(checks)
        entry = {"index": index, "name": route.name, "matched": matched, **_origin(mesh, route)}
        entry["checks"] = [c.to_json() for c in checks]
        tried.append(entry)
        if matched is None:
            undecided = True
        if matched is True:
            chosen = route
            break
    out["routes"] = tried
    out["routes_after"] = len(vhost.routes) - len(tried)
    out["not_built"] = _not_built(mesh, vhost, port=port, labels=labels, namespace=namespace,
                                  gateway=gateway)  # fmt: skip
    if chosen is None:
        why = "no route of the virtual host matches: Envoy answers 404 (NR)"
        if undecided:
            why = "no route surely matches; an undecided one above may (see its checks)"
        out["outcome"] = {"result": "404" if not undecided else "undecided", "why": why}
        return out
    out["route"] = {"name": chosen.name, **_origin(mesh, chosen), **envoy_read.route_action(chosen)}
    if chosen.match.WhichOneof("path_specifier") == "prefix":
        out["route"]["matched_prefix"] = chosen.match.prefix
    out["clusters"] = envoy_read.chosen_clusters(chosen)
    if undecided:
        out["route"]["caveat"] = "an earlier route is undecided: if it matches, it wins"
    return out


def _origin(mesh: MeshConfig, route: rc.Route) -> dict[str, Any]:
    """The VirtualService rule behind an Envoy route, from its metadata and name."""
    config = envoy_read.route_config_name(route)
    if not config:
        return {"virtual_service": None}
    vs = find_virtual_service(mesh, config)
    if vs is None:  # recorded, but not in this model (should not happen)
        parts = config.split("/")
        return {"virtual_service": "/".join(parts[5:8:2]) if len(parts) == 8 else config}
    out: dict[str, Any] = {"virtual_service": vs.meta.key, "source": str(vs.meta.source)}
    found = rule_names(vs).get(route.name)
    if found is not None:
        i, j, _ = found
        several = len(vs.http[i].match) > 1
        out["rule"] = f"http[{i}]" + (f".match[{j}]" if several else "")
        if vs.http[i].name:
            out["rule_name"] = vs.http[i].name
    return out


def _not_built(
    mesh: MeshConfig,
    vhost: rc.VirtualHost,
    *,
    port: int,
    labels: Mapping[str, str],
    namespace: str,
    gateway: str,
) -> list[dict[str, str]]:
    present = {r.name for r in vhost.routes}
    seen: set[str] = set()
    out = []
    for route in vhost.routes:
        config = envoy_read.route_config_name(route)
        if not config or config in seen:
            continue
        seen.add(config)
        vs = find_virtual_service(mesh, config)
        if vs is None:
            continue
        for name, (i, j, match) in rule_names(vs).items():
            if name in present:
                continue
            several = len(vs.http[i].match) > 1
            out.append(
                {
                    "virtual_service": vs.meta.key,
                    "rule": f"http[{i}]" + (f".match[{j}]" if several else ""),
                    "why": not_built_reason(
                        match, vs, port=port, labels=labels, namespace=namespace, gateway=gateway
                    ),
                }
            )
    return out


def _vhost_port(name: str) -> int:
    _, _, port = name.rpartition(":")
    return int(port) if port.isdigit() else 0
