"""DestinationRule `loadBalancer`: the algorithm, consistent hashing, locality, warmup.

Istio's LoadBalancerSettings with its validation (pkg/config/validation:
validateLoadBalancer, ValidateLocalityLbSetting), including the warning Istio gives
when failover is set without outlierDetection: Envoy only fails over when outlier
detection ejects the local endpoints, so failover alone never happens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..fields import Shape, deprecated, each, obj, shape, supported
from ..model_traffic import (
    ConsistentHash,
    LocalityDistribute,
    LocalityLbSetting,
    Warmup,
    ZoneAwareLbSetting,
)
from ..names import label_key_problem
from ..schema import DocChecker, Located
from .traffic_common import boolean, duration_ms

LB_SIMPLE = frozenset(
    {"UNSPECIFIED", "ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "LEAST_CONN", "PASSTHROUGH"}
)
MAX_UINT32 = 2**32 - 1
MAX_RING = 8_388_608  # Envoy's maximum_ring_size
MAGLEV_MAX_TABLE = 5_000_011  # Istio: below Envoy's limit, and prime

COOKIE_ATTRIBUTE: Shape = shape(name=supported(), value=supported())
COOKIE: Shape = shape(
    name=supported(),
    path=supported(),
    ttl=supported(),
    attributes=each(COOKIE_ATTRIBUTE, "extra Set-Cookie attributes (SameSite, Secure, ...)"),
)
HASH: Shape = shape(
    httpHeaderName=supported(),
    httpCookie=obj(COOKIE),
    useSourceIp=supported(),
    httpQueryParameterName=supported(),
    ringHash=obj(shape(minimumRingSize=supported()), "Envoy's RING_HASH"),
    maglev=obj(shape(tableSize=supported("a prime below 5000011")), "Envoy's MAGLEV"),
    minimumRingSize=deprecated("use ringHash.minimumRingSize in Istio; still the ring size here"),
)
DISTRIBUTE: Shape = shape(
    to=supported("locality -> weight; the weights sum to 100"),
    **{"from": supported("the proxies' locality: region/zone/subzone, '*' at the end")},
)
FAILOVER: Shape = shape(
    to=supported("the region to fail over to"),
    **{"from": supported("the proxies' region")},
)
LOCALITY: Shape = shape(
    distribute=each(DISTRIBUTE, "EDS locality weights, per the calling proxy's locality"),
    failover=each(FAILOVER, "EDS priorities: same region first, then `to`, then the rest"),
    failoverPriority=supported(
        "EDS priorities by the labels the endpoint shares with the calling proxy"
    ),
    enabled=supported("false turns locality load balancing off for this rule"),
)
ZONE_AWARE: Shape = shape(
    enabled=supported("false: no regional priorities, and Envoy's zone routing off"),
    failover=each(FAILOVER, "the order of the other regions"),
    failoverPriority=supported("EDS priorities by the labels shared with the proxy"),
    minClusterSize=supported("Envoy's zone_aware_lb_config.min_cluster_size"),
)
WARMUP: Shape = shape(
    duration=supported(),
    minimumPercent=supported("default 10"),
    aggression=supported("default 1.0 (linear)"),
)
SHAPE: Shape = shape(
    simple=supported(
        "ROUND_ROBIN, LEAST_REQUEST (LEAST_CONN), RANDOM, UNSPECIFIED (the default), "
        "PASSTHROUGH (Envoy ORIGINAL_DST: to the address the request names)"
    ),
    consistentHash=obj(HASH, "RING_HASH or MAGLEV; the routes hash on the key"),
    localityLbSetting=obj(LOCALITY, "per calling proxy: its WorkloadEntry's locality"),
    zoneAwareLbSetting=obj(
        ZONE_AWARE,
        "EDS priorities by region (the proxy's first, then failover's), as Istio; Envoy's "
        "zone balancing inside the region needs proxy self-discovery, which pocketmesh does "
        "not give (Istio without it): inside the region, the algorithm of `simple` applies",
    ),
    warmupDurationSecs=deprecated("use warmup.duration; Envoy's slow start window"),
    warmup=obj(WARMUP, "Envoy's slow start (ROUND_ROBIN and LEAST_REQUEST only)"),
)
HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    simple: str | None = None
    consistent_hash: ConsistentHash | None = None
    locality: LocalityLbSetting | None = None
    warmup: Warmup | None = None
    zone_aware: ZoneAwareLbSetting | None = None


def parse_load_balancer(ck: DocChecker, at: Located, *, has_outlier: bool) -> LoadBalancer:
    """`loadBalancer`; `has_outlier`: the same policy sets outlierDetection."""
    fields = ck.fields(at, SHAPE)
    if fields is None:
        return LoadBalancer()
    if "simple" in fields and "consistentHash" in fields:
        ck.error(at, "must set only one of simple, consistentHash")
    simple = None
    if (s := fields.get("simple")) is not None:
        simple = ck.enum(s, LB_SIMPLE)
        if simple == "LEAST_CONN":  # deprecated alias (Istio)
            simple = "LEAST_REQUEST"
        elif simple == "UNSPECIFIED":
            simple = None
    consistent = None
    if (c := fields.get("consistentHash")) is not None:
        consistent = _consistent_hash(ck, c)
    locality = None
    if (loc := fields.get("localityLbSetting")) is not None:
        locality = _locality(ck, loc, has_outlier=has_outlier)
    zone_aware = None
    if (zone_at := fields.get("zoneAwareLbSetting")) is not None:
        if "localityLbSetting" in fields:
            ck.error(at, "only one of localityLbSetting and zoneAwareLbSetting can be set")
        zone_aware = _zone_aware(ck, zone_at, has_outlier=has_outlier)
    warmup = None
    if "warmup" in fields:
        warmup = _warmup(ck, fields["warmup"])
        if "warmupDurationSecs" in fields:
            ck.warn(fields["warmupDurationSecs"], "ignored: warmup is set (as in Istio)")
    elif (secs := fields.get("warmupDurationSecs")) is not None:
        window = duration_ms(ck, secs)
        warmup = Warmup(window) if window is not None else None
    if warmup is not None:
        name = simple or ("consistentHash" if consistent is not None else "")
        if name in ("RANDOM", "PASSTHROUGH", "consistentHash"):
            path = "warmup" if "warmup" in fields else "warmupDurationSecs"
            ck.warn(
                fields[path], f"has no effect with {name}: Envoy's slow start works only "
                "with ROUND_ROBIN and LEAST_REQUEST (Istio ignores it too)",
            )  # fmt: skip
            warmup = None
    return LoadBalancer(simple, consistent, locality, warmup, zone_aware)


def _zone_aware(ck: DocChecker, at: Located, *, has_outlier: bool) -> ZoneAwareLbSetting | None:
    """Istio's ValidateZoneAwareLbSetting."""
    fields = ck.fields(at, ZONE_AWARE)
    if fields is None:
        return None
    before = len(ck.errors)
    enabled = boolean(ck, fields["enabled"]) if "enabled" in fields else None
    failover = _failover(ck, fields.get("failover"), "zone aware lb")
    priority: tuple[str, ...] = ()
    if (priority_at := fields.get("failoverPriority")) is not None:
        found = ck.strings(priority_at, _priority_problem) or []
        for name, item in found:
            if name.partition("=")[0] in TOPOLOGY_LABELS:
                ck.error(item, f"must not use topology label {name!r}: region- and zone-level "
                               "routing are handled automatically")  # fmt: skip
        priority = tuple(v for v, _ in found)
    size = None
    if "minClusterSize" in fields:
        size = ck.integer(fields["minClusterSize"], 0, 2**63 - 1)
    if (failover or priority) and not has_outlier:
        ck.warn(at, "outlier detection policy must be provided for failover (as Istio warns)")
    if enabled is not False:
        ck.warn(
            at,
            "the proxy's region comes first, then the failover regions (EDS priorities); "
            "Envoy's balancing between zones inside the region needs proxy self-discovery, "
            "which pocketmesh does not give: there, `simple` balances (as Istio without it)",
        )
    if len(ck.errors) > before:
        return None
    return ZoneAwareLbSetting(enabled, tuple(failover), priority, size)


