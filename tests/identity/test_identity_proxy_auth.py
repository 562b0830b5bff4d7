"""Proxies are authenticated: a workload's token gets its own secrets, nobody else's.
The xDS port over TLS (--xds-tls): a sidecar verifies the control plane and runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.e2e.harness import (
    ControlPlaneThread,
    EchoApp,
    Envoy,
    free_port,
    running,
    start_all,
    wait_until,
)
from tests.identity.mesh import ask_secrets, call, secrets_of, spiffe, svid_uris, write_mesh, xfcc
from xds_server.bootstrap import BootstrapOptions, sidecar_bootstrap
from xds_server.galley.loader import load_paths
from xds_server.identity import IdentityOptions
from xds_server.metrics import registry

NET = "127.0.79"
ADDRESSES = {"productpage.default": f"{NET}.10", "reviews.default": f"{NET}.11"}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tmp_path_factory.mktemp("auth") / "config"
    config.mkdir()
    write_mesh(config, NET, {"productpage": 1, "reviews": 2, "ratings": 3})
    return config


@pytest.fixture(scope="module")
def plane(config: Path) -> Iterator[ControlPlaneThread]:
    plane = ControlPlaneThread(config, watch=False, identity=IdentityOptions()).start()
    with running(plane):
        yield plane


def ask(plane: ControlPlaneThread, node_id: str, token: str | None, **kw: Any) -> Any:
    """`ask_secrets`, from the node's workload address unless told otherwise."""
    kw.setdefault("source", ADDRESSES.get(node_id, "127.0.0.1"))
    return ask_secrets(plane, node_id, token, **kw)


def refusals_total(reason: str | None = None) -> float:
    reasons = [reason] if reason else ["no_token", "wrong_token", "wrong_address"]
    return sum(
        registry.get_sample_value("pocketmesh_proxy_auth_refusals_total", {"reason": r}) or 0
        for r in reasons
    )


def test_own_token_gets_own_identity(plane: ControlPlaneThread) -> None:
    tokens = plane.plane.identity.tokens
    response = ask(plane, "productpage.default", tokens.token("productpage.default"))
    secrets = secrets_of(response)
    assert set(secrets) == {"default", "ROOTCA"}
    assert svid_uris(secrets) == [spiffe("productpage")]


def test_stolen_identity_cannot_obtain_another_workloads_key(
    plane: ControlPlaneThread, caplog: pytest.LogCaptureFixture
) -> None:
    token_a = plane.plane.identity.tokens.token("productpage.default")
    caplog.set_level(logging.WARNING, logger="pocketmesh.xds")
    refused_before = refusals_total()
    for token in (token_a, None, "0" * 64):
        with pytest.raises(grpc.RpcError) as err:
            ask(plane, "reviews.default", token)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "reviews.default" in (err.value.details() or "")
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 3 and all("reviews.default" in m for m in refusals), refusals
    assert refusals_total() == refused_before + 3
    # The key B would have had was never issued: nothing was handed out for it.
    assert ("default", "reviews") not in plane.plane.identity.issuer.issued()


def test_token_replayed_from_another_address_is_refused(
    plane: ControlPlaneThread, caplog: pytest.LogCaptureFixture
) -> None:
    own = plane.plane.identity.tokens.token("productpage.default")
    caplog.set_level(logging.WARNING, logger="pocketmesh.xds")
    before = refusals_total("wrong_address")
    # From this machine's default address, and from another workload's address.
    for source in ("127.0.0.1", ADDRESSES["reviews.default"]):
        with pytest.raises(grpc.RpcError) as err:
            ask(plane, "productpage.default", own, source=source)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"connected from {source}" in (err.value.details() or "")
    assert refusals_total("wrong_address") == before + 2
    lines = [r.getMessage() for r in caplog.records if "connected from" in r.getMessage()]
    assert len(lines) == 2 and all("productpage.default" in line for line in lines), lines
    # From its own address the same token works.
    assert set(secrets_of(ask(plane, "productpage.default", own))) == {"default", "ROOTCA"}


