"""Where one request from a proxy goes, decided on the resources that proxy is sent.

The listener that takes it (the sidecar's HTTP proxy on :15001, an outbound TCP
listener on the caller's own address, a gateway's server port, or the workload's own
inbound port), the filter chain, the route configuration walked as Envoy walks it
(`routing`), then each cluster the route picks: the Istio objects behind it
(ServiceEntry, DestinationRule and subset), the traffic policy Envoy applies, the TLS
on the wire and why, the endpoints, and what each endpoint's sidecar does with the
connection (its PeerAuthentication mode, the identity it presents, its RBAC verdict).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from xds_server import xds_types
from xds_server.explain import envoy_read, routing
from xds_server.explain.envoy_match import select_filter_chain, transport_mismatch
from xds_server.explain.envoy_rbac import Caller, decide
from xds_server.explain.inputs import MeshState
from xds_server.explain.request import Request
from xds_server.explain.workload import identity, peer_decision
from xds_server.galley.model_traffic import MESH_GATEWAY, qualify_host
from xds_server.generators import naming
from xds_server.generators.push_context import Proxy


def section(state: MeshState, proxy: Proxy, request: Request) -> dict[str, Any]:
    if proxy.gateways:
        return _gateway(state, proxy, request)
    own = _own_inbound(state, proxy, request)
    if own is not None:
        return own
    tcp = _outbound_tcp(state, proxy, request)
    if tcp is not None:
        return tcp
    return _outbound_http(state, proxy, request)


# --- the ways in ---------------------------------------------------------------------


def _outbound_http(state: MeshState, proxy: Proxy, request: Request) -> dict[str, Any]:
    name = naming.listener_name(proxy.address, naming.OUTBOUND_HTTP_PORT)
    listener = state.listeners(proxy.node_id).get(name)
    out: dict[str, Any] = {
        "way": "outbound HTTP",
        "how": f"the app sends it through its sidecar's HTTP proxy "
        f"(curl -x http://{proxy.address}:{naming.OUTBOUND_HTTP_PORT} "
        f"{request.scheme}://{request.authority}{request.path})",
        "listener": name,
    }
    if not isinstance(listener, listener_pb2.Listener) or not listener.filter_chains:
        out["outcome"] = {"result": "refused", "why": f"the proxy is sent no listener {name}"}
        return out
    out = _http(state, proxy, request, out, listener.filter_chains[0], tls=False)
    if out.get("outcome", {}).get("result") == "404" and not out.get("routes"):
        hidden = _not_visible(state, proxy, request.host)
        if hidden:
            out["outcome"]["why"] += f"; {hidden}"
    return out


def _not_visible(state: MeshState, proxy: Proxy, host: str) -> str:
    """Why a host of the registry has no virtual host on this proxy."""
    service = state.push_context.traffic.service(qualify_host(host, proxy.namespace))
    if service is None:
        return f"{host!r} is no host of the registry (ServiceEntry hosts), nor a short name of one"
    if any(s.service is service for s in proxy.scope.services):
        return ""
    if proxy.sidecar is not None and proxy.sidecar.egress:
        hosts = [h for e in proxy.sidecar.egress for h in e.hosts]
        return (
            f"{service.meta.key} is not visible here: Sidecar {proxy.sidecar.meta.key} "
            f"egress hosts {hosts} do not admit it"
        )
    return f"{service.meta.key} is not exported to namespace {proxy.namespace} (exportTo)"


def _own_inbound(state: MeshState, proxy: Proxy, request: Request) -> dict[str, Any] | None:
    """A request to the workload's own address and port: its inbound listener."""
    if request.host != proxy.address or request.port is None:
        return None
    name = naming.listener_name(proxy.address, request.port)
    listener = state.listeners(proxy.node_id).get(name)
    if not isinstance(listener, listener_pb2.Listener):
        return None
    if listener.traffic_direction != base_pb2.INBOUND:
        return None
    out: dict[str, Any] = {
        "way": "inbound",
        "how": f"a client outside the mesh calls the workload's address "
        f"{request.host}:{request.port} (plaintext)",
        "listener": name,
        "mtls": peer_decision(state.mesh, proxy.workload, request.port),
        "envoy_mode": envoy_read.downstream_mode(listener),
    }
    choice = select_filter_chain(listener, server_name="", tls=False)
    out["filter_chain"] = choice.why
    if choice.chain is None or transport_mismatch(choice.chain, tls=False):
        out["outcome"] = {
            "result": "refused",
            "why": f"{out['envoy_mode']} ({out['mtls']['by']}): this port takes mutual TLS "
            "only; a plaintext connection is reset",
        }
        return out
    caller = Caller(principal=None, port=request.port, request=request)
    decision = decide(envoy_read.rbac_filters(choice.chain), caller)
    out["authorization"] = _decision(decision)
    if decision.allowed is False:
        out["outcome"] = {"result": "403", "why": f"RBAC: access denied ({decision.why})"}
        return out
    tcp = envoy_read.tcp_proxy(choice.chain)
    if tcp is not None:
        out["clusters"] = [_cluster(state, proxy, tcp.cluster, 100, 100, request, None)]
        return out
    return _http(state, proxy, request, out, choice.chain, tls=False, inbound=True)