def _warmup(ck: DocChecker, at: Located) -> Warmup | None:
    fields = ck.fields(at, WARMUP)
    if fields is None:
        return None
    window_at = ck.required(fields, "duration", at)
    window = duration_ms(ck, window_at) if window_at is not None else None
    minimum = _double(ck, fields.get("minimumPercent"), 0, 100)
    aggression = _double(ck, fields.get("aggression"), 0, None)
    if aggression is not None and aggression <= 0:
        ck.error(fields["aggression"], "must be greater than 0")
        return None
    if window is None:
        return None
    return Warmup(window, minimum, aggression)


def _double(ck: DocChecker, at: Located | None, low: float, high: float | None) -> float | None:
    if at is None:
        return None
    value = at.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        ck.error(at, "expected number")
        return None
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        ck.error(at, f"{value} must be {bound}")
        return None
    return float(value)


def _consistent_hash(ck: DocChecker, at: Located) -> ConsistentHash | None:
    fields = ck.fields(at, HASH)
    if fields is None:
        return None
    keys = [k for k in HASH_KEYS if k in fields]
    if len(keys) != 1:
        ck.error(at, f"must set exactly one of {', '.join(HASH_KEYS)}")
        return None
    algorithms = [k for k in ("ringHash", "maglev", "minimumRingSize") if k in fields]
    if len(algorithms) > 1:
        ck.error(at, f"must set only one of ringHash, maglev, minimumRingSize, not "
                     f"{', '.join(algorithms)}")  # fmt: skip
        return None
    ring, maglev = 0, None
    if "minimumRingSize" in fields:
        ring = ck.integer(fields["minimumRingSize"], 1, MAX_RING) or 0
    if (ring_at := fields.get("ringHash")) is not None:
        ring_fields = ck.fields(ring_at, HASH["ringHash"].fields or {}) or {}
        if "minimumRingSize" in ring_fields:
            ring = ck.integer(ring_fields["minimumRingSize"], 1, MAX_RING) or 0
    if (maglev_at := fields.get("maglev")) is not None:
        maglev_fields = ck.fields(maglev_at, HASH["maglev"].fields or {}) or {}
        size_at = maglev_fields.get("tableSize")
        if size_at is None:
            path = f"{maglev_at.path}.tableSize"
            ck.error(maglev_at, "tableSize must be set for maglev", path=path)
            return None
        size = ck.integer(size_at, 1, MAGLEV_MAX_TABLE - 1)
        if size is None:
            return None
        if not _is_prime(size):
            ck.error(size_at, f"{size} must be a prime number")
            return None
        maglev = size
    key = keys[0]
    common = ConsistentHash(minimum_ring_size=ring, maglev_table_size=maglev)
    if key == "httpHeaderName":
        header = ck.string(fields[key])
        return replace(common, http_header_name=header.lower()) if header else None
    if key == "httpQueryParameterName":
        name = ck.string(fields[key])
        return replace(common, http_query_parameter_name=name) if name else None
    if key == "useSourceIp":
        on = boolean(ck, fields[key])
        if on is False:
            ck.error(fields[key], "must be true when it is the hash key")
        return replace(common, use_source_ip=True) if on else None
    cookie = ck.fields(fields[key], COOKIE)
    if cookie is None:
        return None
    name_at = ck.required(cookie, "name", fields[key])
    name = ck.string(name_at) if name_at is not None else None
    path = ck.string(cookie["path"]) or "" if "path" in cookie else ""
    ttl = duration_ms(ck, cookie["ttl"], minimum_ms=0) if "ttl" in cookie else 0
    attributes: list[tuple[str, str]] = []
    for item in ck.items(cookie["attributes"]) or () if "attributes" in cookie else ():
        attr = ck.fields(item, COOKIE_ATTRIBUTE)
        if attr is None:
            continue
        attr_name_at = ck.required(attr, "name", item)
        attr_name = ck.string(attr_name_at) if attr_name_at is not None else None
        if not attr_name:
            if attr_name_at is not None:
                ck.error(attr_name_at, "cookie attribute name cannot be empty")
            continue
        if any(n == attr_name for n, _ in attributes):
            ck.error(attr_name_at or item, f"duplicate cookie attribute name: {attr_name}")
            continue
        value = ck.string(attr["value"]) or "" if "value" in attr else ""
        attributes.append((attr_name, value))
    if name is None:
        return None
    return replace(
        common,
        http_cookie_name=name,
        http_cookie_path=path,
        http_cookie_ttl_ms=ttl or 0,
        http_cookie_attributes=tuple(attributes),
    )


