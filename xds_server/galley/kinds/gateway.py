"""Gateway: the ports, hosts and TLS of a standalone (ingress) Envoy, picked by labels.

Istio's validation (`validateServer`, `validateTLSOptions`) and its merging rules for
servers sharing a port (`mergeGateways`), each finding located at its field:

- HTTP, HTTP2, GRPC, GRPC-WEB: plain HTTP; `tls` only for `httpsRedirect`;
- HTTPS: TLS ended here (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL) with HTTP
  routes behind it, or passed through by SNI (PASSTHROUGH, `tls[]` routes);
- TLS: the same, with TCP routes (`tcp[]`) behind an ended TLS;
- TCP (and MONGO, REDIS, MYSQL, proxied as TCP as Istio does by default): `tcp[]`.

`tls.mode` defaults to PASSTHROUGH, as in Istio's API. Servers on one port must all
be plain HTTP, or all told apart by SNI (TLS / HTTPS), or one TCP server.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..fields import (
    NOT_SUPPORTED_YET,
    Shape,
    each,
    no_effect,
    not_yet,
    obj,
    restricted,
    shape,
    supported,
)
from ..model import ObjectMeta
from ..model_traffic import (
    AUTO_PASSTHROUGH,
    GATEWAY_HTTP,
    PASSTHROUGH,
    Gateway,
    GatewayServer,
    ServerCertificate,
    ServerTLS,
)
from ..names import (
    dns1123_label_problem,
    dns1123_subdomain_problem,
    san_problem,
    wildcard_host_problem,
)
from ..schema import DocChecker, Located, Rule
from .common import freeze, parse_labels, parse_port_name, parse_port_number, parse_protocol
from .traffic_common import boolean, pem_file

TLS_VERSIONS = ("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")
# Istio's Gateway cipher suites (security.ValidCipherSuites); others are dropped, warned.
CIPHER_SUITES = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "AES256-SHA",
        "DES-CBC3-SHA",
    }
)
TLS_MODES = frozenset(
    {"SIMPLE", "PASSTHROUGH", "MUTUAL", "OPTIONAL_MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL"}
)
WHY_NOT_AUTO_PASSTHROUGH = (
    "AUTO_PASSTHROUGH forwards mesh mTLS from sidecars of another network to the cluster "
    "named in its SNI (Istio's multi-network east-west gateway); pocketmesh runs one "
    "network, so nothing would ever send to it: use PASSTHROUGH with tls routes"
)
PORT: Shape = shape(
    number=supported(),
    name=supported("names an HTTPS server's routes: https.<port>.<name>.<gateway>.<ns> (Istio)"),
    protocol=supported(
        "HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP; MONGO, REDIS, MYSQL are proxied as "
        "TCP (Istio's default)"
    ),
    targetPort=no_effect("Istio applies targetPort to ServiceEntry ports only"),
)
TLS_CERTIFICATE: Shape = shape(
    serverCertificate=supported("a PEM file, read at load time"),
    privateKey=supported("a PEM file, read at load time"),
    caCertificates=no_effect("Istio reads the client CA from tls.caCertificates"),
)
SERVER_TLS: Shape = shape(
    mode=restricted(
        "PASSTHROUGH (the default, as in Istio): tls routes by SNI; SIMPLE, MUTUAL, "
        "OPTIONAL_MUTUAL, ISTIO_MUTUAL: TLS ended here; AUTO_PASSTHROUGH refused: "
        + WHY_NOT_AUTO_PASSTHROUGH
    ),
    credentialName=supported(
        "a Secret of the gateway workload's (or the Gateway's) namespace: tls.crt/tls.key "
        "or cert/key; the client CA from <name>-cacert, else its ca.crt/cacert"
    ),
    credentialNames=supported("up to 2 Secrets (an RSA and an ECDSA certificate)"),
    caCertCredentialName=supported("a Secret holding the client CA (ca.crt or cacert)"),
    tlsCertificates=each(TLS_CERTIFICATE, "up to 2 (an RSA and an ECDSA certificate)"),
    httpsRedirect=supported("a 301 to https"),
    serverCertificate=supported("a PEM file, read at load time"),
    privateKey=supported("a PEM file, read at load time"),
    caCertificates=supported("a PEM file: the roots client certificates must chain to"),
    caCrl=supported("a PEM file: client certificates it revokes are refused"),
    subjectAltNames=supported("a client certificate must carry one of them"),
    verifyCertificateSpki=supported("base64 SHA-256 of a client certificate's public key"),
    verifyCertificateHash=supported("hex SHA-256 of a client certificate"),
    minProtocolVersion=supported("TLS_AUTO, TLSV1_0 ... TLSV1_3"),
    maxProtocolVersion=supported("TLS_AUTO, TLSV1_0 ... TLSV1_3"),
    cipherSuites=supported("Istio's list; other names are dropped with a warning, as Istio"),
    insecureSkipVerify=supported("client certificates are asked for but not verified"),
)
SERVER: Shape = shape(
    port=obj(PORT),
    hosts=supported("host or ns/host"),
    tls=obj(SERVER_TLS),
    name=supported("the stat prefix of an HTTPS server's connection manager (Istio)"),
    bind=not_yet("a gateway listens on its workload's address"),
    defaultEndpoint=not_yet(),
)
SPEC: Shape = shape(
    selector=supported("labels of the gateway WorkloadEntries"), servers=each(SERVER)
)
# The gateway Envoy's admin port (`up`'s default --admin-port): a listener there would
# not bind. (A gateway has no outbound proxy on 15001: Istio's other 150xx ports are
# its agent's, which pocketmesh does not run; Istio's own samples expose 15012, 15017.)
ADMIN_PORT = 15000
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})
_CERT_FIELDS = ("serverCertificate", "privateKey", "caCertificates", "tlsCertificates")
_CREDENTIAL_FIELDS = ("credentialName", "credentialNames")
_SOURCES = ("serverCertificate", "privateKey", "tlsCertificates", *_CREDENTIAL_FIELDS)
# What only a server that ends TLS uses.
_ENDING_TLS = (
    *_CERT_FIELDS,
    *_CREDENTIAL_FIELDS,
    "privateKey",
    "caCrl",
    "caCertCredentialName",
    "subjectAltNames",
    "verifyCertificateSpki",
    "verifyCertificateHash",
    "insecureSkipVerify",
    "minProtocolVersion",
    "maxProtocolVersion",
    "cipherSuites",
)
_HASH = re.compile(r"[0-9a-fA-F]{64}\Z")


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
    at = ck.required(fields, "servers", spec)
    items = (ck.items(at, non_empty=True) or ()) if at is not None else ()
    for i, item in enumerate(items):
        server = _server(ck, item, i)
        if server is not None:
            servers.append(server)
    _check_ports(ck, list(items), servers)
    if len(ck.errors) > before:
        return None
    return Gateway(meta, selector, tuple(servers))


def _check_ports(ck: DocChecker, items: list[Located], servers: list[GatewayServer]) -> None:
    """Istio's rules for servers sharing a port (mergeGateways), within one Gateway."""
    first: dict[int, GatewayServer] = {}
    names: dict[str, int] = {}
    sni: dict[tuple[int, str], int] = {}
    for server in servers:
        at = items[server.index]
        if server.port_name:
            earlier_name = names.setdefault(server.port_name, server.index)
            if earlier_name != server.index:
                ck.error(
                    at,
                    f"port name {server.port_name!r} is already used by "
                    f"spec.servers[{earlier_name}] (Istio: port names must be unique)",
                    path=f"{at.path}.port.name",
                )
        earlier = first.setdefault(server.port, server)
        if earlier is not server:
            problem = _port_clash(earlier, server)
            if problem:
                ck.error(at, f"port {server.port}: {problem}", path=f"{at.path}.port")
                continue
        if server.uses_tls:
            for host in server.sni_hosts:
                taken = sni.setdefault((server.port, host), server.index)
                if taken != server.index:
                    ck.warn(
                        at,
                        f"host {host!r} on port {server.port} is already served by "
                        f"spec.servers[{taken}]: this server is skipped, as in Istio",
                        path=f"{at.path}.hosts",
                    )