def _outbound_tcp(state: MeshState, proxy: Proxy, request: Request) -> dict[str, Any] | None:
    """A TCP service: the app connects to `<its own address>:<port>` (no iptables)."""
    listeners = state.listeners(proxy.node_id)
    port = request.port
    if port is None:
        service = state.push_context.traffic.service(qualify_host(request.host, proxy.namespace))
        tcp_ports = [p.number for p in service.ports if not p.is_http] if service else []
        if len(tcp_ports) != 1:
            return None
        port = tcp_ports[0]
    name = naming.listener_name(proxy.address, port)
    listener = listeners.get(name)
    if not isinstance(listener, listener_pb2.Listener):
        return None
    if listener.traffic_direction != base_pb2.OUTBOUND or not listener.filter_chains:
        return None
    out: dict[str, Any] = {
        "way": "outbound TCP",
        "how": f"the app connects to its own address {proxy.address}:{port}, where its "
        "sidecar listens for this port (no iptables): Envoy sees only the port"
        + (", and the SNI" if _has_sni(listener) else ""),
        "listener": name,
    }
    sni = _has_sni(listener)
    choice = select_filter_chain(listener, server_name=request.host, tls=sni)
    if sni:
        out["filter_chain"] = choice.why
    if choice.chain is None:
        out["outcome"] = {"result": "refused", "why": choice.why}
        return out
    hcm = envoy_read.http_manager(choice.chain)
    if hcm is not None:  # a sniffed port that speaks HTTP
        return _http(state, proxy, request, out, choice.chain, tls=False)
    tcp = envoy_read.tcp_proxy(choice.chain)
    if tcp is None:
        out["outcome"] = {"result": "unknown", "why": "the filter chain has no tcp_proxy"}
        return out
    clusters = _tcp_clusters(tcp)
    out["virtual_service"] = _tcp_virtual_service(state, proxy, clusters, port)
    total = sum(w for _, w in clusters) or 1
    forwarded = request.host if sni else ""  # tls[]: the app's TLS, forwarded as it is
    out["clusters"] = [
        _cluster(state, proxy, n, w, total, None, None, forwarded) for n, w in clusters
    ]
    _outcome(out)
    return out


