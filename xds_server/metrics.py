"""Prometheus metrics, served on the debug address at /metrics.

Two families of names:
- istiod's (`pilot_*`, `citadel_*`), with istiod's meanings, labels and buckets, so that
  dashboards and alerts written for Istio work unchanged (docs/observability.md has
  the table). istiod exposes its counters without the `_total` suffix that
  prometheus_client adds, so those are `ExactCounter`s, rendered here by `exposition()`;
- pocketmesh's own (`pocketmesh_*`), kept as they were.

Nothing here does I/O: the stream handler's observer (`xds_server.pushes`) and the
control plane record; `exposition()` renders.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from xds_server import xds_types

registry = CollectorRegistry()

# -- pocketmesh's own ---------------------------------------------------------------

connected_proxies = Gauge(
    "pocketmesh_xds_connected_streams", "Open xDS streams.", registry=registry
)
pushes = Counter(
    "pocketmesh_xds_pushes", "Discovery responses sent, by type.", ["type"], registry=registry
)
push_bytes = Counter(
    "pocketmesh_xds_push_bytes", "Bytes of discovery responses sent.", registry=registry
)
nacks = Counter(
    "pocketmesh_xds_nacks", "Responses rejected by proxies, by type.", ["type"], registry=registry
)
config_errors = Counter(
    "pocketmesh_config_errors", "Config loads rejected by validation.", registry=registry
)
config_errors_current = Gauge(
    "pocketmesh_config_errors_current",
    "Errors in the config directory as last loaded (0: it is being served).",
    registry=registry,
)
snapshot_build_seconds = Histogram(
    "pocketmesh_snapshot_build_seconds",
    "Time to load, translate and serialize one config generation (published ones).",
    registry=registry,
)
reload_seconds = Histogram(
    "pocketmesh_reload_seconds",
    "Time from the start of a config reload to its publish or rejection, by result.",
    ["result"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=registry,
)
config_generation = Gauge(
    "pocketmesh_config_generation", "Generation of the config being served.", registry=registry
)

# -- istiod's: pilot -----------------------------------------------------------------
# Buckets are istiod's (pilot/pkg/xds/monitoring.go).

xds_clients = Gauge(
    "pilot_xds",
    "Number of endpoints connected to this pilot using XDS.",
    ["version"],
    registry=registry,
)
debounce_time = Histogram(
    "pilot_debounce_time",
    "Delay in seconds between the first config enters debouncing and the merged push "
    "request is pushed into the push queue.",
    buckets=(0.01, 0.1, 1, 3, 5, 10, 20, 30),
    registry=registry,
)
pushcontext_init_seconds = Histogram(
    "pilot_pushcontext_init_seconds",
    "Total time in seconds Pilot takes to init pushContext.",
    buckets=(0.01, 0.1, 0.5, 1, 3, 5),
    registry=registry,
)
push_time = Histogram(
    "pilot_xds_push_time",
    "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
    ["type"],
    buckets=(0.01, 0.1, 1, 3, 5, 10, 20, 30),
    registry=registry,
)
proxy_queue_time = Histogram(
    "pilot_proxy_queue_time",
    "Time in seconds, a proxy is in the push queue before being dequeued.",
    buckets=(0.1, 0.5, 1, 3, 5, 10, 20, 30),
    registry=registry,
)
proxy_convergence_time = Histogram(
    "pilot_proxy_convergence_time",
    "Delay in seconds between config change and a proxy receiving all required "
    "configuration (pocketmesh: until the proxy has ACKed every type it was sent).",
    buckets=(0.1, 0.5, 1, 3, 5, 10, 20, 30),
    registry=registry,
)
config_size_bytes = Histogram(
    "pilot_xds_config_size_bytes",
    "Distribution of configuration sizes pushed to clients",
    ["type"],
    buckets=(1, 10000, 1000000, 4000000, 10000000, 40000000),
    registry=registry,
)
# istiod declares these as gauges labelled by node and error code, and increments them.
_REJECT_DOC = "Pilot rejected {} configs (pilot_total_xds_rejects should be used instead)."
type_rejects = {
    short: Gauge(
        f"pilot_xds_{short}_reject", _REJECT_DOC.format(short.upper()), ["node", "err"],
        registry=registry,
    )
    for short in ("cds", "eds", "lds", "rds")
}  # fmt: skip

# -- istiod's: citadel -----------------------------------------------------------------

root_cert_expiry = Gauge(
    "citadel_server_root_cert_expiry_timestamp",
    "The unix timestamp, in seconds, when Citadel root cert will expire. "
    "A negative time indicates the cert is expired.",
    registry=registry,
)
# No CA: the gauge reads NaN until `watch_root_expiry` gives it a source.
_root_expiry: list[Callable[[], datetime]] = []
root_cert_expiry.set_function(lambda: _root_expiry[0]().timestamp() if _root_expiry else math.nan)


def watch_root_expiry(not_after: Callable[[], datetime]) -> None:
    """Report the CA's signing root's expiry (the last control plane started wins)."""
    _root_expiry[:] = [not_after]


# -- counters under istiod's exact names ------------------------------------------------


class ExactCounter:
    """A counter exposed under exactly its name, as istiod exposes its sums (no `_total`).

    `read` makes it a view of another value (citadel's counts are pocketmesh's SVIDs).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        *,
        read: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._read = read
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        _exact.append(self)

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        with self._lock:
            self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def value(self, *labelvalues: str) -> float:
        if self._read is not None:
            return self._read()
        with self._lock:
            return self._values.get(labelvalues, 0.0)

    def samples(self) -> list[tuple[tuple[str, ...], float]]:
        if self._read is not None:
            return [((), self._read())]
        with self._lock:
            return sorted(self._values.items())

    def render(self) -> str:
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {self.name} {doc}\n", f"# TYPE {self.name} counter\n"]
        for values, value in self.samples():
            labels = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(self.labelnames, values, strict=True)
            )
            lines.append(f"{self.name}{{{labels}}} " if labels else f"{self.name} ")
            lines.append(f"{floatToGoString(value)}\n")
        return "".join(lines)


