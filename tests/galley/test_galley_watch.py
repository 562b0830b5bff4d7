"""The config watcher: filesystem events, or polling where events may not arrive
(a container's bind mount). Polling must see every edit, however quick."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from xds_server.galley import watch
from xds_server.galley.watch import changed_paths, config_changes, scan

DEADLINE = 10.0  # seconds for a change to be reported (polling every 0.3 s)


# /proc/self/mountinfo of a compose container: an overlay root, the host's config
# directory bind-mounted (a subtree of the host's disk: root is not "/"), a volume.
CONTAINER_MOUNTS = """\
741 612 0:52 / / rw,relatime master:318 - overlay overlay rw,lowerdir=/var/lib/docker/l
742 741 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
760 741 254:0 /srv/my\\040mesh/deploy/compose/mesh /etc/pocketmesh/mesh ro - ext4 /dev/vda rw
761 741 254:0 /var/lib/docker/volumes/s/_data /var/lib/pocketmesh rw - ext4 /dev/vda rw
762 741 0:60 / /mnt/share rw shared:5 - fuse.grpcfuse grpcfuse rw
763 741 0:61 / /mnt/nfs rw - nfs4 server:/export rw
"""
HOST_MOUNTS = """\
24 1 254:0 / / rw,relatime - ext4 /dev/vda rw
25 24 0:5 / /dev/shm rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("directory", "flag", "environ", "mountinfo", "container", "expected"),
    [
        # The compose case: the host's directory bind-mounted into the container.
        ("/etc/pocketmesh/mesh", None, {}, CONTAINER_MOUNTS, True, "bind-mounted"),
        ("/etc/pocketmesh/mesh/sub", None, {}, CONTAINER_MOUNTS, True, "bind-mounted"),
        ("/etc/pocketmesh/demo", None, {}, CONTAINER_MOUNTS, True, None),  # in the image
        ("/mnt/share/mesh", None, {}, CONTAINER_MOUNTS, True, "fuse.grpcfuse"),
        ("/mnt/nfs", None, {}, CONTAINER_MOUNTS, False, "nfs4"),
        # A host's own disk, a container or not: events.
        ("/home/me/mesh", None, {}, HOST_MOUNTS, True, None),
        ("/home/me/mesh", None, {}, HOST_MOUNTS, False, None),
        # The flag wins, then the environment variable (read as watchfiles reads it).
        ("/home/me/mesh", True, {}, HOST_MOUNTS, False, "--watch-polling"),
        ("/etc/pocketmesh/mesh", False, {"WATCHFILES_FORCE_POLLING": "1"}, CONTAINER_MOUNTS,
         True, None),
        ("/home/me/mesh", None, {"WATCHFILES_FORCE_POLLING": "1"}, HOST_MOUNTS, False,
         "WATCHFILES_FORCE_POLLING"),
        ("/etc/pocketmesh/mesh", None, {"WATCHFILES_FORCE_POLLING": "false"}, CONTAINER_MOUNTS,
         True, None),
    ],
)  # fmt: skip
def test_polling_where_events_may_not_arrive(
    directory: str,
    flag: bool | None,
    environ: dict[str, str],
    mountinfo: str,
    container: bool,
    expected: str | None,
) -> None:
    mounts = watch.parse_mountinfo(mountinfo)
    reason = watch.polling_reason(
        Path(directory), flag, environ=environ, mounts=mounts, container=container
    )
    assert (reason is None) == (expected is None), reason
    assert expected is None or expected in str(reason), reason


def test_mountinfo_paths_are_unescaped() -> None:
    (mount,) = watch.parse_mountinfo(CONTAINER_MOUNTS.splitlines()[2])
    assert mount.root == "/srv/my mesh/deploy/compose/mesh"


def test_this_machines_temporary_directories_are_watched_by_events(tmp_path: Path) -> None:
    """The other tests' watchers keep inotify here (unless the machine says otherwise)."""
    if os.environ.get("WATCHFILES_FORCE_POLLING"):
        pytest.fail("WATCHFILES_FORCE_POLLING is set: every watcher here polls")
    mounts = watch.parse_mountinfo(watch.MOUNTINFO.read_text())
    mount = watch.mount_of(str(tmp_path.resolve()), mounts)
    assert mount is not None
    # A local disk or tmpfs: events (and so every other test's watcher keeps inotify).
    assert watch.polling_reason(tmp_path) is None, (mount, watch.polling_reason(tmp_path))


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

    waiting: Awaitable[set[str]] = asyncio.ensure_future(next_batch())
    await asyncio.sleep(0.5)  # the watcher's first look (polling: its first scan)
    for edit in edits:
        edit()
        try:
            batches.append(await asyncio.wait_for(waiting, DEADLINE))
        except TimeoutError:
            raise AssertionError(
                f"edit {len(batches) + 1} of {len(edits)} not reported within {DEADLINE}s"
            ) from None
        waiting = asyncio.ensure_future(next_batch())
    waiting.cancel()
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
