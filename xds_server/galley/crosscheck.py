"""Rules that need more than one document: names, addresses and hosts that clash.

Each finding is reported on the later document (in file order), at the field
that clashes, and names where the earlier one was written.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence

from .documents import ParsedDoc
from .errors import ERROR, WARNING, ConfigError
from .model import ServiceEntry, Sidecar, WorkloadEntry, labels_match
from .schema import child_path
from .security_checks import check_security
from .traffic_checks import check_traffic


def cross_check(docs: Sequence[ParsedDoc]) -> tuple[list[ConfigError], list[ConfigError]]:
    """Errors and warnings that span documents. `docs` in the order they were read."""
    errors: list[ConfigError] = []
    warnings: list[ConfigError] = []
    errors += _duplicate_names(docs)
    valid = [d for d in docs if d.resource is not None]
    errors += _duplicate_addresses(valid)
    errors += _duplicate_hosts(valid)
    errors += _unselected_sidecars(valid)
    warnings += _unknown_workload_ports(valid)
    traffic_errors, traffic_warnings = check_traffic(valid)
    security_errors, security_warnings = check_security(valid)
    errors += traffic_errors + security_errors
    return errors, warnings + traffic_warnings + security_warnings


def _finding(doc: ParsedDoc, field: str, message: str, severity: str = ERROR) -> ConfigError:
    assert doc.meta is not None
    line = doc.lines.get(field, doc.meta.source.line)
    return ConfigError(doc.file, line, doc.kind, doc.meta.key, field, message, severity)


def _where(doc: ParsedDoc, field: str) -> str:
    assert doc.meta is not None
    return f"{doc.file}:{doc.lines.get(field, doc.meta.source.line)}"


def _duplicate_names(docs: Iterable[ParsedDoc]) -> Iterable[ConfigError]:
    first: dict[tuple[str, str], ParsedDoc] = {}
    for doc in docs:
        if doc.meta is None:
            continue
        key = (doc.kind, doc.meta.key)
        if (earlier := first.setdefault(key, doc)) is not doc:
            yield _finding(
                doc,
                "metadata.name",
                f"duplicate {doc.kind} {doc.meta.key}: "
                f"also defined at {_where(earlier, 'metadata.name')}",
            )


def _address_key(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower().rstrip(".")


def _duplicate_addresses(docs: Iterable[ParsedDoc]) -> Iterable[ConfigError]:
    first: dict[str, ParsedDoc] = {}
    for doc in docs:
        if not isinstance(doc.resource, WorkloadEntry):
            continue
        key = _address_key(doc.resource.address)
        if (earlier := first.setdefault(key, doc)) is not doc:
            assert earlier.meta is not None
            yield _finding(
                doc,
                "spec.address",
                f"address {doc.resource.address} is already used by WorkloadEntry "
                f"{earlier.meta.key} ({_where(earlier, 'spec.address')})",
            )


def _duplicate_hosts(docs: Iterable[ParsedDoc]) -> Iterable[ConfigError]:
    first: dict[tuple[str, str], tuple[ParsedDoc, str]] = {}
    for doc in docs:
        entry = doc.resource
        if not isinstance(entry, ServiceEntry):
            continue
        for i, host in enumerate(entry.hosts):
            field = f"spec.hosts[{i}]"
            key = (entry.meta.namespace, host.lower().rstrip("."))
            earlier, earlier_field = first.setdefault(key, (doc, field))
            if earlier is not doc:
                assert earlier.meta is not None
                yield _finding(
                    doc,
                    field,
                    f"host {host!r} is already declared by ServiceEntry {earlier.meta.key} "
                    f"({_where(earlier, earlier_field)})",
                )


def _unselected_sidecars(docs: Iterable[ParsedDoc]) -> Iterable[ConfigError]:
    """Istio allows one Sidecar without a workloadSelector per namespace."""
    first: dict[str, ParsedDoc] = {}
    for doc in docs:
        sidecar = doc.resource
        if not isinstance(sidecar, Sidecar) or sidecar.workload_selector is not None:
            continue
        earlier = first.setdefault(sidecar.meta.namespace, doc)
        if earlier is not doc:
            assert earlier.meta is not None
            yield _finding(
                doc,
                "",
                f"namespace {sidecar.meta.namespace!r} already has a Sidecar without a "
                f"workloadSelector: {earlier.meta.key} ({_where(earlier, 'metadata.name')})",
            )


def _unknown_workload_ports(docs: Sequence[ParsedDoc]) -> Iterable[ConfigError]:
    """A WorkloadEntry port named after no port of the ServiceEntries that select it."""
    selecting: dict[str, list[ServiceEntry]] = defaultdict(list)  # by namespace
    for doc in docs:
        if isinstance(doc.resource, ServiceEntry) and doc.resource.workload_selector is not None:
            selecting[doc.resource.meta.namespace].append(doc.resource)
    for doc in docs:
        workload = doc.resource
        if not isinstance(workload, WorkloadEntry) or not workload.ports:
            continue
        names = {
            port.name
            for entry in selecting[workload.meta.namespace]
            if labels_match(entry.workload_selector, workload.labels)
            for port in entry.ports
        }
        for name in workload.ports:
            if name not in names:
                yield _finding(
                    doc,
                    child_path("spec.ports", name),
                    f"port {name!r} names no port of any ServiceEntry selecting this workload",
                    WARNING,
                )
