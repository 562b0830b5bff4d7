"""The mesh as the web view draws it, from the config being served. Pure: no I/O.

Nodes are WorkloadEntries (sidecars and gateways), grouped by the service that
selects them (a gateway by its Gateway) and labelled by their `version`. What each
proxy may send where is read from the resources generated for it, the same
protobufs Envoy runs, not re-derived from the Istio documents:

- `ClusterInfo`: an outbound cluster's service host and subset, its endpoints'
  addresses (from EDS or the cluster's own load assignment), and whether its
  transport socket presents a workload certificate (mutual TLS);
- `weights`: a cluster's weight in each weighted split of the proxy's routes, in percent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from xds_server import xds_types
from xds_server.galley.model import MeshConfig, WorkloadEntry, labels_match
from xds_server.galley.model_security import workload_policies

TLS_SOCKET = "envoy.transport_sockets.tls"

# (node id) -> that proxy's resources of one type, by name
Resources = Callable[[str, str], Mapping[str, Any]]


@dataclass(slots=True)
class Node:
    id: str  # the proxy id, NAME.NAMESPACE (or a pseudo node: "clients", "svc:HOST")
    name: str
    namespace: str
    kind: str  # "sidecar", "gateway", "external" (a service with no workload), "clients"
    group: str
    version: str = ""
    address: str = ""
    service_account: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "namespace": self.namespace,
            "kind": self.kind,
            "group": self.group,
            "version": self.version,
            "address": self.address,
        }


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    name: str
    host: str
    subset: str
    port: int
    mtls: bool
    addresses: tuple[str, ...] = ()


class Topology:
    """Nodes and groups of the mesh; what each proxy's clusters and routes say, on demand.

    Cluster and route resources are shared between proxies (the snapshot serializes each
    once): what is read from them is memoized per resource, so a large mesh costs the
    distinct resources the page asks about, not proxies x clusters.
    """

    def __init__(
        self,
        nodes: dict[str, Node],
        groups: dict[str, list[str]],
        group_kind: dict[str, str],
        by_address: dict[str, str],
        policies: dict[str, list[str]],
        resources: Resources,
    ) -> None:
        self.nodes = nodes
        self.groups = groups  # group id -> node ids, in display order
        self.group_kind = group_kind
        self.by_address = by_address  # workload address -> node id
        self.policies = policies  # node id -> AuthorizationPolicies that apply to it
        self._resources = resources
        # id(resource) keys; the resources are kept in the values so an id is never reused.
        self._clusters: dict[tuple[int, int], tuple[Any, Any, ClusterInfo | None]] = {}
        self._routes: dict[int, tuple[Any, dict[str, list[float]]]] = {}

    def cluster(self, source: str, name: str) -> ClusterInfo | None:
        """An outbound cluster of `source`'s config (None: not one of its outbound ones)."""
        resource = self._resources(source, xds_types.CLUSTER).get(name)
        if resource is None:
            return None
        assignment = self._resources(source, xds_types.ENDPOINT).get(name)
        key = (id(resource), id(assignment))
        memo = self._clusters.get(key)
        if memo is None:
            memo = self._clusters[key] = (resource, assignment, _cluster_info(resource, assignment))
        return memo[2]

    def weights(self, source: str) -> dict[str, list[float]]:
        """Cluster name -> its weight in percent in each weighted split of `source`'s routes."""
        out: dict[str, list[float]] = {}
        for resource in self._resources(source, xds_types.ROUTE).values():
            memo = self._routes.get(id(resource))
            if memo is None:
                memo = self._routes[id(resource)] = (resource, _split_weights(resource.message))
            for name, weights in memo[1].items():
                out.setdefault(name, []).extend(weights)
        return out

    def node_for(self, source: str, cluster: str, address: str) -> str | None:
        """The node a request from `source` through `cluster` to `address` reached."""
        node_id = self.by_address.get(address)
        if node_id is not None:
            return node_id
        info = self.cluster(source, cluster)
        if info is None:
            return None
        return self.external(info.host)

    def external(self, host: str) -> str:
        node_id = f"svc:{host}"
        if node_id not in self.nodes:
            short = host.split(".", 1)[0]
            self.nodes[node_id] = Node(node_id, short, "", "external", node_id)
            self.groups[node_id] = [node_id]
            self.group_kind[node_id] = "external"
        return node_id


