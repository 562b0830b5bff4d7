"""Sidecar `outboundTrafficPolicy.egressProxy`: ALLOW_ANY's catch-all goes to that
service's cluster, which the workload must see (through real Envoy:
tests/run/test_examples_up.py, the egress example)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server import xds_types
from xds_server.galley.loader import load_paths
from xds_server.generators import PushContext, UnbuildableConfig, generate
from xds_server.generators.passthrough import ALLOW_ANY_VHOST, PASSTHROUGH_CLUSTER

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: egressgateway, namespace: istio-system}}
spec:
  hosts: [egressgateway.istio-system.svc.cluster.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.91.9}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default}}
spec: {{address: 127.0.91.1, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: client, namespace: default}}
spec:
  egress: [{{hosts: [{hosts}]}}]
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {{host: egressgateway.istio-system.svc.cluster.local}}
"""
GATEWAY_CLUSTER = "outbound|80||egressgateway.istio-system.svc.cluster.local"


def build(tmp_path: Path, hosts: str) -> PushContext:
    (tmp_path / "mesh.yaml").write_text(MESH.format(hosts=hosts))
    return PushContext.build(load_paths([tmp_path]).config_or_raise())


def test_the_catch_all_goes_to_the_egress_proxy(tmp_path: Path) -> None:
    ctx = build(tmp_path, '"istio-system/*"')
    (proxy,) = ctx.proxies
    generated = generate(ctx, proxy)
    clusters = generated[xds_types.CLUSTER]
    assert GATEWAY_CLUSTER in clusters and PASSTHROUGH_CLUSTER not in clusters
    (route_config,) = generated[xds_types.ROUTE].values()
    (catch_all,) = [v for v in route_config.virtual_hosts if v.name == ALLOW_ANY_VHOST]
    assert [r.route.cluster for r in catch_all.routes] == [GATEWAY_CLUSTER]


def test_refused_when_the_workload_does_not_see_it(tmp_path: Path) -> None:
    ctx = build(tmp_path, '"./*"')
    (proxy,) = ctx.proxies
    with pytest.raises(UnbuildableConfig, match=r"egressProxy: client\.default cannot reach"):
        generate(ctx, proxy)
