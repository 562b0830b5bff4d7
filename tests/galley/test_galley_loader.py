"""Files and directories: what is read, in what order, and how failures are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.galley.errors import ConfigInvalid
from xds_server.galley.loader import load_directory, load_paths, parse_documents

MESH = Path(__file__).parent / "data" / "mesh"

GOOD = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: NAME}
spec: {address: ADDRESS}
"""


def good(name: str, address: str) -> str:
    return GOOD.replace("NAME", name).replace("ADDRESS", address)


def test_sample_mesh() -> None:
    result = load_directory(MESH, trust_domain="example.org")
    assert [str(e) for e in result.errors] == []
    assert result.files == tuple(
        str(MESH / f)
        for f in ("routing.yaml", "services.yaml", "sidecars.yml", "workloads/reviews.yaml")
    )
    assert [str(w) for w in result.warnings] == []
    config = result.config_or_raise()
    assert config.trust_domain == "example.org"
    assert [s.meta.key for s in config.service_entries] == [
        "bookinfo/ratings",
        "bookinfo/reviews",
        "default/httpbin",
    ]
    assert [w.meta.key for w in config.workload_entries] == [
        "bookinfo/reviews-v1",
        "bookinfo/reviews-v2",
    ]
    assert [s.meta.key for s in config.sidecars] == ["bookinfo/default", "bookinfo/reviews"]
    ratings = config.service_entries[0]
    assert ratings.ports[0].target_port == 9081
    assert ratings.endpoints[0].meta.name == "ratings-endpoint-0"
    reviews_v2 = config.workload("reviews-v2", "bookinfo")
    assert reviews_v2 is not None
    assert (reviews_v2.locality, reviews_v2.weight) == ("us-east/zone-a", 10)


def test_same_input_gives_an_equal_config_whatever_the_path_order() -> None:
    files = sorted(MESH.rglob("*.y*ml"))
    forward = load_paths(files).config
    backward = load_paths(list(reversed(files))).config
    assert forward is not None
    assert forward == backward == load_directory(MESH).config


def test_missing_path_is_an_error_not_an_exception(tmp_path: Path) -> None:
    result = load_paths([tmp_path / "nope", str(tmp_path / "nope.yaml")])
    assert result.config is None
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/nope: no such file or directory",
        f"{tmp_path}/nope.yaml: no such file or directory",
    ]
    with pytest.raises(ConfigInvalid) as info:
        result.config_or_raise()
    assert info.value.errors == result.errors


def test_malformed_yaml_is_one_error_and_other_files_still_report(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(good("a", "127.0.0.2") + "---\nkind: x: y\n")
    (tmp_path / "b.yaml").write_text(good("b", "127.0.0.3").replace("127.0.0.3", "bad address"))
    (tmp_path / "c.yaml").write_text(good("c", "127.0.0.4"))
    result = load_directory(tmp_path)
    assert result.config is None
    syntax, address = (str(e) for e in result.errors)
    assert syntax.startswith(f"{tmp_path}/a.yaml:6: invalid YAML: mapping values are not allowed")
    assert syntax.endswith("(column 8)")
    assert address == (
        f"{tmp_path}/b.yaml:4: WorkloadEntry default/b: spec.address: "
        "'bad address' must be an IP address or a DNS name"
    )


def test_directory_walk_rules(tmp_path: Path) -> None:
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "b.yml").write_text(good("b", "127.0.0.3"))
    (tmp_path / "a.yaml").write_text(good("a", "127.0.0.2"))
    (tmp_path / "notes.txt").write_text("not: [yaml")
    (tmp_path / ".a.yaml.swp").write_text("junk: [")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("junk: [")
    (tmp_path / "..data").mkdir()  # a ConfigMap volume's hidden copy
    (tmp_path / "..data" / "a.yaml").write_text(good("a", "127.0.0.2"))
    result = load_paths([tmp_path, tmp_path / "a.yaml"])  # a.yaml named twice, read once
    assert result.errors == ()
    assert result.files == (str(tmp_path / "a.yaml"), str(tmp_path / "z" / "b.yml"))


def test_a_named_file_is_read_whatever_its_suffix(tmp_path: Path) -> None:
    (tmp_path / "mesh.conf").write_text(good("a", "127.0.0.2"))
    result = load_paths([tmp_path / "mesh.conf"])
    assert result.config is not None
    assert result.config.workload_entries[0].meta.source.file == str(tmp_path / "mesh.conf")
    assert load_paths(str(tmp_path / "mesh.conf")).files == result.files


def test_empty_directory_is_a_warning(tmp_path: Path) -> None:
    result = load_directory(tmp_path)
    assert result.errors == ()
    assert [str(w) for w in result.warnings] == [f"{tmp_path}: warning: no *.yaml or *.yml files"]
    assert result.config is not None
    assert result.config.service_entries == ()


def test_undecodable_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"a: 1\nb: \xff\n")
    result = load_directory(tmp_path)
    assert [str(e) for e in result.errors] == [f"{tmp_path}/a.yaml:2: not UTF-8 text"]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"\xef\xbb\xbf" + good("a", "127.0.0.2").encode())
    assert load_directory(tmp_path).errors == ()


def test_bad_trust_domain() -> None:
    result = parse_documents("", "x.yaml", trust_domain="Example.ORG")
    assert [str(e) for e in result.errors] == [
        "trust_domain: 'Example.ORG' may only contain lower-case letters, digits, '.', '-' and '_'"
    ]


def test_errors_are_in_file_then_line_order(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(good("x", "127.0.0.2") + "---\n" + good("y", "127.0.0.2"))
    (tmp_path / "b.yaml").write_text(good("x", "127.0.0.9").replace("{name: x}", "{name: X}"))
    lines = [(Path(e.file).name, e.line) for e in load_directory(tmp_path).errors]
    assert lines == sorted(lines)
    assert len(lines) == 2


def test_parse_documents_of_nothing() -> None:
    result = parse_documents("# only a comment\n---\n", "x.yaml")
    assert result.errors == () and result.warnings == ()
    assert result.files == ("x.yaml",)
    assert result.config is not None
    assert result.config.trust_domain == "cluster.local"
