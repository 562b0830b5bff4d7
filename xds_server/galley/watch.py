"""Watching the config directory: batches of file changes, debounced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import watchfiles

log = logging.getLogger("pocketmesh.galley")

YAML_SUFFIXES = (".yaml", ".yml")


def _is_config(_change: watchfiles.Change, path: str) -> bool:
    return path.endswith(YAML_SUFFIXES)


async def config_changes(
    directory: Path,
    *,
    quiet: float = 0.1,
    max_wait: float = 10.0,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[set[str]]:
    """Yield the changed YAML paths once the directory has been quiet for `quiet`
    seconds, or after `max_wait` seconds of constant change."""
    async for changes in watchfiles.awatch(
        directory,
        watch_filter=_is_config,
        step=max(1, int(quiet * 1000)),
        debounce=max(1, int(max_wait * 1000)),
        stop_event=stop,
        # Editors replace files by rename; polling-free inotify copes with that.
        recursive=True,
    ):
        yield {path for _, path in changes}
