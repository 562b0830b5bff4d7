"""Envoy's RBAC filter replayed for one caller and request (what an AuthorizationPolicy
became on the destination's inbound listener).

Three-valued: a rule on something the request alone does not say (the client address
through a proxy, a JWT's claims, a filter's metadata) is undecided, and so is any
verdict that depends on it; it is never guessed. Filters run in chain order; an
ALLOW filter admits a request that one of its policies matches, a DENY filter stops
one that any policy matches, LOG (AUDIT) and shadow (dry-run) rules decide nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.type.matcher.v3 import path_pb2

from xds_server.explain.envoy_match import Verdict, header_check, string_matches
from xds_server.explain.envoy_read import RbacFilter
from xds_server.explain.request import Request


@dataclass(frozen=True, slots=True)
class Caller:
    """What the destination's Envoy knows of the connection and request."""

    principal: str | None  # the client certificate's URI SAN; None: no certificate
    port: int  # the destination port
    request: Request | None  # None: a TCP connection
    sni: str = ""
    remote_ip: str | None = None  # None: not known from here


def _all(values: Sequence[Verdict]) -> Verdict:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _any(values: Sequence[Verdict]) -> Verdict:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def _not(value: Verdict) -> Verdict:
    return None if value is None else not value


def _cidr(rule: address_pb2.CidrRange, ip: str | None) -> Verdict:
    if ip is None:
        return None
    try:
        network = ipaddress.ip_network(f"{rule.address_prefix}/{rule.prefix_len.value}", False)
        return ipaddress.ip_address(ip) in network
    except ValueError:
        return None


def _header(matcher: route_components_pb2.HeaderMatcher, request: Request | None) -> Verdict:
    """A permission's or principal's `header`: a TCP connection has none to match."""
    return False if request is None else header_check(matcher, request.header_map()).ok


def _url_path(matcher: path_pb2.PathMatcher, request: Request | None) -> Verdict:
    """A permission's or principal's `url_path`: a TCP connection has no path."""
    return False if request is None else string_matches(matcher.path, request.path_only)


def permission(p: rbac_pb2.Permission, caller: Caller) -> Verdict:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return p.any
    if kind == "and_rules":
        return _all([permission(r, caller) for r in p.and_rules.rules])
    if kind == "or_rules":
        return _any([permission(r, caller) for r in p.or_rules.rules])
    if kind == "not_rule":
        return _not(permission(p.not_rule, caller))
    if kind == "destination_port":
        return p.destination_port == caller.port
    if kind == "destination_port_range":
        return p.destination_port_range.start <= caller.port < p.destination_port_range.end
    if kind == "header":
        return _header(p.header, caller.request)
    if kind == "url_path":
        return _url_path(p.url_path, caller.request)
    if kind == "requested_server_name":
        return string_matches(p.requested_server_name, caller.sni)
    return None  # metadata, matchers, templates: not known from the request


def principal(p: rbac_pb2.Principal, caller: Caller) -> Verdict:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return p.any
    if kind == "and_ids":
        return _all([principal(r, caller) for r in p.and_ids.ids])
    if kind == "or_ids":
        return _any([principal(r, caller) for r in p.or_ids.ids])
    if kind == "not_id":
        return _not(principal(p.not_id, caller))
    if kind == "authenticated":
        if caller.principal is None:
            return False  # no client certificate
        if not p.authenticated.HasField("principal_name"):
            return True
        return string_matches(p.authenticated.principal_name, caller.principal)
    if kind in ("direct_remote_ip", "source_ip", "remote_ip"):
        return _cidr(getattr(p, kind), caller.remote_ip)
    if kind == "header":
        return _header(p.header, caller.request)
    if kind == "url_path":
        return _url_path(p.url_path, caller.request)
    return None  # metadata (JWT principals), filter state, custom


def policy(p: rbac_pb2.Policy, caller: Caller) -> Verdict:
    """A policy matches when one permission and one principal match."""
    if p.HasField("condition") or p.HasField("checked_condition"):
        return None  # CEL
    return _all(
        [
            _any([permission(x, caller) for x in p.permissions]),
            _any([principal(x, caller) for x in p.principals]),
        ]
    )


@dataclass(frozen=True, slots=True)
class RbacDecision:
    allowed: Verdict
    why: str
    filters: list[dict[str, object]]


_RULE = re.compile(r"ns\[(?P<ns>[^\]]*)\]-policy\[(?P<name>[^\]]*)\]-rule\[(?P<i>\d+)\]")


def policy_name(rbac_name: str) -> str:
    """`ns[default]-policy[ratings]-rule[0]` (how the generators name RBAC policies) as
    the AuthorizationPolicy rule it came from: `default/ratings rules[0]`."""
    found = _RULE.fullmatch(rbac_name)
    if found is None:
        return rbac_name
    return f"{found['ns']}/{found['name']} rules[{found['i']}]"


def decide(filters: Sequence[RbacFilter], caller: Caller) -> RbacDecision:
    """Every RBAC filter in order, as Envoy runs them."""
    reports: list[dict[str, object]] = []
    outcome: Verdict = True
    why = "no AuthorizationPolicy applies: allowed" if not filters else "allowed"
    for f in filters:
        matched = {policy_name(n): policy(p, caller) for n, p in sorted(f.policies.items())}
        hits = [n for n, v in matched.items() if v is True]
        unsure = [n for n, v in matched.items() if v is None]
        report: dict[str, object] = {
            "action": f.action,
            "dry_run": f.shadow,
            "policies": {n: v for n, v in matched.items()},
        }
        reports.append(report)
        if f.shadow or f.action == "LOG":
            continue
        if f.action == "DENY":
            if hits:
                outcome, why = False, f"denied by {', '.join(hits)}"
                break
            if unsure and outcome is not False:
                outcome, why = None, f"undecided: DENY {', '.join(unsure)} may match"
        elif f.action == "ALLOW":
            if hits:
                continue
            if unsure:
                if outcome is not False:
                    outcome, why = None, f"undecided: only ALLOW {', '.join(unsure)} may match"
                continue
            names = ", ".join(matched) or "an ALLOW policy without rules"
            who = f"caller {caller.principal}" if caller.principal else "caller (no certificate)"
            outcome, why = False, f"the {who} matches no ALLOW rule ({names})"
            break
    return RbacDecision(outcome, why, reports)
