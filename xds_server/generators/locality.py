"""Locality load balancing: EDS priorities and locality weights for the calling proxy.

Istio's `networking/core/loadbalancer` rules, over our ClusterLoadAssignments:

- the effective setting is the DestinationRule's `localityLbSetting`, else the mesh
  default (Istio's `meshConfig.localityLbSetting: {enabled: true}`); `enabled: false`
  turns it off;
- `distribute` sets each locality's weight for proxies in the `from` locality;
- otherwise, only when the policy has outlierDetection (without it Envoy never leaves
  priority 0): `failoverPriority` splits endpoints by the labels they share with the
  proxy, and `failover` (or the default) ranks localities: same region/zone/subzone 0,
  same region/zone 1, same region 2, the `to` region of a `failover` entry naming the
  proxy's region 3, any other 4; the priorities are then renumbered 0..N.

A proxy's locality is its WorkloadEntry's `locality`; an endpoint's is its workload's.
Like Istio, endpoint and proxy labels are augmented with the topology labels of their
locality, so `failoverPriority: [topology.kubernetes.io/region]` works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from xds_server.galley.model_traffic import LocalityLbSetting, TrafficPolicy, ZoneAwareLbSetting

ClusterLoadAssignment: TypeAlias = endpoint_pb2.ClusterLoadAssignment
LocalityLbEndpoints: TypeAlias = endpoint_components_pb2.LocalityLbEndpoints

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
# The mesh default when no DestinationRule says otherwise (Istio's meshConfig).
MESH_DEFAULT = LocalityLbSetting(enabled=True)


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    @classmethod
    def parse(cls, value: str) -> Locality:
        region, _, rest = value.partition("/")
        zone, _, sub_zone = rest.partition("/")
        return cls(region, zone, sub_zone)

    def matches(self, rule: str) -> bool:
        """Istio's LocalityMatch: `region[/zone[/subzone]]`, `*` matching anything."""
        region, zone, sub_zone = Locality.parse(rule).parts
        return (
            region in ("*", self.region)
            and zone in ("*", "", self.zone)
            and sub_zone in ("*", "", self.sub_zone)
        )

    @property
    def parts(self) -> tuple[str, str, str]:
        return (self.region, self.zone, self.sub_zone)


def topology_labels(labels: Mapping[str, str], locality: str) -> dict[str, str]:
    """`labels` plus the topology labels of `locality` (Istio's AugmentLabels)."""
    out = dict(labels)
    where = Locality.parse(locality)
    for key, value in ((REGION_LABEL, where.region), (ZONE_LABEL, where.zone),
                       (SUBZONE_LABEL, where.sub_zone)):  # fmt: skip
        if value:
            out.setdefault(key, value)
    return out


def effective(policy: TrafficPolicy | None) -> LocalityLbSetting | None:
    """The locality setting in force for a cluster with `policy` (None: off; also when
    zone-aware load balancing takes its place, see `zone_aware`)."""
    if zone_aware(policy) is not None:
        return None
    setting = policy.locality_lb if policy is not None else None
    if setting is None:
        return MESH_DEFAULT
    return None if setting.enabled is False else setting


def zone_aware(policy: TrafficPolicy | None) -> ZoneAwareLbSetting | None:
    """The rule's zoneAwareLbSetting, if it has one (it wins over localityLbSetting)."""
    return policy.zone_aware if policy is not None else None


def zone_routing(policy: TrafficPolicy | None) -> bool:
    """Zone-aware load balancing on: Istio forces its failover (no outlier needed)."""
    setting = zone_aware(policy)
    return setting is not None and setting.enabled is not False


def failover_enabled(policy: TrafficPolicy | None) -> bool:
    """Istio: failover only with outlier detection, or Envoy would never fail over."""
    return policy is not None and policy.outlier_detection is not None


def weighted(policy: TrafficPolicy | None) -> bool:
    """Whether the cluster needs Envoy's locality-weighted load balancing (Istio's rule)."""
    setting = effective(policy)
    if setting is None:
        return False
    if setting.distribute:
        return True
    return failover_enabled(policy) and bool(setting.failover or setting.failover_priority)


def per_proxy(policy: TrafficPolicy | None) -> bool:
    """Whether the endpoints of a cluster with `policy` depend on the calling proxy."""
    if zone_routing(policy):
        return True
    setting = effective(policy)
    if setting is None:
        return False
    return bool(setting.distribute) or failover_enabled(policy)


def priority_labels(policy: TrafficPolicy | None) -> tuple[str, ...]:
    """The proxy labels failoverPriority compares (their values change the output)."""
    zone = zone_aware(policy)
    if zone is not None:
        names = zone.failover_priority if zone_routing(policy) else ()
        return tuple(name.partition("=")[0] for name in names)
    setting = effective(policy)
    if setting is None or setting.distribute or not failover_enabled(policy):
        return ()
    return tuple(name.partition("=")[0] for name in setting.failover_priority)


# One endpoint group as built: its locality and, per endpoint, the endpoint's labels.
Group = tuple[LocalityLbEndpoints, tuple[Mapping[str, str], ...]]


