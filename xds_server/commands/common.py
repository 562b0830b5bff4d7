"""Defaults and helpers shared by the subcommands."""

from __future__ import annotations

import sys

from xds_server.galley.loader import LoadResult, load_paths
from xds_server.galley.model import MeshConfig

DEFAULT_CONFIG = "config/demo"


def load_or_report(path: str) -> MeshConfig | None:
    """Load a config directory; print its errors to stderr and return None if invalid."""
    result: LoadResult = load_paths([path])
    if result.config is None:
        for err in result.errors:
            print(err, file=sys.stderr)
    return result.config
