"""Helpers for the CA tests (a uniquely named module, importable from tests/ca)."""

from __future__ import annotations

from datetime import UTC, datetime

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
WEB = "spiffe://cluster.local/ns/default/sa/web"