def _is_prime(n: int) -> bool:
    """As Envoy (and Istio) decide it: 1, 2 and 3 count as prime."""
    if n < 4:
        return n > 0
    if n % 2 == 0:
        return False
    return all(n % f for f in range(3, int(n**0.5) + 1, 2))


# --- localityLbSetting ----------------------------------------------------------


def _locality(ck: DocChecker, at: Located, *, has_outlier: bool) -> LocalityLbSetting | None:
    fields = ck.fields(at, LOCALITY)
    if fields is None:
        return None
    before = len(ck.errors)
    enabled = None
    if (enabled_at := fields.get("enabled")) is not None:
        enabled = boolean(ck, enabled_at)
    distribute: list[LocalityDistribute] = []
    for item in ck.items(fields["distribute"]) or () if "distribute" in fields else ():
        entry = _distribute(ck, item)
        if entry is not None:
            distribute.append(entry)
    failover = _failover(ck, fields.get("failover"), "locality lb")
    priority: tuple[str, ...] = ()
    if (priority_at := fields.get("failoverPriority")) is not None:
        priority = tuple(v for v, _ in ck.strings(priority_at, _priority_problem) or ())
    if distribute and failover:
        ck.error(at, "can not simultaneously specify 'distribute' and 'failover'")
    if failover and priority:
        for name in priority:
            if name.partition("=")[0] in TOPOLOGY_LABELS:
                ck.error(
                    priority_at or at,
                    f"can not simultaneously set 'failover' and topology label {name!r} in "
                    "'failoverPriority'",
                )
                break
    _check_localities(ck, fields.get("distribute"), [d.source for d in distribute])
    if (failover or priority) and not has_outlier:
        ck.warn(
            at,
            "outlier detection policy must be provided for failover: without outlierDetection "
            "Envoy never moves traffic to another locality (as Istio warns)",
        )
    if len(ck.errors) > before:
        return None
    return LocalityLbSetting(enabled, tuple(distribute), tuple(failover), priority)


