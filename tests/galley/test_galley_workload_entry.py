"""WorkloadEntry: fields, defaults, and each rule with its file:line."""

from __future__ import annotations

import textwrap

import pytest

from xds_server.galley.loader import LoadResult, parse_documents
from xds_server.galley.model import WorkloadEntry

HEADER = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
  labels: {team: books}
spec:
"""


def parse(spec: str) -> LoadResult:
    """A WorkloadEntry in namespace default with this spec; the spec starts on line 7."""
    return parse_documents(HEADER + textwrap.indent(textwrap.dedent(spec), "  "), "we.yaml")


def only_workload(result: LoadResult) -> WorkloadEntry:
    assert result.errors == (), [str(e) for e in result.errors]
    assert result.config is not None
    [workload] = result.config.workload_entries
    return workload


def test_full_workload() -> None:
    workload = only_workload(
        parse(
            """\
            address: 127.0.0.2
            labels: {app: reviews, version: v1}
            ports: {http: 9080, grpc: 9090}
            serviceAccount: bookinfo-reviews
            network: ""
            locality: us-east/zone-a/rack-1
            weight: 7
            """
        )
    )
    assert workload.meta.key == "default/reviews-v1"
    assert workload.meta.kind == "WorkloadEntry"
    assert dict(workload.meta.labels) == {"team": "books"}
    assert workload.address == "127.0.0.2"
    # Istio merges metadata.labels into the workload's labels, the metadata's winning.
    assert dict(workload.labels) == {"app": "reviews", "version": "v1", "team": "books"}
    assert dict(workload.ports) == {"http": 9080, "grpc": 9090}
    assert workload.service_account == "bookinfo-reviews"
    assert (workload.locality, workload.weight) == ("us-east/zone-a/rack-1", 7)
    assert workload.proxy_id == "reviews-v1.default"


def test_defaults_and_hostname_address() -> None:
    workload = only_workload(parse("address: vm-1.example.com\n"))
    assert workload.address == "vm-1.example.com"
    assert workload.service_account == "default"
    assert dict(workload.labels) == {"team": "books"} and dict(workload.ports) == {}
    assert (workload.locality, workload.weight) == ("", 0)


def test_null_values_are_absent() -> None:
    workload = only_workload(parse("address: ::1\nlabels:\nports: ~\n"))
    assert workload.address == "::1"
    assert dict(workload.labels) == {"team": "books"}  # from metadata.labels


P = "we.yaml:{line}: WorkloadEntry default/reviews-v1: {field}: {message}"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "labels: {a: b}\n",
            P.format(line=6, field="spec.address", message="required field missing"),
        ),
        (
            "address: not an address\n",
            P.format(
                line=7,
                field="spec.address",
                message="'not an address' must be an IP address or a DNS name",
            ),
        ),
        (
            "address: 127.0.0.2\nports: {http: 70000}\n",
            P.format(line=8, field="spec.ports.http", message="70000 must be between 1 and 65535"),
        ),
        (
            "address: 127.0.0.2\nports:\n  Http: 80\n",
            P.format(
                line=9,
                field="spec.ports.Http",
                message="port name 'Http' must be a DNS-1123 label",
            ),
        ),
        (
            "address: 127.0.0.2\nports: [80]\n",
            P.format(line=8, field="spec.ports", message="expected mapping, got list"),
        ),
        (
            "address: 127.0.0.2\nlabels:\n  version: 1.0\n",
            P.format(line=9, field="spec.labels.version", message="expected string, got number"),
        ),
        (
            "address: 127.0.0.2\nlabels:\n  -bad: x\n",
            P.format(
                line=9,
                field='spec.labels["-bad"]',
                message="'-bad' is not a valid label key: at most 63 letters, digits, "
                "'-', '_' and '.', starting and ending with a letter or digit",
            ),
        ),
        (
            "address: 127.0.0.2\nserviceAccount: Reviews\n",
            P.format(
                line=8,
                field="spec.serviceAccount",
                message="'Reviews' must be a DNS-1123 subdomain: lower-case letters, digits, "
                "'-' and '.', starting and ending with a letter or digit",
            ),
        ),
        (
            "address: 127.0.0.2\nweight: 1.5\n",
            P.format(line=8, field="spec.weight", message="expected integer, got number"),
        ),
        (
            "address: 127.0.0.2\nlocality: a/b/c/d\n",
            P.format(
                line=8,
                field="spec.locality",
                message="'a/b/c/d' must be region, region/zone or region/zone/subzone",
            ),
        ),
        (
            "address: 127.0.0.2\nsericeAccount: x\n",
            P.format(
                line=8,
                field="spec.sericeAccount",
                message="unknown field (did you mean 'serviceAccount'?)",
            ),
        ),
        (
            "address: 127.0.0.2\naddress: 127.0.0.3\n",
            P.format(line=8, field="spec.address", message="duplicate key"),
        ),
        ("- 127.0.0.2\n", P.format(line=6, field="spec", message="expected mapping, got list")),
    ],
)
def test_rule(spec: str, expected: str) -> None:
    result = parse(spec)
    assert result.config is None
    assert expected in [str(e) for e in result.errors]
