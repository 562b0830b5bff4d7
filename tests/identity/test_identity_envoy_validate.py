"""Real Envoy is the judge: generated PeerAuthentication, RequestAuthentication and
AuthorizationPolicy config (ALLOW, DENY, AUDIT, CUSTOM with HTTP and gRPC ext_authz
providers, dry-run), for HTTP and TCP ports, passes `envoy --mode validate`
(hypothesis picks the policies)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca import CertificateAuthority
from tests.generators import envoy_harness as harness
from tests.generators.factory import bookinfo, meta
from xds_server import xds_types
from xds_server.galley.model_mesh import ExtAuthzProvider, MeshSettings, RequestBody
from xds_server.galley.model_security import (
    AuthorizationPolicy,
    AuthzRule,
    ClaimToHeader,
    Condition,
    JwtHeader,
    JwtRule,
    OperationMatch,
    PeerAuthentication,
    RequestAuthentication,
    SourceMatch,
)
from xds_server.generators import PushContext, generate
from xds_server.generators.frozen import thaw
from xds_server.identity.secrets import root_secret, workload_secret

MODES = st.sampled_from(["UNSET", "DISABLE", "PERMISSIVE", "STRICT"])
VALUES = st.sampled_from(["a", "b*", "*c", "*", "/x/y", "GET"])
PRINCIPALS = st.sampled_from(["cluster.local/ns/default/sa/a", "*/sa/b", "cluster.local/*", "*"])
IPS = st.sampled_from(["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"])
PORTS = st.sampled_from([9080, 3306, 80])
KEYS = st.sampled_from(
    [
        "request.headers[x-user]", "request.headers[:method]", "source.principal",
        "source.namespace", "request.auth.principal", "request.auth.audiences",
        "request.auth.presenter", "request.auth.claims[groups]", "request.auth.claims[a][b]",
        "request.auth.claims[foo.com/name]", "connection.sni",
        "experimental.envoy.filters.http.ext_authz[verdict]",
    ]
)  # fmt: skip
ACCOUNTS = st.sampled_from(["default/reviews", "productpage", "backend/mysql"])
TRUST_DOMAINS = st.sampled_from(["cluster.local", "*.local", "cluster*", "*"])
REQUEST_PRINCIPALS = st.sampled_from(
    ["*", "https://issuer.example/alice", "issuer/*", "*/bob", "*@example.com", "iss*"]
)


def few(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(strategy, max_size=2).map(tuple)


sources = st.builds(
    SourceMatch,
    principals=few(PRINCIPALS),
    not_principals=few(PRINCIPALS),
    namespaces=few(st.sampled_from(["default", "backend", "*", "ns-*"])),
    not_namespaces=few(st.sampled_from(["default", "backend"])),
    ip_blocks=few(IPS),
    not_ip_blocks=few(IPS),
    request_principals=few(REQUEST_PRINCIPALS),
    not_request_principals=few(REQUEST_PRINCIPALS),
    remote_ip_blocks=few(IPS),
    not_remote_ip_blocks=few(IPS),
    service_accounts=few(ACCOUNTS),
    not_service_accounts=few(ACCOUNTS),
    trust_domains=few(TRUST_DOMAINS),
    not_trust_domains=few(TRUST_DOMAINS),
)
operations = st.builds(
    OperationMatch,
    hosts=few(st.sampled_from(["reviews", "*.example.com", "api.*", "reviews:9080"])),
    not_hosts=few(st.sampled_from(["evil.example.com"])),
    ports=few(PORTS),
    not_ports=few(PORTS),
    methods=few(st.sampled_from(["GET", "POST"])),
    not_methods=few(st.sampled_from(["DELETE"])),
    paths=few(st.one_of(VALUES, st.sampled_from(["/foo/{*}", "/foo/{*}/bar/{**}", "/{**}"]))),
    not_paths=few(VALUES),
)
conditions = st.one_of(
    st.builds(Condition, key=KEYS, values=few(VALUES), not_values=few(VALUES)),
    st.builds(
        Condition,
        key=st.sampled_from(["source.ip", "remote.ip", "destination.ip"]),
        values=few(IPS),
        not_values=few(IPS),
    ),
    st.builds(
        Condition,
        key=st.just("source.serviceAccount"),
        values=few(ACCOUNTS),
        not_values=few(ACCOUNTS),
    ),
    st.builds(
        Condition,
        key=st.just("source.trustDomain"),
        values=few(TRUST_DOMAINS),
        not_values=few(TRUST_DOMAINS),
    ),
    st.builds(
        Condition,
        key=st.just("destination.port"),
        values=few(PORTS.map(str)),
        not_values=few(PORTS.map(str)),
    ),
)
rules = st.builds(AuthzRule, sources=few(sources), operations=few(operations),
                  conditions=few(conditions))  # fmt: skip


JWKS = (
    '{"keys": [{"kty": "EC", "crv": "P-256", "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",'
    ' "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM", "kid": "1"}]}'
)
jwt_rules = st.builds(
    JwtRule,
    issuer=st.sampled_from(["https://issuer.example", "issuer@example.com", ""]),
    audiences=few(st.sampled_from(["a", "b.example.com"])),
    jwks=st.sampled_from([JWKS, ""]),  # "": no key set could be had (fail closed)
    from_headers=few(
        st.builds(
            JwtHeader, st.sampled_from(["x-jwt", "authorization"]), st.sampled_from(["", "Bearer "])
        )
    ),
    from_params=few(st.sampled_from(["token", "access_token"])),
    from_cookies=few(st.sampled_from(["session"])),
    output_payload_to_header=st.sampled_from(["", "x-jwt-payload"]),
    output_claim_to_headers=few(st.builds(ClaimToHeader, st.just("x-sub"), st.just("sub"))),
    forward_original_token=st.booleans(),
    space_delimited_claims=few(st.sampled_from(["roles", "groups"])),
)
MESH_SETTINGS = MeshSettings(
    meta("ConfigMap", "istio", "istio-system"),
    (
        ExtAuthzProvider(
            "grpc-authz", True, "reviews.default.svc.cluster.local", 9443, timeout_ms=500,
            fail_open=True, status_on_error=503, request_body=RequestBody(1024, True, True),
        ),
        ExtAuthzProvider(
            "http-authz", False, "ratings.default.svc.cluster.local", 80, path_prefix="/check",
            include_request_headers=("x-ext-authz", "x-b3-*"),
            include_additional_headers=(("x-from", "mesh"),),
            headers_to_upstream_on_allow=("x-user",), headers_to_downstream_on_deny=("*-reason",),
            headers_to_downstream_on_allow=("x-result",), clear_route_cache=True,
        ),
    ),
)  # fmt: skip


@st.composite
def policies(draw: st.DrawFn) -> tuple[object, ...]:
    out: list[object] = []
    for i, ns in enumerate(draw(st.lists(st.sampled_from(["default", "backend", "istio-system"]),
                                         max_size=3))):  # fmt: skip
        action = draw(st.sampled_from(["ALLOW", "DENY", "AUDIT", "CUSTOM"]))
        out.append(
            AuthorizationPolicy(
                meta("AuthorizationPolicy", f"p{i}", ns),
                None,
                action,
                tuple(draw(st.lists(rules, max_size=2))),
                provider=draw(st.sampled_from(["grpc-authz", "http-authz"]))
                if action == "CUSTOM"
                else "",
                dry_run=action != "CUSTOM" and draw(st.booleans()),
            )
        )
    for i, ns in enumerate(draw(st.lists(st.sampled_from(["default", "istio-system"]),
                                         max_size=2))):  # fmt: skip
        out.append(
            RequestAuthentication(
                meta("RequestAuthentication", f"r{i}", ns),
                None,
                tuple(draw(st.lists(jwt_rules, min_size=1, max_size=2))),
            )
        )
    out.append(
        PeerAuthentication(meta("PeerAuthentication", "mesh", "istio-system"), mode=draw(MODES))
    )
    port_modes = draw(st.dictionaries(PORTS, MODES, max_size=2))
    out.append(
        PeerAuthentication(
            meta("PeerAuthentication", "reviews", "default"),
            MappingProxyType({"app": "reviews"}),
            draw(MODES),
            MappingProxyType(port_modes),
        )
    )
    return tuple(out)


def static_sds(resources: dict[str, dict[str, Message]]) -> None:
    """SDS over ADS becomes static secrets: validate mode cannot run an ADS mux (it crashes)."""

    def clear(socket: base_pb2.TransportSocket) -> None:
        for kind in (tls_pb2.UpstreamTlsContext, tls_pb2.DownstreamTlsContext):
            if socket.typed_config.Is(kind.DESCRIPTOR):
                context = kind()
                socket.typed_config.Unpack(context)
                common = context.common_tls_context
                for config in common.tls_certificate_sds_secret_configs:
                    config.ClearField("sds_config")
                common.combined_validation_context.validation_context_sds_secret_config.ClearField(
                    "sds_config"
                )
                socket.typed_config.Pack(context)

    for type_url in (xds_types.CLUSTER, xds_types.LISTENER):
        for name, message in list(resources[type_url].items()):
            copy = thaw(message)  # generated messages are read-only (generators.frozen)
            if isinstance(copy, cluster_pb2.Cluster):
                clear(copy.transport_socket)
            else:
                assert isinstance(copy, listener_pb2.Listener)
                for chain in copy.filter_chains:
                    clear(chain.transport_socket)
            resources[type_url][name] = copy


def static_secrets() -> list[dict[str, object]]:
    ca = CertificateAuthority.in_memory()
    svid = ca.issue_svid(("cluster.local", "default", "reviews"))
    return [
        harness.to_dict(workload_secret(svid)),
        harness.to_dict(root_secret(ca.trust_bundle_pem())),
    ]


SECRETS = static_secrets()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(objects=policies())
def test_generated_security_config_passes_envoy_validate(
    tmp_path: Path, objects: tuple[object, ...]
) -> None:
    mesh = dataclasses.replace(
        bookinfo(),
        peer_authentications=tuple(o for o in objects if isinstance(o, PeerAuthentication)),
        authorization_policies=tuple(o for o in objects if isinstance(o, AuthorizationPolicy)),
        request_authentications=tuple(o for o in objects if isinstance(o, RequestAuthentication)),
        mesh_settings=(MESH_SETTINGS,),
        workload_identity=True,
    )
    ctx = PushContext.build(mesh)
    for node_id in ("reviews-v1.default", "mysql-v1.backend"):
        proxy = ctx.proxy(node_id)
        assert proxy is not None
        resources = generate(ctx, proxy)
        static_sds(resources)
        bootstrap = harness.static_bootstrap(resources, node_id)
        bootstrap["static_resources"]["secrets"] = SECRETS
        harness.validate(bootstrap, tmp_path)
