"""A Sidecar's ingress `tls` with workload identities on: Istio ends it only on a port
whose mTLS mode is DISABLE and silently ignores it elsewhere; pocketmesh builds it
there and refuses it elsewhere, naming the Sidecar and the fix. (Through real Envoy:
tests/traffic/test_sidecar_ingress_tls_e2e.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from tests.traffic.tls_upstream import Pki
from xds_server import xds_types
from xds_server.galley.loader import load_paths
from xds_server.generators import PushContext, UnbuildableConfig, generate

MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: secure, namespace: default}}
spec: {{address: 127.0.90.1, labels: {{app: secure}}, serviceAccount: secure}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: secure, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: secure}}}}
  ingress:
  - port: {{number: 9443, protocol: HTTPS, name: https}}
    defaultEndpoint: 127.0.0.1:9080
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
"""
DISABLED = """\
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: secure, namespace: default}
spec:
  selector: {matchLabels: {app: secure}}
  mtls: {mode: STRICT}
  portLevelMtls: {9443: {mode: DISABLE}}
"""


def build(tmp_path: Path, extra: str = "") -> tuple[PushContext, Path]:
    cert, key = Pki(tmp_path / "pki", "server").issue("secure.example.com")
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH.format(cert=cert, key=key) + extra)
    result = load_paths([config])
    mesh = dataclasses.replace(result.config_or_raise(), workload_identity=True)
    return PushContext.build(mesh), cert


def test_built_where_the_port_is_disabled(tmp_path: Path) -> None:
    ctx, cert = build(tmp_path, DISABLED)
    (proxy,) = ctx.proxies
    listeners = generate(ctx, proxy)[xds_types.LISTENER]
    (chain,) = listeners["127.0.90.1_9443"].filter_chains
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    (served,) = context.common_tls_context.tls_certificates
    assert served.certificate_chain.inline_string == cert.read_text()
    assert not context.require_client_certificate.value  # SIMPLE
    assert chain.filters[0].name == "envoy.filters.network.http_connection_manager"


def test_refused_where_mesh_mtls_would_take_the_port(tmp_path: Path) -> None:
    ctx, _ = build(tmp_path)  # no PeerAuthentication: PERMISSIVE, Istio's default
    (proxy,) = ctx.proxies
    with pytest.raises(UnbuildableConfig) as refused:
        generate(ctx, proxy)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'config' / 'mesh.yaml'}:")
    assert "Sidecar default/secure: spec.ingress[0].tls:" in message
    assert "mTLS mode PERMISSIVE" in message and "portLevelMtls: {9443: {mode: DISABLE}}" in message


def test_validate_refuses_what_serve_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xds_server.cli import main

    build(tmp_path)
    config = str(tmp_path / "config")
    assert main(["validate", config]) == 1
    out = capsys.readouterr()
    assert "Sidecar default/secure: spec.ingress[0].tls: the TLS this ends" in out.out
    assert "1 error(s)" in out.err
    # Without identities (serve --no-identity) the port is plaintext: TLS ends there.
    assert main(["validate", "--no-identity", config]) == 0
