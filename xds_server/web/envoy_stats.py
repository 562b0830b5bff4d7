"""Traffic as each Envoy counts it: parsing its admin output, and rates over a window.

Pure: the poller (web/poller.py) fetches, this parses and computes. From each proxy:

- `/clusters?format=json`: per upstream host of every cluster, `rq_total` and
  `rq_error` (responses with a 5xx status), the only place Envoy counts requests per
  endpoint: an edge from this proxy to the workload at that address;
- `/stats?format=json&usedonly&filter=...` (`STATS_FILTER`): per cluster the 403s it
  received (`upstream_rq_403`), the requests its own RBAC filters denied, and, for a
  gateway, the requests its listeners received from outside the mesh.

Counters are cumulative since Envoy started; a counter that went down means Envoy
restarted, and counts from zero again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Envoy's /stats filter is an RE2 regular expression.
STATS_FILTER = (
    r"^(cluster\..*\.upstream_rq_403|.*rbac.*denied|http\.[^.]+\.downstream_rq_(total|5xx))$"
)
_EXCLUDED_PREFIXES = ("http.admin.",)

HostKey = tuple[str, str]  # (cluster, host address)


@dataclass(frozen=True, slots=True)
class ProxyStats:
    at: float  # monotonic seconds when sampled
    hosts: Mapping[HostKey, tuple[int, int]]  # -> (requests, 5xx responses)
    cluster_403: Mapping[str, int]
    rbac_denied: int
    downstream: tuple[int, int]  # requests received by non-admin listeners, and their 5xx


def parse(at: float, clusters_doc: Mapping[str, Any], stats_doc: Mapping[str, Any]) -> ProxyStats:
    hosts = parse_clusters(clusters_doc)
    cluster_403, denied, downstream = parse_stats(stats_doc)
    return ProxyStats(at, hosts, cluster_403, denied, downstream)


def parse_clusters(doc: Mapping[str, Any]) -> dict[HostKey, tuple[int, int]]:
    out: dict[HostKey, tuple[int, int]] = {}
    for cluster in doc.get("cluster_statuses", ()):
        name = cluster.get("name", "")
        if not name.startswith("outbound|"):
            continue
        for host in cluster.get("host_statuses", ()):
            address = host.get("address", {}).get("socket_address", {}).get("address", "")
            if not address:
                continue
            values = {s.get("name"): _int(s.get("value")) for s in host.get("stats", ())}
            total, errors = values.get("rq_total", 0), values.get("rq_error", 0)
            before = out.get((name, address), (0, 0))
            out[(name, address)] = (before[0] + total, before[1] + errors)
    return out


def parse_stats(doc: Mapping[str, Any]) -> tuple[dict[str, int], int, tuple[int, int]]:
    cluster_403: dict[str, int] = {}
    denied = 0
    requests = errors = 0
    for stat in doc.get("stats", ()):
        name = stat.get("name")
        if not isinstance(name, str) or name.startswith(_EXCLUDED_PREFIXES):
            continue
        value = _int(stat.get("value"))
        if name.startswith("cluster.") and name.endswith(".upstream_rq_403"):
            cluster = name[len("cluster.") : -len(".upstream_rq_403")]
            # `<cluster>.external.` / `.internal.` split the same requests again.
            if cluster.endswith((".external", ".internal")):
                continue
            cluster_403[cluster] = value
        elif "rbac" in name and name.endswith("denied") and "shadow" not in name:
            denied += value
        elif name.startswith("http.") and name.endswith(".downstream_rq_total"):
            requests += value
        elif name.startswith("http.") and name.endswith(".downstream_rq_5xx"):
            errors += value
    return cluster_403, denied, (requests, errors)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class Flow:
    """Requests from one proxy through one cluster to one address."""

    source: str
    cluster: str
    address: str
    rps: float  # over the window
    errors: float | None  # 5xx ratio over the window; None: no request in it
    total: int  # since the proxy started
    forbidden: int  # 403s the proxy got from this cluster since it started


@dataclass(frozen=True, slots=True)
class Ingress:
    """Requests a gateway received from outside the mesh."""

    gateway: str
    rps: float
    errors: float | None
    total: int


class TrafficWindow:
    """Each proxy's recent samples; rates over the last `window` seconds."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: dict[str, deque[ProxyStats]] = {}

    def add(self, node_id: str, stats: ProxyStats) -> None:
        samples = self._samples.setdefault(node_id, deque(maxlen=64))
        samples.append(stats)
        while len(samples) > 2 and stats.at - samples[1].at >= self.window:
            samples.popleft()

    def keep(self, node_ids: Iterable[str]) -> None:
        """Forget proxies no longer connected."""
        alive = set(node_ids)
        for node_id in [n for n in self._samples if n not in alive]:
            del self._samples[node_id]

    def latest(self, node_id: str) -> ProxyStats | None:
        samples = self._samples.get(node_id)
        return samples[-1] if samples else None

    def denied(self, node_id: str) -> int:
        latest = self.latest(node_id)
        return latest.rbac_denied if latest is not None else 0

    def flows(self) -> list[Flow]:
        out = []
        for node_id, samples in sorted(self._samples.items()):
            new, old = samples[-1], self._oldest(samples)
            for key, (total, errors) in sorted(new.hosts.items()):
                if total == 0:
                    continue
                before = old.hosts.get(key, (0, 0)) if old is not None else None
                rps, ratio = _rates(new.at, total, errors, old.at if old else 0.0, before)
                cluster, address = key
                out.append(
                    Flow(node_id, cluster, address, rps, ratio, total,
                         new.cluster_403.get(cluster, 0))
                )  # fmt: skip
        return out

    def ingress(self, gateways: Iterable[str]) -> list[Ingress]:
        out = []
        for node_id in gateways:
            samples = self._samples.get(node_id)
            if not samples or not samples[-1].downstream[0]:
                continue
            new, old = samples[-1], self._oldest(samples)
            before = old.downstream if old is not None else None
            total, errors = new.downstream
            rps, ratio = _rates(new.at, total, errors, old.at if old else 0.0, before)
            out.append(Ingress(node_id, rps, ratio, total))
        return out

    def _oldest(self, samples: deque[ProxyStats]) -> ProxyStats | None:
        """The sample the window's rates start from (None: only one sample yet)."""
        if len(samples) < 2:
            return None
        newest = samples[-1].at
        for sample in samples:
            if newest - sample.at <= self.window:
                return sample if sample is not samples[-1] else samples[-2]
        return samples[-2]


def _rates(
    now: float, total: int, errors: int, then: float, before: tuple[int, int] | None
) -> tuple[float, float | None]:
    if before is None or now <= then:
        return 0.0, None
    if total < before[0] or errors < before[1]:
        before = (0, 0)  # Envoy restarted
    requests = total - before[0]
    if requests <= 0:
        return 0.0, None
    return requests / (now - then), (errors - before[1]) / requests
