"""Helpers shared by the tests of `pocketmesh up` and the operator's commands."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

from tests.e2e.harness import free_port

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
_given: set[str] = set()


def random_net() -> str:
    """A 127.x.y block of its own for one test. Fixed blocks meet when two checkouts run
    their tests at once, and Envoy's listeners share ports (SO_REUSEPORT) instead of
    failing: connections would split between two meshes. 127.2-99.* is used by nobody
    else (tests/traffic draws from 127.100-254.*, fixed blocks are 127.0.*)."""
    while True:
        net = f"127.{random.randint(2, 99)}.{random.randint(0, 255)}"
        if net not in _given:
            _given.add(net)
            return net


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


EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
EXAMPLES_NET = "127.0.73"


def example_copy(root: Path, example: str, net: str) -> Path:
    """A self-contained copy of config/examples/<example> (the registry files it links,
    copied in) on the 127.x block `net`, its apps on free ports: the same config as
    `pocketmesh up config/examples/<example>`, clashing with nothing."""
    target = root / example
    target.mkdir(parents=True)
    ports: dict[str, int] = {}

    def port_of(app_port: str) -> int:
        return ports.setdefault(app_port, free_port())

    for path in sorted((EXAMPLES / example).iterdir()):
        if path.suffix not in (".yaml", ".yml"):
            shutil.copy(path, target / path.name)
            continue
        text = path.read_text().replace(f"{EXAMPLES_NET}.", f"{net}.")  # follows links
        text = re.sub(r"127\.0\.0\.1:(173\d\d)", lambda m: f"127.0.0.1:{port_of(m[1])}", text)
        # An app's port written alone (`localhost:17381`, `targetPort: 17381`): the same.
        text = re.sub(r"\b173\d\d\b", lambda m: str(port_of(m[0])), text)
        (target / path.name).write_text(text)
    return target
