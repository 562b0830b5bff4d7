"""mTLS between real sidecars: SVIDs by SDS, XFCC, PeerAuthentication modes.

One control plane (in-memory CA, proxy tokens on) for the module; Envoys per test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from spiffe import X509Svid

from tests.e2e.harness import ControlPlaneThread, get, running, start_all, wait_until
from tests.identity.mesh import (
    call,
    direct,
    envoy_certificate_chain,
    envoy_serials,
    spiffe,
    start_sidecar,
    verify_with_cryptography,
    write_mesh_and_start_apps,
    xfcc,
)
from xds_server.identity import IdentityOptions

NET = "127.0.77"
PRODUCTPAGE, REVIEWS, RATINGS = f"{NET}.10", f"{NET}.11", f"{NET}.12"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("mtls")
    config = root / "config"
    config.mkdir()
    apps = write_mesh_and_start_apps(config, NET)
    plane = ControlPlaneThread(config, identity=IdentityOptions()).start()
    with running(*apps, plane):
        yield {"config": config, "plane": plane, "root": root}


@pytest.fixture
def sidecars(mesh: dict[str, Any]) -> Iterator[dict[str, Any]]:
    envoys = {
        name: start_sidecar(mesh["plane"], mesh["config"], mesh["root"], name)
        for name in ("productpage", "reviews", "ratings")
    }
    with running(*envoys.values()):
        start_all(envoys.values())
        yield envoys


def policy(config: Path, name: str, text: str) -> None:
    (config / f"{name}.yaml").write_text(text)


def test_request_arrives_over_mtls_with_both_spiffe_ids_in_xfcc(
    mesh: dict[str, Any], sidecars: dict[str, Any]
) -> None:
    _status, reply = wait_until(
        lambda: (r := call(f"{PRODUCTPAGE}:15001", "http://reviews:9080/"))[0] == 200 and r,
        timeout=10,
        what="productpage -> reviews through the mesh",
    )
    assert reply["app"] == "reviews"
    header = xfcc(reply)
    # By= is the receiving sidecar's own identity, URI= the caller's.
    assert f"By={spiffe('reviews')}" in header, header
    assert f"URI={spiffe('productpage')}" in header, header
    stats = sidecars["reviews"].stats(f"listener.{REVIEWS}_9080.ssl.handshake")
    assert stats.get(f"listener.{REVIEWS}_9080.ssl.handshake", 0) >= 1, stats

    # What Envoy holds: an X.509-SVID for its own identity that chains to the root.
    identity = mesh["plane"].plane.identity
    for name in ("productpage", "reviews"):
        chain = envoy_certificate_chain(sidecars[name])
        issued = identity.issuer.svid("default", name)
        assert chain == issued.cert_chain_pem
        svid = X509Svid.parse(chain, issued.private_key_pem)
        assert str(svid.spiffe_id) == spiffe(name)
        now = datetime.now(UTC)
        sans = verify_with_cryptography(chain, identity.issuer.trust_bundle_pem(), now)
        assert sans == [spiffe(name)]
        assert issued.serial in envoy_serials(sidecars[name])

    # The debug dump shows what was sent, never the key.
    dump = json.loads(
        get(mesh["plane"].debug_url + "/debug/config_dump?proxy=reviews.default&type=secret")[1]
    )
    by_name = {item["name"]: item["resource"] for item in dump["resources"]["secret"]}
    assert by_name["default"]["tls_certificate"]["private_key"] == "[redacted]"
    assert by_name["ROOTCA"]["validation_context"]["trusted_ca"]["inline_bytes"]


def test_peer_authentication_strict_permissive_disable(
    mesh: dict[str, Any], sidecars: dict[str, Any]
) -> None:
    config = mesh["config"]
    mesh_call = f"{PRODUCTPAGE}:15001"
    wait_until(lambda: call(mesh_call, "http://reviews:9080/")[0] == 200, timeout=10, what="200")

    # No PeerAuthentication: Istio's default PERMISSIVE takes plaintext too (no XFCC).
    status, reply = direct(f"http://{REVIEWS}:9080/")
    assert status == 200 and reply["app"] == "reviews" and not xfcc(reply)

    def plaintext_refused() -> bool:
        try:
            direct(f"http://{REVIEWS}:9080/")
        except OSError:
            return True
        return False

    try:
        # Mesh-wide STRICT in the root namespace: plaintext is refused, the mesh still works.
        policy(config, "pa-mesh", STRICT_MESH)
        wait_until(plaintext_refused, timeout=10, what="STRICT refusing plaintext")
        status, reply = call(mesh_call, "http://reviews:9080/")
        assert status == 200 and f"URI={spiffe('productpage')}" in xfcc(reply)

        # A workload policy's portLevelMtls reopens port 9080 to plaintext (PERMISSIVE).
        policy(config, "pa-reviews", PORT_PERMISSIVE)
        wait_until(
            lambda: direct(f"http://{REVIEWS}:9080/")[0] == 200,
            timeout=10,
            what="portLevelMtls PERMISSIVE accepting plaintext",
        )
        assert f"URI={spiffe('productpage')}" in xfcc(call(mesh_call, "http://reviews:9080/")[1])

        # DISABLE for the namespace: auto-mTLS sees it and callers switch to plaintext.
        (config / "pa-reviews.yaml").unlink()
        policy(config, "pa-ns", DISABLE_NS)
        wait_until(
            lambda: (r := call(mesh_call, "http://reviews:9080/"))[0] == 200 and not xfcc(r[1]),
            timeout=10,
            what="plaintext mesh traffic under DISABLE",
        )
        assert direct(f"http://{REVIEWS}:9080/")[0] == 200
    finally:
        for name in ("pa-mesh", "pa-reviews", "pa-ns"):
            (config / f"{name}.yaml").unlink(missing_ok=True)
    wait_until(
        lambda: f"URI={spiffe('productpage')}" in xfcc(call(mesh_call, "http://reviews:9080/")[1]),
        timeout=10,
        what="mTLS back after removing the policies",
    )
    for envoy in sidecars.values():
        assert "rejected" not in envoy.log().lower(), envoy.log()


def productpage_identity() -> str:
    """The identity reviews saw productpage call with ("" over plaintext)."""
    status, reply = call(f"{PRODUCTPAGE}:15001", "http://reviews:9080/")
    return xfcc(reply) if status == 200 else f"status {status}"


def mtls_again() -> None:
    wait_until(lambda: spiffe("productpage") in productpage_identity(), timeout=10, what="mTLS")


def test_destination_rule_tls_mode_overrides_auto_mtls(
    mesh: dict[str, Any], sidecars: dict[str, Any]
) -> None:
    config = mesh["config"]
    mtls_again()  # auto-mTLS
    try:
        policy(config, "dr", DR_TLS.format(mode="DISABLE"))
        wait_until(lambda: productpage_identity() == "", timeout=10, what="DR DISABLE")
        policy(config, "dr", DR_TLS.format(mode="ISTIO_MUTUAL"))
        mtls_again()
    finally:
        (config / "dr.yaml").unlink(missing_ok=True)


def test_enable_auto_mtls_false_leaves_mtls_to_the_rules(
    mesh: dict[str, Any], sidecars: dict[str, Any]
) -> None:
    """The mesh settings' enableAutoMtls: false: plaintext unless a DestinationRule says
    ISTIO_MUTUAL (the servers here are PERMISSIVE, Istio's default, so both arrive)."""
    config = mesh["config"]
    mtls_again()  # auto-mTLS
    try:
        policy(config, "mesh-settings", NO_AUTO_MTLS)
        wait_until(lambda: productpage_identity() == "", timeout=10, what="no auto mTLS")
        policy(config, "dr", DR_TLS.format(mode="ISTIO_MUTUAL"))
        mtls_again()
    finally:
        (config / "dr.yaml").unlink(missing_ok=True)
        (config / "mesh-settings.yaml").unlink(missing_ok=True)


NO_AUTO_MTLS = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    enableAutoMtls: false
"""

DR_TLS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    tls: {{mode: {mode}}}
"""

STRICT_MESH = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"""

PORT_PERMISSIVE = """\
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: PERMISSIVE}
"""

DISABLE_NS = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: DISABLE}
"""
