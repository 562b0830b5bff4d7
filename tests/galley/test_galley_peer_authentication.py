"""PeerAuthentication as Istio has it: a selector in the root namespace is ignored
(warned), an empty portLevelMtls is an error."""

from __future__ import annotations

import dataclasses
import textwrap

from xds_server.galley.loader import parse_documents
from xds_server.generators import PushContext
from xds_server.generators.mtls import peer_mode

MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: gw, namespace: istio-system}
spec: {address: 127.0.0.2, labels: {app: gw}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {matchLabels: {app: gw}}
  mtls: {mode: DISABLE}
"""


def test_a_root_namespace_selector_is_ignored_with_a_warning() -> None:
    result = parse_documents(MESH, "pa.yaml")
    assert result.errors == ()
    assert [str(w) for w in result.warnings] == [
        "pa.yaml:15: warning: PeerAuthentication istio-system/gw: spec.selector: is ignored: a "
        "PeerAuthentication with a selector in the root namespace 'istio-system' applies to no "
        "workload (as in Istio); put it in the workload's namespace"
    ]
    assert result.config is not None
    mesh = dataclasses.replace(result.config, workload_identity=True)
    workload = mesh.workload("gw", "istio-system")
    assert workload is not None and PushContext.build(mesh) is not None
    assert peer_mode(mesh, workload, 8080) == "STRICT"  # the mesh-wide policy, not DISABLE


def test_port_level_mtls_needs_a_port() -> None:
    result = parse_documents(
        textwrap.dedent(
            """\
            apiVersion: security.istio.io/v1
            kind: PeerAuthentication
            metadata: {name: reviews, namespace: default}
            spec:
              selector: {matchLabels: {app: reviews}}
              portLevelMtls: {}
            """
        ),
        "pa.yaml",
    )
    assert [str(e) for e in result.errors] == [
        "pa.yaml:6: PeerAuthentication default/reviews: spec.portLevelMtls: portLevelMtls, if "
        "set, needs at least one port (as in Istio)"
    ]
