"""AuthorizationPolicy -> Envoy RBAC filters on a workload's inbound listeners.

Istio's evaluation order is kept by filter order (`generators.inbound_auth` puts the
CUSTOM filters and the jwt_authn filter first): AUDIT (an RBAC `LOG` filter: it only
marks requests, in `access_log_hint` metadata and its `audit.` stats), then DENY (any
matching rule denies), then ALLOW (when at least one ALLOW policy applies, a request
must match one of its rules). A policy without rules matches nothing: an ALLOW policy
alone then allows nothing. A policy annotated `istio.io/dry-run: "true"` goes into
the filter's `shadow_rules`: evaluated and counted (`istio_dry_run_allow_` /
`istio_dry_run_deny_` stats, `shadow_engine_result` metadata), never enforced.

Policies apply to a workload when they sit in its namespace, or in the root
namespace (mesh-wide), and have no selector or a selector matching its labels.

Within a rule: one `from` source AND one `to` operation AND every `when`; within a
field its values are OR-ed; `notX` fields negate. Principals are Istio's
`<trust-domain>/ns/<ns>/sa/<sa>` and match the peer's URI SAN (`spiffe://` added);
request principals are `<iss>/<sub>` of the JWT jwt_authn verified, matched on its
payload metadata, as Istio's generator does (split at the last `/`).
On TCP ports, HTTP-only fields cannot be evaluated: an ALLOW rule that needs them
is dropped (it matches nothing), a DENY or AUDIT rule is applied without them (it
matches more), as Istio does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2
from google.protobuf import wrappers_pb2

from xds_server.galley.model import MeshConfig, WorkloadEntry
from xds_server.galley.model_security import (
    ENVOY_FILTER_KEY,
    AuthorizationPolicy,
    AuthzRule,
    Condition,
    OperationMatch,
    SourceMatch,
    workload_policies,
)
from xds_server.generators.typed_config import pack

HTTP_RBAC: Final = "envoy.filters.http.rbac"
NETWORK_RBAC: Final = "envoy.filters.network.rbac"
JWT_AUTHN: Final = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD: Final = "payload"  # jwt_authn's payload_in_metadata key (Istio's)
DRY_RUN_ALLOW_PREFIX: Final = "istio_dry_run_allow_"
DRY_RUN_DENY_PREFIX: Final = "istio_dry_run_deny_"

Permission: TypeAlias = rbac_pb2.Permission
Principal: TypeAlias = rbac_pb2.Principal
Policy: TypeAlias = rbac_pb2.Policy

# The policies that apply to one workload, as a hashable memo key.
PolicyKey = tuple[AuthorizationPolicy, ...]

# Filter order and the Envoy action of each Istio action.
_ACTIONS: Final = (("AUDIT", rbac_pb2.RBAC.LOG), ("DENY", rbac_pb2.RBAC.DENY),
                   ("ALLOW", rbac_pb2.RBAC.ALLOW))  # fmt: skip


class IdentityKey(tuple[object, ...]):
    """Policies hashed by identity (their selectors are unhashable mappings)."""

    def __hash__(self) -> int:
        return hash(tuple(id(p) for p in self))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, tuple)
            and len(other) == len(self)
            and all(a is b for a, b in zip(self, other, strict=True))
        )


NO_POLICIES: PolicyKey = IdentityKey(())  # type: ignore[assignment]  # a tuple, by identity


def policy_key(mesh: MeshConfig, workload: WorkloadEntry) -> PolicyKey:
    """The AuthorizationPolicies that apply to `workload`, in a stable order."""
    found = workload_policies(mesh.authorization_policies, workload, mesh.root_namespace)
    found.sort(key=lambda p: (p.meta.namespace, p.meta.name))
    return IdentityKey(found)  # type: ignore[return-value]  # a tuple, hashed by identity


def http_filters(policies: PolicyKey, port: int) -> list[hcm_pb2.HttpFilter]:
    """The AUDIT, DENY and ALLOW filters (CUSTOM: `generators.ext_authz`)."""
    out = []
    for rules, shadow, prefix in _rbacs(policies, http=True):
        config = http_rbac_pb2.RBAC(rules_stat_prefix=prefix)
        _set_rules(config, rules, shadow)
        out.append(hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(config)))
    return out


def network_filters(policies: PolicyKey, port: int) -> list[listener_components_pb2.Filter]:
    out = []
    for rules, shadow, prefix in _rbacs(policies, http=False):
        config = network_rbac_pb2.RBAC(stat_prefix=f"tcp.{prefix}inbound_{port}")
        _set_rules(config, rules, shadow)
        out.append(listener_components_pb2.Filter(name=NETWORK_RBAC, typed_config=pack(config)))
    return out


def _set_rules(
    config: http_rbac_pb2.RBAC | network_rbac_pb2.RBAC,
    rules: rbac_pb2.RBAC | None,
    shadow: rbac_pb2.RBAC | None,
) -> None:
    if rules is not None:
        config.rules.CopyFrom(rules)
    if shadow is not None:
        config.shadow_rules.CopyFrom(shadow)
        if shadow.action == rbac_pb2.RBAC.ALLOW:
            config.shadow_rules_stat_prefix = DRY_RUN_ALLOW_PREFIX
        elif shadow.action == rbac_pb2.RBAC.DENY:
            config.shadow_rules_stat_prefix = DRY_RUN_DENY_PREFIX


def _rbacs(
    policies: PolicyKey, *, http: bool
) -> list[tuple[rbac_pb2.RBAC | None, rbac_pb2.RBAC | None, str]]:
    """Per action present: (enforced rules, dry-run rules, stat prefix)."""
    out = []
    for action, envoy_action in _ACTIONS:
        group = [p for p in policies if p.action == action]
        if not group:
            continue
        enforced = [p for p in group if not p.dry_run]
        dry = [p for p in group if p.dry_run]
        out.append(
            (
                rbac(enforced, envoy_action, http=http) if enforced else None,
                rbac(dry, envoy_action, http=http) if dry else None,
                f"{action.lower()}.",
            )
        )
    return out


def rbac(
    policies: Sequence[AuthorizationPolicy], action: int, *, http: bool, name_prefix: str = ""
) -> rbac_pb2.RBAC:
    """One RBAC rule set: a policy per rule, named as Istio names them."""
    built = rbac_pb2.RBAC(action=action)
    for policy in policies:
        base = f"{name_prefix}ns[{policy.meta.namespace}]-policy[{policy.meta.name}]-rule"
        if not policy.rules:  # Istio: an explicit policy that never matches
            built.policies[f"{base}[0]"].CopyFrom(_MATCH_NEVER)
        for i, rule in enumerate(policy.rules):
            one = _policy(
                rule, policy.meta.namespace, http=http, allow=action == rbac_pb2.RBAC.ALLOW
            )
            if one is not None:
                built.policies[f"{base}[{i}]"].CopyFrom(one)
    return built


_MATCH_NEVER = Policy(
    permissions=[Permission(not_rule=Permission(any=True))],
    principals=[Principal(not_id=Principal(any=True))],
)


def _policy(rule: AuthzRule, namespace: str, *, http: bool, allow: bool) -> Policy | None:
    operations = list(rule.operations)
    sources = list(rule.sources)
    conditions = list(rule.conditions)
    if not http:
        needs_http = (
            any(o.http_only for o in operations)
            or any(c.http_only for c in conditions)
            or any(s.http_only for s in sources)
        )
        if needs_http and allow:
            return None
        operations = [_tcp_operation(o) for o in operations]
        sources = [_tcp_source(s) for s in sources]
        conditions = [c for c in conditions if not c.http_only]
    permissions: list[Permission] = []
    principals: list[Principal] = []
    if operations:
        permissions.append(_any_of([_operation(o) for o in operations]))
    if sources:
        principals.append(_one_of([_source(s, namespace) for s in sources]))
    for condition in conditions:
        _condition(condition, namespace, permissions, principals)
    return Policy(
        permissions=[_all_permissions(permissions)], principals=[_all_principals(principals)]
    )


def _tcp_operation(op: OperationMatch) -> OperationMatch:
    return OperationMatch(ports=op.ports, not_ports=op.not_ports)


def _tcp_source(src: SourceMatch) -> SourceMatch:
    return SourceMatch(
        principals=src.principals,
        not_principals=src.not_principals,
        namespaces=src.namespaces,
        not_namespaces=src.not_namespaces,
        ip_blocks=src.ip_blocks,
        not_ip_blocks=src.not_ip_blocks,
        remote_ip_blocks=src.remote_ip_blocks,
        not_remote_ip_blocks=src.not_remote_ip_blocks,
        service_accounts=src.service_accounts,
        not_service_accounts=src.not_service_accounts,
        trust_domains=src.trust_domains,
        not_trust_domains=src.not_trust_domains,
    )


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
    if "{*}" in path or "{**}" in path:  # Istio: an Envoy URI template
        template = path.replace("{**}", "**").replace("{*}", "*")
        config = uri_template_match_pb2.UriTemplateMatchConfig(path_template=template)
        return Permission(
            uri_template=extension_pb2.TypedExtensionConfig(
                name="uri-template", typed_config=pack(config)
            )
        )
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


def _regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


# --- from.source -------------------------------------------------------------------


def _source(src: SourceMatch, namespace: str) -> Principal:
    parts: list[Principal] = []
    _ids(parts, src.principals, src.not_principals, _principal)
    if src.request_principals:
        parts.append(_request_principals(src.request_principals))
    if src.not_request_principals:
        parts.append(Principal(not_id=_request_principals(src.not_request_principals)))
    _ids(parts, src.namespaces, src.not_namespaces, _namespace)
    _ids(
        parts,
        src.service_accounts,
        src.not_service_accounts,
        lambda v: _service_account(v, namespace),
    )
    _ids(parts, src.trust_domains, src.not_trust_domains, _trust_domain)
    _ids(parts, src.ip_blocks, src.not_ip_blocks, _ip_block)
    _ids(parts, src.remote_ip_blocks, src.not_remote_ip_blocks, _remote_ip)
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
    return _authenticated(_regex(f"spiffe://[^/]+/ns/{ns}/.*"))


def _service_account(value: str, namespace: str) -> Principal:
    """Istio's serviceAccountRegex: `<ns>/<sa>`, or `<sa>` of the policy's namespace."""
    ns, slash, sa = value.partition("/")
    if not slash:
        ns, sa = namespace, value
    return _authenticated(_regex(f"spiffe://.+/ns/{re.escape(ns)}/(.+/|)sa/{re.escape(sa)}(/.+)?"))


def _trust_domain(value: str) -> Principal:
    if value == "*":
        return _authenticated(string_pb2.StringMatcher(prefix="spiffe://"))
    if "*" not in value:
        return _authenticated(string_pb2.StringMatcher(prefix=f"spiffe://{value}/"))
    before, _, after = value.partition("*")
    return _authenticated(_regex(f"spiffe://{re.escape(before)}[^/]*{re.escape(after)}/.*"))


def _cidr(value: str) -> address_pb2.CidrRange:
    address, _, length = value.partition("/")
    if not length:
        length = "128" if ":" in address else "32"
    return address_pb2.CidrRange(
        address_prefix=address, prefix_len=wrappers_pb2.UInt32Value(value=int(length))
    )


def _ip_block(value: str) -> Principal:
    return Principal(direct_remote_ip=_cidr(value))


def _remote_ip(value: str) -> Principal:
    """The client's address as the HCM sees it: X-Forwarded-For's last entry (sidecars
    do not use the remote address; no trusted hops), else the peer's."""
    return Principal(remote_ip=_cidr(value))


