"""What applies to one workload's proxy: its Sidecar scope, the PeerAuthentication mode of
each inbound port (and which policy decided it), the AuthorizationPolicies and
RequestAuthentications that select it, and what its inbound listeners really do."""

from __future__ import annotations

import difflib
from typing import Any

from envoy.config.listener.v3 import listener_pb2

from xds_server.explain import envoy_read
from xds_server.explain.envoy_rbac import policy_name
from xds_server.explain.inputs import MeshState
from xds_server.galley.model import DEFAULT_NAMESPACE, MeshConfig, WorkloadEntry, labels_match
from xds_server.galley.model_security import (
    DEFAULT_MTLS_MODE,
    PeerAuthentication,
    workload_policies,
)
from xds_server.generators import authz
from xds_server.generators.mtls import peer_mode, spiffe_uri
from xds_server.generators.push_context import Proxy


class UnknownWorkload(LookupError):
    """No proxy by that name; the message suggests the nearest ones."""


def find_proxy(state: MeshState, name: str) -> Proxy:
    """`NAME.NAMESPACE` (a node id), `NAME` in `default` (or the only `NAME` of the mesh),
    or a workload's address."""
    ctx = state.push_context
    for candidate in (name, f"{name}.{DEFAULT_NAMESPACE}"):
        proxy = ctx.proxy(candidate)
        if proxy is not None:
            return proxy
    # Unambiguous otherwise: the only workload of that name, or at that address.
    for found in (
        [p for p in ctx.proxies if p.workload.meta.name == name],
        [p for p in ctx.proxies if p.address == name],
    ):
        if len(found) == 1:
            return found[0]
    for we in state.mesh.workload_entries:
        if name in (we.proxy_id, we.meta.name, we.address):
            why = [c for c in ctx.conflicts if we.meta.key in c]
            raise UnknownWorkload(
                f"WorkloadEntry {we.meta.key} has no proxy" + (f": {'; '.join(why)}" if why else "")
            )
    known = [p.node_id for p in ctx.proxies]
    near = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    if not known:
        hint = "; the config has no WorkloadEntry with a sidecar"
    raise UnknownWorkload(
        f"no proxy {name!r} (give NAME.NAMESPACE, NAME in default, or an address){hint}"
    )


def identity(mesh: MeshConfig, workload: WorkloadEntry) -> str | None:
    return spiffe_uri(mesh.trust_domain, workload) if mesh.workload_identity else None


def section(state: MeshState, proxy: Proxy) -> dict[str, Any]:
    mesh, we = state.mesh, proxy.workload
    out: dict[str, Any] = {
        "proxy": proxy.node_id,
        "kind": "gateway" if proxy.gateways else "sidecar",
        "address": proxy.address,
        "labels": dict(we.labels),
        "service_account": we.service_account,
        "identity": identity(mesh, we),
        "source": str(we.meta.source),
        "services": _services(state, proxy),
    }
    if proxy.gateways:
        out["gateways"] = [
            {
                "name": g.meta.key,
                "source": str(g.meta.source),
                "servers": [_server(s) for s in g.servers],
            }
            for g in proxy.gateways
        ]
    out["sidecar"] = _sidecar(mesh, proxy)
    out["inbound"] = _inbound(state, proxy)
    out["peer_authentications"] = [
        {"name": pa.meta.key, "source": str(pa.meta.source), "level": level, "mode": pa.mode,
         "port_level": {str(k): v for k, v in pa.port_level.items()}}
        for level, pa in _peer_levels(mesh, we) if pa is not None
    ]  # fmt: skip
    out["authorization_policies"] = [_policy(p) for p in authz.policy_key(mesh, we)]
    out["request_authentications"] = _request_authentications(mesh, we)
    conflicts = [c for c in state.push_context.conflicts if we.meta.key in c or proxy.node_id in c]
    if conflicts:
        out["conflicts"] = conflicts
    return out


def _server(server: Any) -> str:
    text = f"{server.port} {server.protocol} hosts {', '.join(server.hosts)}"
    tls = server.tls
    if tls is not None and getattr(tls, "https_redirect", False):
        text += " (httpsRedirect)"
    elif tls is not None and server.protocol in ("HTTPS", "TLS"):
        text += f" (tls {tls.mode})"
    return text


def _services(state: MeshState, proxy: Proxy) -> list[str]:
    """The ServiceEntries whose endpoints this workload is."""
    found = []
    for se in state.mesh.service_entries:
        selected = se.workload_selector is not None and se.meta.namespace == proxy.namespace
        if (selected and labels_match(se.workload_selector, proxy.workload.labels)) or any(
            ep.address == proxy.address for ep in se.endpoints
        ):
            found.append(f"{se.meta.key} ({', '.join(se.hosts)})")
    return found


