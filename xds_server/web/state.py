"""Everything the page shows, as one JSON-able dict. No I/O; no key material.

`mesh`: groups, nodes and edges of the graph; `proxies`: per connected proxy its
sync state per xDS type (with Envoy's NACK text), config generation and SVID;
`config`: the errors and warnings of the config as last loaded; `pushes`: the
last pushes, newest first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xds_server import xds_types
from xds_server.protocol.events import SyncState
from xds_server.web import topology as topo
from xds_server.web.envoy_stats import TrafficWindow

if TYPE_CHECKING:
    from xds_server.app import ControlPlane
    from xds_server.grpc_api.connections import Connection

COLUMNS = (
    (xds_types.CLUSTER, "CDS"),
    (xds_types.LISTENER, "LDS"),
    (xds_types.ENDPOINT, "EDS"),
    (xds_types.ROUTE, "RDS"),
    (xds_types.SECRET, "SDS"),
)
# The worst state of a proxy's types names the proxy's state.
_SEVERITY = {SyncState.ERROR: 3, SyncState.STALE: 2, SyncState.NOT_SENT: 1, SyncState.SYNCED: 0}


def build(
    plane: ControlPlane,
    topology: topo.Topology,
    window: TrafficWindow,
    stats_errors: dict[str, str],
) -> dict[str, Any]:
    conns = sorted(plane.connections, key=lambda c: (c.node_id, c.stream_id))
    proxies = [_proxy(plane, topology, c, stats_errors.get(c.node_id, "")) for c in conns]
    status = plane.config_status
    return {
        "now": time.time(),
        "server": {
            "config_dir": str(plane.options.config_dir),
            "generation": status.generation,
            "loaded_at": status.loaded_at,
            "trust_domain": plane.identity.ca.trust_domain if plane.identity else None,
        },
        "mesh": graph(topology, window, proxies),
        "proxies": proxies,
        "config": {"errors": list(status.errors), "warnings": list(status.warnings)},
        "pushes": plane.pushes.records(),
    }


def _proxy(
    plane: ControlPlane, topology: topo.Topology, conn: Connection, stats_error: str
) -> dict[str, Any]:
    statuses = {s.type_url: s for s in conn.status()}
    types = {}
    worst = SyncState.SYNCED
    for type_url, label in COLUMNS:
        s = statuses.get(type_url)
        if s is None:
            types[label] = {"state": SyncState.NOT_SENT.value}
            continue
        if _SEVERITY[s.state] > _SEVERITY[worst]:
            worst = s.state
        types[label] = {
            "state": s.state.value,
            "version": s.acked_version if s.state != SyncState.ERROR else s.sent_version,
            "acked": s.acked_version,
            "nack": s.nack_message,
        }
    info = plane.pushes.node(conn)
    node = topology.nodes.get(conn.node_id)
    return {
        "proxy": conn.node_id,
        "stream": conn.stream_id,
        "service": conn.service,
        "delta": conn.delta,
        "connected_seconds": round(time.time() - conn.connected_at, 1),
        "generation": plane.cache.current_generation(conn),
        "state": worst.value,
        "types": types,
        "svid": _svid(plane, node),
        "envoy": info.envoy_version if info else "",
        "admin": f"{_host(node.address)}:{info.admin_port}" if node and info else "",
        "stats_error": stats_error,
        "known": node is not None,
    }


def _svid(plane: ControlPlane, node: topo.Node | None) -> dict[str, Any] | None:
    """The certificate the proxy is served: identity and dates only, never a key."""
    if plane.identity is None or node is None:
        return None
    svid = plane.identity.issuer.issued().get((node.namespace, node.service_account))
    if svid is None:
        return None
    return {
        "spiffe_id": str(svid.spiffe_id),
        "serial": f"{svid.serial:x}",
        "not_after": svid.not_after.timestamp(),
        "renew_at": svid.renew_at.timestamp(),
    }


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@dataclass(slots=True)
class _Edge:
    source: str
    target: str
    rps: float = 0.0
    errors_rps: float = 0.0
    measured: bool = False  # some flow had requests in the window
    total: int = 0
    weights: list[float] = field(default_factory=list)
    mtls: bool = True
    denied: int = 0
    clusters: set[str] = field(default_factory=set)
    idle: bool = False  # configured in a split, no request seen

    def as_dict(self, policies: list[str]) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "rps": round(self.rps, 2),
            "errors": round(self.errors_rps / self.rps, 4) if self.measured and self.rps else None,
            "total": self.total,
            "weights": sorted(set(self.weights)),
            "mtls": self.mtls and bool(self.clusters),
            "denied": self.denied,
            "policies": policies if self.denied else [],
            "clusters": sorted(self.clusters),
            "idle": self.idle,
        }


def graph(
    topology: topo.Topology, window: TrafficWindow, proxies: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    edges: dict[tuple[str, str], _Edge] = {}
    active: dict[str, set[str]] = {}  # source -> service hosts it sent requests to
    weights: dict[str, dict[str, list[float]]] = {}  # source -> cluster -> its split weights

    def split_of(source: str) -> dict[str, list[float]]:
        if source not in weights:
            weights[source] = topology.weights(source)
        return weights[source]

    for flow in window.flows():
        if flow.source not in topology.nodes:
            continue
        target = topology.node_for(flow.source, flow.cluster, flow.address)
        if target is None:
            continue
        edge = edges.setdefault((flow.source, target), _Edge(flow.source, target))
        info = topology.cluster(flow.source, flow.cluster)
        _add_cluster(edge, info, flow.cluster, split_of(flow.source))
        edge.total += flow.total
        edge.rps += flow.rps
        if flow.errors is not None:
            edge.measured = True
            edge.errors_rps += flow.errors * flow.rps
        if flow.forbidden and window.denied(target):
            edge.denied += flow.forbidden
        if info is not None:
            active.setdefault(flow.source, set()).add(info.host)
    # The rest of each split the traffic went through: subsets that got nothing yet.
    for source, hosts in active.items():
        for name in split_of(source):
            info = topology.cluster(source, name)
            if info is None or info.host not in hosts:
                continue
            for address in info.addresses:
                target = topology.node_for(source, name, address)
                if target is None or (source, target) in edges:
                    continue
                edge = edges[(source, target)] = _Edge(source, target, idle=True)
                _add_cluster(edge, info, name, split_of(source))
    gateways = [n for n, node in topology.nodes.items() if node.kind == "gateway"]
    ingress = window.ingress(gateways)
    nodes = {n: node.as_dict() for n, node in topology.nodes.items()}
    groups = {g: list(members) for g, members in topology.groups.items()}
    kinds = dict(topology.group_kind)
    if ingress:
        nodes["clients"] = topo.Node("clients", "clients", "", "clients", "clients").as_dict()
        groups["clients"] = ["clients"]
        kinds["clients"] = "clients"
        for entry in ingress:
            edge = edges[("clients", entry.gateway)] = _Edge("clients", entry.gateway)
            edge.rps, edge.total, edge.mtls = entry.rps, entry.total, False
            edge.clusters.add("")
            if entry.errors is not None:
                edge.measured = True
                edge.errors_rps = entry.errors * entry.rps
    states = {p["proxy"]: p["state"] for p in proxies}
    for node_id, node in nodes.items():
        if node["kind"] in ("sidecar", "gateway"):
            node["state"] = states.get(node_id, "DISCONNECTED")
            node["policies"] = topology.policies.get(node_id, [])
    group_of = {n: node["group"] for n, node in nodes.items()}
    columns = topo.layers(
        groups,
        kinds,
        [(group_of[a], group_of[b]) for a, b in edges if a in group_of and b in group_of],
    )
    ordered = sorted(groups.items(), key=lambda kv: (columns.get(kv[0], 0), kv[0]))
    return {
        "groups": [
            {
                "id": g,
                "label": topo.group_label(g),
                "kind": kinds.get(g, "sidecar"),
                "nodes": members,
                "column": columns.get(g, 0),
            }
            for g, members in ordered
        ],
        "nodes": nodes,
        "edges": [e.as_dict(topology.policies.get(e.target, [])) for _, e in sorted(edges.items())],
    }


def _add_cluster(
    edge: _Edge, info: topo.ClusterInfo | None, name: str, splits: dict[str, list[float]]
) -> None:
    if name in edge.clusters:
        return
    edge.clusters.add(name)
    if info is None:
        edge.mtls = False  # a cluster this proxy was not sent (any more): unknown
        return
    edge.mtls = edge.mtls and info.mtls
    edge.weights.extend(splits.get(name, ()))