def _port_clash(earlier: GatewayServer, server: GatewayServer) -> str:
    if earlier.is_http and server.is_http:
        return ""  # plain HTTP servers share one route table
    if earlier.uses_tls and server.uses_tls:
        return ""  # told apart by SNI
    if earlier.is_http or server.is_http:
        return (
            f"spec.servers[{earlier.index}] is {earlier.protocol}: a port carries plain HTTP "
            "servers, or TLS servers told apart by SNI, not both"
        )
    return (
        f"spec.servers[{earlier.index}] is already a {earlier.protocol} server there: "
        "only TLS servers (told apart by SNI) can share a port"
    )


def _server(ck: DocChecker, at: Located, index: int) -> GatewayServer | None:
    fields = ck.fields(at, SERVER)
    if fields is None:
        return None
    number = protocol = port_name = None
    if (port_at := ck.required(fields, "port", at)) is not None:
        port = ck.fields(port_at, PORT)
        if port is not None:
            number = parse_port_number(ck, ck.required(port, "number", port_at))
            if number == ADMIN_PORT:
                ck.error(port["number"], f"{number} is the gateway Envoy's admin port")
                number = None
            protocol = parse_protocol(ck, ck.required(port, "protocol", port_at))
            port_name = parse_port_name(ck, port.get("name"))
    if protocol in ("MONGO", "REDIS", "MYSQL"):
        protocol = "TCP"  # Istio's protocol filters are off by default: plain TCP
    hosts: list[str] = []
    if (hosts_at := ck.required(fields, "hosts", at)) is not None:
        hosts = [h for h, _ in ck.strings(hosts_at, _server_host_problem, non_empty=True) or ()]
    tls = None
    tls_at = fields.get("tls")
    if tls_at is not None:
        tls = parse_server_tls(ck, tls_at)
    if protocol is not None:
        _check_protocol_tls(ck, at, protocol, tls, tls_at)
    name = ck.string(fields["name"]) or "" if "name" in fields else ""
    if number is None or protocol is None:
        return None
    return GatewayServer(number, protocol, port_name or "", tuple(hosts), tls, name, index)


