"""WorkloadEntry: one workload (a VM, a process on 127.x) and its ports.

The same spec is written inline as a ServiceEntry endpoint, so the spec parser
is shared; only the metadata and the address rule differ.
"""

from __future__ import annotations

from ..fields import Shape, restricted, shape, supported
from ..model import DEFAULT_SERVICE_ACCOUNT, ObjectMeta, WorkloadEntry
from ..names import address_problem, dns1123_label_problem, dns1123_subdomain_problem, is_unix
from ..schema import DocChecker, Located, Rule
from .common import MAX_PORT, freeze, parse_labels

SPEC: Shape = shape(
    address=supported(
        "an IP (a 127/8 address stands in for a pod IP), a DNS name, or unix:///path "
        "(a local socket; no sidecar)"
    ),
    labels=supported("merged with metadata.labels, which win (as in Istio)"),
    ports=supported("port name -> the port the workload serves it on"),
    serviceAccount=supported("its SPIFFE identity: spiffe://<td>/ns/<ns>/sa/<sa>"),
    network=restricted(
        "'' (one network) only. Deliberate non-goal: a pocketmesh mesh is one network (one "
        "machine's addresses, or one container network); Istio's multi-network routing goes "
        "through east-west gateways by network, which there is nothing to need"
    ),
    locality=supported("region/zone/subzone, on its EDS endpoints"),
    weight=supported("its EDS load-balancing weight"),
)
MAX_WEIGHT = 2**32 - 1


def _locality_problem(value: str) -> str | None:
    parts = value.split("/")
    if len(parts) > 3 or any(not p for p in parts):
        return "must be region, region/zone or region/zone/subzone"
    return None


def parse_workload_spec(
    ck: DocChecker, meta: ObjectMeta, spec: Located, *, address_rule: Rule = address_problem
) -> WorkloadEntry | None:
    """A WorkloadEntry spec, standalone or inline; None if anything in it is wrong."""
    before = len(ck.errors)
    fields = ck.fields(spec, SPEC)
    if fields is None:
        return None
    address = None
    if "address" not in fields and "network" in fields:
        address_at = None  # Istio: no address with a network (refused below, with it)
    else:
        address_at = ck.required(fields, "address", spec)
    if address_at is not None:
        address = ck.string(address_at, address_rule)
    # Istio merges metadata.labels into the spec's, the metadata's winning.
    labels = {**parse_labels(ck, fields.get("labels")), **meta.labels}
    ports: dict[str, int] = {}
    if (ports_at := fields.get("ports")) is not None:
        for key, port_at in (ck.children(ports_at) or {}).items():
            if not isinstance(key, str) or dns1123_label_problem(key) is not None:
                ck.error(port_at, f"port name {key!r} must be a DNS-1123 label")
                continue
            number = ck.integer(port_at, 1, MAX_PORT)
            if number is not None:
                ports[key] = number
    service_account = DEFAULT_SERVICE_ACCOUNT
    if (sa_at := fields.get("serviceAccount")) is not None:
        service_account = ck.string(sa_at, dns1123_subdomain_problem) or service_account
    if (network_at := fields.get("network")) is not None and ck.string(network_at):
        ck.not_yet(network_at, "a network (multi-network meshes: a deliberate non-goal)")
    locality = ""
    if (locality_at := fields.get("locality")) is not None:
        locality = ck.string(locality_at, _locality_problem) or ""
    weight = 0
    if (weight_at := fields.get("weight")) is not None:
        weight = ck.integer(weight_at, 0, MAX_WEIGHT) or 0
    if address is not None and is_unix(address) and ports and "ports" in fields:
        ck.error(fields["ports"], f"unix endpoint {address} must not include ports")
    if address is None or len(ck.errors) > before:
        return None
    return WorkloadEntry(
        meta=meta,
        address=address,
        labels=freeze(labels),
        service_account=service_account,
        ports=freeze(ports),
        locality=locality,
        weight=weight,
    )


def parse_workload_entry(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> WorkloadEntry | None:
    if spec is None:
        return None
    return parse_workload_spec(ck, meta, spec)
