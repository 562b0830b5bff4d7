"""/metrics with real Envoys: istiod's names with istiod's meanings. A config edit is
pushed and the convergence histogram counts every proxy it reached, once; a NACK counts
as a reject of its type and node; a bad config shows in pocketmesh's own gauges. The
scrape parses as Prometheus text, and the old pocketmesh_* names are still there."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import get, wait_until
from tests.web.inproc_mesh import Mesh, nack_mesh

NET = "127.0.153"
PROXIES = ("productpage", "reviews-v1", "reviews-v2")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with nack_mesh(tmp_path_factory.mktemp("metrics"), NET, PROXIES, delta=("reviews-v2",)) as m:
        yield m


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(mesh: Mesh) -> tuple[Samples, dict[str, str]]:
    """Samples under the names exposed (prometheus_client's parser would add `_total` to
    counters), and each family's type (the text must parse as Prometheus' format)."""
    status, text = get(mesh.plane.debug_url + "/metrics")
    assert status == 200
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, labels, number = match.groups()
        pairs = frozenset(_LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(number)
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def last_push(mesh: Mesh) -> dict[str, object]:
    return dict(json.loads(get(mesh.plane.debug_url + "/ui/state")[1])["pushes"][0])


def test_a_push_is_counted_in_the_convergence_histogram_once_per_proxy(mesh: Mesh) -> None:
    before, types = scrape(mesh)
    assert types["pilot_proxy_convergence_time"] == "histogram"
    assert value(before, "pilot_xds", version="envoy-1.40.0") >= len(PROXIES)
    # Every reviews version and productpage route to reviews: the edit reaches all three.
    traffic = mesh.config / "traffic.yaml"
    traffic.write_text(traffic.read_text().replace("weight: 50", "weight: 40", 1).replace(
        "subset: v3}\n      weight: 50", "subset: v3}\n      weight: 60"
    ))  # fmt: skip

    def converged() -> dict[str, object] | None:
        push = last_push(mesh)
        done = push["trigger"] == "config" and push["targets"] and not push["pending"]
        return push if done else None

    push = wait_until(converged, timeout=20, what="the edit pushed and ACKed by every proxy")
    assert push["targets"] == push["converged"] == len(PROXIES), push
    after, _ = scrape(mesh)
    count = "pilot_proxy_convergence_time_count"
    assert value(after, count) - value(before, count) == len(PROXIES)
    assert value(after, "pilot_proxy_convergence_time_sum") > value(
        before, "pilot_proxy_convergence_time_sum"
    )
    # The edit's own trail: one debounced trigger, one push context, RDS sent and timed.
    assert (
        value(after, "pilot_push_triggers", type="config")
        == value(before, "pilot_push_triggers", type="config") + 1
    )
    assert (
        value(after, "pilot_debounce_time_count") == value(before, "pilot_debounce_time_count") + 1
    )
    assert (
        value(after, "pilot_pushcontext_init_seconds_count")
        == value(before, "pilot_pushcontext_init_seconds_count") + 1
    )
    assert value(after, "pilot_xds_pushes", type="rds") >= value(
        before, "pilot_xds_pushes", type="rds"
    ) + len(PROXIES)
    assert value(after, "pilot_xds_push_time_count", type="rds") > value(
        before, "pilot_xds_push_time_count", type="rds"
    )
    assert value(after, "pilot_xds_config_size_bytes_count", type="rds") > value(
        before, "pilot_xds_config_size_bytes_count", type="rds"
    )
    assert value(after, "pilot_proxy_queue_time_count") >= value(
        before, "pilot_proxy_queue_time_count"
    ) + len(PROXIES)
    assert value(after, "pocketmesh_reload_seconds_count", result="published") > value(
        before, "pocketmesh_reload_seconds_count", result="published"
    )


def test_istiods_counters_keep_istiods_names_and_citadel_reports_the_ca(mesh: Mesh) -> None:
    _, text = get(mesh.plane.debug_url + "/metrics")
    for line in (
        "# TYPE pilot_xds_pushes counter",
        "# TYPE pilot_push_triggers counter",
        "# TYPE pilot_total_xds_rejects counter",
        "# TYPE pilot_xds_expired_nonce counter",
        "# TYPE citadel_server_csr_count counter",
        "# TYPE citadel_server_success_cert_issuance_count counter",
        "# TYPE citadel_server_root_cert_expiry_timestamp gauge",
        "# TYPE pilot_xds gauge",
    ):
        assert line in text, line
    assert "pilot_xds_pushes_total" not in text  # istiod's sums have no _total
    samples, _ = scrape(mesh)
    # Two identities (productpage, reviews): at least two certificates issued.
    assert value(samples, "citadel_server_csr_count") >= 2
    assert value(samples, "citadel_server_success_cert_issuance_count") == value(
        samples, "citadel_server_csr_count"
    )
    expiry = value(samples, "citadel_server_root_cert_expiry_timestamp")
    assert time.time() + 300 * 86400 < expiry  # a fresh self-signed root: ten years
    # The names pocketmesh had before stay.
    for name in (
        "pocketmesh_xds_pushes_total",
        "pocketmesh_xds_connected_streams",
        "pocketmesh_config_generation",
    ):
        assert total(samples, name) > 0, name


def test_a_nack_is_a_reject_of_its_type_and_node(mesh: Mesh) -> None:
    before, _ = scrape(mesh)
    try:
        mesh.nack(True)
        after, _ = scrape(mesh)
    finally:
        mesh.nack(False)
    rejects = value(after, "pilot_total_xds_rejects", type="rds") - value(
        before, "pilot_total_xds_rejects", type="rds"
    )
    assert rejects == 1
    node = {"node": "productpage.default", "err": "13"}  # Envoy's code: INTERNAL
    assert (
        value(after, "pilot_xds_rds_reject", **node)
        == value(before, "pilot_xds_rds_reject", **node) + 1
    )
    assert total(after, "pilot_xds_cds_reject") == total(before, "pilot_xds_cds_reject")


def test_a_bad_config_shows_in_pocketmeshs_gauges_until_fixed(mesh: Mesh) -> None:
    services = mesh.config / "services.yaml"
    good = services.read_text()
    services.write_text(good + "\n---\nkind: ServiceEntry\n")
    try:
        wait_until(
            lambda: value(scrape(mesh)[0], "pocketmesh_config_errors_current") >= 1,
            timeout=15,
            what="the config error counted",
        )
        samples, _ = scrape(mesh)
        assert value(samples, "pocketmesh_reload_seconds_count", result="rejected") >= 1
    finally:
        services.write_text(good)
    wait_until(
        lambda: value(scrape(mesh)[0], "pocketmesh_config_errors_current") == 0,
        timeout=15,
        what="no error once fixed",
    )
