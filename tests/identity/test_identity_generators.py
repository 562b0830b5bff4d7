"""Translation of identity and security into Envoy config, without Envoy (the e2e tests
prove Envoy accepts it): PeerAuthentication resolution, auto-mTLS, RBAC on TCP, and the
SDS overlay that pushes only secrets when a certificate renews."""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import datetime, timedelta
from types import MappingProxyType

from cryptography.x509 import IPAddress
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from ca import CertificateAuthority, ManualClock, utc_now
from tests.generators.factory import bookinfo, endpoint, meta, service
from tests.protocol.helpers import req, responses
from xds_server import xds_types
from xds_server.cache.store import SnapshotCache
from xds_server.galley.model import MeshConfig
from xds_server.galley.model_security import (
    AuthorizationPolicy,
    AuthzRule,
    OperationMatch,
    PeerAuthentication,
    SourceMatch,
)
from xds_server.generators import PushContext, generate
from xds_server.generators.mtls import ISTIO_MUTUAL, outbound_tls_mode, peer_mode
from xds_server.identity import IdentityOptions, IdentityRuntime
from xds_server.identity.issuer import WorkloadIssuer
from xds_server.identity.sds import IdentitySecrets
from xds_server.protocol.sotw import SotwStream


def pa(name: str, ns: str, mode: str = "UNSET", selector: dict | None = None, **ports: str):
    return PeerAuthentication(
        meta=meta("PeerAuthentication", name, ns),
        selector=MappingProxyType(selector) if selector else None,
        mode=mode,
        port_level=MappingProxyType({int(p.removeprefix("p")): m for p, m in ports.items()}),
    )


def with_security(mesh: MeshConfig, *objects: object) -> MeshConfig:
    return dataclasses.replace(
        mesh,
        peer_authentications=tuple(o for o in objects if isinstance(o, PeerAuthentication)),
        authorization_policies=tuple(o for o in objects if isinstance(o, AuthorizationPolicy)),
        workload_identity=True,
    )


def test_peer_mode_inherits_mesh_namespace_workload_port() -> None:
    base = bookinfo()
    reviews = base.workload("reviews-v1")
    assert reviews is not None
    assert peer_mode(with_security(base), reviews, 9080) == "PERMISSIVE"  # Istio's default
    policies = [pa("default", "istio-system", "STRICT")]
    assert peer_mode(with_security(base, *policies), reviews, 9080) == "STRICT"
    policies.append(pa("default", "default", "UNSET"))  # UNSET inherits the mesh's
    assert peer_mode(with_security(base, *policies), reviews, 9080) == "STRICT"
    policies.append(pa("r", "default", "DISABLE", {"app": "reviews"}, p9443="PERMISSIVE"))
    mesh = with_security(base, *policies)
    assert peer_mode(mesh, reviews, 9080) == "DISABLE"
    assert peer_mode(mesh, reviews, 9443) == "PERMISSIVE"
    ratings = mesh.workload("ratings-v1")
    assert ratings is not None and peer_mode(mesh, ratings, 9080) == "STRICT"


def test_auto_mtls_only_to_sidecars_that_accept_it() -> None:
    mesh = with_security(
        bookinfo(
            service("legacy", "default", selector=None, endpoints=[endpoint("127.0.0.9")]),
        ),
        pa("ratings", "default", "DISABLE", {"app": "ratings"}),
    )
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    modes = {svc.cluster_name: outbound_tls_mode(ctx, svc) for svc in proxy.scope.services}
    assert modes["outbound|9080||reviews.default.svc.cluster.local"] == ISTIO_MUTUAL
    assert modes["outbound|80||ratings.default.svc.cluster.local"] == "DISABLE"  # PA DISABLE
    assert modes["outbound|80||httpbin.org"] == "DISABLE"  # MESH_EXTERNAL
    assert modes["outbound|9080||legacy.default.svc.cluster.local"] == "DISABLE"  # no sidecar

    cluster = generate(ctx, proxy)[xds_types.CLUSTER][
        "outbound|9080||reviews.default.svc.cluster.local"
    ]
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "outbound_.9080_._.reviews.default.svc.cluster.local"
    matchers = context.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in matchers.match_typed_subject_alt_names] == [
        "spiffe://cluster.local/ns/default/sa/default"
    ]