def apply(
    cla: ClusterLoadAssignment,
    groups: Sequence[Group],
    policy: TrafficPolicy | None,
    proxy_locality: str,
    proxy_labels: Mapping[str, str],
) -> None:
    """Give `cla` (built from `groups`, in order) the priorities and weights of `policy`
    as seen from a proxy in `proxy_locality` with `proxy_labels` (in place)."""
    zone = zone_aware(policy)
    if zone is not None:
        if zone_routing(policy):
            if zone.failover_priority:
                _failover_priority(cla, groups, topology_labels(proxy_labels, proxy_locality),
                                   zone.failover_priority)  # fmt: skip
            _regions(cla, Locality.parse(proxy_locality), zone.failover)
        return
    setting = effective(policy)
    if setting is None:
        return
    where = Locality.parse(proxy_locality)
    if setting.distribute:
        _distribute(cla, where, setting)
        return
    if not failover_enabled(policy):
        return
    if setting.failover_priority:
        _failover_priority(cla, groups, topology_labels(proxy_labels, proxy_locality),
                           setting.failover_priority)  # fmt: skip
        if setting.failover:
            _failover(cla, where, setting.failover)
    else:
        _failover(cla, where, setting.failover)


def _locality_of(group: LocalityLbEndpoints) -> Locality:
    loc = group.locality
    return Locality(loc.region, loc.zone, loc.sub_zone)


def _distribute(cla: ClusterLoadAssignment, where: Locality, setting: LocalityLbSetting) -> None:
    """Istio's applyLocalityWeights: the first `distribute` entry matching the proxy."""
    for rule in setting.distribute:
        if not where.matches(rule.source):
            continue
        unmatched = set(range(len(cla.endpoints)))
        for target, weight in rule.to:
            chosen: dict[int, int] = {}
            for i in sorted(unmatched):
                group = cla.endpoints[i]
                if _locality_of(group).matches(target):
                    chosen[i] = group.load_balancing_weight.value or 1
            unmatched -= set(chosen)
            total = sum(chosen.values())
            for i, original in chosen.items():
                share = original * weight / total
                if share > 0:
                    cla.endpoints[i].load_balancing_weight.value = math.ceil(share)
        for i in unmatched:  # localities the rule sends nothing to
            del cla.endpoints[i].lb_endpoints[:]
        return


def _failover(
    cla: ClusterLoadAssignment, where: Locality, failover: tuple[tuple[str, str], ...]
) -> None:
    """Istio's applyLocalityFailover, composed with priorities already set (x5)."""
    by_priority: dict[int, list[int]] = {}
    for i, group in enumerate(cla.endpoints):
        theirs = _locality_of(group)
        if theirs.region != where.region:
            priority = 3
            for source, target in failover:
                if source == where.region:
                    if theirs.region != target:
                        priority = 4
                    break
        elif theirs.zone != where.zone:
            priority = 2
        elif theirs.sub_zone != where.sub_zone:
            priority = 1
        else:
            priority = 0
        combined = group.priority * 5 + priority
        group.priority = combined
        by_priority.setdefault(combined, []).append(i)
    _renumber(cla, by_priority)


def _regions(
    cla: ClusterLoadAssignment, where: Locality, failover: tuple[tuple[str, str], ...]
) -> None:
    """Istio's applyZoneAwareRegionalFailover: the proxy's region 0, a `failover`
    region for it 1, any other 2; composed with priorities already set (x3)."""
    by_priority: dict[int, list[int]] = {}
    for i, group in enumerate(cla.endpoints):
        region = group.locality.region
        if region == where.region:
            priority = 0
        else:
            priority = 2
            for source, target in failover:
                if source == where.region:
                    if region == target:
                        priority = 1
                    break
        combined = group.priority * 3 + priority
        group.priority = combined
        by_priority.setdefault(combined, []).append(i)
    _renumber(cla, by_priority)


def _failover_priority(
    cla: ClusterLoadAssignment,
    groups: Sequence[Group],
    proxy_labels: Mapping[str, str],
    failover_priority: tuple[str, ...],
) -> None:
    """Istio's applyFailoverPriorities: each locality group is split by how many of the
    listed labels (in order) its endpoints share with the proxy."""
    if not groups:
        return
    names: list[str] = []
    overrides: dict[str, str] = {}
    for entry in failover_priority:
        name, sep, value = entry.partition("=")
        names.append(name)
        if sep:
            overrides[name] = value
    lowest = len(names)
    split: list[LocalityLbEndpoints] = []
    for group, endpoint_labels in groups:
        by_priority: dict[int, list[int]] = {}
        for i, labels in enumerate(endpoint_labels):
            priority = 0
            for j, name in enumerate(names):
                wanted = overrides.get(name, proxy_labels.get(name))
                if wanted != labels.get(name):
                    priority = lowest - j
                    break
            by_priority.setdefault(priority, []).append(i)
        for priority in sorted(by_priority):
            part = LocalityLbEndpoints()
            part.CopyFrom(group)
            del part.lb_endpoints[:]
            part.priority = priority
            weight = 0
            for i in by_priority[priority]:
                endpoint = group.lb_endpoints[i]
                part.lb_endpoints.append(endpoint)
                weight += endpoint.load_balancing_weight.value or 1
            part.load_balancing_weight.value = weight
            split.append(part)
    del cla.endpoints[:]
    cla.endpoints.extend(split)
    by_priority_all: dict[int, list[int]] = {}
    for i, part in enumerate(cla.endpoints):
        by_priority_all.setdefault(part.priority, []).append(i)
    _renumber(cla, by_priority_all)


def _renumber(cla: ClusterLoadAssignment, by_priority: dict[int, list[int]]) -> None:
    """Envoy's priorities run 0..N without gaps."""
    for new, old in enumerate(sorted(by_priority)):
        for i in by_priority[old]:
            cla.endpoints[i].priority = new
