"""Which DestinationRule a proxy uses for a host: Istio's destination rule index.

The rules of Istio's `PushContext.setDestinationRules` / `destinationRule` and
`SidecarScope.DestinationRule`, over the model:

- exportTo decides where a rule is seen: empty or `*` everywhere; `.` (or the rule's
  own namespace) there only; namespace names there and in those namespaces. A rule
  with a workloadSelector is never exported: it applies in its own namespace only.
- A proxy in namespace N looks, most specific host first, at the rules of N; then at
  the rules the service's namespace exports to N; then at those the root namespace
  (istio-system) exports to N.
- Several rules for the same host in one place are merged, in order (selector rules
  first, then by name, standing in for Istio's creation time): the first one's
  traffic policy wins, subsets are concatenated (the first of a name wins); rules with
  different workload selectors, or exportTo that cannot merge, stay apart.
- Among the rules found, the one whose workloadSelector matches the proxy (and is in
  the proxy's namespace) wins; else the last one without a selector.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from xds_server.galley.model import labels_match
from xds_server.galley.model_traffic import DestinationRule, Subset

PRIVATE = "."
PUBLIC = "*"


@dataclass(eq=False, slots=True)
class Consolidated:
    """One rule as Istio keeps it: maybe several documents merged into one."""

    rule: DestinationRule
    export_to: frozenset[str]
    sources: list[DestinationRule] = field(default_factory=list)

    @property
    def selector(self) -> Mapping[str, str] | None:
        return self.rule.workload_selector


# host -> the consolidated rules for it, in order
_Bucket = dict[str, list[Consolidated]]


class DestinationRuleIndex:
    __slots__ = ("_exported", "_local", "_root", "_root_local", "rules")

    def __init__(self, rules: Iterable[DestinationRule], root_namespace: str) -> None:
        # Istio sorts by selector first, then creation time; names stand in for time.
        self.rules = sorted(
            rules,
            key=lambda r: (r.workload_selector is None, r.meta.namespace, r.meta.name),
        )
        self._root = root_namespace
        self._local: dict[str, _Bucket] = defaultdict(dict)
        self._exported: dict[str, _Bucket] = defaultdict(dict)
        self._root_local: _Bucket = {}
        for rule in self.rules:
            namespace = rule.meta.namespace
            export = (
                frozenset(rule.export_to) if rule.workload_selector is None else frozenset({"."})
            )
            if not export or export & {PUBLIC, PRIVATE, namespace}:
                _merge(self._local[namespace], rule, export)
            private_only = len(export) == 1 and bool(export & {PRIVATE, namespace})
            if not private_only:
                _merge(self._exported[namespace], rule, export)
            elif namespace == root_namespace:
                _merge(self._root_local, rule, export)

    def candidates(
        self, host: str, proxy_namespace: str, service_namespace: str
    ) -> list[Consolidated]:
        """Istio's PushContext.destinationRule: the rules a proxy's namespace sees."""
        if proxy_namespace != self._root:
            found = _most_specific(host, self._local.get(proxy_namespace))
        else:
            found = _most_specific(host, self._root_local)
        if found:
            return found
        for owner in (service_namespace, self._root):
            if not owner:
                continue
            exported = [
                c
                for c in _most_specific(host, self._exported.get(owner))
                if not c.export_to or PUBLIC in c.export_to or proxy_namespace in c.export_to
            ]
            if exported:
                return exported
        return []

    def lookup(
        self,
        host: str,
        proxy_namespace: str,
        service_namespace: str,
        labels: Mapping[str, str],
    ) -> DestinationRule | None:
        """The rule a proxy with `labels` in `proxy_namespace` uses for `host`."""
        catch_all: Consolidated | None = None
        for candidate in self.candidates(host, proxy_namespace, service_namespace):
            selector = candidate.selector
            if selector is None:
                catch_all = candidate
            elif candidate.rule.meta.namespace == proxy_namespace and labels_match(
                selector, labels
            ):
                return candidate.rule
        return None if catch_all is None else catch_all.rule

    def selectors(self, namespace: str) -> list[DestinationRule]:
        """The rules with a workloadSelector in `namespace` (they split its proxies)."""
        return [
            r
            for r in self.rules
            if r.workload_selector is not None and r.meta.namespace == namespace
        ]


def _most_specific(host: str, bucket: _Bucket | None) -> list[Consolidated]:
    """Istio's MostSpecificHostMatch: the exact host, else the longest wildcard."""
    if not bucket:
        return []
    host = host.lower()
    exact = bucket.get(host)
    if exact is not None:
        return exact
    needle = host[1:] if host.startswith("*") else host
    best: str | None = None
    for pattern in bucket:
        wider = best is not None and len(pattern) <= len(best)
        if pattern.startswith("*") and needle.endswith(pattern[1:]) and not wider:
            best = pattern
    return bucket[best] if best is not None else []


def _merge(bucket: _Bucket, rule: DestinationRule, export: frozenset[str]) -> None:
    """Istio's mergeDestinationRule (with its enhanced exportTo merge, the default)."""
    existing = bucket.get(rule.host)
    if existing is None:
        bucket[rule.host] = [Consolidated(rule, export, [rule])]
        return
    separately = True
    for mdr in existing:
        if export == mdr.export_to:
            separately = False
        elif mdr.export_to and export >= mdr.export_to:
            separately = True  # merged into it, and kept on its own too
        else:
            separately = True
            continue
        mine, theirs = rule.workload_selector, mdr.selector
        if mine is not None and theirs is not None and dict(mine) != dict(theirs):
            separately = True
            continue
        if (mine is None and theirs is None) or (mine is not None and theirs is not None):
            separately = False
        mdr.rule = _merged(mdr.rule, rule)
        mdr.sources.append(rule)
    if separately:
        existing.append(Consolidated(rule, export, [rule]))


def _merged(first: DestinationRule, later: DestinationRule) -> DestinationRule:
    names = {s.name for s in first.subsets}
    subsets: list[Subset] = list(first.subsets)
    subsets += [s for s in later.subsets if s.name not in names]
    policy = first.traffic_policy if first.traffic_policy is not None else later.traffic_policy
    return dataclasses.replace(first, subsets=tuple(subsets), traffic_policy=policy)
