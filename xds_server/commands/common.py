"""Defaults and helpers shared by the subcommands."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from xds_server.galley.loader import LoadResult, load_paths
from xds_server.galley.model import MeshConfig

DEFAULT_CONFIG = "config/demo"


def load_or_report(path: str | Iterable[str | Path]) -> MeshConfig | None:
    """Load config paths; print their errors to stderr and return None if invalid."""
    result: LoadResult = load_paths([path] if isinstance(path, str) else list(path))
    if result.config is None:
        for err in result.errors:
            print(err, file=sys.stderr)
    return result.config


def missing_paths(paths: Iterable[Path]) -> str:
    """The given config paths that do not exist, comma-separated ('' if none)."""
    return ", ".join(str(p) for p in paths if not p.exists())