def _check_protocol_tls(
    ck: DocChecker, at: Located, protocol: str, tls: ServerTLS | None, tls_at: Located | None
) -> None:
    """Which `tls` each protocol takes (Istio's validateServer)."""
    if protocol in TLS_PROTOCOLS:
        if tls_at is None:
            ck.error(
                at,
                f"{_article(protocol)} {protocol} server needs tls settings "
                "(mode SIMPLE, PASSTHROUGH, ...)",
                path=f"{at.path}.tls",
            )
        elif tls is not None and tls.https_redirect:
            ck.warn(
                tls_at,
                "httpsRedirect has no effect on a server that is not plain HTTP",
                path=f"{tls_at.path}.httpsRedirect",
            )
        return
    if tls_at is None:
        return
    if protocol not in GATEWAY_HTTP:
        ck.error(tls_at, f"a {protocol} server takes no tls settings: use protocol TLS")
        return
    if tls is not None and (
        tls.mode != PASSTHROUGH or tls.certificates or tls.ca_certificates is not None
    ):
        ck.error(
            tls_at,
            f"a plain {protocol} server takes tls only for httpsRedirect; "
            "use protocol HTTPS to end TLS",
        )


def _article(word: str) -> str:
    return "an" if word[0] in "AEFHILMNORSX" else "a"


def parse_server_tls(ck: DocChecker, at: Located, table: Shape = SERVER_TLS) -> ServerTLS | None:
    """Istio's validateTLSOptions, each finding at its field. `table`: the fields this
    place accepts (a Sidecar's ingress accepts fewer than a Gateway's server)."""
    fields = ck.fields(at, table)
    if fields is None:
        return None
    before = len(ck.errors)
    mode = PASSTHROUGH  # the API's default (enum value 0)
    if (m := fields.get("mode")) is not None:
        mode = ck.enum(m, TLS_MODES) or mode
        if mode == AUTO_PASSTHROUGH:
            ck.error(m, f"AUTO_PASSTHROUGH is {NOT_SUPPORTED_YET}: {WHY_NOT_AUTO_PASSTHROUGH}")
    redirect = False
    if (r := fields.get("httpsRedirect")) is not None:
        redirect = bool(boolean(ck, r))
    certificates = _certificates(ck, at, fields)
    ca = pem_file(ck, fields["caCertificates"]) if "caCertificates" in fields else None
    crl = pem_file(ck, fields["caCrl"]) if "caCrl" in fields else None
    ca_credential = ""
    if (c := fields.get("caCertCredentialName")) is not None:
        ca_credential = ck.string(c, dns1123_subdomain_problem) or ""
    sans = _strings(ck, fields, "subjectAltNames", san_problem)
    spki = _strings(ck, fields, "verifyCertificateSpki", _spki_problem)
    hashes = _strings(ck, fields, "verifyCertificateHash", _hash_problem)
    min_version = _version(ck, fields, "minProtocolVersion")
    max_version = _version(ck, fields, "maxProtocolVersion")
    if _above(min_version, max_version):
        ck.error(
            fields["minProtocolVersion"],
            f"{min_version} is above maxProtocolVersion {max_version}",
        )
    ciphers = _cipher_suites(ck, fields)
    if min_version in ("TLSV1_0", "TLSV1_1") and not ciphers:
        ck.warn(
            fields["minProtocolVersion"],
            "TLS versions below TLSV1_2 need cipherSuites "
            "they can use: the default ones are TLS 1.2 ciphers (as Istio warns)",
        )
    insecure = False
    if (s := fields.get("insecureSkipVerify")) is not None:
        insecure = bool(boolean(ck, s))
    tls = ServerTLS(
        mode=mode,
        https_redirect=redirect,
        certificates=certificates,
        ca_certificates=ca,
        ca_crl=crl,
        ca_cert_credential_name=ca_credential,
        subject_alt_names=sans,
        verify_certificate_spki=spki,
        verify_certificate_hash=hashes,
        min_protocol_version=min_version,
        max_protocol_version=max_version,
        cipher_suites=ciphers,
        insecure_skip_verify=insecure,
        path=at.path,
    )
    _check_mode(ck, at, fields, tls)
    return None if len(ck.errors) > before else tls


