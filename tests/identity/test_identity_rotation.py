"""Rotation under steady traffic, with real Envoys: zero failed requests.

The CA runs on a clock the test moves forward (utc_now + offset), so a one-minute
SVID reaches its renewal time at once. Envoy checks validity against the real
clock; the offsets stay below the SVIDs' 2-minute NotBefore backdating, so every
certificate is valid for both. Each outbound connection carries one request
(a test transform), so every request is a fresh mTLS handshake: the requests
after a rotation really use the new certificates.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from google.protobuf.message import Message
from spiffe import X509Svid

from ca import utc_now
from tests.e2e.harness import ControlPlaneThread, get, post, running, start_all, wait_until
from tests.identity.mesh import (
    call,
    envoy_certificate_chain,
    envoy_serials,
    spiffe,
    start_sidecar,
    verify_with_cryptography,
    write_mesh_and_start_apps,
)
from xds_server import xds_types
from xds_server.identity import IdentityOptions

NET = "127.0.80"
PROXY = f"{NET}.10:15001"
HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class OffsetClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset


def one_request_per_connection(node_id: str, generated: dict[str, dict[str, Message]]) -> None:
    clusters = generated.get(xds_types.CLUSTER, {})
    for name, cluster in list(clusters.items()):
        if not name.startswith("outbound|"):
            continue
        copy = cluster_pb2.Cluster()
        copy.CopyFrom(cluster)
        options = hpo.HttpProtocolOptions()
        options.common_http_protocol_options.max_requests_per_connection.value = 1
        options.explicit_http_config.http_protocol_options.SetInParent()
        copy.typed_extension_protocol_options[HPO_KEY].Pack(options)
        clusters[name] = copy


class Traffic:
    """Requests productpage -> reviews back to back; every failure is kept."""

    def __init__(self) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, reply = call(PROXY, "http://reviews:9080/")
                if status == 200 and reply.get("app") == "reviews":
                    self.ok += 1
                else:
                    self.failures.append(f"{status}: {reply}")
            except OSError as err:
                self.failures.append(repr(err))

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def flows(self, more: int = 20) -> None:
        """Wait until `more` further requests have succeeded."""
        target = self.ok + more
        wait_until(lambda: self.ok >= target, timeout=10, what=f"{more} more requests")


@pytest.fixture(params=[False, True], ids=["sotw", "delta"])
def mesh(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    # A control plane per protocol: each run moves its CA's clock and roots.
    delta: bool = request.param
    root = tmp_path_factory.mktemp("rotation")
    config = root / "config"
    config.mkdir()
    apps = write_mesh_and_start_apps(config, NET)
    clock = OffsetClock()
    options = IdentityOptions(svid_ttl=timedelta(minutes=1), clock=clock, tick_seconds=0.1)
    plane = ControlPlaneThread(
        config, watch=False, identity=options, transform=one_request_per_connection
    ).start()
    envoys = {
        n: start_sidecar(plane, config, root, n, delta=delta) for n in ("productpage", "reviews")
    }
    with running(*apps, plane, *envoys.values()):
        start_all(envoys.values())
        wait_until(lambda: call(PROXY, "http://reviews:9080/")[0] == 200, timeout=10, what="up")
        yield {"plane": plane, "clock": clock, "envoys": envoys}


def roots_held(envoy: Any) -> int:
    dump = json.loads(get(envoy.admin + "/config_dump?resource=dynamic_active_secrets")[1])
    for entry in dump.get("configs", []):
        if entry.get("name") == "ROOTCA":
            pem = base64.b64decode(
                entry["secret"]["validation_context"]["trusted_ca"]["inline_bytes"]
            )
            return len(x509.load_pem_x509_certificates(pem))
    return 0


def test_svid_then_root_rotation_under_steady_traffic(mesh: dict[str, Any]) -> None:
    plane, clock, envoys = mesh["plane"], mesh["clock"], mesh["envoys"]
    identity = plane.plane.identity
    issuer = identity.issuer
    before = {name: issuer.svid("default", name) for name in envoys}
    assert all(svid.not_after - svid.not_before <= timedelta(minutes=3) for svid in before.values())
    traffic = Traffic().start()
    try:
        traffic.flows()

        # 1. SVID rotation: past the renewal time (half of one minute, +-10 %).
        clock.offset += timedelta(seconds=40)
        for name, envoy in envoys.items():
            wait_until(
                lambda e=envoy, n=name: (
                    issuer.svid("default", n).serial != before[n].serial
                    and issuer.svid("default", n).serial in envoy_serials(e)
                ),
                timeout=10,
                what=f"{name} serving its renewed SVID",
            )
        traffic.flows()
        renewed = {name: issuer.svid("default", name) for name in envoys}
        for name, envoy in envoys.items():
            chain = envoy_certificate_chain(envoy)
            assert chain == renewed[name].cert_chain_pem
            svid = X509Svid.parse(chain, renewed[name].private_key_pem)
            assert str(svid.spiffe_id) == spiffe(name)

        # 2. Root rotation: the new root is trusted first ...
        status, body = post(plane.debug_url + "/debug/ca/rotate-root")
        assert status == 200, body
        new_root = json.loads(body)["new_root"]
        # ... then, once every proxy ACKed the two-root bundle, it signs every SVID.
        for name, envoy in envoys.items():
            wait_until(
                lambda e=envoy, n=name: (
                    issuer.svid("default", n).issuer_key_id == new_root
                    and issuer.svid("default", n).serial in envoy_serials(e)
                ),
                timeout=10,
                what=f"{name} serving an SVID from the new root",
            )
            assert roots_held(envoy) == 2
        traffic.flows()
        # 3. The old root leaves the bundle once all it signed has expired.
        clock.offset += timedelta(seconds=70)
        for envoy in envoys.values():
            wait_until(lambda e=envoy: roots_held(e) == 1, timeout=10, what="old root pruned")
        traffic.flows()
        bundle = issuer.trust_bundle_pem()
        assert len(x509.load_pem_x509_certificates(bundle)) == 1
        metrics = get(plane.debug_url + "/metrics")[1]
        assert "pocketmesh_trusted_roots 1.0" in metrics
        assert 'pocketmesh_svids_issued_total{reason="renewal"}' in metrics
        assert 'pocketmesh_svids_issued_total{reason="root"}' in metrics
        for name, envoy in envoys.items():
            chain = envoy_certificate_chain(envoy)
            assert verify_with_cryptography(chain, bundle, clock()) == [spiffe(name)]
    finally:
        traffic.stop()
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.ok > 60
    # Every request was its own mTLS handshake, so the new certificates carried traffic.
    handshakes = envoys["reviews"].stats(f"listener.{NET}.11_9080.ssl.handshake")
    assert handshakes[f"listener.{NET}.11_9080.ssl.handshake"] >= traffic.ok, handshakes
    for envoy in envoys.values():
        assert "rejected" not in envoy.log().lower(), envoy.log()
