"""Shared encodings and memoized versions: same bytes and versions as computing afresh."""

from __future__ import annotations

import hashlib

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse, DiscoveryResponse

from tests.protocol.helpers import cluster
from xds_server import xds_types as T
from xds_server.cache.resource import set_version
from xds_server.protocol.encoding import EncodedSets, VersionMemo
from xds_server.protocol.events import DeltaResponse, SotwResponse


def _old_set_version(items: list[tuple[str, str]]) -> str:
    # The original four-updates-per-pair algorithm: versions must not change.
    h = hashlib.blake2b(digest_size=8)
    for name, version in sorted(items):
        h.update(name.encode())
        h.update(b"\0")
        h.update(version.encode())
        h.update(b"\n")
    return h.hexdigest()


def test_set_version_unchanged() -> None:
    items = [("b", "2"), ("a", "1"), ("ü", "3")]
    assert set_version(items) == _old_set_version(items)
    assert set_version([]) == _old_set_version([])


def test_cached_encoding_is_the_protobuf_encoding() -> None:
    resources = tuple(cluster(f"c{i}") for i in range(40))
    version = set_version((r.name, r.version) for r in resources)
    for nonce in ("1", "2"):  # the second one is a cache hit
        data = SotwResponse(T.CLUSTER, version, nonce, resources, version).encode()
        plain = SotwResponse(T.CLUSTER, version, nonce, resources).encode()
        assert data == plain
        parsed = DiscoveryResponse.FromString(data)
        assert parsed.nonce == nonce and parsed.version_info == version
        assert [a.value for a in parsed.resources] == [
            r.message.SerializeToString(deterministic=True) for r in resources
        ]
    delta = DeltaResponse(T.CLUSTER, version, "3", resources, ("gone",), version).encode()
    parsed_delta = DeltaDiscoveryResponse.FromString(delta)
    assert [r.name for r in parsed_delta.resources] == [r.name for r in resources]
    assert list(parsed_delta.removed_resources) == ["gone"]


def test_encoded_sets_evict_within_budget() -> None:
    sets = EncodedSets(budget=100)
    assert sets.get(("t", "a", False), lambda: b"x" * 20) == b"x" * 20
    assert sets.get(("t", "a", False), lambda: b"never built") == b"x" * 20
    for key in "bcdef":
        sets.get(("t", key, False), lambda: b"y" * 20)
    assert sets.get(("t", "a", False), lambda: b"rebuilt") == b"rebuilt"  # evicted
    assert sets.get(("t", "big", False), lambda: b"z" * 60) == b"z" * 60
    assert sets.get(("t", "big", False), lambda: b"again") == b"again"  # never kept


def test_version_memo_never_answers_for_another_set() -> None:
    memo = VersionMemo(budget=1000)
    big = {f"c{i}": cluster(f"c{i}") for i in range(VersionMemo.SMALL + 5)}
    expected = set_version((n, r.version) for n, r in big.items())
    assert memo.of_resources(big) == expected
    assert memo.of_resources(big) == expected  # the same mapping: by identity
    assert memo.of_resources(dict(big)) == expected  # an equal set: from the memo
    changed = {**big, "c0": cluster("c0", timeout=9)}
    assert memo.of_resources(changed) == set_version((n, r.version) for n, r in changed.items())
    held = {n: r.version for n, r in big.items()}
    assert memo.of_versions(held) == expected
    small = {"a": "1"}
    assert memo.of_versions(small) == set_version(small.items())
