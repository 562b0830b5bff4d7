"""Cross-document checks for the security kinds: policies that select nobody, and
several namespace-wide PeerAuthentications where Istio expects one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .documents import ParsedDoc
from .errors import WARNING, ConfigError
from .model import ROOT_NAMESPACE, WorkloadEntry, labels_match
from .model_security import AuthorizationPolicy, PeerAuthentication


def check_security(docs: Sequence[ParsedDoc]) -> tuple[list[ConfigError], list[ConfigError]]:
    """(errors, warnings) over the valid documents, in the order they were read."""
    workloads = [d.resource for d in docs if isinstance(d.resource, WorkloadEntry)]
    warnings = [*_selecting_nobody(docs, workloads), *_several_namespace_wide(docs)]
    return [], warnings


def _line(doc: ParsedDoc, field: str) -> int:
    assert doc.meta is not None
    return doc.lines.get(field, doc.meta.source.line)


def _warning(doc: ParsedDoc, field: str, message: str) -> ConfigError:
    assert doc.meta is not None
    return ConfigError(doc.file, _line(doc, field), doc.kind, doc.meta.key, field, message, WARNING)


def _selecting_nobody(
    docs: Iterable[ParsedDoc], workloads: list[WorkloadEntry]
) -> Iterable[ConfigError]:
    for doc in docs:
        policy = doc.resource
        if not isinstance(policy, PeerAuthentication | AuthorizationPolicy) or not policy.selector:
            continue
        ns = policy.meta.namespace
        # A root-namespace policy with a selector applies in every namespace.
        if not any(
            (ns == ROOT_NAMESPACE or w.meta.namespace == ns)
            and labels_match(policy.selector, w.labels)
            for w in workloads
        ):
            yield _warning(
                doc, "spec.selector", f"selects no WorkloadEntry in namespace {ns!r}: no effect"
            )


def _several_namespace_wide(docs: Iterable[ParsedDoc]) -> Iterable[ConfigError]:
    by_namespace: dict[str, list[ParsedDoc]] = {}
    for doc in docs:
        policy = doc.resource
        if isinstance(policy, PeerAuthentication) and not policy.selector:
            by_namespace.setdefault(policy.meta.namespace, []).append(doc)
    for namespace, found in by_namespace.items():
        # generators.mtls.peer_mode applies the first by name (Istio: the oldest).
        winner = min(found, key=lambda d: d.meta.name if d.meta else "")
        where = "mesh-wide" if namespace == ROOT_NAMESPACE else "namespace-wide"
        for doc in found:
            if doc is not winner and winner.meta is not None:
                yield _warning(
                    doc,
                    "metadata.name",
                    f"another {where} PeerAuthentication in {namespace!r} applies instead: "
                    f"{winner.meta.key} ({winner.file}:{_line(winner, 'metadata.name')})",
                )
