"""DestinationRule localityLbSetting through real Envoy (Istio's locality load balancing).

helloworld has one endpoint in each of four localities; the client `sleep` is in
us/east/a (its WorkloadEntry's `locality`). Each endpoint is an app that answers its
own name, and can be told to fail (503) so that outlier detection ejects it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.e2e.harness import running, wait_until
from tests.services.live import LiveMesh
from tests.traffic.apps import VersionApp, request

# octet -> (app name, locality, tier)
ENDPOINTS = {
    21: ("us-east-a", "us/east/a", "gold"),
    22: ("us-east-b", "us/east/b", "silver"),
    23: ("eu-west-a", "eu/west/a", "gold"),
    24: ("ap-south-a", "ap/south/a", "silver"),
}

MESH = (
    """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: helloworld, namespace: default}
spec:
  hosts: [helloworld.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5000, name: http, protocol: HTTP}]
  endpoints:
"""
    + "".join(
        f"  - {{address: {{net}}.{octet}, locality: {loc}, labels: {{tier: {tier}}}}}\n"
        for octet, (_, loc, tier) in ENDPOINTS.items()
    )
    + """\
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: default}
spec: {address: "{net}.10", locality: us/east/a, labels: {app: sleep, tier: gold}}
"""
)


def rule(setting: str, outlier: bool = True) -> str:
    # maxEjectionPercent 100: Envoy's default 10 % ejects no host of a cluster this small.
    detection = (
        "    outlierDetection:\n"
        "      consecutive5xxErrors: 1\n"
        "      interval: 1s\n"
        "      baseEjectionTime: 1m\n"
        "      maxEjectionPercent: 100\n"
        if outlier
        else ""
    )
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: helloworld, namespace: default}}
spec:
  host: helloworld
  trafficPolicy:
{detection}    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
{setting}"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMesh]:
    live = LiveMesh(tmp_path_factory.mktemp("locality"))
    apps = [VersionApp(name, live.addr(octet), 5000) for octet, (name, _, _) in ENDPOINTS.items()]
    for app in apps:
        app.start()
    live.apps = {app.name: app for app in apps}  # type: ignore[attr-defined]
    with running(*apps, live):
        live.apply(MESH)
        live.envoy("sleep")
        yield live


@pytest.fixture(autouse=True)
def healthy(mesh: LiveMesh) -> Iterator[None]:
    for app in mesh.apps.values():  # type: ignore[attr-defined]
        app.always_status = None
    yield
    for app in mesh.apps.values():  # type: ignore[attr-defined]
        app.always_status = None


def answers(mesh: LiveMesh, n: int, *, ok_only: bool = True) -> Counter[str]:
    """Who answered `n` requests from sleep (any status unless `ok_only`)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        reply = request(f"{mesh.addr(10)}:15001", "http://helloworld:5000/hello")
        ok = reply.status == 200 or not ok_only
        seen[reply.app if ok and reply.app else f"status {reply.status}"] += 1
    return seen


def fail(mesh: LiveMesh, name: str) -> None:
    """Make an endpoint answer 503, and wait until outlier detection has ejected it
    (Envoy applies an ejection a moment after the answer that caused it)."""
    mesh.apps[name].always_status = 503  # type: ignore[attr-defined]

    def ejected() -> bool:
        # Envoy applies a cluster's changes that come within a second of the previous
        # one together (update_merge_window): until then it still picks the host, now
        # and then. Ten answers in a row from the others say the ejection is applied.
        seen = answers(mesh, 10)
        return name not in seen and not any(k.startswith("status") for k in seen)

    wait_until(ejected, timeout=10, what=f"{name} ejected (answers from the others only)")


def test_traffic_stays_in_the_proxys_locality_then_fails_over_by_region(mesh: LiveMesh) -> None:
    mesh.apply(MESH + rule("        failover: [{from: us, to: ap}]\n"))
    assert answers(mesh, 20) == {"us-east-a": 20}  # same region, zone and subzone first
    fail(mesh, "us-east-a")
    assert answers(mesh, 20) == {"us-east-b": 20}  # then the same region
    fail(mesh, "us-east-b")
    # Then `failover`'s region for proxies in `us`, never the other one.
    assert answers(mesh, 20) == {"ap-south-a": 20}


def test_without_outlier_detection_there_is_no_failover(mesh: LiveMesh) -> None:
    """Istio: failover needs outlierDetection (its validation warns); without it every
    locality gets traffic."""
    mesh.apply(MESH + rule("        failover: [{from: us, to: ap}]\n", outlier=False))
    assert set(answers(mesh, 40)) == {"us-east-a", "us-east-b", "eu-west-a", "ap-south-a"}


def test_distribute_weights_localities_for_proxies_in_from(mesh: LiveMesh) -> None:
    mesh.apply(
        MESH
        + rule(
            "        distribute:\n"
            "        - from: us/east/*\n"
            "          to: {us/east/a: 20, eu/west/*: 80}\n",
            outlier=False,
        )
    )
    n = 200
    seen = answers(mesh, n)
    assert set(seen) == {"us-east-a", "eu-west-a"}, seen  # the others get nothing
    # Binomial(200, 0.8): sd 2.8 %; +-12 % is over four standard deviations.
    assert 0.68 <= seen["eu-west-a"] / n <= 0.92, seen


def test_failover_priority_prefers_endpoints_sharing_the_proxys_labels(mesh: LiveMesh) -> None:
    mesh.apply(MESH + rule("        failoverPriority: [tier]\n"))
    seen = answers(mesh, 40)
    assert set(seen) == {"us-east-a", "eu-west-a"}, seen  # the gold ones, whatever locality
    fail(mesh, "us-east-a")
    fail(mesh, "eu-west-a")
    assert set(answers(mesh, 20)) == {"us-east-b", "ap-south-a"}


def test_enabled_false_turns_locality_load_balancing_off(mesh: LiveMesh) -> None:
    mesh.apply(MESH + rule("        enabled: false\n"))
    assert set(answers(mesh, 40)) == {"us-east-a", "us-east-b", "eu-west-a", "ap-south-a"}


def test_zone_aware_keeps_traffic_in_the_region_then_fails_over(mesh: LiveMesh) -> None:
    """zoneAwareLbSetting: the proxy's region first (both its zones: without proxy
    self-discovery Envoy balances inside the region as `simple` says, as in Istio),
    then the failover region."""
    mesh.apply(
        MESH
        + rule("", outlier=True).replace(
            "      localityLbSetting:\n",
            "      zoneAwareLbSetting:\n        failover: [{from: us, to: ap}]\n",
        )
    )
    assert set(answers(mesh, 20)) == {"us-east-a", "us-east-b"}
    fail(mesh, "us-east-a")
    fail(mesh, "us-east-b")
    assert answers(mesh, 10) == {"ap-south-a": 10}
