"""Terse builders for mesh model objects, so tests read like the YAML they stand for."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from xds_server.galley.model import (
    EgressListener,
    IngressListener,
    MeshConfig,
    ObjectMeta,
    ServiceEntry,
    ServicePort,
    Sidecar,
    SidecarPort,
    Source,
    WorkloadEntry,
)

_SOURCE = Source("test.yaml", 1)
_UNSET: Mapping[str, str] = MappingProxyType({"<unset>": ""})


def meta(kind: str, name: str, namespace: str = "default", **labels: str) -> ObjectMeta:
    return ObjectMeta(kind, name, namespace, _SOURCE, MappingProxyType(dict(labels)))


def port(
    number: int, protocol: str = "HTTP", name: str = "", target_port: int | None = None
) -> ServicePort:
    return ServicePort(number, protocol, name or f"{protocol.lower()}-{number}", target_port)


def service(
    name: str,
    namespace: str = "default",
    *ports: ServicePort,
    hosts: Iterable[str] = (),
    selector: Mapping[str, str] | None = _UNSET,
    resolution: str = "STATIC",
    endpoints: Iterable[WorkloadEntry] = (),
    export_to: Iterable[str] = (),
    addresses: Iterable[str] = (),
    location: str = "MESH_INTERNAL",
) -> ServiceEntry:
    """A ServiceEntry `name.namespace.svc.cluster.local` selecting `app: name` by default."""
    return ServiceEntry(
        meta=meta("ServiceEntry", name, namespace),
        hosts=tuple(hosts) or (f"{name}.{namespace}.svc.cluster.local",),
        ports=ports or (port(9080, "HTTP", "http"),),
        location=location,
        resolution=resolution,
        addresses=tuple(addresses),
        workload_selector=(
            MappingProxyType({"app": name})
            if selector is _UNSET
            else (None if selector is None else MappingProxyType(dict(selector)))
        ),
        endpoints=tuple(endpoints),
        export_to=tuple(export_to),
    )


def workload(
    name: str,
    namespace: str = "default",
    address: str = "127.0.0.2",
    labels: Mapping[str, str] | None = None,
    ports: Mapping[str, int] | None = None,
    service_account: str = "default",
    locality: str = "",
    weight: int = 0,
) -> WorkloadEntry:
    """A WorkloadEntry labelled `app: <name without -vN suffix>` unless labels are given."""
    app = name.rsplit("-v", 1)[0]
    return WorkloadEntry(
        meta=meta("WorkloadEntry", name, namespace),
        address=address,
        labels=MappingProxyType(dict(labels) if labels is not None else {"app": app}),
        service_account=service_account,
        ports=MappingProxyType(dict(ports or {})),
        locality=locality,
        weight=weight,
    )


def endpoint(address: str, **ports: int) -> WorkloadEntry:
    """An inline ServiceEntry endpoint (a WorkloadEntry spec without its own document)."""
    return WorkloadEntry(
        meta=meta("WorkloadEntry", f"inline-{address}", "default"),
        address=address,
        ports=MappingProxyType(dict(ports)),
    )


def ingress(
    number: int, protocol: str = "HTTP", default_endpoint: str = "", bind: str = ""
) -> IngressListener:
    return IngressListener(
        SidecarPort(number, protocol, f"{protocol.lower()}-{number}"), bind, default_endpoint
    )


def sidecar(
    name: str = "default",
    namespace: str = "default",
    *,
    hosts: Iterable[str] | None = None,
    selector: Mapping[str, str] | None = None,
    ingress: Iterable[IngressListener] = (),
) -> Sidecar:
    return Sidecar(
        meta=meta("Sidecar", name, namespace),
        workload_selector=MappingProxyType(dict(selector)) if selector else None,
        ingress=tuple(ingress),
        egress=(EgressListener(tuple(hosts)),) if hosts is not None else (),
    )


def mesh(
    *objects: ServiceEntry | WorkloadEntry | Sidecar, root: str = "istio-system"
) -> MeshConfig:
    return MeshConfig(
        service_entries=tuple(o for o in objects if isinstance(o, ServiceEntry)),
        workload_entries=tuple(o for o in objects if isinstance(o, WorkloadEntry)),
        sidecars=tuple(o for o in objects if isinstance(o, Sidecar)),
        root_namespace=root,
    )


def bookinfo(*extra: ServiceEntry | WorkloadEntry | Sidecar) -> MeshConfig:
    """A small mesh: HTTP services in `default`, a TCP database in `backend`, an external API."""
    return mesh(
        service("productpage"),
        service("reviews", "default", port(9080, "HTTP", "http"), port(9443, "GRPC", "grpc")),
        service("ratings", "default", port(80, "HTTP", "http", target_port=9080)),
        service("mysql", "backend", port(3306, "TCP", "tcp")),
        service(
            "httpbin",
            "default",
            port(80, "HTTP", "http"),
            hosts=["httpbin.org"],
            selector=None,
            resolution="DNS",
            location="MESH_EXTERNAL",
        ),
        workload("productpage-v1", address="127.0.0.2"),
        workload("reviews-v1", address="127.0.0.3"),
        workload("reviews-v2", address="127.0.0.4", ports={"http": 19080}),
        workload("ratings-v1", address="127.0.0.5"),
        workload("mysql-v1", "backend", address="127.0.0.6"),
        *extra,
    )
