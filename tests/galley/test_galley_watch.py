"""The config watcher: filesystem events, or polling where events may not arrive
(a container's bind mount). Polling must see every edit, however quick."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from xds_server.galley import watch
from xds_server.galley.watch import changed_paths, config_changes, scan, use_polling

DEADLINE = 10.0  # seconds for a change to be reported (polling every 0.3 s)


@pytest.mark.parametrize(
    ("flag", "environ", "container", "expected"),
    [
        (True, {}, False, True),
        (False, {"WATCHFILES_FORCE_POLLING": "1"}, True, False),  # the flag wins
        (None, {}, True, True),  # inside a container: poll
        (None, {}, False, False),
        (None, {"WATCHFILES_FORCE_POLLING": "1"}, False, True),
        (None, {"WATCHFILES_FORCE_POLLING": "false"}, True, False),
        (None, {"WATCHFILES_FORCE_POLLING": ""}, True, True),  # empty: unset
    ],
)
def test_polling_is_chosen_by_flag_then_environment_then_container(
    flag: bool | None, environ: dict[str, str], container: bool, expected: bool
) -> None:
    assert use_polling(flag, environ=environ, container=container) is expected


def test_in_container_reads_the_engines_marker_files(tmp_path: Path) -> None:
    marker = tmp_path / ".dockerenv"
    assert not watch.in_container((marker,))
    marker.touch()
    assert watch.in_container((marker,))


def test_scan_sees_what_the_loader_reads(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text("b: 1\n")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".a.yaml.swp").write_text("x")  # an editor's
    (tmp_path / "..data").mkdir()  # a ConfigMap's
    (tmp_path / "..data" / "c.yaml").write_text("c: 1\n")
    assert sorted(scan(tmp_path)) == [str(tmp_path / "a.yaml"), str(tmp_path / "sub" / "b.yml")]


def test_an_edit_that_keeps_size_and_mtime_is_seen_by_its_content(tmp_path: Path) -> None:
    """A filesystem whose clock is coarser than the edits: same size, same mtime."""
    path = tmp_path / "traffic.yaml"
    path.write_text("weight: 10\n")
    stat = path.stat()
    before = scan(tmp_path)
    path.write_text("weight: 90\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert changed_paths(before, scan(tmp_path)) == {str(path)}
    # Long after the edit (not racy any more), unchanged metadata means unchanged.
    later = stat.st_mtime_ns + int(10 * watch.RACY_SECONDS * 1e9)
    assert changed_paths(scan(tmp_path, later), scan(tmp_path, later)) == set()


async def collect(
    directory: Path, edits: list[Callable[[], None]], *, polling: bool
) -> list[set[str]]:
    """Make each edit once the previous one was reported; the batches reported."""
    stop = asyncio.Event()
    batches: list[set[str]] = []
    changes: AsyncIterator[set[str]] = config_changes(
        directory, quiet=0.05, stop=stop, polling=polling
    )

    async def next_batch() -> set[str]:
        return await anext(changes)

    await asyncio.sleep(0.5)  # the watcher's first look (events: its inotify watch)
    for edit in edits:
        waiting: Awaitable[set[str]] = asyncio.ensure_future(next_batch())
        await asyncio.sleep(0)
        edit()
        try:
            batches.append(await asyncio.wait_for(waiting, DEADLINE))
        except TimeoutError:
            raise AssertionError(
                f"edit {len(batches) + 1} of {len(edits)} not reported within {DEADLINE}s"
            ) from None
    stop.set()
    await changes.aclose()
    return batches


def editor_save(path: Path, text: str) -> None:
    """As editors save: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    tmp.replace(path)


@pytest.mark.parametrize("polling", [True, False], ids=["polling", "events"])
def test_every_edit_is_reported_even_within_the_same_second(tmp_path: Path, polling: bool) -> None:
    path = tmp_path / "traffic.yaml"
    path.write_text("v: 0\n")
    new = tmp_path / "more.yaml"
    edits = [
        lambda: path.write_text("v: 1\n"),  # in place
        lambda: editor_save(path, "v: 2\n"),  # renamed over
        lambda: path.write_text("v: 3\n"),  # in place again, same size
        lambda: new.write_text("x: 1\n"),  # a new file
        lambda: new.unlink(),  # gone
    ]
    batches = asyncio.run(collect(tmp_path, edits, polling=polling))
    assert [b & {str(path), str(new)} for b in batches] == [
        {str(path)}, {str(path)}, {str(path)}, {str(new)}, {str(new)},
    ]  # fmt: skip


def test_a_burst_of_edits_is_one_batch(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("a: 0\n")

    async def run() -> set[str]:
        stop = asyncio.Event()
        changes = watch.poll_changes(tmp_path, quiet=0.5, stop=stop, interval=0.05)
        waiting = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0.2)
        a.write_text("a: 1\n")
        await asyncio.sleep(0.2)  # within `quiet` of the first: the same batch
        b.write_text("b: 1\n")
        batch = await asyncio.wait_for(waiting, DEADLINE)
        stop.set()
        await changes.aclose()
        return batch

    assert asyncio.run(run()) == {str(a), str(b)}
