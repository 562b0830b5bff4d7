"""docs/fields.md is generated from the registry: it cannot say what the code does not."""

from __future__ import annotations

from pathlib import Path

from xds_server.galley.fields import Status, walk
from xds_server.galley.fields_doc import render
from xds_server.galley.registry import KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "fields.md"


def test_the_reference_matches_the_registry() -> None:
    assert DOC.read_text() == render(), (
        "docs/fields.md is out of date: run `python -m xds_server.galley.fields_doc > "
        "docs/fields.md`"
    )


def test_every_field_path_is_in_the_reference() -> None:
    text = DOC.read_text()
    for kind in KINDS:
        assert f"## {kind.kind}\n" in text
        for path, field in walk(kind.spec, "" if kind.document_level else "spec"):
            assert f"| `{path}` |" in text, path
            if field.status is Status.NOT_YET:
                assert f"| `{path}` | **not yet** (refused) |" in text
