"""Gateway RDS: the route configurations of a gateway's HTTP and HTTPS servers.

As Istio names and fills them (`gatewayRDSRouteName`, `buildGatewayHTTPRouteConfig`):

- the plain HTTP servers of a port share `http.<port>`;
- each HTTPS server that ends TLS has its own `https.<port>.<port name>.<gateway>.<ns>`,
  so a request can only reach the hosts of the server whose certificate (and client
  checks) its connection passed;
- a virtual host per host that a server and a bound VirtualService have in common
  (the more specific of the two names), holding the routes of every VirtualService
  for that host, in mesh order, with the catch-all routes moved last (Istio's
  SortVHostRoutes): several VirtualServices for one host merge here;
- `httpsRedirect`: every host of the server answers 301 to https, routed or not.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from xds_server.galley.model_traffic import Gateway, GatewayServer, VirtualService
from xds_server.generators.http_routes import virtual_service_routes
from xds_server.generators.push_context import Proxy, PushContext
from xds_server.generators.sidecar_scope import host_matches

__all__ = ["common_hosts", "http_route_name", "https_route_name", "route_config"]


def http_route_name(port: int) -> str:
    return f"http.{port}"


def https_route_name(gateway: Gateway, server: GatewayServer) -> str:
    name = server.port_name or f"server{server.index}"
    return f"https.{server.port}.{name}.{gateway.meta.name}.{gateway.meta.namespace}"


def route_config(
    ctx: PushContext, proxy: Proxy, name: str, servers: Iterable[tuple[Gateway, GatewayServer]]
) -> route_pb2.RouteConfiguration:
    traffic = ctx.traffic
    vhosts: dict[str, rc.VirtualHost] = {}
    built: dict[tuple[str, str, int], list[rc.Route]] = {}  # (gateway, VS, port) -> routes
    for gateway, server in servers:
        key = gateway.meta.key
        port = server.port
        redirect = server.tls is not None and server.tls.https_redirect
        for vs in traffic.bound_to(key, proxy.namespace):
            hosts = common_hosts(server, gateway, vs)
            if not hosts:
                continue
            routes = built.get((key, vs.meta.key, port))
            if routes is None:
                routes = virtual_service_routes(
                    traffic,
                    vs,
                    port=port,
                    labels=proxy.workload.labels,
                    namespace=proxy.namespace,
                    gateway=key,
                    tls=server.tls is not None,  # Istio's IsTLS
                )
                built[(key, vs.meta.key, port)] = routes
            for host in hosts:
                vhost = vhosts.get(host)
                if vhost is None:
                    vhost = vhosts[host] = rc.VirtualHost(
                        name=f"{host}:{port}", domains=_domains(host, port)
                    )
                vhost.routes.extend(routes)
                if redirect:
                    vhost.require_tls = rc.VirtualHost.ALL  # Istio's httpsRedirect: a 301
        if redirect:  # Istio: the server's hosts redirect even with no VirtualService
            for host in server.sni_hosts:
                if host not in vhosts:
                    vhosts[host] = rc.VirtualHost(
                        name=f"{host}:{port}",
                        domains=_domains(host, port),
                        require_tls=rc.VirtualHost.ALL,
                    )
    for vhost in vhosts.values():
        _catch_all_last(vhost)
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[vhosts[h] for h in sorted(vhosts)],
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


def common_hosts(server: GatewayServer, gateway: Gateway, vs: VirtualService) -> list[str]:
    """The hosts `server` and `vs` share, each the more specific of the two names.

    A server host `ns/pattern` admits VirtualServices of `ns` (`.`: the Gateway's, `*`:
    any) whose host it matches, or that are wildcards covering it (Istio's
    `serverHosts.Intersection(virtualServiceHosts)`)."""
    found: list[str] = []
    for entry in server.hosts:
        ns, slash, pattern = entry.rpartition("/")
        if slash:
            ns = gateway.meta.namespace if ns == "." else ns
            if ns not in ("*", vs.meta.namespace):
                continue
        for host in vs.hosts:
            if host_matches(pattern, host):
                common = host
            elif host_matches(host, pattern):
                common = pattern
            else:
                continue
            if common.lower() not in found:
                found.append(common.lower())
    return found


def _domains(host: str, port: int) -> list[str]:
    return ["*"] if host == "*" else [host, f"{host}:{port}"]


def _catch_all_last(vhost: rc.VirtualHost) -> None:
    """Istio's SortVHostRoutes: routes matching every path, with no header or query
    condition, after all the others, each group keeping its order."""
    routes = list(vhost.routes)
    ordered = [r for r in routes if not _catch_all(r)] + [r for r in routes if _catch_all(r)]
    if ordered != routes:
        del vhost.routes[:]
        vhost.routes.extend(ordered)


def _catch_all(route: rc.Route) -> bool:
    match = route.match
    which = match.WhichOneof("path_specifier")
    if which == "prefix":
        everything = match.prefix == "/"
    elif which == "path_separated_prefix":
        everything = match.path_separated_prefix == "/"
    elif which == "safe_regex":
        everything = match.safe_regex.regex == ".*"
    else:
        everything = False
    return everything and not match.headers and not match.query_parameters
