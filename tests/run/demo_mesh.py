"""Helpers shared by the tests of `pocketmesh up` and the operator's commands."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.e2e.harness import free_port

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


def demo_copy(root: Path, net: str) -> Path:
    """A copy of config/demo on the 127.x block `net` (e.g. "127.0.61") with free app
    ports, so that it clashes with nothing: a demo the user runs, another test."""
    config = root / "config"
    shutil.copytree(DEMO, config)
    for path in config.glob("*.yaml"):
        text = path.read_text().replace("127.0.10.", f"{net}.")
        text = re.sub(r"127\.0\.0\.1:19\d\d\d", lambda _: f"127.0.0.1:{free_port()}", text)
        path.write_text(text)
    return config
