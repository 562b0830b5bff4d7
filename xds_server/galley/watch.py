"""Watching the config directory: batches of file changes, debounced.

Filesystem events (inotify, by watchfiles) are the default. Where they may not
arrive, the directory is polled instead, every `POLL_INTERVAL`:

- on a filesystem that raises no events for changes made elsewhere: FUSE, 9p,
  virtiofs, NFS, SMB, Docker Desktop's shares (`NO_EVENT_FILESYSTEMS`);
- in a container, when the directory is bind-mounted into it (docker-compose mounts
  the host's config directory): a host's edits reach the container's inotify on a
  Linux host, but not from Docker Desktop's VM or a remote filesystem.

`serve --watch-polling` forces polling, `--no-watch-polling` forbids it, and
WATCHFILES_FORCE_POLLING is honoured as watchfiles reads it. The log line says which
was chosen, and why.

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
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import watchfiles

log = logging.getLogger("pocketmesh.galley")

YAML_SUFFIXES = (".yaml", ".yml")
POLL_INTERVAL = 0.3  # seconds between polls: an edit is seen within about this long
RACY_SECONDS = 3.0  # a file modified this recently is compared by content too
# Files that exist only inside containers (Docker's, Podman's).
CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))
MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystem types (before any ".subtype") whose changes made elsewhere raise no inotify
# event here. Docker Desktop shares the host's files as fakeowner, grpcfuse or virtiofs.
NO_EVENT_FILESYSTEMS = frozenset(
    {"fuse", "fuseblk", "9p", "virtiofs", "nfs", "nfs4", "cifs", "smb3", "smbfs",
     "fakeowner", "grpcfuse", "osxfs", "vboxsf", "ceph", "glusterfs", "prl_fs", "vmhgfs"}
)  # fmt: skip


def _is_config(_change: watchfiles.Change, path: str) -> bool:
    return path.endswith(YAML_SUFFIXES)


def in_container(markers: tuple[Path, ...] = CONTAINER_MARKERS) -> bool:
    return any(marker.exists() for marker in markers)


@dataclass(frozen=True, slots=True)
class Mount:
    root: str  # the mounted filesystem's directory shown here ("/" unless a bind mount)
    mount_point: str
    fstype: str


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/self/mountinfo: `id parent dev ROOT MOUNT_POINT opts [optional...] - TYPE ...`."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        fstype = fields[fields.index("-", 6) + 1]
        mounts.append(Mount(_unescape(fields[3]), _unescape(fields[4]), fstype))
    return mounts


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as \040, \011, \012, \134.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


_OCTAL = re.compile(r"\\([0-7]{3})")


def mount_of(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount `path` lives on: the last one over the longest prefix."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = path == point or path.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def polling_reason(
    directory: Path,
    requested: bool | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    mounts: Sequence[Mount] | None = None,
    container: bool | None = None,
) -> str | None:
    """Why `directory` is to be polled, or None for filesystem events."""
    if requested is not None:
        return "--watch-polling" if requested else None
    forced = environ.get("WATCHFILES_FORCE_POLLING")
    if forced:
        off = forced.lower() in ("false", "disable", "disabled")
        return None if off else "WATCHFILES_FORCE_POLLING"
    if mounts is None:
        try:
            mounts = parse_mountinfo(MOUNTINFO.read_text())
        except OSError:  # not Linux: watchfiles picks its platform's events
            return None
    mount = mount_of(os.path.realpath(directory), mounts)
    if mount is None:
        return None
    if mount.fstype.split(".")[0] in NO_EVENT_FILESYSTEMS:
        return f"{mount.fstype} filesystem at {mount.mount_point}"
    container = in_container() if container is None else container
    if container and mount.root != "/":
        return f"bind-mounted into this container at {mount.mount_point}"
    return None


async def config_changes(
    directory: Path | Sequence[Path],
    *,
    quiet: float = 0.1,
    max_wait: float = 10.0,
    stop: asyncio.Event | None = None,
    polling: bool | None = None,
) -> AsyncIterator[set[str]]:
    """Yield the changed YAML paths once the paths have been quiet for `quiet`
    seconds, or after `max_wait` seconds of constant change. Several files and
    directories may be given: a file is watched through its folder (editors replace
    files by rename), and only its own changes count. `polling`: force (True) or
    forbid (False) polling; None decides per path (`polling_reason`), and one path
    that needs polling makes every path polled."""
    given = [directory] if isinstance(directory, Path) else [Path(p) for p in directory]
    shown = ", ".join(str(p) for p in given)
    reasons = [r for p in given if (r := polling_reason(p, polling)) is not None]
    if reasons:
        log.info("watching %s by polling every %s s (%s)", shown, POLL_INTERVAL, reasons[0])
        async for paths in poll_changes(given, quiet=quiet, max_wait=max_wait, stop=stop):
            yield paths
        return
    log.info("watching %s by filesystem events", shown)
    roots = {p.resolve() if p.is_dir() else p.resolve().parent for p in given}
    dirs = [str(p.resolve()) for p in given if p.is_dir()]
    files = {str(p.resolve()) for p in given if not p.is_dir()}

    def wanted(change: watchfiles.Change, path: str) -> bool:
        if not _is_config(change, path):
            return False
        return path in files or any(path.startswith(d + "/") for d in dirs)

    async for changes in watchfiles.awatch(
        *sorted(roots),
        watch_filter=wanted,
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


def scan(paths: Path | Sequence[Path], now_ns: int | None = None) -> dict[str, FileState]:
    """The YAML files the loader would read (hidden entries skipped), and their state:
    every file under a directory given, and each file given by name."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    racy_ns = int(RACY_SECONDS * 1e9)
    found: dict[str, FileState] = {}
    for given in [paths] if isinstance(paths, Path) else paths:
        if not given.is_dir():
            if (state := _file_state(str(given), now_ns, racy_ns)) is not None:
                found[str(given)] = state
            continue
        for root, dirs, files in os.walk(given):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith(".") or not name.endswith(YAML_SUFFIXES):
                    continue
                path = os.path.join(root, name)
                if (state := _file_state(path, now_ns, racy_ns)) is not None:
                    found[path] = state
    return found


def _file_state(path: str, now_ns: int, racy_ns: int) -> FileState | None:
    try:
        st = os.stat(path)  # through symlinks: a ConfigMap's swap changes the inode
        digest = None
        if now_ns - st.st_mtime_ns < racy_ns:
            with open(path, "rb") as f:
                digest = hashlib.blake2b(f.read(), digest_size=16).digest()
    except OSError:  # gone between the listing and the stat: a change anyway
        return None
    return FileState(st.st_size, st.st_ino, st.st_mtime_ns, digest)


def changed_paths(before: Mapping[str, FileState], after: Mapping[str, FileState]) -> set[str]:
    changed = set(before.keys() ^ after.keys())
    changed.update(p for p in before.keys() & after.keys() if not after[p].same_as(before[p]))
    return changed


async def poll_changes(
    directory: Path | Sequence[Path],
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
