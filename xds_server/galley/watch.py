"""Watching the config directory: batches of file changes, debounced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import watchfiles

log = logging.getLogger("pocketmesh.galley")

YAML_SUFFIXES = (".yaml", ".yml")


def _is_config(_change: watchfiles.Change, path: str) -> bool:
    return path.endswith(YAML_SUFFIXES)


async def config_changes(
    directory: Path | Sequence[Path],
    *,
    quiet: float = 0.1,
    max_wait: float = 10.0,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[set[str]]:
    """Yield the changed YAML paths once the directory has been quiet for `quiet`
    seconds, or after `max_wait` seconds of constant change. Several files and
    directories may be given: a file is watched through its folder (editors replace
    files by rename), and only its own changes count."""
    given = [directory] if isinstance(directory, Path) else [Path(p) for p in directory]
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
        # Editors replace files by rename; polling-free inotify copes with that.
        recursive=True,
    ):
        yield {path for _, path in changes}
