"""Resource names and host domains, spelled as Istio spells them.

Keeping every name in one place lets a reader go from an Envoy dump
(`outbound|9080||reviews.default.svc.cluster.local`) straight to the code.
"""

from __future__ import annotations

from typing import Final

from xds_server.galley.model import CLUSTER_DOMAIN, HTTP_PROTOCOLS, ObjectMeta

# The sidecar's outbound HTTP proxy port; also the name of its route configuration.
OUTBOUND_HTTP_PORT: Final = 15001
OUTBOUND_ROUTE_NAME: Final = str(OUTBOUND_HTTP_PORT)
OUTBOUND_STAT_PREFIX: Final = f"outbound_{OUTBOUND_HTTP_PORT}"

# Protocols whose upstream must speak HTTP/2 (Istio's Protocol.IsHTTP2()).
HTTP2_PROTOCOLS: Final = frozenset({"HTTP2", "GRPC", "GRPC-WEB"})

# Host names without a port go on the vhost of this port (unless the service has one HTTP port).
DEFAULT_HTTP_PORT: Final = 80

_SVC_SUFFIX: Final = "." + CLUSTER_DOMAIN  # ".svc.cluster.local"


def is_http(protocol: str) -> bool:
    return protocol.upper() in HTTP_PROTOCOLS


def is_http2(protocol: str) -> bool:
    return protocol.upper() in HTTP2_PROTOCOLS


def outbound_cluster(port: int, host: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster(port: int) -> str:
    return f"inbound|{port}||"


def inbound_vhost(port: int) -> str:
    return f"inbound|http|{port}"


def inbound_stat_prefix(port: int) -> str:
    return f"inbound_{port}"


def listener_name(address: str, port: int) -> str:
    return f"{address}_{port}"


def vhost_name(host: str, port: int) -> str:
    return f"{host}:{port}"


def host_aliases(host: str, proxy_namespace: str) -> tuple[str, ...]:
    """The names an app in `proxy_namespace` may use for `host`, longest first.

    `name.ns.svc.cluster.local` is also reachable as `name.ns.svc` and `name.ns`
    everywhere, and as bare `name` only from inside `ns` (Kubernetes DNS search
    paths; Istio's short-name rule). Other hosts have no aliases.
    """
    if not host.endswith(_SVC_SUFFIX):
        return (host,)
    stem = host[: -len(_SVC_SUFFIX)]
    name, dot, ns = stem.partition(".")
    if not dot or not name or not ns or "." in ns:
        return (host,)
    aliases = [host, f"{name}.{ns}.svc", f"{name}.{ns}"]
    if ns == proxy_namespace:
        aliases.append(name)
    return tuple(aliases)


def config_path(meta: ObjectMeta) -> str:
    """`/apis/networking.istio.io/v1/namespaces/NS/virtual-service/NAME`: the networking
    object a resource was built from, as Istio records it in Envoy metadata
    (`filter_metadata.istio.config`, Istio's BuildConfigInfoMetadata)."""
    kind = "".join(f"-{c.lower()}" if c.isupper() else c for c in meta.kind).lstrip("-")
    return f"/apis/networking.istio.io/v1/namespaces/{meta.namespace}/{kind}/{meta.name}"