TOPOLOGY_LABELS = frozenset(
    {"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}
)


def _priority_problem(value: str) -> str | None:
    name, _, _ = value.partition("=")
    problem = label_key_problem(name)
    return None if problem is None else f"must be a label name (or name=value): {problem}"


def _failover(ck: DocChecker, at: Located | None, setting: str) -> list[tuple[str, str]]:
    """`failover` of localityLbSetting and zoneAwareLbSetting: (from, to) region pairs;
    `setting` names the one in Istio's error message."""
    failover: list[tuple[str, str]] = []
    for item in ck.items(at) or () if at is not None else ():
        entry = ck.fields(item, FAILOVER)
        if entry is None:
            continue
        source = _region(ck, ck.required(entry, "from", item))
        target = _region(ck, ck.required(entry, "to", item))
        if source is not None and target is not None:
            if source == target:
                ck.error(item, f"{setting} failover settings must specify different regions")
                continue
            failover.append((source, target))
    return failover


def _region(ck: DocChecker, at: Located | None) -> str | None:
    if at is None:
        return None
    value = ck.string(at)
    if value is None:
        return None
    if "/" in value:
        ck.error(at, "locality lb failover only specify region")
        return None
    if "*" in value:
        ck.error(at, "locality lb failover region should not contain '*' wildcard")
        return None
    if not value:
        ck.error(at, "must not be empty")
        return None
    return value


def _distribute(ck: DocChecker, at: Located) -> LocalityDistribute | None:
    fields = ck.fields(at, DISTRIBUTE)
    if fields is None:
        return None
    source_at = ck.required(fields, "from", at)
    source = ck.string(source_at, _locality_problem) if source_at is not None else None
    to_at = ck.required(fields, "to", at)
    weights: list[tuple[str, int]] = []
    total = 0
    for key, weight_at in (ck.children(to_at) or {}).items() if to_at is not None else ():
        if not isinstance(key, str) or (problem := _locality_problem(key)) is not None:
            ck.error(weight_at, f"locality {key!r} {problem or 'must be a string'}")
            continue
        weight = ck.integer(weight_at, 1, 100)
        if weight is None:
            continue
        weights.append((key, weight))
        total += weight
    if to_at is not None and weights and total != 100:
        ck.error(to_at, f"total locality weight {total} != 100")
        return None
    if to_at is not None:
        _check_localities(ck, to_at, [k for k, _ in weights])
    if source is None or not weights:
        if to_at is not None and not weights and to_at.value == {}:
            ck.error(to_at, "must name at least one locality")
        return None
    return LocalityDistribute(source, tuple(weights))


def _locality_problem(value: str) -> str | None:
    if "*" in value and (value.count("*") > 1 or not value.endswith("*")):
        return "may have one wildcard '*', at the end"
    parts = value.split("/")
    if len(parts) > 3 or any(not p for p in parts):
        return "must be region, region/zone or region/zone/subzone"
    return None


def _check_localities(ck: DocChecker, at: Located | None, localities: list[str]) -> None:
    """Istio's validateLocalities: no locality may overlap an earlier one."""
    if at is None:
        return
    seen: list[list[str]] = []
    for locality in localities:
        parts = locality.split("/")
        for earlier in seen:
            if _overlap(parts, earlier):
                ck.error(at, f"locality {locality} overlap with previous specified ones")
                return
        seen.append(parts)


def _overlap(a: list[str], b: list[str]) -> bool:
    for x, y in zip(a, b, strict=False):
        if x == "*" or y == "*":
            return True
        if x != y:
            return False
    return True  # one is a prefix of the other