def test_tcp_port_rbac_drops_http_only_allow_rules_and_broadens_deny_rules() -> None:
    http_only = AuthzRule(operations=(OperationMatch(paths=("/x",)),))
    by_ip = AuthzRule(sources=(SourceMatch(ip_blocks=("10.1.0.0/16", "127.0.0.7")),))
    mesh = with_security(
        bookinfo(),
        AuthorizationPolicy(meta("AuthorizationPolicy", "allow", "backend"), None, "ALLOW",
                            (http_only, by_ip)),
        AuthorizationPolicy(meta("AuthorizationPolicy", "deny", "backend"), None, "DENY",
                            (http_only,)),
    )  # fmt: skip
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("mysql-v1.backend")
    assert proxy is not None
    listener = generate(ctx, proxy)[xds_types.LISTENER]["127.0.0.6_3306"]
    assert isinstance(listener, listener_pb2.Listener)
    # PERMISSIVE: an mTLS chain and a plaintext chain, each RBAC'd before tcp_proxy.
    assert [c.filter_chain_match.transport_protocol for c in listener.filter_chains] == [
        "tls",
        "raw_buffer",
    ]
    names = [f.name for f in listener.filter_chains[1].filters]
    assert names == ["envoy.filters.network.rbac"] * 2 + ["envoy.filters.network.tcp_proxy"]
    deny, allow = (network_rbac_pb2.RBAC() for _ in range(2))
    listener.filter_chains[1].filters[0].typed_config.Unpack(deny)
    listener.filter_chains[1].filters[1].typed_config.Unpack(allow)
    assert deny.rules.action == rbac_pb2.RBAC.DENY
    (deny_policy,) = deny.rules.policies.values()
    assert deny_policy.permissions[0].any  # the path was dropped: denies all
    assert allow.rules.action == rbac_pb2.RBAC.ALLOW
    (allow_policy,) = allow.rules.policies.values()  # the path-only ALLOW rule matches nothing
    cidrs = [
        (p.direct_remote_ip.address_prefix, p.direct_remote_ip.prefix_len.value)
        for p in allow_policy.principals[0].or_ids.ids
    ]
    assert cidrs == [("10.1.0.0", 16), ("127.0.0.7", 32)]


def test_a_renewed_certificate_pushes_only_the_secret() -> None:
    clock = ManualClock(utc_now())
    ca = CertificateAuthority.in_memory(clock=clock)
    secrets = IdentitySecrets(WorkloadIssuer(ca, timedelta(minutes=2)))
    cache = SnapshotCache()
    cache.secrets = secrets
    cache.update(with_security(bookinfo()))
    node = "reviews-v1.default"
    stream = SotwStream(cache.view(node))
    for type_url, names in (
        (xds_types.CLUSTER, ()),
        (xds_types.LISTENER, ()),
        (xds_types.SECRET, ("default", "ROOTCA")),
    ):
        (first,) = responses(stream.on_request(req(type_url, names=names)))
        stream.on_request(req(type_url, names=names, version=first.version_info, nonce=first.nonce))
    old = secrets.issuer.svid("default", "default").serial

    assert stream.on_view(cache.view(node)) == []  # nothing changed, nothing sent
    clock.advance(timedelta(minutes=1, seconds=10))
    assert secrets.issuer.renew_due() == [("default", "default")]
    secrets.bump()
    view = cache.view(node)
    (pushed,) = responses(stream.on_view(view))
    assert pushed.type_url == xds_types.SECRET
    assert [r.name for r in pushed.resources] == ["ROOTCA", "default"]
    assert secrets.issuer.svid("default", "default").serial != old
    # Proxies of one identity share one serialized secret.
    assert (
        cache.view("reviews-v2.default").resources(xds_types.SECRET)["default"]
        is (view.resources(xds_types.SECRET)["default"])
    )


def test_root_rotation_steps_and_the_xds_server_certificate() -> None:
    clock = ManualClock(utc_now())
    options = IdentityOptions(svid_ttl=timedelta(minutes=2), clock=clock)
    runtime = IdentityRuntime.create(options, "cluster.local")
    runtime.server_credentials("127.0.0.1")
    first = runtime.xds_cert
    assert first is not None and runtime.refresh_xds_cert() is None  # nothing due yet
    old_svid = runtime.issuer.svid("default", "a")

    new_root = runtime.rotate_root()["new_root"]
    assert len(runtime.ca.trust_bundle) == 2
    assert runtime.issuer.svid("default", "a") is old_svid  # the new root signs nothing yet
    runtime.tick()  # no proxy connected: nobody left to ACK the new bundle
    moved = runtime.issuer.svid("default", "a")
    assert moved.issuer_key_id == new_root != old_svid.issuer_key_id
    assert runtime.refresh_xds_cert() is None  # signed by the xDS CA: rotation is no reason

    clock.advance(timedelta(minutes=3))  # every certificate of the old root has expired
    runtime.tick()
    assert [e.key_id for e in runtime.ca.rotation.entries] == [new_root]
    # Past its half-life it is renewed, still by the xDS CA, and a bootstrap written
    # before the rotation (it trusts the xDS CA, read once) still verifies it.
    renewed = runtime.refresh_xds_cert()
    assert renewed is not None and renewed.issuer_key_id == first.issuer_key_id != new_root
    assert_verifies(renewed.cert_chain_pem, runtime.credentials.ca_pem, clock())


def assert_verifies(chain_pem: bytes, ca_pem: bytes, now: datetime) -> None:
    """The chain verifies as a TLS server for 127.0.0.1 against `ca_pem` alone."""
    from cryptography.x509 import load_pem_x509_certificate, load_pem_x509_certificates
    from cryptography.x509.verification import PolicyBuilder, Store

    builder = PolicyBuilder().store(Store([load_pem_x509_certificate(ca_pem)])).time(now)
    leaf, *rest = load_pem_x509_certificates(chain_pem)
    verifier = builder.build_server_verifier(IPAddress(ipaddress.ip_address("127.0.0.1")))
    verifier.verify(leaf, rest)