def _gateway(state: MeshState, proxy: Proxy, request: Request) -> dict[str, Any]:
    listeners = {
        n: item
        for n, item in state.listeners(proxy.node_id).items()
        if isinstance(item, listener_pb2.Listener)
    }
    wanted = request.scheme in ("https", "tls")
    port = request.port
    name = naming.listener_name(proxy.address, port) if port is not None else ""
    out: dict[str, Any] = {"way": "gateway"}
    if name not in listeners:
        fits = sorted(
            (lst.address.socket_address.port_value, n)
            for n, lst in listeners.items()
            if any(c.HasField("transport_socket") for c in lst.filter_chains) == wanted
        )
        if not fits:
            out["outcome"] = {
                "result": "refused",
                "why": f"the gateway has no {'TLS' if wanted else 'plaintext'} server"
                + (f" on port {port}" if port is not None else ""),
                "listeners": sorted(listeners),
            }
            return out
        if port is not None:
            out["note"] = f"the gateway does not listen on {port}; took its port {fits[0][0]}"
        port, name = fits[0]
        if request.port is None:
            out["note"] = f"no port given: took the gateway's {'TLS ' if wanted else ''}port {port}"
    listener = listeners[name]
    tls = wanted or all(c.HasField("transport_socket") for c in listener.filter_chains)
    out["how"] = f"a client connects to {proxy.address}:{port}" + (
        f" with TLS, SNI {request.host}" if tls else ""
    )
    out["listener"] = name
    choice = select_filter_chain(listener, server_name=request.host, tls=tls)
    out["filter_chain"] = choice.why
    mismatch = transport_mismatch(choice.chain, tls=tls) if choice.chain is not None else ""
    if choice.chain is None or mismatch:
        out["outcome"] = {"result": "refused", "why": mismatch or choice.why}
        return out
    if choice.chain.HasField("transport_socket"):
        out["tls"] = _server_tls(choice.chain)
        if out["tls"]["mode"] == "MUTUAL":
            out["tls"]["client"] = (
                "the client must present a certificate the server's CA signed: "
                "a client without one is refused in the handshake"
            )
    tcp = envoy_read.tcp_proxy(choice.chain)
    if tcp is not None and envoy_read.http_manager(choice.chain) is None:
        clusters = _tcp_clusters(tcp)
        total = sum(w for _, w in clusters) or 1
        # TLS the gateway does not end (PASSTHROUGH) reaches the endpoint as it is.
        forwarded = request.host if tls and not choice.chain.HasField("transport_socket") else ""
        out["clusters"] = [
            _cluster(state, proxy, n, w, total, None, None, forwarded) for n, w in clusters
        ]
        _outcome(out)
        return out
    gateway = next(
        (g.meta.key for g in proxy.gateways if any(s.port == port for s in g.servers)),
        MESH_GATEWAY,
    )
    return _http(state, proxy, request, out, choice.chain, tls=tls, gateway=gateway, port=port)


# --- HTTP ----------------------------------------------------------------------------


def _http(
    state: MeshState,
    proxy: Proxy,
    request: Request,
    out: dict[str, Any],
    chain: listener_components_pb2.FilterChain,
    *,
    tls: bool,
    gateway: str = MESH_GATEWAY,
    port: int | None = None,
    inbound: bool = False,
) -> dict[str, Any]:
    hcm = envoy_read.http_manager(chain)
    if hcm is None:
        out["outcome"] = {"result": "unknown", "why": "the filter chain has no HTTP manager"}
        return out
    config = _route_config(state, proxy, hcm)
    if config is None:
        out["outcome"] = {
            "result": "404",
            "why": f"route configuration {hcm.rds.route_config_name!r} is not sent to the proxy",
        }
        return out
    walked = routing.walk(
        state.mesh,
        config,
        request,
        labels=proxy.workload.labels,
        namespace=proxy.namespace,
        gateway=gateway,
        listener_port=port,
        tls=tls,
    )
    out.update(walked)
    if "outcome" in out:
        return out
    route = out["route"]
    if not inbound and route.get("virtual_service") is None:
        out["route"]["note"] = (
            "no VirtualService routes this host for this proxy: the service's default route"
        )
    upstream = _rewritten(request, route)
    total = sum(w for _, w in walked["clusters"]) or 1
    out["clusters"] = [
        _cluster(state, proxy, n, w, total, upstream, route) for n, w in walked["clusters"]
    ]
    mirrors = route.get("mirrors", [])
    for mirror in mirrors:
        mirror["detail"] = _cluster(state, proxy, mirror["cluster"], 0, 1, upstream, route)
    _outcome(out)
    return out


def _route_config(state: MeshState, proxy: Proxy, hcm: Any) -> route_pb2.RouteConfiguration | None:
    if hcm.HasField("route_config"):
        config: route_pb2.RouteConfiguration = hcm.route_config
        return config
    routes = state.resources(proxy.node_id).get(xds_types.ROUTE, {})
    found = routes.get(hcm.rds.route_config_name)
    return found if isinstance(found, route_pb2.RouteConfiguration) else None


def _rewritten(request: Request, route: Mapping[str, Any]) -> Request:
    """The request as the route forwards it (prefix and host rewrites)."""
    upstream = request
    prefix = route.get("prefix_rewrite")
    if prefix:
        old = str(route.get("matched_prefix", ""))
        upstream = replace(upstream, path=prefix + request.path[len(old) :])
    if route.get("host_rewrite"):
        headers = tuple(h for h in upstream.headers if h[0] not in ("host", ":authority"))
        upstream = replace(upstream, headers=(*headers, ("host", route["host_rewrite"])))
    return upstream


