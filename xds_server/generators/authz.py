"""AuthorizationPolicy -> Envoy RBAC filters on a workload's inbound listeners.

Istio's evaluation order is kept by filter order: AUDIT (an RBAC `LOG` filter, it
only marks requests), then DENY (any matching rule denies), then ALLOW (when at
least one ALLOW policy applies, a request must match one of its rules). An ALLOW
policy without rules contributes no rule, so on its own it allows nothing.

Policies apply to a workload when they sit in its namespace, or in the root
namespace (mesh-wide), and have no selector or a selector matching its labels.

Within a rule: one `from` source AND one `to` operation AND every `when`; within a
field its values are OR-ed; `notX` fields negate. Principals are Istio's
`<trust-domain>/ns/<ns>/sa/<sa>` and match the peer's URI SAN (`spiffe://` added).
On TCP ports, HTTP-only fields cannot be evaluated: an ALLOW rule that needs them
is dropped (it matches nothing), a DENY rule is applied without them (it denies
more), as Istio does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2, message, wrappers_pb2

from xds_server.galley.model import MeshConfig, WorkloadEntry, labels_match
from xds_server.galley.model_security import (
    AuthorizationPolicy,
    AuthzRule,
    Condition,
    OperationMatch,
    SourceMatch,
)

HTTP_RBAC: Final = "envoy.filters.http.rbac"
NETWORK_RBAC: Final = "envoy.filters.network.rbac"

Permission: TypeAlias = rbac_pb2.Permission
Principal: TypeAlias = rbac_pb2.Principal
Policy: TypeAlias = rbac_pb2.Policy

# The policies that apply to one workload, as a hashable memo key.
PolicyKey = tuple[AuthorizationPolicy, ...]

# Filter order and the Envoy action of each Istio action.
_ACTIONS: Final = (("AUDIT", rbac_pb2.RBAC.LOG), ("DENY", rbac_pb2.RBAC.DENY),
                   ("ALLOW", rbac_pb2.RBAC.ALLOW))  # fmt: skip


class _Key(tuple[object, ...]):
    """Policies hashed by identity (their selectors are unhashable mappings)."""

    def __hash__(self) -> int:
        return hash(tuple(id(p) for p in self))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, tuple)
            and len(other) == len(self)
            and all(a is b for a, b in zip(self, other, strict=True))
        )


NO_POLICIES: PolicyKey = _Key(())  # type: ignore[assignment]  # a tuple, hashed by identity


def policy_key(mesh: MeshConfig, workload: WorkloadEntry) -> PolicyKey:
    """The AuthorizationPolicies that apply to `workload`, in a stable order."""
    ns = workload.meta.namespace
    found = [
        p
        for p in mesh.authorization_policies
        if p.meta.namespace in (ns, mesh.root_namespace)
        and (not p.selector or labels_match(p.selector, workload.labels))
    ]
    found.sort(key=lambda p: (p.meta.namespace, p.meta.name))
    return _Key(found)  # type: ignore[return-value]  # a tuple, hashed by identity


def http_filters(policies: PolicyKey, port: int) -> list[hcm_pb2.HttpFilter]:
    return [
        hcm_pb2.HttpFilter(
            name=HTTP_RBAC,
            typed_config=_pack(http_rbac_pb2.RBAC(rules=rbac, rules_stat_prefix=prefix)),
        )
        for rbac, prefix in _rbacs(policies, port, http=True)
    ]


def network_filters(policies: PolicyKey, port: int) -> list[listener_components_pb2.Filter]:
    return [
        listener_components_pb2.Filter(
            name=NETWORK_RBAC,
            typed_config=_pack(
                network_rbac_pb2.RBAC(rules=rbac, stat_prefix=f"tcp.{prefix}inbound_{port}")
            ),
        )
        for rbac, prefix in _rbacs(policies, port, http=False)
    ]


def _rbacs(policies: PolicyKey, port: int, *, http: bool) -> list[tuple[rbac_pb2.RBAC, str]]:
    out = []
    for action, envoy_action in _ACTIONS:
        group = [p for p in policies if p.action == action]
        if not group:
            continue
        rbac = rbac_pb2.RBAC(action=envoy_action)
        for policy in group:
            for i, rule in enumerate(policy.rules):
                built = _policy(rule, http=http, deny=action != "ALLOW")
                if built is not None:
                    name = f"ns[{policy.meta.namespace}]-policy[{policy.meta.name}]-rule[{i}]"
                    rbac.policies[name].CopyFrom(built)
        out.append((rbac, f"{action.lower()}."))
    return out


def _policy(rule: AuthzRule, *, http: bool, deny: bool) -> Policy | None:
    operations = list(rule.operations)
    conditions = list(rule.conditions)
    if not http:
        needs_http = any(o.http_only for o in operations) or any(c.http_only for c in conditions)
        if needs_http and not deny:
            return None
        operations = [_tcp_part(o) for o in operations]
        conditions = [c for c in conditions if not c.http_only]
    permissions: list[Permission] = []
    principals: list[Principal] = []
    if operations:
        permissions.append(
            Permission(or_rules=Permission.Set(rules=[_operation(o) for o in operations]))
        )
    if rule.sources:
        principals.append(Principal(or_ids=Principal.Set(ids=[_source(s) for s in rule.sources])))
    for condition in conditions:
        _condition(condition, permissions, principals)
    return Policy(
        permissions=[_all_permissions(permissions)], principals=[_all_principals(principals)]
    )


def _tcp_part(op: OperationMatch) -> OperationMatch:
    return OperationMatch(ports=op.ports, not_ports=op.not_ports)


def _all_permissions(parts: list[Permission]) -> Permission:
    if not parts:
        return Permission(any=True)
    return parts[0] if len(parts) == 1 else Permission(and_rules=Permission.Set(rules=parts))


def _all_principals(parts: list[Principal]) -> Principal:
    if not parts:
        return Principal(any=True)
    return parts[0] if len(parts) == 1 else Principal(and_ids=Principal.Set(ids=parts))


# --- to.operation ------------------------------------------------------------------


def _operation(op: OperationMatch) -> Permission:
    parts: list[Permission] = []
    _field(parts, op.hosts, op.not_hosts, _host)
    _field(parts, [str(p) for p in op.ports], [str(p) for p in op.not_ports], _port)
    _field(parts, op.methods, op.not_methods, _method)
    _field(parts, op.paths, op.not_paths, _path)
    return _all_permissions(parts)


def _field(
    parts: list[Permission],
    values: Sequence[str],
    not_values: Sequence[str],
    build: Callable[[str], Permission],
) -> None:
    if values:
        parts.append(_any_of([build(v) for v in values]))
    if not_values:
        parts.append(Permission(not_rule=_any_of([build(v) for v in not_values])))


def _any_of(rules: list[Permission]) -> Permission:
    return rules[0] if len(rules) == 1 else Permission(or_rules=Permission.Set(rules=rules))


def _host(host: str) -> Permission:
    # Hosts are matched case-insensitively, with or without a port in :authority.
    matchers = [_string(host, ignore_case=True)]
    if "*" not in host and ":" not in host:
        matchers.append(string_pb2.StringMatcher(prefix=host + ":", ignore_case=True))
    return _any_of([
        Permission(header=route_components_pb2.HeaderMatcher(name=":authority", string_match=m))
        for m in matchers
    ])  # fmt: skip


def _port(port: str) -> Permission:
    return Permission(destination_port=int(port))


def _method(method: str) -> Permission:
    return Permission(
        header=route_components_pb2.HeaderMatcher(name=":method", string_match=_string(method))
    )


def _path(path: str) -> Permission:
    return Permission(url_path=path_pb2.PathMatcher(path=_string(path)))


def _string(value: str, *, ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's value syntax: exact, `prefix*`, `*suffix`, or `*` (anything)."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1], ignore_case=ignore_case)
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=value, ignore_case=ignore_case)


# --- from.source -------------------------------------------------------------------


def _source(src: SourceMatch) -> Principal:
    parts: list[Principal] = []
    _ids(parts, src.principals, src.not_principals, _principal)
    _ids(parts, src.namespaces, src.not_namespaces, _namespace)
    _ids(parts, src.ip_blocks, src.not_ip_blocks, _ip_block)
    return _all_principals(parts)


def _ids(
    parts: list[Principal],
    values: Sequence[str],
    not_values: Sequence[str],
    build: Callable[[str], Principal],
) -> None:
    if values:
        parts.append(_one_of([build(v) for v in values]))
    if not_values:
        parts.append(Principal(not_id=_one_of([build(v) for v in not_values])))


def _one_of(ids: list[Principal]) -> Principal:
    return ids[0] if len(ids) == 1 else Principal(or_ids=Principal.Set(ids=ids))


def _authenticated(matcher: string_pb2.StringMatcher) -> Principal:
    return Principal(authenticated=Principal.Authenticated(principal_name=matcher))


def _principal(value: str) -> Principal:
    if value == "*":  # any authenticated peer
        return _authenticated(string_pb2.StringMatcher(prefix="spiffe://"))
    if value.startswith("*"):
        return _authenticated(string_pb2.StringMatcher(suffix=value[1:]))
    if value.endswith("*"):
        return _authenticated(string_pb2.StringMatcher(prefix="spiffe://" + value[:-1]))
    return _authenticated(string_pb2.StringMatcher(exact="spiffe://" + value))


def _namespace(value: str) -> Principal:
    if value == "*":
        return _authenticated(string_pb2.StringMatcher(prefix="spiffe://"))
    ns = re.escape(value).replace(r"\*", "[^/]*")
    regex = regex_pb2.RegexMatcher(regex=f"spiffe://[^/]+/ns/{ns}/.*")
    return _authenticated(string_pb2.StringMatcher(safe_regex=regex))


def _ip_block(value: str) -> Principal:
    address, _, length = value.partition("/")
    if not length:
        length = "128" if ":" in address else "32"
    cidr = address_pb2.CidrRange(
        address_prefix=address, prefix_len=wrappers_pb2.UInt32Value(value=int(length))
    )
    return Principal(direct_remote_ip=cidr)


# --- when --------------------------------------------------------------------------

_HEADER_KEY: Final = re.compile(r"request\.headers\[(.+)\]\Z")


def _condition(c: Condition, permissions: list[Permission], principals: list[Principal]) -> None:
    header = _HEADER_KEY.match(c.key)
    if header is not None:
        name = header.group(1).lower()
        _ids(principals, c.values, c.not_values, lambda v: _header(name, v))
    elif c.key == "source.principal":
        _ids(principals, c.values, c.not_values, _principal)
    elif c.key == "source.namespace":
        _ids(principals, c.values, c.not_values, _namespace)
    elif c.key in ("source.ip", "remote.ip"):
        _ids(principals, c.values, c.not_values, _ip_block)
    elif c.key == "destination.port":
        _field(permissions, c.values, c.not_values, _port)
    else:  # Galley only lets the keys above through.
        raise ValueError(f"unsupported condition key {c.key!r}")


def _header(name: str, value: str) -> Principal:
    if value == "*":
        matcher = route_components_pb2.HeaderMatcher(name=name, present_match=True)
    else:
        matcher = route_components_pb2.HeaderMatcher(name=name, string_match=_string(value))
    return Principal(header=matcher)


def _pack(config: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(config)
    return packed