def _certificates(
    ck: DocChecker, at: Located, fields: dict[str, Located]
) -> tuple[ServerCertificate, ...]:
    found: list[ServerCertificate] = []
    sources = [
        k for k in ("serverCertificate", "credentialName", "credentialNames", "tlsCertificates")
        if k in fields
    ]  # fmt: skip
    if len(sources) > 1:
        ck.error(
            at,
            "only one of credentialName, credentialNames, serverCertificate/privateKey,"
            f" tlsCertificates may be set, not {', '.join(sources)}",
        )
    if "serverCertificate" in fields or "privateKey" in fields:
        chain = pem_file(ck, fields["serverCertificate"]) if "serverCertificate" in fields else None
        key = pem_file(ck, fields["privateKey"]) if "privateKey" in fields else None
        found.append(ServerCertificate(chain, key))
    if (c := fields.get("credentialName")) is not None:
        name = _credential_name(ck, c)
        if name:
            found.append(ServerCertificate(credential_name=name))
    if (cs := fields.get("credentialNames")) is not None:
        items = ck.items(cs, non_empty=True) or []
        names = [(n, item) for item in items if (n := _credential_name(ck, item))]
        if len(names) > 2:
            ck.error(cs, "at most 2 (an RSA and an ECDSA certificate)")
        found += [ServerCertificate(credential_name=n) for n, _ in names]
    if (ts := fields.get("tlsCertificates")) is not None:
        items = ck.items(ts, non_empty=True) or []
        if len(items) > 2:
            ck.error(ts, "at most 2 (an RSA and an ECDSA certificate)")
        for i, item in enumerate(items):
            entry = ck.fields(item, TLS_CERTIFICATE)
            if entry is None:
                continue
            chain = key = None
            if (c := ck.required(entry, "serverCertificate", item)) is not None:
                chain = pem_file(ck, c)
            if (k := ck.required(entry, "privateKey", item)) is not None:
                key = pem_file(ck, k)
            found.append(ServerCertificate(chain, key, where=f"tlsCertificates[{i}]"))
    return tuple(found)


def _credential_name(ck: DocChecker, at: Located) -> str | None:
    """A Secret's name. Istio also takes `sds://<name>` (an external SDS provider named in
    its mesh config) and `kubernetes-gateway://ns/name` (Gateway API): not built here."""
    value = ck.string(at)
    if value is None:
        return None
    scheme, sep, _ = value.partition("://")
    if sep:
        ck.not_yet(at, f"credentialName {value!r} (a {scheme}:// credential source)")
        return None
    return ck.string(at, dns1123_subdomain_problem)


