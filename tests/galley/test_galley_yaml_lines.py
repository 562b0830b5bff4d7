"""YAML with line numbers: lines of keys and items, duplicates, syntax errors."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from xds_server.galley.yaml_lines import (
    LineLoader,
    PyLineLoader,
    YamlDocument,
    YamlList,
    YamlMap,
    YamlSyntaxError,
    load_documents,
)

# Every test runs on the pure-Python parser and on libyaml's (when PyYAML has it).
LOADERS: list[type[Any]] = sorted({PyLineLoader, LineLoader}, key=lambda c: c.__name__)


@pytest.fixture(params=LOADERS, ids=lambda c: c.__name__)
def loader(request: pytest.FixtureRequest) -> type[Any]:
    return request.param  # type: ignore[no-any-return]


def load(text: str, loader: type[Any]) -> list[YamlDocument]:
    docs = load_documents(textwrap.dedent(text), loader_class=loader)
    assert not isinstance(docs, YamlSyntaxError), docs
    return docs


def test_lines_of_keys_and_items(loader: type[Any]) -> None:
    [doc] = load(
        """\
        # a comment
        a: 1
        b:
          - x
          - y: 2
            z: 3
        """,
        loader,
    )
    root = doc.value
    assert isinstance(root, YamlMap)
    assert doc.line == 2
    assert root.key_lines == {"a": 2, "b": 3}
    assert isinstance(root["b"], YamlList)
    assert root["b"].item_lines == [4, 5]
    assert root["b"][1].key_lines == {"y": 5, "z": 6}
    assert root == {"a": 1, "b": ["x", {"y": 2, "z": 3}]}


def test_empty_documents_are_skipped(loader: type[Any]) -> None:
    docs = load("---\n---\na: 1\n---\n~\n---\n", loader)
    assert [d.value for d in docs] == [{"a": 1}]
    assert docs[0].line == 3


def test_duplicate_keys_are_recorded_but_merges_may_override(loader: type[Any]) -> None:
    [doc] = load(
        """\
        base: &b {k: 1, j: 2}
        m:
          <<: *b
          k: 3
        a: 1
        a: 2
        """,
        loader,
    )
    root = doc.value
    assert isinstance(root, YamlMap)
    assert root["m"] == {"k": 3, "j": 2}
    assert root["m"].duplicate_keys == []
    assert root.duplicate_keys == [("a", 6)]
    assert root["a"] == 2


def test_syntax_error_has_pyyaml_line_and_column(loader: type[Any]) -> None:
    error = load_documents("a: 1\n---\nb: c: d\n", loader_class=loader)
    assert isinstance(error, YamlSyntaxError)
    assert (error.line, error.column) == (3, 5)
    assert error.message.startswith("mapping values are not allowed")


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("a: !custom x\n", 1, 4),
        ("a: 1\n? [a]\n: b\n", 2, 3),
        ("a: *nowhere\n", 1, 4),
        ("a: 1\nb: \x00\n", 2, 4),
        ("[" * 800, None, None),  # too deep for one parser, unterminated for the other
    ],
)
def test_other_failures_are_syntax_errors_not_exceptions(
    loader: type[Any], text: str, line: int | None, column: int | None
) -> None:
    error = load_documents(text, loader_class=loader)
    assert isinstance(error, YamlSyntaxError)
    if line is not None:
        assert error.line == line
    if column is not None:
        assert error.column == column