# --- JWT claims (request.auth.*) ----------------------------------------------------


def _claim_matcher(
    path: Sequence[str], value: value_pb2.ValueMatcher
) -> metadata_pb2.MetadataMatcher:
    return metadata_pb2.MetadataMatcher(
        filter=JWT_AUTHN,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (JWT_PAYLOAD, *path)],
        value=value,
    )


def _claim_string(claim: str, matcher: string_pb2.StringMatcher) -> Principal:
    return Principal(
        metadata=_claim_matcher((claim,), value_pb2.ValueMatcher(string_match=matcher))
    )


_ANY: Final = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))


def _request_principals(values: Sequence[str]) -> Principal:
    """Istio's requestPrincipalGenerator: `iss/sub`, split at the last `/`."""
    out: list[Principal] = []
    for value in values:
        iss, slash, sub = value.rpartition("/")
        if not slash:
            iss, sub = value, ""
        if value == "*":
            match_iss, match_sub = _ANY, _ANY
        elif value.startswith("*"):
            if slash:
                match_iss = _ANY if iss == "*" else string_pb2.StringMatcher(suffix=iss[1:])
                match_sub = string_pb2.StringMatcher(exact=sub)
            else:
                match_iss, match_sub = _ANY, string_pb2.StringMatcher(suffix=value[1:])
        elif value.endswith("*"):
            if slash:
                match_iss = string_pb2.StringMatcher(exact=iss)
                match_sub = _ANY if sub == "*" else string_pb2.StringMatcher(prefix=sub[:-1])
            else:
                match_iss, match_sub = string_pb2.StringMatcher(prefix=value[:-1]), _ANY
        else:
            match_iss = string_pb2.StringMatcher(exact=iss)
            match_sub = string_pb2.StringMatcher(exact=sub)
        out.append(
            Principal(
                and_ids=Principal.Set(
                    ids=[_claim_string("iss", match_iss), _claim_string("sub", match_sub)]
                )
            )
        )
    return _one_of(out)


