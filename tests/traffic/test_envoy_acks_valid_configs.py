"""Property: config that passes validation is never NACKed by Envoy.

Hypothesis generates varied VirtualServices and DestinationRules (strategies.py:
every match kind, weighted routes, subsets, faults, retries, mirrors, rewrites,
redirects, header edits, CORS, TCP routes, gateway bindings, load balancers,
pools, outlier detection, port-level and subset policies, an HTTPS gateway
server) over the examples' registry. Each one must pass `load_paths`, be pushed by
a live control plane, and be ACKed by three real Envoys: a sidecar, a second
sidecar whose labels differ (sourceLabels) and the ingress gateway.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings

from tests.traffic.mesh import Mesh
from tests.traffic.strategies import CREDENTIAL, GATEWAY, mesh_config

PROXIES = (
    ("productpage", "default"),
    ("sleep", "default"),
    ("istio-ingressgateway", "istio-system"),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=mesh_config())
# Found by this test: PASSTHROUGH with outlier settings gave a forwarding cluster HTTP
# protocol options without auto_sni, which Envoy refuses unless told it is meant.
@example(
    text=GATEWAY
    + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
    portLevelSettings:
    - port: {number: 8000}
      outlierDetection: {consecutive5xxErrors: 0, outlierDetectionHttpErrorCodes: [404]}
"""
)
def test_every_valid_config_is_acked_by_envoy(mesh: Mesh, text: str) -> None:
    for name, namespace in PROXIES:
        mesh.envoy(name, namespace)
    # `use` asserts that validation passed, then waits for the push.
    generation = mesh.use(extra={"generated.yaml": text, "credential.yaml": CREDENTIAL})
    for name, namespace in PROXIES:
        # Raises at once on a NACK, with Envoy's message.
        mesh.wait_synced(f"{name}.{namespace}", generation)