def _sidecar(mesh: MeshConfig, proxy: Proxy) -> dict[str, Any]:
    scope = proxy.scope
    hosts = sorted({svc.host for svc in scope.services})
    visible = {"services": len(hosts), "clusters": len(scope.services), "hosts": hosts[:50]}
    sc = proxy.sidecar
    if sc is None:
        why = (
            "a gateway: Sidecars do not apply; it sees every service exported to its namespace"
            if proxy.gateways
            else "no Sidecar applies: the proxy sees every service exported to its namespace "
            "(Istio's implicit */*)"
        )
        return {"name": None, "why": why, "sees": visible}
    if sc.workload_selector:
        selector = ", ".join(f"{k}: {v}" for k, v in sc.workload_selector.items())
        why = f"its workloadSelector {{{selector}}} matches the workload's labels"
    elif sc.meta.namespace == proxy.namespace:
        why = f"the Sidecar without workloadSelector of namespace {proxy.namespace}"
    else:
        why = (
            f"the mesh-wide default: the Sidecar without workloadSelector in {mesh.root_namespace}"
        )
    return {
        "name": sc.meta.key,
        "source": str(sc.meta.source),
        "why": why,
        "egress": [list(e.hosts) for e in sc.egress] or "none: sees everything exported to it",
        "ingress": [
            f"{i.port.number} {i.port.protocol} -> {i.default_endpoint or '127.0.0.1'}"
            + (f" (bind {i.bind})" if i.bind else "")
            + (f", TLS {i.tls.mode} ended by the sidecar ({i.tls.path})" if i.tls else "")
            for i in sc.ingress
        ],
        "sees": visible,
    }


def _peer_levels(
    mesh: MeshConfig, workload: WorkloadEntry
) -> list[tuple[str, PeerAuthentication | None]]:
    """The PeerAuthentications `generators.mtls.peer_mode` reads, weakest level first."""
    ns, root = workload.meta.namespace, mesh.root_namespace

    def first(level: str, wanted: Any) -> tuple[str, PeerAuthentication | None]:
        return level, next((pa for pa in mesh.peer_authentications if wanted(pa)), None)

    return [
        first("mesh-wide", lambda pa: pa.meta.namespace == root and not pa.selector),
        first("namespace", lambda pa: ns != root and pa.meta.namespace == ns and not pa.selector),
        first(
            "workload",
            lambda pa: (
                pa.meta.namespace == ns
                and bool(pa.selector)
                and labels_match(pa.selector, workload.labels)
            ),
        ),
    ]


def peer_decision(mesh: MeshConfig, workload: WorkloadEntry, port: int) -> dict[str, Any]:
    """The mode of `port` and which policy (and level) decided it."""
    mode = peer_mode(mesh, workload, port) if mesh.workload_identity else "DISABLE"
    if not mesh.workload_identity:
        return {"mode": mode, "by": "the mesh has no workload identities (--no-identity)"}
    by = f"Istio's default {DEFAULT_MTLS_MODE} (no PeerAuthentication applies)"
    for level, pa in _peer_levels(mesh, workload):
        if pa is None:
            continue
        if pa.mode != "UNSET":
            by = f"PeerAuthentication {pa.meta.key}, {level} ({pa.meta.source})"
        if level == "workload" and pa.port_level.get(port, "UNSET") != "UNSET":
            by = f"PeerAuthentication {pa.meta.key}, portLevelMtls {port} ({pa.meta.source})"
    return {"mode": mode, "by": by}


def _inbound(state: MeshState, proxy: Proxy) -> list[dict[str, Any]]:
    """Each inbound listener as Envoy has it: port, what it accepts, where it goes."""
    out = []
    listeners = state.listeners(proxy.node_id)
    for plan in proxy.inbound:
        listener = listeners.get(plan.listener_name)
        entry: dict[str, Any] = {
            "port": plan.port,
            "listener": plan.listener_name,
            "protocol": plan.protocol,
            "app": f"{plan.upstream_host}:{plan.upstream_port}",
            "mtls": peer_decision(state.mesh, proxy.workload, plan.port),
        }
        if isinstance(listener, listener_pb2.Listener):
            entry["envoy_mode"] = envoy_read.downstream_mode(listener)
            rbac = [f for c in listener.filter_chains[:1] for f in envoy_read.rbac_filters(c)]
            entry["rbac"] = [
                {
                    "action": f.action,
                    "dry_run": f.shadow,
                    "policies": [policy_name(n) for n in sorted(f.policies)],
                }
                for f in rbac
            ]
        else:
            entry["envoy_mode"] = "no listener sent"
        out.append(entry)
    return out


def _policy(policy: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": policy.meta.key,
        "source": str(policy.meta.source),
        "action": policy.action,
        "selector": dict(policy.selector) if policy.selector else "namespace-wide",
        "rules": len(policy.rules),
    }
    if getattr(policy, "provider", ""):
        out["provider"] = policy.provider
    if getattr(policy, "dry_run", False):
        out["dry_run"] = True
    return out


def _request_authentications(mesh: MeshConfig, workload: WorkloadEntry) -> list[dict[str, Any]]:
    """RequestAuthentications selecting the workload (its namespace's, or mesh-wide)."""
    return [
        {
            "name": ra.meta.key,
            "source": str(ra.meta.source),
            "selector": dict(ra.selector) if ra.selector else "namespace-wide",
            "issuers": [r.issuer for r in ra.jwt_rules],
        }
        for ra in workload_policies(mesh.request_authentications, workload, mesh.root_namespace)
    ]
