"""DestinationRule `proxyProtocol` around TLS: the header goes first, the TLS inside it
keeps its certificates (by SDS, wherever a proxy gets SDS from), and a rule that would
send the header to sidecars is warned about. (The header on the wire, through real
Envoy: tests/traffic/test_proxy_protocol_e2e.py.)"""

from __future__ import annotations

from pathlib import Path

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from tests.traffic.tls_upstream import Pki
from xds_server import xds_types
from xds_server.galley.loader import load_paths
from xds_server.generators import PushContext, generate
from xds_server.generators.config_sources import ads_config_source
from xds_server.generators.mtls import TLS_SOCKET, point_sds_at
from xds_server.generators.proxy_protocol import UPSTREAM_PROXY_PROTOCOL, inner_socket

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy, namespace: default}}
spec:
  hosts: [legacy.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: https, protocol: TLS}}]
  endpoints: [{{address: 127.0.92.9}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: legacy, namespace: default}}
spec:
  host: legacy.example.com
  trafficPolicy:
    proxyProtocol: {{version: V2}}
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default}}
spec: {{address: 127.0.92.1, labels: {{app: client}}}}
"""
CLUSTER = "outbound|443||legacy.example.com"


def test_the_header_wraps_the_tls(tmp_path: Path) -> None:
    ca = Pki(tmp_path / "pki", "legacy").ca_file
    (tmp_path / "mesh.yaml").write_text(MESH.format(ca=ca))
    ctx = PushContext.build(load_paths([tmp_path]).config_or_raise())
    (proxy,) = ctx.proxies
    cluster = generate(ctx, proxy)[xds_types.CLUSTER][CLUSTER].copy()
    socket = cluster.transport_socket
    assert socket.name == UPSTREAM_PROXY_PROTOCOL
    inner, version = inner_socket(socket)
    assert (inner.name, version) == (TLS_SOCKET, "V2")
    context = tls_pb2.UpstreamTlsContext()
    assert inner.typed_config.Unpack(context)
    assert (
        context.common_tls_context.combined_validation_context.validation_context_sds_secret_config.name
        == f"file-root:{ca}"
    )
    # A proxy without ADS fetches SDS elsewhere: the TLS inside the header follows.
    elsewhere = ads_config_source()
    elsewhere.ClearField("ads")
    elsewhere.path_config_source.path = "/sds.yaml"
    assert point_sds_at(socket, elsewhere)
    moved, _ = inner_socket(socket)
    assert moved.typed_config.Unpack(context)
    sds = (
        context.common_tls_context.combined_validation_context.validation_context_sds_secret_config
    )
    assert sds.sds_config.path_config_source.path == "/sds.yaml"
