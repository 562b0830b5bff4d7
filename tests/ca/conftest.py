"""Shared fixtures for the CA tests: a manual clock, a seeded jitter source, CAs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ca import CertificateAuthority, ManualClock
from tests.ca.ca_testkit import T0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def mid_rng() -> Callable[[], float]:
    """No jitter: renewal lands exactly at half-life."""
    return lambda: 0.5


@pytest.fixture
def ca(clock: ManualClock, mid_rng: Callable[[], float]) -> CertificateAuthority:
    return CertificateAuthority.in_memory("cluster.local", clock=clock, rng=mid_rng)
