"""A synthetic mesh: S services x E endpoints in N namespaces, written as Istio YAML.

Every endpoint is a WorkloadEntry and every simulated proxy is one of them
(node id NAME.NAMESPACE), so the server builds a real view for each. Every
service has a VirtualService (one HTTP route to itself, `timeout: 10s`), as
an operator would keep them. With `sidecars`, each namespace gets a
selector-less Sidecar whose egress is `./*`: Istio's recommended scoping,
and the shape of its 1,000-service figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PORT = 8080


@dataclass(frozen=True, slots=True)
class MeshSpec:
    services: int = 10
    endpoints: int = 2
    namespaces: int = 2
    proxies: int = 10
    sidecars: bool = True
    # Leading octets of workload addresses: "10" never binds; real-Envoy runs use a
    # 127.x block so the proxy's own listeners can bind.
    network: str = "10"
    # Endpoints inline in each ServiceEntry instead of WorkloadEntries: then only the
    # proxies are workloads (every WorkloadEntry is a sidecar the server builds a view for).
    inline_endpoints: bool = False

    def __post_init__(self) -> None:
        if min(self.services, self.endpoints, self.namespaces) < 1 or self.proxies < 0:
            raise ValueError("services, endpoints and namespaces must be at least 1")
        if self.namespaces > self.services:
            raise ValueError("need at least one service per namespace")

    def namespace_of(self, service: int) -> str:
        return f"ns-{service % self.namespaces}"

    def label(self) -> str:
        scope = "scoped" if self.sidecars else "unscoped"
        return (
            f"{self.services} svc x {self.endpoints} ep, {self.namespaces} ns, "
            f"{self.proxies} proxies, {scope}"
        )


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    namespace: str
    app: str
    address: str

    @property
    def proxy_id(self) -> str:
        return f"{self.name}.{self.namespace}"


def _address(network: str, n: int) -> str:
    n += 1
    free = 3 - network.count(".")
    return ".".join([network, *(str(n >> 8 * k & 255) for k in reversed(range(free)))])


def workloads(spec: MeshSpec) -> list[Workload]:
    """Endpoints first, ordered so the first P cover every service; then plain clients."""
    out = [] if spec.inline_endpoints else endpoint_workloads(spec)
    for k in range(max(0, spec.proxies - len(out))):
        ns = f"ns-{k % spec.namespaces}"
        out.append(Workload(f"client-{k}", ns, "client", _address(spec.network, len(out))))
    return out


def endpoint_workloads(spec: MeshSpec) -> list[Workload]:
    out: list[Workload] = []
    for j in range(spec.endpoints):
        for i in range(spec.services):
            ns = spec.namespace_of(i)
            out.append(Workload(f"svc-{i}-{j}", ns, f"svc-{i}", _address(spec.network, len(out))))
    return out


def proxy_ids(spec: MeshSpec) -> list[str]:
    return [w.proxy_id for w in workloads(spec)[: spec.proxies]]


def host(spec: MeshSpec, i: int) -> str:
    return f"svc-{i}.{spec.namespace_of(i)}.svc.cluster.local"


def service_entry(spec: MeshSpec, i: int) -> str:
    ns = spec.namespace_of(i)
    return (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        f"metadata: {{name: svc-{i}, namespace: {ns}}}\n"
        f"spec:\n  hosts: [{host(spec, i)}]\n"
        "  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n"
        f"  - {{number: {PORT}, name: http, protocol: HTTP}}\n{_endpoints(spec, i)}"
    )


def virtual_service(spec: MeshSpec, i: int, *, edited: bool = False) -> str:
    """Service i's routing: one HTTP route to itself. `edited` is the route change:
    a shorter timeout and retries."""
    policy = "    timeout: 10s\n"
    if edited:
        policy = "    timeout: 5s\n    retries: {attempts: 2, perTryTimeout: 2s}\n"
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: svc-{i}, namespace: {spec.namespace_of(i)}}}\n"
        f"spec:\n  hosts: [{host(spec, i)}]\n  http:\n"
        f"  - route:\n    - destination: {{host: {host(spec, i)}, port: {{number: {PORT}}}}}\n"
        f"{policy}"
    )


def _write_virtual_services(spec: MeshSpec, config_dir: Path, edited: int = -1) -> None:
    docs = [virtual_service(spec, i, edited=i == edited) for i in range(spec.services)]
    (config_dir / "virtualservices.yaml").write_text("---\n".join(docs))


def _endpoints(spec: MeshSpec, i: int) -> str:
    if not spec.inline_endpoints:
        return f"  workloadSelector:\n    labels: {{app: svc-{i}}}\n"
    # Addresses after the proxies' own, in the same block: unique, never bound.
    first = spec.proxies + i * spec.endpoints
    addresses = (_address(spec.network, first + j) for j in range(spec.endpoints))
    return "  endpoints:\n" + "".join(f"  - address: {a}\n" for a in addresses)


def workload_entry(w: Workload, *, address: str | None = None) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        f"metadata: {{name: {w.name}, namespace: {w.namespace}}}\n"
        f"spec:\n  address: {address or w.address}\n"
        f"  labels: {{app: {w.app}}}\n  serviceAccount: {w.app}\n"
    )


def sidecar(namespace: str) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        f"metadata: {{name: default, namespace: {namespace}}}\n"
        "spec:\n  egress:\n  - hosts: ['./*']\n"
    )


def write(spec: MeshSpec, config_dir: Path) -> None:
    """One file per kind, as an operator would keep them."""
    config_dir.mkdir(parents=True, exist_ok=True)
    docs = [service_entry(spec, i) for i in range(spec.services)]
    (config_dir / "services.yaml").write_text("---\n".join(docs))
    _write_virtual_services(spec, config_dir)
    docs = [workload_entry(w) for w in workloads(spec)]
    (config_dir / "workloads.yaml").write_text("---\n".join(docs))
    if spec.sidecars:
        docs = [sidecar(f"ns-{k}") for k in range(spec.namespaces)]
        (config_dir / "sidecars.yaml").write_text("---\n".join(docs))


# -- the changes the convergence runs make ---------------------------------------


def route_change(spec: MeshSpec, config_dir: Path) -> str:
    """Edit service 0's VirtualService (timeout 10s -> 5s, retries added), rewriting
    virtualservices.yaml: an RDS change for every proxy that sees the service."""
    _write_virtual_services(spec, config_dir, edited=0)
    return (
        f"VirtualService {spec.namespace_of(0)}/svc-0: timeout 10s -> 5s, "
        "retries {attempts: 2, perTryTimeout: 2s}"
    )


def endpoint_change(spec: MeshSpec, config_dir: Path) -> str:
    """Move one endpoint of service 0 to a new address: an EDS-only change for its
    clients (and the moved workload's own inbound listener)."""
    ws = workloads(spec)
    moved = ws[0]
    docs = [workload_entry(w, address="10.255.255.254" if w is moved else None) for w in ws]
    (config_dir / "workloads.yaml").write_text("---\n".join(docs))
    return f"WorkloadEntry {moved.namespace}/{moved.name} moves to 10.255.255.254"


def affected_proxies(spec: MeshSpec, service: int = 0) -> list[str]:
    """Proxies that can see `service` (and so must converge after a change to it)."""
    ns = spec.namespace_of(service)
    ids = proxy_ids(spec)
    if not spec.sidecars:
        return ids
    return [p for p in ids if p.rsplit(".", 1)[1] == ns]
