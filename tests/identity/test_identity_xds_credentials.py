"""Proxy credentials (xDS over TLS): a client certificate per node id, from a client CA
that only the xDS port trusts, whose key derives from the proxy token key.

The server requires one in the handshake and matches it against the node id; Envoy
redacts its key in /config_dump (inline or by file), and an admin made read-only
refuses every endpoint that changes or stops the sidecar.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca import ManualClock
from tests.e2e.harness import ControlPlaneThread, Envoy, free_port, get, post, running, wait_until
from tests.identity.attacker import WRITES, self_signed_claiming, tls_probe
from tests.identity.mesh import SourceRelay, secrets_of, spiffe, svid_uris, write_mesh
from xds_server import xds_types
from xds_server.bootstrap import READ_ONLY_ADMIN_PATHS, BootstrapOptions, sidecar_bootstrap
from xds_server.galley.loader import load_paths
from xds_server.identity import IdentityOptions
from xds_server.identity.auth import ProxyTokens
from xds_server.identity.credentials import SAN_PREFIX, ProxyCredentials
from xds_server.metrics import registry
from xds_server.protocol.errors import PermissionDenied

NET = "127.0.87"
ADDRESSES = {"productpage.default": f"{NET}.10", "reviews.default": f"{NET}.11"}
KEY = bytes(range(32))


# -- the credential ---------------------------------------------------------------------


def test_a_credential_names_its_node_and_nothing_a_sidecar_would_accept() -> None:
    credentials = ProxyCredentials(KEY)
    credential = credentials.issue("productpage.default")
    cert = x509.load_pem_x509_certificate(credential.cert_pem.encode())
    ca = x509.load_pem_x509_certificate(credentials.ca_pem)
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # One URI, not a SPIFFE ID: no sidecar's peer check can match it.
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"{SAN_PREFIX}productpage.default"
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert "PRIVATE KEY" in credential.key_pem
    assert ProxyCredentials.node_of(credential.cert_pem.encode()) == "productpage.default"
    assert ProxyCredentials.node_of(b"not a certificate") is None


def test_the_client_ca_derives_from_the_token_key_alone() -> None:
    one, two = ProxyCredentials(KEY), ProxyCredentials(KEY)
    key_of = lambda c: x509.load_pem_x509_certificate(c.ca_pem).public_key()  # noqa: E731
    assert key_of(one) == key_of(two)  # another process (up, bootstrap) issues alike
    # ... so a credential issued by one verifies against the other's CA.
    cert = x509.load_pem_x509_certificate(one.issue("a.default").cert_pem.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(two.ca_pem))
    other = ProxyCredentials(bytes(range(1, 33)))
    assert key_of(other) != key_of(one)
    with pytest.raises(ValueError):
        ProxyCredentials(b"short")


def test_a_credential_is_renewed_at_half_life() -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    credentials = ProxyCredentials(KEY, clock)
    credential = credentials.issue("a.default")
    assert credential.not_after == clock() + timedelta(days=365)
    assert credentials.due(None) and not credentials.due(credential)
    clock.advance(timedelta(days=183))
    assert credentials.due(credential)


def test_check_refuses_another_nodes_certificate_or_none() -> None:
    credentials = ProxyCredentials(KEY)
    mine = credentials.issue("a.default").cert_pem.encode()
    credentials.check("a.default", mine)
    with pytest.raises(PermissionDenied, match=r"'b\.default' presented 'a\.default''s client"):
        credentials.check("b.default", mine)
    with pytest.raises(PermissionDenied, match="presented no client certificate"):
        credentials.check("a.default", None)


# -- the xDS port requires and checks it -------------------------------------------------


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneThread]:
    config = tmp_path_factory.mktemp("credentials") / "config"
    config.mkdir()
    write_mesh(config, NET, {"productpage": 1, "reviews": 2, "ratings": 3})
    plane = ControlPlaneThread(config, watch=False, identity=IdentityOptions(xds_tls=True))
    with running(plane.start()):
        yield plane


def ask_over_tls(
    plane: ControlPlaneThread, node_id: str, client: tuple[str, str] | None, source: str = ""
) -> Any:
    """The first answer to an SDS request over ADS on TLS, from `source` (the node's
    workload address unless told), presenting `client` (certificate, key PEM)."""
    identity = plane.plane.identity
    roots = identity.credentials.ca_pem  # the xDS CA: what verifies the xDS server
    cert, key = (client[0].encode(), client[1].encode()) if client else (None, None)
    credentials = grpc.ssl_channel_credentials(roots, key, cert)
    request = xds_request(node_id)
    with (
        SourceRelay(source or ADDRESSES[node_id], plane.xds_address) as relay,
        grpc.secure_channel(relay.address, credentials) as channel,
    ):
        from envoy.service.discovery.v3 import ads_pb2_grpc

        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        return next(stub.StreamAggregatedResources(iter([request]), timeout=5))


def xds_request(node_id: str) -> Any:
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

    request = DiscoveryRequest(type_url=xds_types.SECRET, resource_names=["default", "ROOTCA"])
    request.node.id = node_id
    return request


def refusals(reason: str) -> float:
    labels = {"reason": reason}
    return registry.get_sample_value("pocketmesh_proxy_auth_refusals_total", labels) or 0


def issued(plane: ControlPlaneThread, node: str) -> tuple[str, str]:
    credential = plane.plane.identity.credentials.issue(node)
    return credential.cert_pem, credential.key_pem


def test_own_credential_gets_own_identity(plane: ControlPlaneThread) -> None:
    response = ask_over_tls(plane, "productpage.default", issued(plane, "productpage.default"))
    secrets = secrets_of(response)
    assert set(secrets) == {"default", "ROOTCA"}
    assert svid_uris(secrets) == [spiffe("productpage")]


def test_another_workloads_credential_is_refused_on_the_stream(
    plane: ControlPlaneThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pocketmesh.xds")
    before = refusals("wrong_certificate")
    stolen = issued(plane, "productpage.default")
    with pytest.raises(grpc.RpcError) as err:
        ask_over_tls(plane, "reviews.default", stolen)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'productpage.default''s client certificate" in (err.value.details() or "")
    assert refusals("wrong_certificate") == before + 1
    assert any("reviews.default" in r.getMessage() for r in caplog.records)
    # From another address, its own credential is refused too (bound to the address).
    with pytest.raises(grpc.RpcError) as err:
        ask_over_tls(plane, "productpage.default", stolen, source=ADDRESSES["reviews.default"])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "connected from" in (err.value.details() or "")


def test_no_credential_or_a_forged_one_fails_the_handshake(plane: ControlPlaneThread) -> None:
    identity = plane.plane.identity
    node = "productpage.default"
    svid = identity.ca.issue_svid(("cluster.local", "default", "productpage"))
    forged = {
        "none": None,
        "self-signed, naming the node": self_signed_claiming(node),
        "the workload's own SVID (the mesh root signs it, not the client CA)": (
            svid.cert_chain_pem.decode(),
            svid.private_key_pem.decode(),
        ),
        "another token key's credential": (
            (c := ProxyTokens(bytes(32)).credentials().issue(node)).cert_pem,
            c.key_pem,
        ),
    }
    for what, client in forged.items():
        with pytest.raises(grpc.RpcError) as err:
            ask_over_tls(plane, node, client)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, what
        # The same handshake, by hand: refused; with a credential of its own, accepted.
        assert tls_probe(plane.xds_address, ADDRESSES[node], client).startswith("refused"), what
    assert tls_probe(plane.xds_address, ADDRESSES[node], issued(plane, node)).startswith("accepted")


def test_an_expired_credential_fails_the_handshake(plane: ControlPlaneThread) -> None:
    identity = plane.plane.identity
    past = ManualClock(datetime.now(UTC) - timedelta(days=400))
    old = identity.tokens.credentials(past).issue("productpage.default")
    with pytest.raises(grpc.RpcError) as err:
        ask_over_tls(plane, "productpage.default", (old.cert_pem, old.key_pem))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# -- real Envoy: nothing secret on the admin, and a read-only admin ---------------------


@pytest.mark.parametrize("where", ["inline", "files"])
def test_envoys_admin_shows_no_secret_and_changes_nothing(
    plane: ControlPlaneThread, tmp_path: Path, where: str
) -> None:
    identity = plane.plane.identity
    config = plane.options.config_dir
    workload = load_paths([config]).config.workload("productpage")  # type: ignore[union-attr]
    credential = identity.credentials.issue(workload.proxy_id)
    roots = identity.credentials.ca_pem.decode()  # the xDS CA
    if where == "inline":
        pem = {"xds_trusted_ca": roots, "xds_client_cert": credential.cert_pem,
               "xds_client_key": credential.key_pem}  # fmt: skip
    else:
        files = {"ca": roots, "cert": credential.cert_pem, "key": credential.key_pem}
        for name, text in files.items():
            (tmp_path / f"{name}.pem").write_text(text)
        pem = {f"xds_{k}_file": str(tmp_path / f"{n}.pem") for k, n in
               (("trusted_ca", "ca"), ("client_cert", "cert"), ("client_key", "key"))}  # fmt: skip
    options = BootstrapOptions(
        xds_address=plane.xds_address,
        admin_port=free_port(workload.address),
        admin_read_only=True,
        xds_server_id=str(identity.ca.control_plane_id),
        token=identity.tokens.token(workload.proxy_id),  # not written beside a certificate
        **pem,  # type: ignore[arg-type]
    )
    bootstrap = sidecar_bootstrap(workload, options)
    assert "initial_metadata" not in json.dumps(bootstrap)
    envoy = Envoy(bootstrap, tmp_path, f"productpage-{where}")
    with running(envoy.start()):
        envoy.wait_ready()
        wait_until(
            lambda: '"name": "default"' in get(envoy.admin + "/config_dump")[1],
            timeout=30,
            what="its SVID over SDS",
        )
        key_line = max(credential.key_pem.split("\n")[1:-2], key=len)
        for path in (*READ_ONLY_ADMIN_PATHS, "/config_dump?include_eds", "/certs"):
            status, body = get(envoy.admin + path)
            assert status == 200, (path, status, body[:200])
            assert "PRIVATE KEY" not in body and key_line not in body, path
            assert identity.tokens.token(workload.proxy_id) not in body, path
        dump = envoy.config_dump()
        xds = next(c for c in dump["configs"] if "Bootstrap" in c["@type"])
        tls = json.dumps(xds["bootstrap"]["static_resources"]["clusters"][0])
        assert '"private_key": {"inline_string": "[redacted]"}' in tls or (
            '"private_key": {"filename": "[redacted]"}' in tls
        ), tls
        for path in WRITES:
            status, body = post(envoy.admin + path)
            assert status == 403 or path.startswith("/ready?"), (path, status, body)
        info = json.loads(get(envoy.admin + "/server_info")[1])
        assert info["state"] == "LIVE" and envoy.proc is not None and envoy.proc.poll() is None
