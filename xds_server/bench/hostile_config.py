"""A corpus of hostile and broken config, put through `validate` and a live reload.

The corpus: YAML bombs (anchors and aliases that would expand to a billion nodes,
merge keys), nesting thousands deep, recursive aliases, binary files, UTF-16 and
Latin-1 text, NUL bytes, duplicate keys, `!!python` tags, a 5,001-digit integer, a
huge file, and every leaf of every document of the demo config replaced by a value
of each wrong type. Each item must load to errors that name its file and a line
(never a crash, never the directory), within bounded time; in a live control plane
each must be rejected while the last good config keeps serving.

`run` returns the figures (`pocketmesh bench --chaos` reports them); the tests run it
on a sample.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xds_server.galley.loader import load_paths

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
# What each leaf is replaced by: every type a field could wrongly have.
WRONG_VALUES: tuple[Any, ...] = ({"x": 1}, [1, 2], "text", None, True, -1, 10**30, 1.5)


@dataclass(frozen=True)
class Item:
    name: str
    data: bytes
    target: str = "new"  # "new": a file of its own; or the demo file it replaces


def _laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def _service_entry(spec: str) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        f"metadata: {{name: hostile, namespace: default}}\nspec:\n{spec}"
    )


def hostile_items(huge_mb: int = 5) -> list[Item]:
    """The hand-written hostile cases."""
    rng = random.Random(11)
    laughs = _laughs()
    bomb_in_spec = laughs.replace("\n", "\n  ")
    huge_doc = _service_entry(
        "  hosts: [huge.default.svc.cluster.local]\n"
        "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
        "  resolution: STATIC\n  endpoints:\n"
    )
    endpoint = "  - {address: 127.0.0.1, labels: {a: b}}\n"
    # Megabytes of valid endpoints, then one bad value: the error is on its last line.
    huge = huge_doc + endpoint * ((huge_mb << 20) // len(endpoint)) + "  - {address: 1.2.3}\n"
    items = [
        Item("billion-laughs", laughs.encode()),
        Item(
            "billion-laughs-in-spec",
            _service_entry("  " + bomb_in_spec + "  hosts: *a9\n").encode(),
        ),
        Item(
            "merge-bomb",
            (
                "a: &a {k0: 0, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7}\n"
                + "".join(f"b{i}: &b{i} {{<<: [*a, *a, *a, *a]}}\n" for i in range(200))
            ).encode(),
        ),
        Item("deep-flow-nesting", ("a: " + "[" * 20000 + "]" * 20000 + "\n").encode()),
        Item(
            "deep-block-nesting",
            ("".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "x: 1\n").encode(),
        ),
        Item(
            "recursive-alias", _service_entry("  hosts: &h [a.b, *h]\n  me: &m {x: *m}\n").encode()
        ),
        Item("binary", rng.randbytes(64 << 10)),
        Item("utf-16", _service_entry("  hosts: [a.b]\n").encode("utf-16")),
        Item("latin-1", _service_entry("  hosts: [caf\xe9.b]\n").encode("latin-1")),
        Item("nul-bytes", _service_entry("  hosts: [a\x00b]\n").encode()),
        Item("duplicate-keys", _service_entry("  hosts: [a.b]\n  hosts: [c.d]\n").encode()),
        Item(
            "python-tag",
            _service_entry('  hosts: !!python/object/apply:os.system ["echo pwned"]\n').encode(),
        ),
        Item("huge-integer", _service_entry(f"  ports: [{{number: {'9' * 5001}}}]\n").encode()),
        Item("huge-file", huge.encode()),
        Item("tabs-and-garbage", b"apiVersion:\tv1\n\t- ]]]: {{{\n"),
        Item("empty-documents", b"---\n---\n...\n---\n"),
        Item("only-a-scalar", b"just a string\n"),
        Item("long-line", ("a: " + "x" * (4 << 20) + "\n").encode()),
    ]
    return items


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _leaves(child, (*path, i))
    else:
        yield path


def _replaced(doc: Any, path: tuple[Any, ...], new: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return doc


def wrong_type_items() -> list[Item]:
    """Every leaf of every demo document, replaced by each wrong value."""
    items = []
    for path in sorted(DEMO.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        for index, doc in enumerate(docs):
            for leaf in _leaves(doc):
                if leaf[:1] in (("apiVersion",), ("kind",)):
                    continue  # an unknown kind is one error; the others show more
                for value in WRONG_VALUES:
                    changed = [*docs[:index], _replaced(doc, leaf, value), *docs[index + 1 :]]
                    text = yaml.safe_dump_all(changed, sort_keys=False)
                    where = ".".join(str(p) for p in leaf)
                    name = f"{path.stem}[{index}].{where}={type(value).__name__}"
                    items.append(Item(name, text.encode(), target=path.name))
    return items


def corpus(sample: int | None = None, seed: int = 7, huge_mb: int = 5) -> list[Item]:
    """The hostile cases and the wrong-type variants (a random `sample` of the latter)."""
    wrong = wrong_type_items()
    if sample is not None and sample < len(wrong):
        wrong = random.Random(seed).sample(wrong, sample)
    return hostile_items(huge_mb) + wrong


@dataclass
class Outcome:
    name: str
    seconds: float
    errors: int
    unlocated: list[str]
    crashed: str = ""


def _located(errors: Any, files: set[str]) -> list[str]:
    return [str(e) for e in errors if e.file not in files or e.line < 1]


def validate_item(item: Item, workdir: Path) -> Outcome:
    """`pocketmesh validate` on the demo config with this item in it."""
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(DEMO, workdir)
    target = workdir / (item.target if item.target != "new" else "hostile.yaml")
    target.write_bytes(item.data)
    started = time.perf_counter()
    try:
        result = load_paths([workdir])
    except Exception as err:  # a crash is what this corpus exists to find
        return Outcome(item.name, time.perf_counter() - started, 0, [], repr(err)[:300])
    seconds = time.perf_counter() - started
    files = {str(p) for p in workdir.rglob("*.yaml")}
    unlocated = _located(result.errors, files)
    # A wrong value may be harmless (a string where any string will do): no error is
    # fine; a hostile file must always give one.
    if item.target == "new" and not result.errors and item.name not in _HARMLESS:
        unlocated.append("no error at all")
    return Outcome(item.name, seconds, len(result.errors), unlocated)


_HARMLESS = {"empty-documents"}


def live_reload_items(items: list[Item], workdir: Path) -> list[str]:
    """Each item dropped into a live control plane's config: rejected, last good kept.
    Returns what went wrong (empty: nothing)."""
    from xds_server.app import ControlPlane, Options

    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(DEMO, workdir)
    plane = ControlPlane(Options(config_dir=workdir, watch=False))
    problems: list[str] = []
    with _quiet("pocketmesh"):
        _reload_each(plane, items, workdir, problems)
    return problems


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Thousands of rejected configs are logged as they should be; not on the console."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reload_each(plane: Any, items: list[Item], workdir: Path, problems: list[str]) -> None:
    if not plane.reload():
        problems.append(f"the demo config did not load: {plane.config_status.errors[:3]}")
        return
    good = plane.cache.snapshot
    for item in items:
        target = workdir / (item.target if item.target != "new" else "hostile.yaml")
        original = target.read_bytes() if target.exists() else None
        target.write_bytes(item.data)
        try:
            accepted = plane.reload()
        except Exception as err:
            problems.append(f"{item.name}: reload raised {err!r}"[:300])
            accepted = False
        if accepted and plane.config_status.errors:
            problems.append(f"{item.name}: accepted with errors")
        if not accepted and plane.cache.snapshot is not good:
            problems.append(f"{item.name}: rejected but the served snapshot changed")
        if original is None:
            target.unlink()
        else:
            target.write_bytes(original)
        if accepted:  # a harmless change: go back to the demo for the next item
            plane.reload()
            good = plane.cache.snapshot


def run(sample: int | None, workdir: Path, *, live: int = 40, huge_mb: int = 5) -> dict[str, Any]:
    """Figures for the whole corpus (or a sample of the wrong-type variants)."""
    items = corpus(sample, huge_mb=huge_mb)
    outcomes = [validate_item(item, workdir / "validate") for item in items]
    worst = max(outcomes, key=lambda o: o.seconds)
    hostile = [o for o in outcomes if o.name in {i.name for i in hostile_items(0)}]
    rng = random.Random(3)
    live_items = hostile_items(huge_mb) + rng.sample(items[len(hostile) :], min(live, len(items)))
    problems = live_reload_items(live_items, workdir / "live")
    return {
        "corpus_items": len(items),
        "hostile_items": len(hostile),
        "wrong_type_items": len(items) - len(hostile),
        "crashes": [f"{o.name}: {o.crashed}" for o in outcomes if o.crashed],
        "unlocated": [f"{o.name}: {u}" for o in outcomes for u in o.unlocated][:20],
        "worst_seconds": round(worst.seconds, 3),
        "worst_item": worst.name,
        "total_seconds": round(sum(o.seconds for o in outcomes), 2),
        "hostile_seconds": {o.name: round(o.seconds, 3) for o in hostile},
        "live_reload_items": len(live_items),
        "live_reload_problems": problems,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
