"""Watching the config directory: batches of file changes, debounced.

Filesystem events (inotify, by watchfiles) are the default. Where they may not
arrive, the directory is polled instead, every `POLL_INTERVAL`: inside a container
the config directory is usually a bind mount, and a host's edits raise no event in
the container on Docker Desktop or remote filesystems. `serve --watch-polling`
forces polling and `--no-watch-polling` forbids it; without either, polling is used
inside a container, or when WATCHFILES_FORCE_POLLING says so.

The poller is our own, not watchfiles': that one compares modification times to
the second, so an edit made within a second of the previous one was missed (an
edit accepted and ignored). Ours compares each YAML file's size, inode and
nanosecond mtime, and for a file modified in the last `RACY_SECONDS` (a
filesystem's clock may be coarser than an edit: git's "racy" files) its content.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import watchfiles

log = logging.getLogger("pocketmesh.galley")

YAML_SUFFIXES = (".yaml", ".yml")
POLL_INTERVAL = 0.3  # seconds between polls: an edit is seen within about this long
RACY_SECONDS = 3.0  # a file modified this recently is compared by content too
# Files that exist only inside containers (Docker's, Podman's).
CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


def _is_config(_change: watchfiles.Change, path: str) -> bool:
    return path.endswith(YAML_SUFFIXES)


def in_container(markers: tuple[Path, ...] = CONTAINER_MARKERS) -> bool:
    return any(marker.exists() for marker in markers)


def use_polling(
    requested: bool | None,
    *,
    environ: Mapping[str, str] = os.environ,
    container: bool | None = None,
) -> bool:
    """Whether to poll: the flag if given; else WATCHFILES_FORCE_POLLING if set (read
    as watchfiles reads it); else exactly when running inside a container."""
    if requested is not None:
        return requested
    forced = environ.get("WATCHFILES_FORCE_POLLING")
    if forced:
        return forced.lower() not in ("false", "disable", "disabled")
    return in_container() if container is None else container


async def config_changes(
    directory: Path,
    *,
    quiet: float = 0.1,
    max_wait: float = 10.0,
    stop: asyncio.Event | None = None,
    polling: bool | None = None,
) -> AsyncIterator[set[str]]:
    """Yield the changed YAML paths once the directory has been quiet for `quiet`
    seconds, or after `max_wait` seconds of constant change. `polling`: see
    `use_polling` (None: decide)."""
    if use_polling(polling):
        log.info("watching %s by polling every %s s", directory, POLL_INTERVAL)
        async for paths in poll_changes(directory, quiet=quiet, max_wait=max_wait, stop=stop):
            yield paths
        return
    log.info("watching %s by filesystem events", directory)
    async for changes in watchfiles.awatch(
        directory,
        watch_filter=_is_config,
        step=max(1, int(quiet * 1000)),
        debounce=max(1, int(max_wait * 1000)),
        stop_event=stop,
        # Editors replace files by rename; inotify sees that.
        recursive=True,
        force_polling=False,
    ):
        yield {path for _, path in changes}


# -- polling ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileState:
    size: int
    inode: int
    mtime_ns: int
    digest: bytes | None  # the content's, while the file is racy

    def same_as(self, before: FileState) -> bool:
        if (self.size, self.inode, self.mtime_ns) != (before.size, before.inode, before.mtime_ns):
            return False
        # Same metadata: different only if both were read and their contents differ.
        return self.digest is None or before.digest is None or self.digest == before.digest


def scan(directory: Path, now_ns: int | None = None) -> dict[str, FileState]:
    """The YAML files the loader would read (hidden entries skipped), and their state."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    racy_ns = int(RACY_SECONDS * 1e9)
    found: dict[str, FileState] = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.endswith(YAML_SUFFIXES):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)  # through symlinks: a ConfigMap's swap changes the inode
                digest = None
                if now_ns - st.st_mtime_ns < racy_ns:
                    with open(path, "rb") as f:
                        digest = hashlib.blake2b(f.read(), digest_size=16).digest()
            except OSError:  # gone between the listing and the stat: a change anyway
                continue
            found[path] = FileState(st.st_size, st.st_ino, st.st_mtime_ns, digest)
    return found


def changed_paths(before: Mapping[str, FileState], after: Mapping[str, FileState]) -> set[str]:
    changed = set(before.keys() ^ after.keys())
    changed.update(p for p in before.keys() & after.keys() if not after[p].same_as(before[p]))
    return changed


async def poll_changes(
    directory: Path,
    *,
    quiet: float = 0.1,
    max_wait: float = 10.0,
    stop: asyncio.Event | None = None,
    interval: float = POLL_INTERVAL,
) -> AsyncIterator[set[str]]:
    """`config_changes` by polling: the same batching (quiet, max_wait)."""
    stop = stop or asyncio.Event()
    state = await asyncio.to_thread(scan, directory)
    while not await _stopped_within(stop, interval):
        current = await asyncio.to_thread(scan, directory)
        changed = changed_paths(state, current)
        state = current
        if not changed:
            continue
        first = time.monotonic()
        while time.monotonic() - first < max_wait:  # until quiet for `quiet` seconds
            if await _stopped_within(stop, quiet):
                return
            current = await asyncio.to_thread(scan, directory)
            more = changed_paths(state, current)
            state = current
            if not more:
                break
            changed |= more
        yield changed


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