def _outcome(out: dict[str, Any]) -> None:
    """One line: what happens to the request."""
    route = out.get("route", {})
    action = route.get("action", "route")
    fault = route.get("fault") or {}
    if action == "redirect":
        redirect = route.get("redirect", {})
        code = {"FOUND": 302, "SEE_OTHER": 303, "TEMPORARY_REDIRECT": 307,
                "PERMANENT_REDIRECT": 308}.get(redirect.get("response_code", ""), 301)  # fmt: skip
        out["outcome"] = {"result": str(code), "why": f"the route redirects: {redirect}"}
        return
    if action == "direct_response":
        out["outcome"] = {
            "result": str(route.get("status")),
            "why": "the route answers directly (no upstream)",
        }
        return
    clusters = out.get("clusters", [])
    if "abort" in fault and fault["abort"]["percent"] >= 100:
        status = fault["abort"]["http_status"]
        out["outcome"] = {
            "result": str(status),
            "why": f"fault injection: the caller's sidecar aborts with {status} "
            "(fault filter abort); the upstream never sees the request",
        }
        return
    names = [c["name"] for c in clusters]
    if not names:
        out["outcome"] = {"result": "unknown", "why": "the route names no cluster"}
        return
    split = " or ".join(f"{c['name']} ({c['share']})" for c in clusters)
    why = f"to {split}" if len(clusters) > 1 else f"to {names[0]}"
    if fault:
        why += f"; fault injection {fault}"
    missing = [c["name"] for c in clusters if c.get("missing")]
    if missing:
        out["outcome"] = {"result": "503", "why": f"cluster {missing[0]} is not sent (NC)"}
        return
    endpoints = [ep for c in clusters for ep in c.get("endpoints", [])]
    if not endpoints:
        out["outcome"] = {"result": "503", "why": f"{why}, which has no healthy endpoint (UH)"}
        return
    refused = [ep for ep in endpoints if ep.get("accepts") is False]
    denied = [ep for ep in endpoints if (ep.get("authorization") or {}).get("allowed") is False]
    if len(refused) == len(endpoints):
        first = refused[0]
        out["outcome"] = {"result": "503", "why": f"{why}; {first['sidecar']}: {first['why']}"}
    elif len(denied) + len(refused) == len(endpoints) and denied:
        first = denied[0]
        out["outcome"] = {
            "result": "403",
            "why": f"{why}; {first['sidecar']} answers RBAC: access denied "
            f"({first['authorization']['why']})",
        }
    else:
        if denied or refused:
            why += f"; {len(denied) + len(refused)} of {len(endpoints)} endpoints refuse it"
        out["outcome"] = {"result": "routed", "why": why}


# --- TCP -----------------------------------------------------------------------------


def _has_sni(listener: listener_pb2.Listener) -> bool:
    return any(c.filter_chain_match.server_names for c in listener.filter_chains)


def _tcp_clusters(tcp: Any) -> list[tuple[str, int]]:
    if tcp.HasField("weighted_clusters"):
        return [(c.name, c.weight) for c in tcp.weighted_clusters.clusters]
    return [(tcp.cluster, 100)]


def _tcp_virtual_service(
    state: MeshState, proxy: Proxy, clusters: list[tuple[str, int]], port: int
) -> dict[str, Any] | None:
    """The VirtualService `tcp[]` rule behind a tcp_proxy, found by its destinations."""
    parsed = [envoy_read.parse_cluster_name(n) for n, _ in clusters]
    hosts = {p[3] for p in parsed if p is not None}
    wanted = {(p[3], p[2]) for p in parsed if p is not None}
    for host in sorted(hosts):
        vs = state.push_context.traffic.virtual_service(host, proxy.namespace)
        if vs is None:
            continue
        for i, rule in enumerate(vs.tcp):
            dests = {(d.destination.host, d.destination.subset) for d in rule.route if d.weight}
            if dests == wanted:
                return {"name": vs.meta.key, "source": str(vs.meta.source), "rule": f"tcp[{i}]"}
        return {"name": vs.meta.key, "source": str(vs.meta.source), "rule": "none matched"}
    return None


# --- clusters ------------------------------------------------------------------------


