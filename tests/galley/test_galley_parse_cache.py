"""Re-parsing only changed documents keeps every line number and error a full parse gives."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from xds_server.galley import parse_cache
from xds_server.galley.loader import load_paths
from xds_server.galley.yaml_lines import split_documents


def service(i: int, extra: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        f"metadata: {{name: svc-{i}, namespace: ns}}\n"
        f"spec:\n  hosts: [svc-{i}.ns.svc.cluster.local]\n{extra}"
        "  ports:\n  - {number: 80, name: http, protocol: HTTP}\n"
    )


def fresh(text: str, file: str) -> parse_cache.Parsed:
    """What parsing the whole text from scratch gives."""
    return parse_cache.parse_text(text, file)


def test_split_cuts_at_markers_only() -> None:
    text = "a: 1\n---\nb: |\n  ---x\n--- \nc: 3\n---\n"
    assert split_documents(text) == [
        (1, "a: 1\n"),
        (2, "---\nb: |\n  ---x\n"),
        (5, "--- \nc: 3\n"),
        (7, "---\n"),
    ]
    assert split_documents("%YAML 1.2\n---\na: 1\n") is None
    assert split_documents("a: 1\n...\n---\nb: 2\n") is None
    assert split_documents("----\na: 1\n") == [(1, "----\na: 1\n")]


def test_an_edit_above_moves_the_documents_below(tmp_path: Path) -> None:
    file = str(tmp_path / "services.yaml")
    docs = [service(i) for i in range(5)]
    parse_cache.parse_file("---\n".join(docs), file)
    docs[1] = service(1, "  location: MESH_EXTERNAL\n  resolution: DNS\n")
    text = "---\n".join(docs)
    assert parse_cache.parse_file(text, file) == fresh(text, file)
    parsed, _ = parse_cache.parse_file(text, file)
    lines = [d.meta.source.line for d in parsed]
    assert lines == [d.meta.source.line for d in fresh(text, file)[0]]
    assert lines[2] - lines[1] == 10  # 8 lines a document, and the edit added 2


def test_errors_in_moved_documents_point_at_their_new_lines(tmp_path: Path) -> None:
    file = tmp_path / "services.yaml"
    docs = [service(i) for i in range(4)]
    docs[3] = docs[3].replace("number: 80", "number: -1")
    file.write_text("---\n".join(docs))
    first = load_paths([file]).errors
    docs[0] = "# a comment\n# another\n" + docs[0]
    file.write_text("---\n".join(docs))
    moved = load_paths([file]).errors
    assert [e.line for e in moved] == [e.line + 2 for e in first]
    assert moved == fresh(file.read_text(), str(file))[0][-1].errors


def test_a_syntax_error_in_one_document_yields_no_documents(tmp_path: Path) -> None:
    file = str(tmp_path / "services.yaml")
    docs = [service(i) for i in range(4)]
    parse_cache.parse_file("---\n".join(docs), file)
    docs[2] = docs[2].replace("hosts: [", "hosts: [[")
    text = "---\n".join(docs)
    parsed, errors = parse_cache.parse_file(text, file)
    assert parsed == ()
    assert [(e.line, e.message) for e in errors] == [
        (e.line, e.message) for e in fresh(text, file)[1]
    ]


DOCS = (
    service(1),
    service(2, "  location: MESH_EXTERNAL\n  resolution: DNS\n"),
    service(3).replace("number: 80", "number: -1"),  # a field error
    service(4).replace("hosts: [", "hosts: [["),  # a syntax error
    "# only a comment\n",
    "",
    "apiVersion: v1\nkind: List\nitems:\n- " + service(5).replace("\n", "\n  ").rstrip() + "\n",
)


def _projection(parsed: parse_cache.Parsed) -> object:
    """Everything a parse says, lines included (ObjectMeta equality ignores the source)."""
    docs, errors = parsed
    return (
        [
            (d.kind, d.meta and str(d.meta.source), dict(d.lines), d.errors, d.warnings)
            for d in docs
        ],
        [(e.line, e.message) for e in errors],
    )


@settings(max_examples=60)
@given(
    before=st.lists(st.sampled_from(DOCS), min_size=1, max_size=6),
    edits=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(DOCS)), max_size=3),
    marker=st.sampled_from(["---\n", "--- \n"]),
)
def test_any_edit_parses_as_a_whole_parse_would(
    before: list[str], edits: list[tuple[int, str]], marker: str
) -> None:
    file = "/config/services.yaml"
    parse_cache.clear()
    parse_cache.parse_file(marker.join(before), file)
    after = list(before)
    for i, doc in edits:
        after[i % len(after)] = doc
    text = marker.join(after)
    assert _projection(parse_cache.parse_file(text, file)) == _projection(fresh(text, file))


def test_the_cache_holds_the_last_version_of_a_file_only() -> None:
    """A long-running server edits the same files for ever; memory must not grow."""
    file = "/config/often-edited.yaml"
    for n in range(20):
        docs = [service(i, f"  # edit {n}\n" if i == n % 4 else "") for i in range(4)]
        parse_cache.parse_file("---\n".join(docs), file)
    assert len(parse_cache._DOCUMENTS[file]) == 4
    assert list(parse_cache._FILES).count(file) == 1
