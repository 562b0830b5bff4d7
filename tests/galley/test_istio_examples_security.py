"""Istio's own examples of the security kinds, validated one file at a time.

`tests/galley/istio_examples/<kind>/` holds a document set per example of Istio's API
reference pages (the comments of istio/api's protos) and of its security tasks
(istio/istio.io), each naming its source in its first line. Every one must load
without an error: nothing Istio accepts is rejected, nothing is refused as "not
supported". Key sets at https URLs are not fetched here (no network in tests): the
fetch fails at once and, as in Istio, only warns (the issuer's tokens are refused).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.galley.jwks import JwksFetcher
from xds_server.galley.loader import load_paths

EXAMPLES = Path(__file__).parent / "istio_examples"
# The security kinds' folders (the other kinds' examples have their own test modules).
KINDS = ("authorization_policy", "request_authentication", "peer_authentication", "mesh_config")
FILES = sorted(path for kind in KINDS for path in (EXAMPLES / kind).glob("*.yaml"))


def offline(url: str, timeout: float) -> bytes:
    raise OSError("no network in tests")


def test_every_kind_has_examples() -> None:
    assert {path.parent.name for path in FILES} == set(KINDS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_istio_example_loads(path: Path) -> None:
    assert path.read_text().startswith("# Source: "), "each example names where it comes from"
    result = load_paths([path], jwks=JwksFetcher(http_get=offline))
    assert result.errors == (), "\n".join(str(e) for e in result.errors)
    assert result.config is not None
    for warning in result.warnings:
        # Warnings name what Istio itself would do (no key set, a selector with no
        # workload here), never a field left unread.
        assert "not supported" not in warning.message, warning
        assert not warning.message.startswith("has no effect"), warning