def test_secrets_a_proxy_does_not_own_are_not_sent(
    plane: ControlPlaneThread, caplog: pytest.LogCaptureFixture
) -> None:
    identity = plane.plane.identity
    caplog.set_level(logging.WARNING, logger="pocketmesh.identity")
    before = registry.get_sample_value("pocketmesh_sds_refusals_total", {"reason": "not_owned"})
    names = ("default", "ROOTCA", "reviews", "kubernetes://reviews-credential")
    response = ask(
        plane, "productpage.default", identity.tokens.token("productpage.default"), names=names
    )
    secrets = secrets_of(response)
    assert set(secrets) == {"default", "ROOTCA"}
    assert svid_uris(secrets) == [spiffe("productpage")]
    after = registry.get_sample_value("pocketmesh_sds_refusals_total", {"reason": "not_owned"})
    assert after == (before or 0) + 1
    (line,) = [r.getMessage() for r in caplog.records if "not its own" in r.getMessage()]
    assert "productpage.default" in line and "kubernetes://reviews-credential" in line


def test_sds_for_a_node_with_no_workload_entry_gets_nothing(
    plane: ControlPlaneThread, caplog: pytest.LogCaptureFixture
) -> None:
    identity = plane.plane.identity
    caplog.set_level(logging.WARNING)
    before = registry.get_sample_value("pocketmesh_sds_refusals_total", {"reason": "no_workload"})
    # A valid token (say, of a WorkloadEntry since removed) for a node the config lacks.
    response = ask(plane, "ghost.default", identity.tokens.token("ghost.default"))
    assert len(response.resources) == 0
    after = registry.get_sample_value("pocketmesh_sds_refusals_total", {"reason": "no_workload"})
    assert after == (before or 0) + 1
    assert ("default", "ghost") not in identity.issuer.issued()
    messages = [r.getMessage() for r in caplog.records]
    assert any("ghost.default" in m and "names no WorkloadEntry" in m for m in messages), messages
    # No log line, of any test here, carries key material or a token.
    assert not any(
        "PRIVATE KEY" in m or identity.tokens.token("ghost.default") in m for m in messages
    )


@pytest.mark.parametrize("ads", [True, False], ids=["ads", "per-type-services"])
def test_xds_over_tls_verified_by_the_sidecars(config: Path, tmp_path: Path, ads: bool) -> None:
    ports = {"productpage": free_port(), "reviews": free_port()}
    write_mesh(config, NET, {**ports, "ratings": free_port()})
    apps = [EchoApp(app, "127.0.0.1", port).start() for app, port in ports.items()]
    # Proxy authentication by client certificate: the TLS connection carries it, so it
    # covers the per-type services' streams too (a token could not: their config
    # sources are shared, with no per-proxy metadata).
    identity_options = IdentityOptions(xds_tls=True)
    plane = ControlPlaneThread(config, watch=False, identity=identity_options).start()
    envoys: list[Any] = []
    with running(*apps, plane):
        identity = plane.plane.identity
        loaded = load_paths([config]).config
        for name in ports:
            workload = loaded.workload(name)
            credential = identity.credentials.issue(workload.proxy_id)
            options = BootstrapOptions(
                xds_address=plane.xds_address,
                ads=ads,
                admin_port=free_port(workload.address),
                xds_trusted_ca=identity.credentials.ca_pem.decode(),
                xds_server_id=str(identity.ca.control_plane_id),
                xds_client_cert=credential.cert_pem,
                xds_client_key=credential.key_pem,
            )
            envoys.append(Envoy(sidecar_bootstrap(workload, options), tmp_path, workload.proxy_id))
        with running(*envoys):
            start_all(envoys)
            _status, reply = wait_until(
                lambda: (r := call(f"{NET}.10:15001", "http://reviews:9080/"))[0] == 200 and r,
                timeout=10,
                what="traffic with xDS over TLS",
            )
            assert f"URI={spiffe('productpage')}" in xfcc(reply)
            stats = envoys[0].stats("cluster.xds-grpc.ssl.handshake")
            assert stats.get("cluster.xds-grpc.ssl.handshake", 0) >= 1, stats
        # A plaintext client gets nothing from the TLS port.
        with pytest.raises(grpc.RpcError):
            ask(plane, "productpage.default", identity.tokens.token("productpage.default"))
