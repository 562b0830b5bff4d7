"""The mesh settings' exportTo defaults (a resource that sets no exportTo takes them; one
that sets its own keeps it: Istio's defaultServiceExportTo, defaultVirtualServiceExportTo,
defaultDestinationRuleExportTo), and its trustDomain, a check against the CA's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from xds_server import xds_types
from xds_server.galley.loader import load_paths
from xds_server.generators import PushContext, UnbuildableConfig, generate

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.93.9}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: local-only, namespace: default}}
spec:
  hosts: [local-only.default.svc.cluster.local]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.93.8}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: istio-system}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  {vs_export}
  http: [{{route: [{{destination: {{host: ratings.default.svc.cluster.local}}}}], timeout: 3s}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: other}}
spec: {{address: 127.0.93.1}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    defaultServiceExportTo: ["."]
    defaultVirtualServiceExportTo: ["."]
"""


def routes_of_client(tmp_path: Path, vs_export: str, *, service_exported: bool) -> str:
    text = MESH.format(vs_export=vs_export)
    if service_exported:
        text = text.replace(
            "  hosts: [ratings.default.svc.cluster.local]\n  ports",
            '  hosts: [ratings.default.svc.cluster.local]\n  exportTo: ["*"]\n  ports',
        )
    (tmp_path / "mesh.yaml").write_text(text)
    ctx = PushContext.build(load_paths([tmp_path]).config_or_raise())
    (proxy,) = ctx.proxies
    (route_config,) = generate(ctx, proxy)[xds_types.ROUTE].values()
    return str(route_config.copy())  # the whole message (a Frozen prints a summary)


def test_defaults_apply_where_a_resource_sets_none(tmp_path: Path) -> None:
    # The client is in `other`: ServiceEntries now default to their own namespace, so it
    # sees neither service.
    text = routes_of_client(tmp_path, "", service_exported=False)
    assert "ratings.default" not in text and "local-only" not in text
    # ratings exports itself: seen, but not the VirtualService (istio-system's own).
    text = routes_of_client(tmp_path, "", service_exported=True)
    assert "ratings.default" in text and "local-only" not in text
    assert "seconds: 3" not in text


def test_a_resource_that_sets_exportto_keeps_it(tmp_path: Path) -> None:
    text = routes_of_client(tmp_path, 'exportTo: ["*"]', service_exported=True)
    assert "ratings.default" in text and "seconds: 3" in text  # the VirtualService's timeout


TRUST_DOMAIN = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default}}
spec: {{address: 127.0.93.1}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    trustDomain: {domain}
"""


def test_trust_domain_must_be_the_cas(tmp_path: Path) -> None:
    """The mesh settings' trustDomain is a check against the CA's: equal, it changes
    nothing; different, the config is refused, saying how to get one CA for it."""
    (tmp_path / "mesh.yaml").write_text(TRUST_DOMAIN.format(domain="cluster.local"))
    mesh = load_paths([tmp_path]).config_or_raise()
    ctx = PushContext.build(dataclasses.replace(mesh, workload_identity=True))
    generate(ctx, ctx.proxies[0])  # the CA's own: accepted
    (tmp_path / "mesh.yaml").write_text(TRUST_DOMAIN.format(domain="example.org"))
    mesh = load_paths([tmp_path]).config_or_raise()
    ctx = PushContext.build(dataclasses.replace(mesh, workload_identity=True))
    with pytest.raises(UnbuildableConfig, match=r"pocketmesh ca init --trust-domain example\.org"):
        generate(ctx, ctx.proxies[0])
