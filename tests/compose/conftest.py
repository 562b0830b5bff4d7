"""tests/compose: the compose demo on a real Docker engine (marker `docker`)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "docker: needs a Docker engine and compose (.ci/docker-up); skipped without one "
        "unless CI=true, where it fails instead",
    )