def _claim_values(path: Sequence[str], values: Sequence[str]) -> Principal:
    """A claim that is a string or a list holding one of `values` (Istio's extended
    JWT matcher: string claims and list claims alike)."""
    strings = [value_pb2.ValueMatcher(string_match=_claim_value(v)) for v in values]
    one = (
        strings[0]
        if len(strings) == 1
        else value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=strings))
    )
    either = value_pb2.ValueMatcher(
        or_match=value_pb2.OrMatcher(
            value_matchers=[
                value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one)),
                one,
            ]
        )
    )
    return Principal(metadata=_claim_matcher(path, either))


def _claim_value(value: str) -> string_pb2.StringMatcher:
    return _ANY if value == "*" else _string(value)


def claim_path(key: str) -> list[str]:
    """`request.auth.claims[a][b]` -> [a, b]; Istio's extractNameInNestedBrackets: a
    name that is not cleanly nested (`[foo.com/name]`) is one claim."""
    inner = key[len("request.auth.claims") :]
    names = re.findall(r"\[([^\[\]]*)\]", inner)
    if "".join(f"[{n}]" for n in names) == inner and all(names):
        return names
    return [inner[1:-1]]


# --- when --------------------------------------------------------------------------

_HEADER_KEY: Final = re.compile(r"request\.headers\[(.+)\]\Z")
_ENVOY_FILTER: Final = re.compile(r"experimental\.(envoy\.filters\.[A-Za-z0-9_.]+)\[([^\[\]]+)\]\Z")