def _cluster(
    state: MeshState,
    proxy: Proxy,
    name: str,
    weight: int,
    total: int,
    request: Request | None,
    route: Mapping[str, Any] | None,
    passthrough: str = "",
) -> dict[str, Any]:
    """One cluster a route or TCP proxy picks. `passthrough`: the SNI of a client's TLS
    that the proxy forwards unterminated (what the endpoint then sees)."""
    resources = state.resources(proxy.node_id)
    out: dict[str, Any] = {"name": name, "weight": weight, "share": f"{100 * weight / total:g}%"}
    cluster = resources.get(xds_types.CLUSTER, {}).get(name)
    if not isinstance(cluster, cluster_pb2.Cluster):
        out["missing"] = "not sent to this proxy: Envoy answers 503 (NC, no cluster)"
        return out
    parsed = envoy_read.parse_cluster_name(name)
    traffic = state.push_context.traffic
    if parsed is not None and parsed[0] == "outbound":
        _, port, subset, host = parsed
        service = traffic.service(host)
        out["service"] = {
            "host": host,
            "port": port,
            "entry": service.meta.key if service else None,
            "source": str(service.meta.source) if service else None,
            "location": service.location if service else None,
            "resolution": service.resolution if service else None,
        }
        rule = traffic.rule(host)
        if rule is not None:
            out["destination_rule"] = {"name": rule.meta.key, "source": str(rule.meta.source)}
            if subset:
                chosen = rule.subset(subset)
                labels = dict(chosen.labels) if chosen is not None else None
                out["destination_rule"]["subset"] = {"name": subset, "labels": labels}
        elif subset:
            out["destination_rule"] = {"name": None, "subset": {"name": subset, "labels": None}}
    out["policy"] = envoy_read.cluster_policy(cluster)
    tls = envoy_read.upstream_tls(cluster)
    tls["why"] = _tls_why(state, proxy, name, tls["mode"])
    caller_id = identity(state.mesh, proxy.workload)
    if tls["mode"] == "ISTIO_MUTUAL":
        tls["presents"] = caller_id
    if passthrough and tls["mode"] == "DISABLE":
        tls["wire"] = f"the client's own TLS (SNI {passthrough}), passed through unterminated"
    out["tls"] = tls
    endpoints, where = envoy_read.endpoints(cluster, resources.get(xds_types.ENDPOINT, {}))
    out["endpoints_from"] = where
    for ep in endpoints:
        ep.update(_server_side(state, ep, tls, request, caller_id, passthrough))
    out["endpoints"] = endpoints
    if not endpoints:
        out["no_endpoints"] = "no healthy endpoint: Envoy answers 503 (UH)"
    if route is not None and route.get("hash_policy"):
        out["hash_policy"] = route["hash_policy"]
    return out


def _tls_why(state: MeshState, proxy: Proxy, name: str, mode: str) -> str:
    """Which rule decided the cluster's TLS (`generators.security` decides it)."""
    svc = next((s for s in proxy.scope.services if s.cluster_name == name), None)
    if svc is None:
        return "an inbound or non-service cluster"
    tls = svc.policy.tls if svc.policy is not None else None
    if tls is not None:
        rule = state.push_context.traffic.rule(svc.host)
        where = f"DestinationRule {rule.meta.key} ({rule.meta.source})" if rule else "a rule"
        return f"{where}: {tls.path or 'trafficPolicy.tls'} mode {tls.mode}"
    if mode == "ISTIO_MUTUAL":
        return "auto mTLS: every endpoint is a sidecar of the mesh accepting mTLS on this port"
    return f"auto mTLS does not apply: {_no_auto_mtls(state, svc)}"


def _no_auto_mtls(state: MeshState, svc: Any) -> str:
    """Why `generators.mtls.auto_mtls` said no, in words."""
    if not state.mesh.workload_identity:
        return "the control plane issues no workload identities (--no-identity)"
    if state.mesh.settings is not None and not state.mesh.settings.auto_mtls:
        return "the mesh settings say enableAutoMtls: false"
    base = svc.parent or svc
    if svc.service.location != "MESH_INTERNAL":
        return f"the service is {svc.service.location}"
    if not base.uses_eds:
        return f"resolution {svc.service.resolution}: endpoints are resolved by DNS"
    if not base.endpoints:
        return "the service has no endpoints"
    ctx = state.push_context
    for endpoint in base.endpoints:
        server = ctx.proxy(endpoint.workload.proxy_id)
        if server is None or server.workload is not endpoint.workload:
            return f"endpoint {endpoint.address} has no sidecar"
        if server.gateways:
            return f"{server.node_id} is a gateway, not a sidecar"
        if not any(p.port == endpoint.port and p.bind == server.address for p in server.inbound):
            return f"{server.node_id}'s sidecar does not listen on {endpoint.port}"
        mode = peer_decision(state.mesh, endpoint.workload, endpoint.port)
        if mode["mode"] == "DISABLE":
            return f"{server.node_id} port {endpoint.port} has mTLS DISABLE ({mode['by']})"
    return "plaintext"