def build(mesh: MeshConfig, resources: Resources) -> Topology:
    nodes: dict[str, Node] = {}
    groups: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    by_address: dict[str, str] = {}
    policies: dict[str, list[str]] = {}
    for we in sorted(mesh.workload_entries, key=lambda w: (w.meta.namespace, w.meta.name)):
        group, kind = _group_of(mesh, we)
        node = Node(
            id=we.proxy_id,
            name=we.meta.name,
            namespace=we.meta.namespace,
            kind=kind,
            group=group,
            version=we.labels.get("version", ""),
            address=we.address,
            service_account=we.service_account,
        )
        nodes[node.id] = node
        groups.setdefault(group, []).append(node.id)
        kinds[group] = kind
        by_address.setdefault(we.address, node.id)
        policies[node.id] = [
            f"{p.meta.namespace}/{p.meta.name} ({p.action})"
            for p in workload_policies(mesh.authorization_policies, we, mesh.root_namespace)
        ]
    for members in groups.values():
        members.sort(key=lambda n: (nodes[n].version, nodes[n].name))
    return Topology(nodes, groups, kinds, by_address, policies, resources)


def _group_of(mesh: MeshConfig, we: WorkloadEntry) -> tuple[str, str]:
    """(group id, kind): the first service selecting the workload, else its gateway."""
    for gw in mesh.gateways:
        if gw.meta.namespace == we.meta.namespace and gw.selects(we.labels):
            return f"gateway:{we.meta.namespace}/{gw.meta.name}", "gateway"
    ns = we.meta.namespace
    for se in mesh.service_entries:
        if se.meta.namespace == ns and labels_match(se.workload_selector, we.labels):
            return f"{ns}/{se.hosts[0]}", "sidecar"
    return f"{ns}/{we.labels.get('app', we.meta.name)}", "sidecar"


def group_label(group: str) -> str:
    """What a group box is titled: the service's short name, or the gateway's name."""
    if group.startswith("gateway:"):
        return group.split("/", 1)[1]
    if group.startswith("svc:"):
        return group[4:]
    if "/" not in group:
        return group  # a pseudo group: "clients"
    ns, _, host = group.partition("/")
    short = host.split(".", 1)[0]
    return short if ns == "default" else f"{short}.{ns}"


def _cluster_info(resource: Any, assignment: Any) -> ClusterInfo | None:
    parts = resource.name.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        return None
    cluster = resource.message
    load = assignment.message if assignment is not None else cluster.load_assignment
    return ClusterInfo(
        name=resource.name,
        host=parts[3],
        subset=parts[2],
        port=int(parts[1]) if parts[1].isdigit() else 0,
        mtls=is_mutual_tls(cluster),
        addresses=tuple(_addresses(load)),
    )


def _split_weights(route_config: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for vhost in route_config.virtual_hosts:
        for route in vhost.routes:
            if not route.HasField("route") or not route.route.HasField("weighted_clusters"):
                continue
            split = route.route.weighted_clusters.clusters
            total = sum(c.weight.value for c in split)
            for c in split if total > 0 else ():
                out.setdefault(c.name, []).append(round(100.0 * c.weight.value / total, 1))
    return out


def _addresses(load: Any) -> Iterable[str]:
    for locality in load.endpoints:
        for lb in locality.lb_endpoints:
            socket = lb.endpoint.address.socket_address
            if socket.address:
                yield socket.address


def is_mutual_tls(cluster: Any) -> bool:
    """Does this cluster's upstream TLS present a certificate (Istio's ISTIO_MUTUAL)?"""
    socket = cluster.transport_socket
    if socket.name != TLS_SOCKET or not socket.HasField("typed_config"):
        return False
    context = tls_pb2.UpstreamTlsContext()
    if not socket.typed_config.Unpack(context):
        return False
    common = context.common_tls_context
    return bool(len(common.tls_certificate_sds_secret_configs) or len(common.tls_certificates))


def layers(
    groups: Iterable[str], kinds: Mapping[str, str], edges: Iterable[tuple[str, str]]
) -> dict[str, int]:
    """A column for each group, left to right in the direction traffic flows.

    The clients calling the gateways come first, then the gateways; every other group
    starts in the column after them and moves one column right of the furthest group
    calling it. Cycles are broken where a depth-first walk closes them.
    """
    names = sorted(groups, key=lambda g: (_RANK.get(kinds.get(g, ""), 2), g))
    calls: dict[str, set[str]] = {g: set() for g in names}
    for a, b in edges:
        if a in calls and b in calls and a != b:
            calls[a].add(b)
    order: list[str] = []  # reverse topological order of the acyclic part
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    dag: dict[str, set[str]] = {g: set() for g in names}

    def visit(g: str) -> None:
        state[g] = 1
        for h in sorted(calls[g]):
            if state.get(h) == 1:
                continue  # it closes a cycle
            dag[g].add(h)
            if h not in state:
                visit(h)
        state[g] = 2
        order.append(g)

    for g in names:
        if g not in state:
            visit(g)
    depth = {g: _RANK.get(kinds.get(g, ""), 2) for g in names}
    for g in reversed(order):
        for h in dag[g]:
            depth[h] = max(depth[h], depth[g] + 1)
    if depth:
        low = min(depth.values())
        depth = {g: d - low for g, d in depth.items()}
    return depth


_RANK = {"clients": 0, "gateway": 1}
