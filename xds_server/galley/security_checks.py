"""Cross-document checks for the security kinds: policies that select nobody, several
namespace-wide PeerAuthentications where Istio expects one, and CUSTOM policies whose
extension provider the mesh settings do not declare, or declare for a service the
registry does not have."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .documents import ParsedDoc
from .errors import ERROR, WARNING, ConfigError
from .model import ROOT_NAMESPACE, ServiceEntry, WorkloadEntry, labels_match
from .model_mesh import MESH_CONFIGMAP, ExtAuthzProvider, MeshSettings
from .model_security import AuthorizationPolicy, PeerAuthentication, RequestAuthentication


def check_security(docs: Sequence[ParsedDoc]) -> tuple[list[ConfigError], list[ConfigError]]:
    """(errors, warnings) over the valid documents, in the order they were read."""
    workloads = [d.resource for d in docs if isinstance(d.resource, WorkloadEntry)]
    warnings = [
        *_selecting_nobody(docs, workloads),
        *_several_namespace_wide(docs),
        *_root_selectors(docs),
    ]
    errors, provider_warnings = _extension_providers(docs)
    return errors, warnings + provider_warnings


def _line(doc: ParsedDoc, field: str) -> int:
    assert doc.meta is not None
    return doc.lines.get(field, doc.meta.source.line)


def _warning(doc: ParsedDoc, field: str, message: str, severity: str = WARNING) -> ConfigError:
    assert doc.meta is not None
    line = _line(doc, field)
    return ConfigError(doc.file, line, doc.kind, doc.meta.key, field, message, severity)


def _selecting_nobody(
    docs: Iterable[ParsedDoc], workloads: list[WorkloadEntry]
) -> Iterable[ConfigError]:
    for doc in docs:
        policy = doc.resource
        if (
            not isinstance(policy, PeerAuthentication | AuthorizationPolicy | RequestAuthentication)
            or not policy.selector
            or (isinstance(policy, PeerAuthentication) and policy.meta.namespace == ROOT_NAMESPACE)
        ):
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


def _root_selectors(docs: Iterable[ParsedDoc]) -> Iterable[ConfigError]:
    """Istio ignores a PeerAuthentication with a selector in the root namespace."""
    for doc in docs:
        policy = doc.resource
        if (
            isinstance(policy, PeerAuthentication)
            and policy.selector
            and policy.meta.namespace == ROOT_NAMESPACE
        ):
            yield _warning(
                doc,
                "spec.selector",
                f"is ignored: a PeerAuthentication with a selector in the root namespace "
                f"{ROOT_NAMESPACE!r} applies to no workload (as in Istio); put it in the "
                "workload's namespace",
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


def _extension_providers(docs: Sequence[ParsedDoc]) -> tuple[list[ConfigError], list[ConfigError]]:
    """A CUSTOM policy's provider must be declared, for a service port of the registry."""
    settings = next((d for d in docs if isinstance(d.resource, MeshSettings)), None)
    declared: dict[str, ExtAuthzProvider] = {}
    if settings is not None:
        assert isinstance(settings.resource, MeshSettings)
        declared = {p.name: p for p in settings.resource.extension_providers}
    services = [d.resource for d in docs if isinstance(d.resource, ServiceEntry)]
    errors: list[ConfigError] = []
    used: set[str] = set()
    for doc in docs:
        policy = doc.resource
        if not isinstance(policy, AuthorizationPolicy) or policy.action != "CUSTOM":
            continue
        provider = declared.get(policy.provider)
        if provider is None:
            if settings is None:
                where = (
                    f"no mesh settings declare it (the ConfigMap {ROOT_NAMESPACE}/"
                    f"{MESH_CONFIGMAP}, data.mesh: extensionProviders)"
                )
            else:
                names = ", ".join(sorted(declared)) or "none"
                where = f"the mesh settings ({_where(settings)}) declare {names}"
            errors.append(
                _warning(
                    doc,
                    "spec.provider.name",
                    f"no extension provider {policy.provider!r}: {where}",
                    ERROR,
                )
            )
            continue
        used.add(provider.name)
    warnings: list[ConfigError] = []
    for provider in declared.values():
        problem = _service_problem(provider, services)
        if problem is None:
            continue
        assert settings is not None
        kind = "envoyExtAuthzGrpc" if provider.grpc else "envoyExtAuthzHttp"
        field = f"{provider.path}.{kind}.service"
        if provider.name in used:
            errors.append(_warning(settings, field, problem, ERROR))
        else:
            warnings.append(_warning(settings, field, f"{problem} (no policy uses it yet)"))
    return errors, warnings


def _service_problem(provider: ExtAuthzProvider, services: list[ServiceEntry]) -> str | None:
    hosts = [
        se for se in services
        if provider.service in se.hosts
        and (not provider.namespace or se.meta.namespace == provider.namespace)
    ]  # fmt: skip
    if not hosts:
        where = f" in namespace {provider.namespace!r}" if provider.namespace else ""
        return f"no ServiceEntry{where} declares host {provider.service!r}"
    ports = [p for se in hosts for p in se.ports if p.number == provider.port]
    if not ports:
        return f"{provider.service} has no port {provider.port}"
    if provider.grpc and not any(p.protocol in _HTTP2 for p in ports):
        return (
            f"port {provider.port} of {provider.service} is {ports[0].protocol}: a gRPC "
            "provider needs a GRPC or HTTP2 port (gRPC is HTTP/2)"
        )
    if not provider.grpc and not any(p.is_http for p in ports):
        return f"port {provider.port} of {provider.service} is {ports[0].protocol}, not HTTP"
    return None


_HTTP2 = frozenset({"GRPC", "HTTP2", "GRPC-WEB"})


def _where(doc: ParsedDoc) -> str:
    return f"{doc.file}:{_line(doc, 'metadata.name')}"
