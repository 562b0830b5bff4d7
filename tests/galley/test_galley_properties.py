"""Property tests: valid documents round-trip to the model; junk never raises."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds_server.galley.kinds.common import PROTOCOLS
from xds_server.galley.loader import LoadResult, parse_documents
from xds_server.galley.model import MeshConfig

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOWER = "abcdefghijklmnopqrstuvwxyz"
ALNUM = LOWER + LOWER.upper() + "0123456789"


def _names(first: str, middle: str, last: str) -> st.SearchStrategy[str]:
    """`first`, up to 5 of `middle`, `last`: cheaper for hypothesis than from_regex."""
    parts = st.tuples(st.sampled_from(first), st.text(middle, max_size=5), st.sampled_from(last))
    return st.one_of(st.sampled_from(first), parts.map("".join))


labels_ = _names(LOWER, LOWER + "0123456789-", LOWER + "0123456789")  # DNS-1123 labels
fqdns = st.lists(labels_, min_size=2, max_size=4).map(".".join)
ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
label_maps = st.dictionaries(
    _names(LOWER, LOWER + "0123456789_.-", LOWER + "0123456789"),
    st.one_of(st.just(""), _names(ALNUM, ALNUM + "_.-", ALNUM)),
    max_size=3,
)
protocols = st.sampled_from(sorted(PROTOCOLS)).flatmap(
    lambda p: st.sampled_from([p, p.lower(), p.title()])
)


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def check(text: str) -> LoadResult:
    result = parse_documents(text, "p.yaml")
    assert (result.config is None) == bool(result.errors)
    assert all(e.file == "p.yaml" and e.line >= 1 for e in result.errors + result.warnings)
    return result


@st.composite
def service_entry_docs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": draw(st.lists(fqdns, min_size=1, max_size=3, unique=True))}
    numbers = draw(st.lists(st.integers(1, 65535), max_size=4, unique=True))
    names = draw(st.lists(labels_, min_size=len(numbers), max_size=len(numbers), unique=True))
    ports = []
    for number, name in zip(numbers, names, strict=True):
        port: dict[str, Any] = {"number": number, "protocol": draw(protocols), "name": name}
        if draw(st.booleans()):
            port["targetPort"] = draw(st.integers(1, 65535))
        ports.append(port)
    if ports:
        spec["ports"] = ports
    if (location := draw(st.sampled_from([None, "MESH_INTERNAL", "MESH_EXTERNAL"]))) is not None:
        spec["location"] = location
    resolution = draw(st.sampled_from([None, "NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]))
    if resolution is not None:
        spec["resolution"] = resolution
    if draw(st.booleans()):
        spec["addresses"] = draw(st.lists(ips, max_size=2))
    tcp = [
        p
        for p in ports
        if p["protocol"].upper() not in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", "TLS", "HTTPS")
    ]
    if resolution in (None, "NONE") and tcp:
        # A TCP port of a NONE entry forwards to the entry's one address (no capture).
        spec["addresses"] = [draw(ips)]
    if resolution not in (None, "NONE"):
        if draw(st.booleans()):
            address = ips if resolution == "STATIC" else st.one_of(ips, fqdns)
            spec["endpoints"] = [
                {"address": draw(address), "ports": {n: draw(st.integers(1, 65535))}} for n in names
            ] or [{"address": draw(address)}]
        elif draw(st.booleans()):
            spec["workloadSelector"] = {"labels": draw(label_maps.filter(bool))}
    metadata = {"name": draw(labels_), "namespace": draw(labels_)}
    version = draw(st.sampled_from(["v1", "v1beta1", "v1alpha3"]))
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "ServiceEntry",
        "metadata": metadata,
        "spec": spec,
    }


@st.composite
def workload_entry_docs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"address": draw(st.one_of(ips, fqdns))}
    optional = {
        "labels": label_maps,
        "ports": st.dictionaries(labels_, st.integers(1, 65535), max_size=3),
        "serviceAccount": labels_,
        "network": st.just(""),
        "locality": st.lists(labels_, min_size=1, max_size=3).map("/".join),
        "weight": st.integers(0, 2**32 - 1),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": draw(labels_), "namespace": draw(labels_)},
        "spec": spec,
    }


@SETTINGS
@given(service_entry_docs())
def test_valid_service_entries_round_trip(doc: dict[str, Any]) -> None:
    result = check(dump(doc))
    assert result.errors == (), [str(e) for e in result.errors]
    assert result.config is not None
    [entry] = result.config.service_entries
    spec = doc["spec"]
    assert entry.meta.key == f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"
    assert list(entry.hosts) == spec["hosts"]
    assert [(p.number, p.protocol, p.name, p.target_port) for p in entry.ports] == [
        (p["number"], p["protocol"].upper(), p["name"], p.get("targetPort"))
        for p in spec.get("ports", [])
    ]
    assert entry.location == spec.get("location", "MESH_EXTERNAL")
    assert entry.resolution == spec.get("resolution", "NONE")
    assert list(entry.addresses) == spec.get("addresses", [])
    assert [(e.address, dict(e.ports)) for e in entry.endpoints] == [
        (e["address"], e.get("ports", {})) for e in spec.get("endpoints", [])
    ]
    selector = spec.get("workloadSelector")
    assert (None if entry.workload_selector is None else dict(entry.workload_selector)) == (
        None if selector is None else selector["labels"]
    )


@SETTINGS
@given(workload_entry_docs())
def test_valid_workload_entries_round_trip(doc: dict[str, Any]) -> None:
    result = check(dump(doc))
    assert result.errors == (), [str(e) for e in result.errors]
    assert result.config is not None
    [workload] = result.config.workload_entries
    spec = doc["spec"]
    assert workload.address == spec["address"]
    assert dict(workload.labels) == spec.get("labels", {})
    assert dict(workload.ports) == spec.get("ports", {})
    assert workload.service_account == spec.get("serviceAccount", "default")
    assert workload.locality == spec.get("locality", "")
    assert workload.weight == spec.get("weight", 0)


def _identity(doc: dict[str, Any]) -> tuple[str, str]:
    return (doc["metadata"]["namespace"], doc["metadata"]["name"])


@SETTINGS
@given(
    st.lists(
        workload_entry_docs(), max_size=6, unique_by=(_identity, lambda d: d["spec"]["address"])
    ),
    st.randoms(use_true_random=False),
)
def test_order_of_documents_does_not_change_the_config(
    docs: list[dict[str, Any]], rnd: Any
) -> None:
    shuffled = list(docs)
    rnd.shuffle(shuffled)
    first = check("---\n".join(dump(d) for d in docs))
    second = check("---\n".join(dump(d) for d in shuffled))
    assert first.errors == ()
    assert first.config is not None
    assert second.config is not None

    def summary(result: MeshConfig) -> list[tuple[object, ...]]:  # all but the source lines
        return [
            (w.meta.key, w.address, dict(w.labels), dict(w.ports)) for w in result.workload_entries
        ]

    assert summary(first.config) == summary(second.config)
    keys = [(w.meta.namespace, w.meta.name) for w in first.config.workload_entries]
    assert keys == sorted(keys) and len(keys) == len(docs)


# --- junk -----------------------------------------------------------------

FIELD_NAMES = sorted(
    {
        "apiVersion", "kind", "metadata", "spec", "name", "namespace", "labels", "hosts",
        "addresses", "ports", "number", "protocol", "targetPort", "location", "resolution",
        "endpoints", "workloadSelector", "exportTo", "address", "serviceAccount", "weight",
        "ingress", "egress", "port", "bind", "defaultEndpoint", "captureMode", "items",
        "outboundTrafficPolicy", "mode", "egressProxy", "locality", "network",
    }
)  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["*", "./*", "~/*", "127.0.0.1:80", "HTTP", "STATIC", "List", "::1"]),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=5)), inner, max_size=4
        ),
    ),
    max_leaves=20,
)
documents = st.fixed_dictionaries(
    {
        "apiVersion": st.one_of(
            st.sampled_from(["networking.istio.io/v1", "security.istio.io/v1", "v1"]), junk
        ),
        "kind": st.one_of(
            st.sampled_from(["ServiceEntry", "WorkloadEntry", "Sidecar", "List", "Gateway"]), junk
        ),
        "metadata": st.one_of(st.just({"name": "x"}), junk),
        "spec": junk,
        "items": st.lists(junk, max_size=2),
    }
)


@SETTINGS
@given(st.text(max_size=200))
def test_random_text_never_raises(text: str) -> None:
    check(text)


@SETTINGS
@given(st.lists(documents, max_size=3))
def test_random_documents_never_raise(docs: list[dict[str, Any]]) -> None:
    check("---\n".join(yaml.safe_dump(d) for d in docs))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*path, i))
    return found


@SETTINGS
@given(st.one_of(service_entry_docs(), workload_entry_docs()), st.data())
def test_one_bad_value_in_a_valid_document_is_an_error_or_harmless(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = data.draw(junk)
    check(dump(doc))