_exact: list[ExactCounter] = []


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _svids_issued() -> float:
    from xds_server.identity.metrics import svids_issued  # it registers on our registry

    return _sum_samples(svids_issued.collect(), "_total")


def _sum_samples(families: Iterable[Metric], suffix: str) -> float:
    return float(sum(s.value for f in families for s in f.samples if s.name.endswith(suffix)))


xds_pushes = ExactCounter(
    "pilot_xds_pushes", "Pilot build and send errors for lds, rds, cds and eds.", ("type",)
)
push_triggers = ExactCounter(
    "pilot_push_triggers",
    "Total number of times a push was triggered, labeled by reason for the push.",
    ("type",),
)
total_xds_rejects = ExactCounter(
    "pilot_total_xds_rejects", "Total number of XDS responses from pilot rejected by proxy.",
    ("type",),
)  # fmt: skip
expired_nonce = ExactCounter(
    "pilot_xds_expired_nonce", "Total number of XDS requests with an expired nonce.", ("type",)
)
# pocketmesh's CA makes each workload's key itself: one issuance stands for one CSR.
csr_count = ExactCounter(
    "citadel_server_csr_count", "The number of CSRs received by Citadel server.",
    read=_svids_issued,
)  # fmt: skip
success_cert_issuance_count = ExactCounter(
    "citadel_server_success_cert_issuance_count",
    "The number of certificates issuances that have succeeded.",
    read=_svids_issued,
)

# istiod's metric type names (pilot/pkg/model.GetMetricType).
METRIC_TYPES = {
    xds_types.CLUSTER: "cds",
    xds_types.ENDPOINT: "eds",
    xds_types.LISTENER: "lds",
    xds_types.ROUTE: "rds",
    xds_types.SECRET: "sds",
}


def metric_type(type_url: str) -> str:
    return METRIC_TYPES.get(type_url, type_url.rsplit(".", 1)[-1].lower())


def exposition() -> bytes:
    """Everything, in Prometheus' text format (what /metrics serves)."""
    return generate_latest(registry) + "".join(c.render() for c in _exact).encode()


streams_refused = Counter(
    "pocketmesh_xds_streams_refused",
    "xDS streams refused because the server held its limit of streams (--max-streams).",
    registry=registry,
)
