"""AuthorizationPolicy: who may call a workload, and what (ALLOW, DENY, AUDIT)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..fields import Shape, each, not_yet, obj, shape, supported
from ..model import ObjectMeta
from ..model_security import (
    AUTHZ_ACTIONS,
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

SOURCE: Shape = shape(
    principals=supported("<trust-domain>/ns/<ns>/sa/<sa>, matched on the peer's URI SAN"),
    notPrincipals=supported(),
    namespaces=supported(),
    notNamespaces=supported(),
    ipBlocks=supported(),
    notIpBlocks=supported(),
    requestPrincipals=not_yet("JWT"),
    notRequestPrincipals=not_yet("JWT"),
    remoteIpBlocks=not_yet(),
    notRemoteIpBlocks=not_yet(),
)
OPERATION: Shape = shape(
    hosts=supported(),
    notHosts=supported(),
    ports=supported(),
    notPorts=supported(),
    methods=supported(),
    notMethods=supported(),
    paths=supported(),
    notPaths=supported(),
)
WHEN: Shape = shape(
    key=supported(
        "request.headers[NAME], source.principal, source.namespace, source.ip, "
        "remote.ip, destination.port"
    ),
    values=supported(),
    notValues=supported(),
)
RULE: Shape = shape(
    to=each(shape(operation=obj(OPERATION))),
    when=each(WHEN),
    **{"from": each(shape(source=obj(SOURCE)))},
)
SPEC: Shape = shape(
    selector=obj(MATCH_LABELS),
    action=supported("ALLOW, DENY, AUDIT; CUSTOM not yet"),
    rules=each(RULE, "spec: {} allows nothing"),
    provider=not_yet("CUSTOM actions"),
    targetRef=not_yet(),
    targetRefs=not_yet(),
)
WHEN_KEYS = frozenset(
    {"source.principal", "source.namespace", "source.ip", "remote.ip", "destination.port"}
)
_HEADER_KEY = re.compile(r"request\.headers\[[A-Za-z0-9!#$%&'*+.^_`|~-]+\]\Z")


def _not_empty(value: str) -> str | None:
    return "must not be empty" if not value else None


def _port_value(value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= MAX_PORT:
        return f"must be a port number from 1 to {MAX_PORT}"
    return None


def _when_key(value: str) -> str | None:
    if value in WHEN_KEYS or _HEADER_KEY.match(value):
        return None
    supported = ", ".join(sorted(WHEN_KEYS))
    return f"is not a condition pocketmesh supports (request.headers[NAME], {supported})"


def parse_authorization_policy(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> AuthorizationPolicy | None:
    before = len(ck.errors)
    selector: Mapping[str, str] | None = None
    action: str | None = "ALLOW"
    rules: list[AuthzRule] = []
    if spec is not None:
        fields = ck.fields(spec, SPEC)
        if fields is None:
            return None
        if (at := fields.get("selector")) is not None:
            selector = parse_match_labels(ck, at)
        if (at := fields.get("action")) is not None:
            if at.value == "CUSTOM":
                ck.not_yet(at, "action CUSTOM (external authorization)")
                action = None
            else:
                action = ck.enum(at, AUTHZ_ACTIONS)
        if (at := fields.get("rules")) is not None:
            for item in ck.items(at) or ():
                rule = _rule(ck, item)
                if rule is not None:
                    rules.append(rule)
    if action is None or len(ck.errors) > before:
        return None
    return AuthorizationPolicy(meta=meta, selector=selector, action=action, rules=tuple(rules))


def _rule(ck: DocChecker, at: Located) -> AuthzRule | None:
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
            source = _source(ck, src)
            if source is not None:
                sources.append(source)
    for item in _list(ck, fields, "to"):
        entry = ck.fields(item, RULE["to"].fields or {})
        if entry is not None and (op := ck.required(entry, "operation", item)) is not None:
            operation = _operation(ck, op)
            if operation is not None:
                operations.append(operation)
    for item in _list(ck, fields, "when"):
        condition = _condition(ck, item)
        if condition is not None:
            conditions.append(condition)
    return AuthzRule(tuple(sources), tuple(operations), tuple(conditions))


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


def _source(ck: DocChecker, at: Located) -> SourceMatch | None:
    fields = ck.fields(at, SOURCE)
    if fields is None:
        return None
    if not fields:
        ck.error(at, "a source needs at least one field")
    return SourceMatch(
        principals=_values(ck, fields, "principals", _not_empty),
        not_principals=_values(ck, fields, "notPrincipals", _not_empty),
        namespaces=_values(ck, fields, "namespaces", _not_empty),
        not_namespaces=_values(ck, fields, "notNamespaces", _not_empty),
        ip_blocks=_values(ck, fields, "ipBlocks", ip_or_cidr_problem),
        not_ip_blocks=_values(ck, fields, "notIpBlocks", ip_or_cidr_problem),
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
        paths=_values(ck, fields, "paths", _not_empty),
        not_paths=_values(ck, fields, "notPaths", _not_empty),
    )


def _port_strings_of(ck: DocChecker, fields: dict[str, Located], key: str) -> list[str]:
    at = fields.get(key)
    return [] if at is None else _port_strings(ck, at)


def _condition(ck: DocChecker, at: Located) -> Condition | None:
    fields = ck.fields(at, WHEN)
    if fields is None:
        return None
    key_at = ck.required(fields, "key", at)
    key = ck.string(key_at, _when_key) if key_at is not None else None
    rule: Rule = _not_empty
    if key == "destination.port":
        rule = _port_value
    elif key in ("source.ip", "remote.ip"):
        rule = ip_or_cidr_problem
    values = _values(ck, fields, "values", rule)
    not_values = _values(ck, fields, "notValues", rule)
    if "values" not in fields and "notValues" not in fields:
        ck.error(at, "needs values or notValues")
    if key is None:
        return None
    return Condition(key=key, values=values, not_values=not_values)