def _server_side(
    state: MeshState,
    ep: dict[str, Any],
    tls: Mapping[str, Any],
    request: Request | None,
    caller_id: str | None,
    passthrough: str = "",
) -> dict[str, Any]:
    """What the endpoint's own proxy (a sidecar, or a gateway) does with the connection."""
    server = state.push_context.proxy(ep["workload"]) if ep["workload"] else None
    if server is None:
        return {"sidecar": None}
    address, _, port_text = ep["address"].rpartition(":")
    port = int(port_text)
    out: dict[str, Any] = {"sidecar": server.node_id}
    server_id = identity(state.mesh, server.workload)
    if tls["mode"] == "ISTIO_MUTUAL":
        out["server_identity"] = server_id
        if tls["server_identities"] and server_id not in tls["server_identities"]:
            out["identity_mismatch"] = (
                f"{server_id} is not among the identities the caller accepts: the TLS "
                "handshake fails (503, UF)"
            )
    listener = state.listeners(server.node_id).get(naming.listener_name(address, port))
    kind = "gateway" if server.gateways else "sidecar"
    if not isinstance(listener, listener_pb2.Listener):
        out["accepts"] = False
        out["why"] = f"{server.node_id}'s {kind} does not listen on {address}:{port}"
        return out
    if server.gateways:
        out["gateway"] = ", ".join(g.meta.key for g in server.gateways)
    else:
        out["mtls"] = peer_decision(state.mesh, server.workload, port)
    out["envoy_mode"] = envoy_read.downstream_mode(listener)
    # On the wire: the cluster's own TLS, or a client's TLS forwarded as it is.
    encrypted = tls["mode"] != "DISABLE" or bool(passthrough)
    sni = passthrough or str(tls.get("sni", ""))
    choice = select_filter_chain(listener, server_name=sni, tls=encrypted)
    if choice.chain is None:
        out["accepts"] = False
        out["why"] = (
            f"{out['envoy_mode']}: it takes mutual TLS only and the caller sends plaintext: "
            "the connection is reset (503, UF)"
            if not encrypted
            else f"{out['envoy_mode']}: it takes plaintext only: the TLS handshake fails"
        )
        return out
    mismatch = transport_mismatch(choice.chain, tls=encrypted)
    if mismatch:
        out["accepts"] = False
        out["why"] = f"{out['envoy_mode']}: {mismatch} (503, UF)"
        return out
    if tls["mode"] in ("SIMPLE", "MUTUAL"):
        out["accepts"] = None
        out["why"] = "TLS with the user's certificates to a sidecar: decided by its certificate"
        return out
    out["accepts"] = True
    if choice.chain.HasField("transport_socket"):
        out["checks_client"] = _client_checks(choice.chain)
    principal = caller_id if tls["mode"] == "ISTIO_MUTUAL" else None
    caller = Caller(principal=principal, port=port, request=request, sni=str(tls.get("sni", "")))
    out["authorization"] = _decision(decide(envoy_read.rbac_filters(choice.chain), caller))
    return out


def _client_checks(chain: listener_components_pb2.FilterChain) -> list[str]:
    """What a server's mTLS chain demands of the client's certificate."""
    context = envoy_read.unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    if context is None or not context.require_client_certificate.value:
        return []
    validation = context.common_tls_context.combined_validation_context
    matchers = validation.default_validation_context.match_typed_subject_alt_names
    checks = []
    for m in matchers:
        kind = str(m.matcher.WhichOneof("match_pattern"))
        checks.append(f"{kind} {getattr(m.matcher, kind, '')}")
    return checks or ["any certificate of the mesh CA"]


def _decision(decision: Any) -> dict[str, Any]:
    return {"allowed": decision.allowed, "why": decision.why, "filters": decision.filters}


def _server_tls(chain: listener_components_pb2.FilterChain) -> dict[str, Any]:
    context = envoy_read.unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    if context is None:
        return {"mode": "unknown"}
    common = context.common_tls_context
    mutual = context.require_client_certificate.value
    out: dict[str, Any] = {
        "mode": "MUTUAL" if mutual else "SIMPLE",
        "server_names": list(chain.filter_chain_match.server_names),
        "certificates": len(common.tls_certificates)
        + len(common.tls_certificate_sds_secret_configs),
        "alpn": list(common.alpn_protocols),
    }
    return out
