"""Gateway: the ports, hosts and TLS of a standalone (ingress) Envoy, picked by labels."""

from __future__ import annotations

from ..fields import Shape, each, label, no_effect, not_yet, obj, restricted, shape, supported
from ..model import ObjectMeta
from ..model_traffic import Gateway, GatewayServer, ServerTLS
from ..names import dns1123_label_problem, wildcard_host_problem
from ..schema import DocChecker, Located
from .common import freeze, parse_labels, parse_port_name, parse_port_number, parse_protocol
from .traffic_common import boolean

TLS_VERSIONS = frozenset({"TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"})
PORT: Shape = shape(
    number=supported(),
    name=label(),
    protocol=supported("HTTP, HTTP2, GRPC, HTTPS; TCP and TLS servers not yet"),
    targetPort=no_effect("Istio applies targetPort to ServiceEntry ports only"),
)
SERVER_TLS: Shape = shape(
    mode=restricted("SIMPLE (the default); MUTUAL, PASSTHROUGH, ... not yet"),
    credentialName=supported(
        "a kubernetes.io/tls Secret of the gateway's (or Gateway's) namespace"
    ),
    httpsRedirect=supported("a 301 to https"),
    minProtocolVersion=supported("TLS_AUTO, TLSV1_0 ... TLSV1_3"),
    serverCertificate=not_yet("use credentialName"),
    privateKey=not_yet("use credentialName"),
    caCertificates=not_yet(),
    subjectAltNames=not_yet(),
    cipherSuites=not_yet(),
    verifyCertificateSpki=not_yet(),
    verifyCertificateHash=not_yet(),
    maxProtocolVersion=not_yet(),
    credentialNames=not_yet(),
    caCrl=not_yet(),
)
SERVER: Shape = shape(
    port=obj(PORT),
    hosts=supported("host or ns/host"),
    tls=obj(SERVER_TLS),
    name=label("a name for the server; changes no Envoy config"),
    bind=not_yet("a gateway listens on its workload's address"),
    defaultEndpoint=not_yet(),
)
SPEC: Shape = shape(
    selector=supported("labels of the gateway WorkloadEntries"), servers=each(SERVER)
)
TLS_MODES = frozenset({"SIMPLE", "PASSTHROUGH", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL"})
# Istio keeps these for the proxy (admin 15000, ...): a listener there would not bind.
PROXY_PORTS = range(15000, 15091)
# Protocols a gateway server can carry in pocketmesh today.
GATEWAY_PROTOCOLS = frozenset({"HTTP", "HTTP2", "HTTPS", "GRPC"})


def _server_host_problem(value: str) -> str | None:
    namespace, slash, host = value.rpartition("/")
    if slash and namespace not in {".", "*"} and dns1123_label_problem(namespace) is not None:
        return "must be 'host' or 'namespace/host'"
    if (problem := wildcard_host_problem(host)) is not None:
        return problem
    return None


def parse_gateway(ck: DocChecker, meta: ObjectMeta, spec: Located | None) -> Gateway | None:
    if spec is None:
        return None
    before = len(ck.errors)
    fields = ck.fields(spec, SPEC)
    if fields is None:
        return None
    selector = freeze(parse_labels(ck, fields.get("selector")))
    if not selector:
        ck.error(spec, "must select gateway workloads by labels", path="spec.selector")
    servers: list[GatewayServer] = []
    seen: dict[int, str] = {}
    at = ck.required(fields, "servers", spec)
    for item in (ck.items(at, non_empty=True) or ()) if at is not None else ():
        server = _server(ck, item)
        if server is None:
            continue
        earlier = seen.setdefault(server.port, server.protocol)
        if earlier != server.protocol:
            ck.error(item, f"port {server.port} is already used with protocol {earlier}")
        servers.append(server)
    if len(ck.errors) > before:
        return None
    return Gateway(meta, selector, tuple(servers))


def _server(ck: DocChecker, at: Located) -> GatewayServer | None:
    fields = ck.fields(at, SERVER)
    if fields is None:
        return None
    number = protocol = port_name = None
    if (port_at := ck.required(fields, "port", at)) is not None:
        port = ck.fields(port_at, PORT)
        if port is not None:
            number = parse_port_number(ck, ck.required(port, "number", port_at))
            if number is not None and number in PROXY_PORTS:
                ck.error(port["number"], f"{number} is reserved for the proxy itself (15000-15090)")
                number = None
            protocol = parse_protocol(ck, ck.required(port, "protocol", port_at))
            port_name = parse_port_name(ck, port.get("name"))
            if protocol is not None and protocol not in GATEWAY_PROTOCOLS:
                ck.not_yet(port["protocol"], f"a {protocol} server")
    hosts: list[str] = []
    if (hosts_at := ck.required(fields, "hosts", at)) is not None:
        hosts = [h for h, _ in ck.strings(hosts_at, _server_host_problem, non_empty=True) or ()]
    tls = None
    if (tls_at := fields.get("tls")) is not None:
        tls = _tls(ck, tls_at)
    if protocol == "HTTPS" and (tls is None or tls.mode != "SIMPLE"):
        ck.error(at, "an HTTPS server needs tls.mode SIMPLE with a credentialName")
    if protocol not in (None, "HTTPS") and tls is not None and not tls.https_redirect:
        ck.error(tls_at or at, f"tls on a {protocol} server is only allowed for httpsRedirect")
    name = ck.string(fields["name"]) or "" if "name" in fields else ""
    if number is None or protocol is None:
        return None
    return GatewayServer(number, protocol, port_name or "", tuple(hosts), tls, name)


def _tls(ck: DocChecker, at: Located) -> ServerTLS | None:
    fields = ck.fields(at, SERVER_TLS)
    if fields is None:
        return None
    mode = "SIMPLE"
    if (m := fields.get("mode")) is not None:
        mode = ck.enum(m, TLS_MODES) or mode
        if mode != "SIMPLE":
            ck.not_yet(m, f"tls mode {mode}")
    credential = ck.string(fields["credentialName"]) or "" if "credentialName" in fields else ""
    redirect = False
    if (r := fields.get("httpsRedirect")) is not None:
        redirect = bool(boolean(ck, r))
    min_version = ""
    if (v := fields.get("minProtocolVersion")) is not None:
        min_version = ck.enum(v, TLS_VERSIONS) or ""
    if mode == "SIMPLE" and not credential and not redirect:
        ck.error(at, "tls mode SIMPLE needs a credentialName")
    return ServerTLS(mode, credential, redirect, min_version)
