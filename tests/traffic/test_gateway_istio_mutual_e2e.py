"""A gateway server in ISTIO_MUTUAL mode, with the mesh's identities, through real Envoy.

The identity tests' mesh (productpage, reviews, ratings, each with its own service
account) plus a gateway workload (`ingress`, service account `ingress`) whose Gateway
ends the mesh's mTLS on 9443. productpage's sidecar reaches it as
`internal.example.com:9443` (a ServiceEntry for the gateway's address, ISTIO_MUTUAL by
DestinationRule): the gateway checks productpage's SVID against the mesh roots, and
routes to reviews over mTLS again. A client without a mesh certificate is refused;
`subjectAltNames` narrows which identities may connect.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ControlPlaneThread, EchoApp, free_port, running, start_all, wait_until
from tests.identity.mesh import call, spiffe, start_sidecar, write_mesh
from tests.traffic.gateway_clients import Refused, https_get
from xds_server.identity import IdentityOptions

NET = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}"
GATEWAY = f"{NET}.20"


def gateway_config(sans: str = "") -> str:
    extra = f", subjectAltNames: {sans}" if sans else ""
    return f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingress, namespace: default}}
spec: {{address: {GATEWAY}, labels: {{istio: ingressgateway}}, serviceAccount: ingress}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: internal, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 9443, name: https, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: ISTIO_MUTUAL{extra}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: internal, namespace: default}}
spec:
  hosts: [internal.example.com]
  gateways: [internal]
  http: [{{route: [{{destination: {{host: reviews}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: internal, namespace: default}}
spec:
  hosts: [internal.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9443, name: http, protocol: HTTP}}]
  endpoints: [{{address: {GATEWAY}, serviceAccount: ingress}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: internal, namespace: default}}
spec:
  host: internal.example.com
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("istio-mutual")
    config = root / "config"
    config.mkdir()
    ports = {app: free_port() for app in ("productpage", "reviews", "ratings")}
    write_mesh(config, NET, ports)
    (config / "gateway.yaml").write_text(gateway_config())
    apps = [EchoApp(app, "127.0.0.1", port).start() for app, port in ports.items()]
    plane = ControlPlaneThread(config, identity=IdentityOptions()).start()
    envoys = [start_sidecar(plane, config, root, name) for name in ("productpage", "ratings")]
    envoys.append(start_sidecar(plane, config, root, "reviews"))
    envoys.append(start_sidecar(plane, config, root, "ingress"))
    with running(*apps, plane, *envoys):
        start_all(envoys)
        yield {"config": config, "plane": plane, "root": root}


def through(client: str) -> tuple[int, dict[str, Any]]:
    address = {"productpage": f"{NET}.10", "ratings": f"{NET}.12"}[client]
    return call(f"{address}:15001", "http://internal.example.com:9443/")


def test_mesh_clients_pass_and_others_are_refused(mesh: dict[str, Any]) -> None:
    _status, reply = wait_until(
        lambda: (r := through("productpage"))[0] == 200 and r,
        timeout=15,
        what="productpage -> gateway (ISTIO_MUTUAL) -> reviews",
    )
    assert reply["app"] == "reviews"
    # reviews' sidecar saw the gateway's identity: the gateway re-originated mTLS.
    assert f"URI={spiffe('ingress')}" in reply["headers"]["x-forwarded-client-cert"]
    # A TLS client with no mesh certificate never gets past the handshake.
    plain = ssl.create_default_context()
    plain.check_hostname = False
    plain.verify_mode = ssl.CERT_NONE
    with pytest.raises(Refused):
        https_get(f"{GATEWAY}:9443", "internal.example.com", "/", plain)


def test_subject_alt_names_pick_the_identities_let_in(mesh: dict[str, Any]) -> None:
    config: Path = mesh["config"]
    (config / "gateway.yaml").write_text(gateway_config(f"[{spiffe('ratings')}]"))
    plane: ControlPlaneThread = mesh["plane"]
    assert plane.call(plane.plane.reload), plane.plane.config_status.errors
    wait_until(
        lambda: through("productpage")[0] == 503,
        timeout=15,
        what="productpage refused once only ratings may connect",
    )
    status, reply = through("ratings")
    assert status == 200 and reply["app"] == "reviews"
