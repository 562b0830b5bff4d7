"""AuthorizationPolicy: who may call a workload, and what (ALLOW, DENY, AUDIT, CUSTOM).

Checked as Istio's validation checks it (pkg/config/validation: ValidateAuthorizationPolicy
and pkg/config/security), with every finding located at its field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..fields import Shape, each, not_yet, obj, shape, supported
from ..model import ObjectMeta
from ..model_security import (
    AUTHZ_ACTIONS,
    ENVOY_FILTER_KEY,
    AuthorizationPolicy,
    AuthzRule,
    Condition,
    OperationMatch,
    SourceMatch,
)
from ..names import ip_or_cidr_problem
from ..schema import DocChecker, Located, Rule
from .common import MAX_PORT
from .peer_authentication import MATCH_LABELS, parse_match_labels

DRY_RUN = "istio.io/dry-run"

SOURCE: Shape = shape(
    principals=supported("<trust-domain>/ns/<ns>/sa/<sa>, matched on the peer's URI SAN"),
    notPrincipals=supported(),
    requestPrincipals=supported("<iss>/<sub> of the request's verified JWT"),
    notRequestPrincipals=supported(),
    namespaces=supported(),
    notNamespaces=supported(),
    serviceAccounts=supported("<ns>/<sa>, or <sa> in the policy's namespace; no wildcards"),
    notServiceAccounts=supported(),
    trustDomains=supported("of the peer's SPIFFE ID"),
    notTrustDomains=supported(),
    ipBlocks=supported("the connection's peer address"),
    notIpBlocks=supported(),
    remoteIpBlocks=supported(
        "the client address: X-Forwarded-For's last entry, else the peer (Envoy's remote_ip)"
    ),
    notRemoteIpBlocks=supported(),
)
OPERATION: Shape = shape(
    hosts=supported(),
    notHosts=supported(),
    ports=supported(),
    notPorts=supported(),
    methods=supported(),
    notMethods=supported(),
    paths=supported("exact, prefix*, *suffix, or a {*} / {**} path template"),
    notPaths=supported(),
)
WHEN: Shape = shape(
    key=supported(
        "request.headers[NAME] (pseudo-headers too), request.auth.principal, "
        "request.auth.audiences, request.auth.presenter, request.auth.claims[NAME][NESTED], "
        "source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, "
        "source.trustDomain, destination.ip, destination.port, connection.sni, "
        "experimental.envoy.filters.FILTER[KEY]"
    ),
    values=supported(),
    notValues=supported(),
)
RULE: Shape = shape(
    to=each(shape(operation=obj(OPERATION))),
    when=each(WHEN),
    **{"from": each(shape(source=obj(SOURCE)))},
)
PROVIDER: Shape = shape(name=supported("an extensionProviders[] name of the mesh settings"))
SPEC: Shape = shape(
    selector=obj(MATCH_LABELS),
    action=supported("ALLOW, DENY, AUDIT, CUSTOM"),
    rules=each(RULE, "spec: {} allows nothing"),
    provider=obj(PROVIDER, "CUSTOM only: the ext_authz service that decides"),
    targetRef=not_yet("Gateway API and waypoint attachment"),
    targetRefs=not_yet("Gateway API and waypoint attachment"),
)

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_HEADER_KEY = re.compile(rf"request\.headers\[:?{_TOKEN}\]\Z")
_CLAIMS_KEY = re.compile(r"request\.auth\.claims\[.+\]\Z")
_ENVOY_FILTER_KEY = re.compile(r"experimental\.envoy\.filters\.[A-Za-z0-9_.]+\[[^\[\]]+\]\Z")
PLAIN_KEYS = frozenset(
    {
        "source.ip", "remote.ip", "source.namespace", "source.principal",
        "source.serviceAccount", "source.trustDomain", "request.auth.principal",
        "request.auth.audiences", "request.auth.presenter", "destination.ip",
        "destination.port", "connection.sni",
    }
)  # fmt: skip
# Istio's validation names these as replaced or deprecated.
_RETIRED = {
    "destination.namespace": "is replaced by the metadata.namespace",
    "destination.name": "is deprecated: only supported in v1alpha1",
    "destination.user": "is deprecated: only supported in v1alpha1",
}
# Fields and keys a CUSTOM policy cannot use (Istio: "not supported with CUSTOM action").
_CUSTOM_SOURCE_REFUSED = (
    "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "trustDomains",
    "notTrustDomains", "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
)  # fmt: skip
_CUSTOM_KEYS_REFUSED = frozenset(
    {"source.namespace", "source.serviceAccount", "source.trustDomain", "source.principal"}
)


def _not_empty(value: str) -> str | None:
    return "must not be empty" if not value else None


def _port_value(value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= MAX_PORT:
        return f"must be a port number from 1 to {MAX_PORT}"
    return None


def _wildcard(value: str) -> str | None:
    """Istio's CheckWildcardValues: one `*`, at the start or the end."""
    if not value:
        return "must not be empty"
    count = value.count("*")
    if count > 1:
        return "may use at most one '*'"
    if count == 1 and value != "*" and not value.startswith("*") and not value.endswith("*"):
        return "may use '*' only at the start or the end"
    return None


