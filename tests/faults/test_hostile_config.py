"""Hostile config through `validate` and a live reload: never a crash or a hang, every
error located at a file and line, the last good config kept. A sample of the corpus
here; `pocketmesh bench --chaos` runs all of it and reports the times."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.bench import hostile_config
from xds_server.cli import main


def test_hostile_corpus_sample(tmp_path: Path) -> None:
    figures = hostile_config.run(sample=60, workdir=tmp_path, live=15, huge_mb=1)
    assert figures["corpus_items"] == figures["hostile_items"] + 60
    assert figures["crashes"] == []
    assert figures["unlocated"] == []
    assert figures["live_reload_problems"] == []


def test_a_huge_integer_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ok.yaml").write_text("# nothing\n")
    bad = tmp_path / "services.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: x, namespace: default}\nspec:\n  hosts: [x.default]\n"
        f"  ports:\n  - number: {'9' * 5001}\n    name: http\n"
    )
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"{bad}:7: " in text and "an integer of 5001 digits is too large" in text, text
    assert f"{tmp_path}: cannot read" not in text
