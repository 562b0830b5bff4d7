"""Encoded resource lists and content versions, shared between the responses that
carry the same set.

Many proxies are sent the same set of resources (every proxy of a namespace, or
every proxy of an unscoped mesh): the length-prefixed resource fields of such a
response are joined once and reused. The key is the response's content version
(a hash of every (name, version) pair in it), so an entry can never be stale,
only unused; the least recently used entries go once the byte budget is spent.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping

from xds_server.cache.resource import Resource, set_version

DEFAULT_BUDGET = 64 << 20  # bytes


class EncodedSets:
    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self._budget = budget
        self._size = 0
        self._entries: OrderedDict[tuple[str, str, bool], bytes] = OrderedDict()
        self._lock = threading.Lock()  # the debug server may encode off the loop
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, bool], build: Callable[[], bytes]) -> bytes:
        """The bytes for `key` (type_url, content version, delta?), built on first use."""
        with self._lock:
            body = self._entries.get(key)
            if body is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return body
        body = build()
        with self._lock:
            self.misses += 1
            if len(body) > self._budget // 4:
                return body  # one huge set would evict everything: do not keep it
            if key not in self._entries:
                self._entries[key] = body
                self._size += len(body)
            while self._size > self._budget:
                _, old = self._entries.popitem(last=False)
                self._size -= len(old)
        return body


# One per process: keys are content hashes, valid across snapshots.
shared = EncodedSets()


class VersionMemo:
    """Content versions of large resource sets, remembered by the set itself.

    Hashing a set means sorting and formatting every (name, version) pair; many
    proxies are sent equal sets. The key is a frozenset of the pairs, compared by
    equality (so never a false hit), and holds its resources alive while cached.
    """

    SMALL = 32  # below this, hashing directly is as cheap as a lookup by content

    def __init__(self, budget: int = 500_000) -> None:
        self._budget = budget  # total pairs held, in each of the two memos
        self._size = 0
        self._entries: OrderedDict[frozenset[tuple[str, object]], str] = OrderedDict()
        self._by_identity: OrderedDict[int, tuple[Mapping[str, Resource], str]] = OrderedDict()
        self._identity_size = 0
        self._lock = threading.Lock()

    def of_resources(self, items: Mapping[str, Resource]) -> str:
        """set_version of name -> Resource (SotW's wanted set)."""
        # Views are immutable and the snapshot shares equal sets between proxies (the
        # 20 proxies of a namespace, every proxy of an unscoped mesh): the very same
        # mapping is the cheapest hit. The entry holds the mapping, so its id cannot
        # be reused while the entry lives.
        entry = self._by_identity.get(id(items))
        if entry is not None and entry[0] is items:
            return entry[1]
        if len(items) < self.SMALL:
            version = set_version((n, r.version) for n, r in items.items())
        else:
            version = self._memo(
                frozenset(items.items()),
                lambda: set_version((n, r.version) for n, r in items.items()),
            )
        with self._lock:
            if id(items) not in self._by_identity:
                self._by_identity[id(items)] = (items, version)
                self._identity_size += len(items) + 1
            while self._identity_size > self._budget:
                _, (old, _) = self._by_identity.popitem(last=False)
                self._identity_size -= len(old) + 1
        return version

    def of_versions(self, items: Mapping[str, str]) -> str:
        """set_version of name -> version (what a Delta client holds)."""
        if len(items) < self.SMALL:
            return set_version(items.items())
        return self._memo(frozenset(items.items()), lambda: set_version(items.items()))

    def _memo(self, key: frozenset[tuple[str, object]], compute: Callable[[], str]) -> str:
        with self._lock:
            version = self._entries.get(key)
            if version is not None:
                self._entries.move_to_end(key)
                return version
        version = compute()
        with self._lock:
            if key not in self._entries and len(key) <= self._budget // 4:
                self._entries[key] = version
                self._size += len(key)
                while self._size > self._budget:
                    old, _ = self._entries.popitem(last=False)
                    self._size -= len(old)
        return version


versions = VersionMemo()