def _trust_domain(value: str) -> str | None:
    problem = _wildcard(value)
    if problem is None and "/" in value:
        return "is a trust domain: it must not contain '/'"
    return problem


def service_account_problem(value: str) -> str | None:
    """Istio's CheckServiceAccount: `<sa>` or `<ns>/<sa>`, no wildcard."""
    if not value:
        return "must not be empty"
    if "*" in value:
        return "must not use a wildcard"
    if len(value) > 320:
        return "must be at most 320 characters"
    ns, slash, sa = value.partition("/")
    if value.count("/") > 1 or (slash and (not ns or not sa)):
        return "must be 'serviceAccount' or 'namespace/serviceAccount'"
    return None


_TEMPLATE_LITERAL = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+\Z")


def path_problem(value: str) -> str | None:
    """Istio's CheckValidPathTemplate: `{*}` and `{**}` (last) as whole segments."""
    if not value:
        return "must not be empty"
    if "{" not in value and "}" not in value:
        return None
    templated = "{*}" in value or "{**}" in value
    seen_any = False
    for glob in value.strip("/").split("/"):
        if glob in ("{*}", "{**}"):
            if seen_any:
                return "is not a valid path template: {**} must be the last operator"
            seen_any = glob == "{**}"
            continue
        if "{" in glob or "}" in glob:
            return "is not a valid path template: '{' or '}' outside {*} and {**}"
        if templated and not _TEMPLATE_LITERAL.match(glob):
            return f"is not a valid path template: segment {glob!r} is not a plain literal"
    return None


def when_key_problem(value: str) -> str | None:
    if value in PLAIN_KEYS:
        return None
    if value.startswith("request.headers"):
        return None if _HEADER_KEY.match(value) else "must be request.headers[NAME]"
    if value.startswith("request.auth.claims"):
        return None if _CLAIMS_KEY.match(value) else "must be request.auth.claims[NAME]"
    if value.startswith(ENVOY_FILTER_KEY):
        if _ENVOY_FILTER_KEY.match(value):
            return None
        return "must be experimental.envoy.filters.FILTER[KEY]"
    if value in _RETIRED:
        return _RETIRED[value]
    if value.startswith("destination.labels"):
        return "is replaced by the workload selector"
    return "is not an attribute Istio knows (see its authorization policy conditions)"


def _value_rule(key: str) -> Rule:
    if key == "destination.port":
        return _port_value
    if key in ("source.ip", "remote.ip", "destination.ip"):
        return ip_or_cidr_problem
    if key == "source.serviceAccount":
        return service_account_problem
    if key == "source.trustDomain":
        return _wildcard
    return _not_empty