def _condition(
    c: Condition, namespace: str, permissions: list[Permission], principals: list[Principal]
) -> None:
    header = _HEADER_KEY.match(c.key)
    if header is not None:
        name = header.group(1).lower()
        _ids(principals, c.values, c.not_values, lambda v: _header(name, v))
    elif c.key == "source.principal":
        _ids(principals, c.values, c.not_values, _principal)
    elif c.key == "source.namespace":
        _ids(principals, c.values, c.not_values, _namespace)
    elif c.key == "source.serviceAccount":
        _ids(principals, c.values, c.not_values, lambda v: _service_account(v, namespace))
    elif c.key == "source.trustDomain":
        _ids(principals, c.values, c.not_values, _trust_domain)
    elif c.key == "source.ip":
        _ids(principals, c.values, c.not_values, _ip_block)
    elif c.key == "remote.ip":
        _ids(principals, c.values, c.not_values, _remote_ip)
    elif c.key == "request.auth.principal":
        if c.values:
            principals.append(_request_principals(c.values))
        if c.not_values:
            principals.append(Principal(not_id=_request_principals(c.not_values)))
    elif c.key in ("request.auth.audiences", "request.auth.presenter"):
        claim = "aud" if c.key.endswith("audiences") else "azp"
        _claims(principals, [claim], c)
    elif c.key.startswith("request.auth.claims["):
        _claims(principals, claim_path(c.key), c)
    elif c.key == "destination.port":
        _field(permissions, c.values, c.not_values, _port)
    elif c.key == "destination.ip":
        _field(permissions, c.values, c.not_values, _destination_ip)
    elif c.key == "connection.sni":
        _field(permissions, c.values, c.not_values, _sni)
    elif c.key.startswith(ENVOY_FILTER_KEY):
        _envoy_filter(permissions, c)
    else:  # Galley only lets the keys above through.
        raise ValueError(f"unsupported condition key {c.key!r}")


def _claims(principals: list[Principal], path: list[str], c: Condition) -> None:
    if c.values:
        principals.append(_claim_values(path, c.values))
    if c.not_values:
        principals.append(Principal(not_id=_claim_values(path, c.not_values)))


def _header(name: str, value: str) -> Principal:
    if value == "*":
        matcher = route_components_pb2.HeaderMatcher(name=name, present_match=True)
    else:
        matcher = route_components_pb2.HeaderMatcher(name=name, string_match=_string(value))
    return Principal(header=matcher)


def _destination_ip(value: str) -> Permission:
    return Permission(destination_ip=_cidr(value))


def _sni(value: str) -> Permission:
    return Permission(requested_server_name=_string(value))


def _envoy_filter(permissions: list[Permission], c: Condition) -> None:
    """`experimental.envoy.filters.X[key]`: the dynamic metadata filter X wrote; a value
    `[v]` matches a list holding v (Istio's envoyFilterGenerator)."""
    found = _ENVOY_FILTER.match(c.key)
    assert found is not None  # Galley checked the key
    name, key = found.group(1), found.group(2)

    def matcher(values: Sequence[str]) -> Permission:
        choices = []
        for v in values:
            if v.startswith("[") and v.endswith("]"):
                one = value_pb2.ValueMatcher(string_match=_string(v[1:-1]))
                choices.append(value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one)))
            else:
                choices.append(value_pb2.ValueMatcher(string_match=_string(v)))
        value = (
            choices[0]
            if len(choices) == 1
            else value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=choices))
        )
        return Permission(
            metadata=metadata_pb2.MetadataMatcher(
                filter=name, path=[metadata_pb2.MetadataMatcher.PathSegment(key=key)], value=value
            )
        )

    if c.values:
        permissions.append(matcher(c.values))
    if c.not_values:
        permissions.append(Permission(not_rule=matcher(c.not_values)))
