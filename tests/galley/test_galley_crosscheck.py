"""Rules across documents and files: each reported on the later one, naming the earlier."""

from __future__ import annotations

from pathlib import Path

from xds_server.galley.loader import LoadResult, load_paths


def workload(name: str, address: str, *, ns: str = "default", extra: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        f"metadata:\n  name: {name}\n  namespace: {ns}\n"
        f"spec:\n  address: {address}\n{extra}"
    )


def service(name: str, hosts: str, *, ns: str = "default", extra: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        f"metadata:\n  name: {name}\n  namespace: {ns}\n"
        f"spec:\n  hosts: {hosts}\n"
        "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
        f"{extra}"
    )


def sidecar(name: str, *, ns: str = "default", extra: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        f"metadata:\n  name: {name}\n  namespace: {ns}\n"
        f"spec:\n  egress: [{{hosts: ['./*']}}]\n{extra}"
    )


def load(tmp_path: Path, files: dict[str, list[str]]) -> LoadResult:
    for name, docs in files.items():
        (tmp_path / name).write_text("---\n".join(docs))
    return load_paths([tmp_path])


def test_duplicate_name_names_both_files(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        {"a.yaml": [workload("w", "127.0.0.2")], "b.yaml": [workload("w", "127.0.0.3")]},
    )
    assert result.config is None
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/b.yaml:4: WorkloadEntry default/w: metadata.name: "
        f"duplicate WorkloadEntry default/w: also defined at {tmp_path}/a.yaml:4"
    ]


def test_same_name_in_other_kind_or_namespace_is_fine(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        {
            "a.yaml": [
                workload("x", "127.0.0.2"),
                workload("x", "127.0.0.3", ns="other"),
                sidecar("x"),
            ]
        },
    )
    assert result.errors == ()


def test_duplicate_workload_address(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        {"a.yaml": [workload("one", "127.0.0.2"), workload("two", "127.000.0.2", ns="ns")]},
    )
    # 127.000.0.2 is not an IP (leading zeros), nor a DNS name (all-numeric): an error,
    # but not a clash with 127.0.0.2.
    assert [(e.field, "already" in e.message) for e in result.errors] == [("spec.address", False)]
    result = load(
        tmp_path,
        {"a.yaml": [workload("one", "'::1'"), workload("two", "'0:0::1'", ns="ns")]},
    )
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/a.yaml:15: WorkloadEntry ns/two: spec.address: address 0:0::1 is already "
        f"used by WorkloadEntry default/one ({tmp_path}/a.yaml:7)"
    ]


def test_duplicate_host_in_a_namespace(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        {
            "a.yaml": [service("one", "[a.example.com]")],
            "b.yaml": [
                service("other-ns", "[a.example.com]", ns="other"),
                service("two", "[b.example.com, A.example.com]"),
            ],
        },
    )
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/b.yaml:16: ServiceEntry default/two: spec.hosts[1]: host 'A.example.com' "
        f"is already declared by ServiceEntry default/one ({tmp_path}/a.yaml:7)"
    ]


def test_one_sidecar_without_selector_per_namespace(tmp_path: Path) -> None:
    selector = "  workloadSelector: {labels: {app: a}}\n"
    result = load(
        tmp_path,
        {
            "a.yaml": [
                sidecar("first"),
                sidecar("other-ns", ns="ns"),
                sidecar("sel", extra=selector),
            ],
            "b.yaml": [sidecar("second")],
        },
    )
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/b.yaml:1: Sidecar default/second: namespace 'default' already has a "
        f"Sidecar without a workloadSelector: default/first ({tmp_path}/a.yaml:4)"
    ]


def test_workload_port_that_no_selecting_service_has(tmp_path: Path) -> None:
    selecting = "  resolution: STATIC\n  workloadSelector: {labels: {app: a}}\n"
    ports = "  labels: {app: a, v: '1'}\n  ports:\n    http: 8080\n    admin: 9000\n"
    result = load(
        tmp_path,
        {
            "a.yaml": [
                service("svc", "[a.example.com]", extra=selecting),
                workload("w", "127.0.0.2", extra=ports),
                workload("lonely", "127.0.0.3", ns="ns", extra="  ports: {http: 80}\n"),
            ]
        },
    )
    assert result.errors == ()
    assert result.config is not None
    assert [str(w) for w in result.warnings] == [
        f"{tmp_path}/a.yaml:22: warning: WorkloadEntry default/w: spec.ports.admin: "
        "port 'admin' names no port of any ServiceEntry selecting this workload",
        f"{tmp_path}/a.yaml:31: warning: WorkloadEntry ns/lonely: spec.ports.http: "
        "port 'http' names no port of any ServiceEntry selecting this workload",
    ]


def test_invalid_documents_still_count_for_names_but_not_for_the_rest(tmp_path: Path) -> None:
    bad = "  weight: -1\n"
    result = load(
        tmp_path,
        {"a.yaml": [workload("w", "127.0.0.2", extra=bad), workload("w", "127.0.0.2")]},
    )
    messages = [e.message for e in result.errors]
    assert messages[0] == "-1 must be between 0 and 4294967295"
    assert messages[1].startswith("duplicate WorkloadEntry default/w")
    assert len(messages) == 2  # no address clash: the first document is not valid