def parse_authorization_policy(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> AuthorizationPolicy | None:
    before = len(ck.errors)
    selector: Mapping[str, str] | None = None
    action: str | None = "ALLOW"
    rules: list[AuthzRule] = []
    provider = ""
    fields: dict[str, Located] = {}
    if spec is not None:
        found = ck.fields(spec, SPEC)
        if found is None:
            return None
        fields = found
        if (at := fields.get("selector")) is not None:
            selector = parse_match_labels(ck, at)
        if (at := fields.get("action")) is not None:
            action = ck.enum(at, AUTHZ_ACTIONS)
        if (at := fields.get("rules")) is not None:
            for item in ck.items(at) or ():
                rule = _rule(ck, item, action)
                if rule is not None:
                    rules.append(rule)
        provider = _provider(ck, fields, action, spec)
    where = spec or Located(None, "spec", meta.source.line)
    if action in ("DENY", "CUSTOM") and "rules" not in fields:
        ck.error(
            where,
            f"{action} without rules never matches: add an empty rule {{}} to match every "
            "request (as Istio says)",
            path="spec.rules",
        )
    dry_run = _dry_run(ck, meta)
    if dry_run and action == "CUSTOM":
        path = f'metadata.annotations["{DRY_RUN}"]'
        at = Located(True, path, ck.lines.get(path, meta.source.line))
        ck.not_yet(at, f"{DRY_RUN} with action CUSTOM (Istio would still call the provider)")
    if action is None or len(ck.errors) > before:
        return None
    return AuthorizationPolicy(
        meta=meta,
        selector=selector,
        action=action,
        rules=tuple(rules),
        provider=provider,
        dry_run=dry_run,
    )


def _provider(ck: DocChecker, fields: dict[str, Located], action: str | None, spec: Located) -> str:
    at = fields.get("provider")
    if at is None:
        if action == "CUSTOM":
            ck.error(spec, "CUSTOM needs provider.name", path="spec.provider")
        return ""
    if action != "CUSTOM":
        ck.error(at, f"provider is only for action CUSTOM, not {action}")
        return ""
    provider = ck.fields(at, PROVIDER)
    if provider is None:
        return ""
    name_at = ck.required(provider, "name", at)
    name = ck.string(name_at, _not_empty) if name_at is not None else None
    return name or ""


def _dry_run(ck: DocChecker, meta: ObjectMeta) -> bool:
    value = meta.annotations.get(DRY_RUN)
    if value is None:
        return False
    path = f'metadata.annotations["{DRY_RUN}"]'
    if value.lower() not in ("true", "false", "1", "0", "t", "f"):
        at = Located(value, path, ck.lines.get(path, meta.source.line))
        ck.error(at, f"{value!r} must be true or false")
        return False
    return value.lower() in ("true", "1", "t")


def _rule(ck: DocChecker, at: Located, action: str | None) -> AuthzRule | None:
    if at.value is None:  # `- {}` written as `-`: a rule that matches everything
        return AuthzRule()
    fields = ck.fields(at, RULE)
    if fields is None:
        return None
    sources: list[SourceMatch] = []
    operations: list[OperationMatch] = []
    conditions: list[Condition] = []
    for item in _list(ck, fields, "from"):
        entry = ck.fields(item, RULE["from"].fields or {})
        if entry is not None and (src := ck.required(entry, "source", item)) is not None:
            source = _source(ck, src, action)
            if source is not None:
                sources.append(source)
    for item in _list(ck, fields, "to"):
        entry = ck.fields(item, RULE["to"].fields or {})
        if entry is not None and (op := ck.required(entry, "operation", item)) is not None:
            operation = _operation(ck, op)
            if operation is not None:
                operations.append(operation)
    for item in _list(ck, fields, "when"):
        condition = _condition(ck, item, action)
        if condition is not None:
            conditions.append(condition)
    _warn_deny_http_only(ck, at, action, fields, sources, operations)
    return AuthzRule(tuple(sources), tuple(operations), tuple(conditions))


def _warn_deny_http_only(
    ck: DocChecker,
    at: Located,
    action: str | None,
    fields: dict[str, Located],
    sources: list[SourceMatch],
    operations: list[OperationMatch],
) -> None:
    """Istio's warning: a DENY rule made only of HTTP attributes denies all TCP traffic."""
    if action != "DENY":
        return
    tcp_from = any(s.tcp_fields for s in sources)
    tcp_to = any(o.ports or o.not_ports for o in operations)
    only_from = "from" in fields and "to" not in fields and not tcp_from
    if only_from or ("to" in fields and not tcp_to):
        ck.warn(
            at,
            "uses only HTTP attributes in a DENY rule: on TCP ports it denies every "
            "connection (as in Istio); name the ports it is for",
        )


def _list(ck: DocChecker, fields: dict[str, Located], key: str) -> list[Located]:
    at = fields.get(key)
    return [] if at is None else ck.items(at, non_empty=True) or []


def _values(ck: DocChecker, fields: dict[str, Located], key: str, rule: Rule) -> tuple[str, ...]:
    at = fields.get(key)
    if at is None:
        return ()
    return tuple(value for value, _ in ck.strings(at, rule, non_empty=True) or ())


def _port_strings(ck: DocChecker, at: Located) -> list[str]:
    out = []
    for item in ck.items(at, non_empty=True) or ():
        value = item.value
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or _port_value(value) is not None:
            ck.error(item, f"{item.value!r} must be a port number from 1 to {MAX_PORT}")
            continue
        out.append(value)
    return out


def _source(ck: DocChecker, at: Located, action: str | None) -> SourceMatch | None:
    fields = ck.fields(at, SOURCE)
    if fields is None:
        return None
    if not fields:
        ck.error(at, "a source needs at least one field")
    accounts = {"serviceAccounts", "notServiceAccounts"} & fields.keys()
    peers = {"principals", "notPrincipals", "namespaces", "notNamespaces"} & fields.keys()
    if accounts and peers:
        ck.error(at, f"cannot set {', '.join(sorted(accounts))} with {', '.join(sorted(peers))}")
    if action == "CUSTOM":
        for name in _CUSTOM_SOURCE_REFUSED:
            if name in fields:
                ck.error(fields[name], f"{name} cannot be used with action CUSTOM (as in Istio)")
    return SourceMatch(
        principals=_values(ck, fields, "principals", _not_empty),
        not_principals=_values(ck, fields, "notPrincipals", _not_empty),
        namespaces=_values(ck, fields, "namespaces", _not_empty),
        not_namespaces=_values(ck, fields, "notNamespaces", _not_empty),
        ip_blocks=_values(ck, fields, "ipBlocks", ip_or_cidr_problem),
        not_ip_blocks=_values(ck, fields, "notIpBlocks", ip_or_cidr_problem),
        request_principals=_values(ck, fields, "requestPrincipals", _not_empty),
        not_request_principals=_values(ck, fields, "notRequestPrincipals", _not_empty),
        remote_ip_blocks=_values(ck, fields, "remoteIpBlocks", ip_or_cidr_problem),
        not_remote_ip_blocks=_values(ck, fields, "notRemoteIpBlocks", ip_or_cidr_problem),
        service_accounts=_values(ck, fields, "serviceAccounts", service_account_problem),
        not_service_accounts=_values(ck, fields, "notServiceAccounts", service_account_problem),
        trust_domains=_values(ck, fields, "trustDomains", _trust_domain),
        not_trust_domains=_values(ck, fields, "notTrustDomains", _trust_domain),
    )


def _operation(ck: DocChecker, at: Located) -> OperationMatch | None:
    fields = ck.fields(at, OPERATION)
    if fields is None:
        return None
    if not fields:
        ck.error(at, "an operation needs at least one field")
    return OperationMatch(
        hosts=_values(ck, fields, "hosts", _not_empty),
        not_hosts=_values(ck, fields, "notHosts", _not_empty),
        ports=tuple(int(p) for p in _port_strings_of(ck, fields, "ports")),
        not_ports=tuple(int(p) for p in _port_strings_of(ck, fields, "notPorts")),
        methods=_values(ck, fields, "methods", _not_empty),
        not_methods=_values(ck, fields, "notMethods", _not_empty),
        paths=_values(ck, fields, "paths", path_problem),
        not_paths=_values(ck, fields, "notPaths", path_problem),
    )


def _port_strings_of(ck: DocChecker, fields: dict[str, Located], key: str) -> list[str]:
    at = fields.get(key)
    return [] if at is None else _port_strings(ck, at)


def _condition(ck: DocChecker, at: Located, action: str | None) -> Condition | None:
    fields = ck.fields(at, WHEN)
    if fields is None:
        return None
    key_at = ck.required(fields, "key", at)
    key = ck.string(key_at, when_key_problem) if key_at is not None else None
    if (
        key is not None
        and key_at is not None
        and action == "CUSTOM"
        and (key in _CUSTOM_KEYS_REFUSED or key.startswith("request.auth."))
    ):
        ck.error(key_at, f"{key!r} cannot be used with action CUSTOM (as in Istio)")
    rule = _value_rule(key or "")
    values = _values(ck, fields, "values", rule)
    not_values = _values(ck, fields, "notValues", rule)
    if "values" not in fields and "notValues" not in fields:
        ck.error(at, "needs values or notValues")
    if key is None:
        return None
    return Condition(key=key, values=values, not_values=not_values)