def _check_mode(ck: DocChecker, at: Located, fields: dict[str, Located], tls: ServerTLS) -> None:
    mode = tls.mode
    if mode == "ISTIO_MUTUAL":
        for key in (*_CERT_FIELDS, *_CREDENTIAL_FIELDS, "privateKey", "caCertCredentialName"):
            if key in fields:
                ck.error(
                    fields[key],
                    "ISTIO_MUTUAL uses the gateway's mesh certificate and "
                    "roots: no certificates may be given",
                )
    elif mode in (PASSTHROUGH, AUTO_PASSTHROUGH):
        for key in _ENDING_TLS:
            if key in fields:
                ck.warn(
                    fields[key],
                    f"{mode} does not end TLS: this is not used (as in "
                    "Istio); set mode: SIMPLE or MUTUAL to end TLS here",
                )
    else:  # SIMPLE, MUTUAL, OPTIONAL_MUTUAL: TLS ended with the user's certificate
        by_secret = any(c.credential_name for c in tls.certificates)
        # (a source that is there but wrong has its own error: no second one)
        if not tls.certificates and not any(k in fields for k in _SOURCES):
            ck.error(
                at,
                f"mode {mode} needs a certificate: credentialName, or "
                "serverCertificate and privateKey",
                path=f"{at.path}.credentialName",
            )
        for cert in tls.certificates:
            if cert.credential_name or cert.where:  # tlsCertificates: each item checked
                continue
            where = f"{at.path}.{cert.where}." if cert.where else f"{at.path}."
            if cert.chain is None and "serverCertificate" not in fields:
                ck.error(at, f"required for mode {mode}", path=f"{where}serverCertificate")
            if cert.key is None and "privateKey" not in fields:
                ck.error(at, f"required for mode {mode}", path=f"{where}privateKey")
        if tls.verifies_clients and not by_secret and tls.ca_certificates is None:
            ck.error(
                at,
                f"mode {mode} verifies client certificates: caCertificates is required",
                path=f"{at.path}.caCertificates",
            )
        if not by_secret and "caCertCredentialName" in fields:
            ck.warn(
                fields["caCertCredentialName"],
                "is read only with credentialName (as in Istio): use caCertificates with files",
            )
        if by_secret and "caCertificates" in fields:
            ck.error(
                fields["caCertificates"],
                "cannot be combined with credentialName: the "
                "client CA comes from the Secret (or caCertCredentialName)",
            )
        if "caCrl" in fields:
            if by_secret:
                ck.error(
                    fields["caCrl"],
                    "cannot be combined with credentialName: put the CRL "
                    "in the Secret (ca.crl), as Istio requires",
                )
            elif mode == "SIMPLE":
                ck.error(
                    fields["caCrl"],
                    "mode SIMPLE asks for no client certificate: a CRL "
                    "needs MUTUAL or OPTIONAL_MUTUAL",
                )
    if not tls.verifies_clients:
        for key in ("subjectAltNames", "verifyCertificateSpki", "verifyCertificateHash",
                    "insecureSkipVerify", "caCertificates", "caCertCredentialName"):  # fmt: skip
            if key in fields and mode == "SIMPLE":
                ck.warn(
                    fields[key],
                    f"checks client certificates, which mode {mode} does not "
                    "ask for: no effect (use MUTUAL or OPTIONAL_MUTUAL)",
                )
    if mode == "ISTIO_MUTUAL":
        for key in ("verifyCertificateSpki", "verifyCertificateHash", "insecureSkipVerify"):
            if key in fields:
                ck.warn(fields[key], "has no effect with ISTIO_MUTUAL (as in Istio)")


def _strings(ck: DocChecker, fields: dict[str, Located], key: str, rule: Rule) -> tuple[str, ...]:
    if key not in fields:
        return ()
    return tuple(v for v, _ in ck.strings(fields[key], rule) or ())


def _above(low: str, high: str) -> bool:
    """Whether minProtocolVersion `low` is above maxProtocolVersion `high`."""
    if not low or not high or "TLS_AUTO" in (low, high):
        return False
    return TLS_VERSIONS.index(low) > TLS_VERSIONS.index(high)


def _version(ck: DocChecker, fields: dict[str, Located], key: str) -> str:
    at = fields.get(key)
    return "" if at is None else ck.enum(at, TLS_VERSIONS) or ""


def _cipher_suites(ck: DocChecker, fields: dict[str, Located]) -> tuple[str, ...]:
    """Istio's FilterCipherSuites: unknown and repeated names are dropped, with a warning
    (Envoy would refuse the whole listener for one name it does not know)."""
    at = fields.get("cipherSuites")
    if at is None:
        return ()
    kept: list[str] = []
    for value, item in ck.strings(at) or ():
        if value not in CIPHER_SUITES:
            ck.warn(item, f"{value!r} is not a cipher suite Istio allows: ignored, as Istio does")
        elif value in kept:
            ck.warn(item, f"{value!r} is listed twice: ignored, as Istio does")
        else:
            kept.append(value)
    return tuple(kept)


def _spki_problem(value: str) -> str | None:
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        return "must be the base64 SHA-256 of a public key (44 characters)"
    return None


def _hash_problem(value: str) -> str | None:
    if not _HASH.match(value.replace(":", "")):
        return "must be a hex SHA-256 of a certificate (64 hex digits, colons allowed)"
    return None
