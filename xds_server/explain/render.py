"""The text form of an explanation (`-o json` prints the dict itself)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xds_server.protocol.untrusted import shown

OK, NO, MAYBE = "✓", "✗", "?"


def render(result: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _workload(lines, result["workload"], result)
    if "destination" in result:
        lines.append("")
        _destination(lines, result["request"], result["destination"])
    return "\n".join(lines) + "\n"


def _mark(ok: bool | None) -> str:
    return OK if ok is True else NO if ok is False else MAYBE


def _workload(lines: list[str], w: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    who = f"{w['proxy']}  {w['kind']}  {w['address']}  sa {w['service_account']}"
    lines.append(who + (f"  {w['identity']}" if w.get("identity") else "  (no mTLS identity)"))
    lines.append(f"  from {w['source']}; read from {result['source']}")
    if w.get("labels"):
        lines.append(f"  labels: {_labels(w['labels'])}")
    lines.append(f"  services: {', '.join(w['services']) or 'none selects it'}")
    for g in w.get("gateways", []):
        lines.append(f"  Gateway {g['name']} ({g['source']}): {'; '.join(g['servers'])}")
    sc = w["sidecar"]
    sees = sc["sees"]
    lines.append("")
    if sc["name"]:
        lines.append(f"Sidecar {sc['name']} ({sc['source']})")
    else:
        lines.append("Sidecar: none")
    lines.append(f"  {sc['why']}")
    if sc.get("egress") is not None and sc["name"]:
        egress = sc["egress"]
        text = egress if isinstance(egress, str) else "; ".join(", ".join(e) for e in egress)
        lines.append(f"  egress: {text}")
    for ingress in sc.get("ingress", []):
        lines.append(f"  ingress: {ingress}")
    lines.append(f"  sees {sees['services']} service host(s), {sees['clusters']} cluster(s)")
    if w["inbound"]:
        lines.append("")
        lines.append("Inbound ports (PeerAuthentication mode, and what Envoy accepts):")
        for port in w["inbound"]:
            mtls = port["mtls"]
            lines.append(
                f"  {port['port']} {port['protocol']} -> {port['app']}: {mtls['mode']} "
                f"(Envoy: {port['envoy_mode']}), decided by {mtls['by']}"
            )
            for f in port.get("rbac", []):
                dry = " (dry run)" if f["dry_run"] else ""
                lines.append(
                    f"      RBAC {f['action']}{dry}: {', '.join(f['policies']) or 'no rule'}"
                )
    lines.append("")
    policies = w["authorization_policies"]
    lines.append(f"AuthorizationPolicies: {'none' if not policies else ''}".rstrip())
    for p in policies:
        extra = f", provider {p['provider']}" if p.get("provider") else ""
        extra += ", dry run" if p.get("dry_run") else ""
        lines.append(
            f"  {p['name']} ({p['source']}): {p['action']}, {p['rules']} rule(s), "
            f"selector {_labels(p['selector'])}{extra}"
        )
    authn = w["request_authentications"]
    lines.append(f"RequestAuthentications: {'none' if not authn else ''}".rstrip())
    for ra in authn:
        lines.append(
            f"  {ra['name']} ({ra['source']}): issuers {', '.join(ra['issuers']) or '-'}, "
            f"selector {_labels(ra['selector'])}"
        )
    for conflict in w.get("conflicts", []):
        lines.append(f"  ! {conflict}")


def _labels(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def _destination(lines: list[str], req: Mapping[str, Any], d: Mapping[str, Any]) -> None:
    headers = "".join(f" -H '{shown(k)}: {shown(v)}'" for k, v in req["headers"])
    if d.get("way") == "outbound TCP" or (d.get("clusters") and not d.get("routes")):
        scheme = "tls" if req["scheme"] in ("https", "tls") else "tcp"
        lines.append(f"Connection: {scheme}://{shown(req['target'])}")
    else:
        target = shown(f"{req['scheme']}://{req['target']}{req['path']}")
        lines.append(f"Request: {shown(req['method'])} {target}{headers}")
    lines.append(f"  {d['way']}: {d.get('how', '')}")
    for key in ("note", "filter_chain"):
        if d.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {d[key]}")
    if d.get("listener"):
        hops = [f"listener {d['listener']}"]
        if d.get("route_config"):
            hops.append(f"route config {d['route_config']}")
        vh = d.get("virtual_host") or {}
        if vh.get("name"):
            hops.append(f"virtual host {vh['name']} (domain {vh['domain']!r}, {vh['how']})")
        lines.append("  " + " → ".join(hops))
    if d.get("tls"):
        t = d["tls"]
        lines.append(
            f"  TLS ends at the gateway: {t['mode']}, server names "
            f"{', '.join(t['server_names']) or 'any'}, {t['certificates']} certificate(s), "
            f"ALPN {', '.join(t['alpn']) or '-'}"
        )
        if t.get("client"):
            lines.append(f"    {t['client']}")
    if d.get("authorization"):
        a = d["authorization"]
        lines.append(f"  {_mark(a['allowed'])} authorization: {a['why']}")
    if d.get("virtual_service"):
        vs = d["virtual_service"]
        lines.append(f"  VirtualService {vs['name']} ({vs['source']}) rule {vs['rule']}")
    routes = d.get("routes") or []
    if routes:
        lines.append("  routes, in order (the first that matches wins):")
    for r in routes:
        origin = ""
        if r.get("virtual_service"):
            origin = f"  VirtualService {r['virtual_service']} {r.get('rule', '')}".rstrip()
        name = r["name"] or "(unnamed: the default route)"
        lines.append(f"    {_mark(r['matched'])} #{r['index']} {name}{origin}")
        for c in r["checks"]:
            if r["matched"] is not True and c["ok"] is not True:
                lines.append(
                    f"        {_mark(c['ok'])} {c['condition']}: request has {c['request']}"
                )
    if d.get("routes_after"):
        lines.append(f"    ({d['routes_after']} later route(s) not tried)")
    for nb in d.get("not_built") or []:
        lines.append(f"    - {nb['virtual_service']} {nb['rule']}: not built here: {nb['why']}")
    route = d.get("route")
    if route:
        lines.append(f"  route {route['name'] or '(unnamed)'}: {_route_summary(route)}")
        if route.get("note"):
            lines.append(f"    {route['note']}")
        if route.get("caveat"):
            lines.append(f"    ! {route['caveat']}")
    for c in d.get("clusters") or []:
        _cluster(lines, c, "  → ")
    for m in (route or {}).get("mirrors", []):
        lines.append(f"  mirrored ({m['percent']}%, answers dropped):")
        _cluster(lines, m["detail"], "    ⇢ ")
    outcome = d.get("outcome")
    if outcome:
        lines.append(f"Outcome: {outcome['result']}: {outcome['why']}")
        if outcome.get("similar_domains"):
            lines.append(f"  similar domains: {', '.join(outcome['similar_domains'])}")


def _route_summary(route: Mapping[str, Any]) -> str:
    parts = [route.get("action", "route")]
    if route.get("virtual_service"):
        parts.append(f"from VirtualService {route['virtual_service']} {route.get('rule', '')}")
    for key in ("timeout", "prefix_rewrite", "regex_rewrite", "host_rewrite", "status"):
        if route.get(key) is not None:
            parts.append(f"{key.replace('_', ' ')} {route[key]}")
    if route.get("retries"):
        parts.append(f"retries {route['retries']}")
    if route.get("fault"):
        parts.append(f"fault {route['fault']}")
    if route.get("redirect"):
        parts.append(f"redirect {route['redirect']}")
    if route.get("headers"):
        parts.append(f"headers {route['headers']}")
    return ", ".join(str(p) for p in parts)


def _cluster(lines: list[str], c: Mapping[str, Any], lead: str) -> None:
    pad = " " * len(lead)
    lines.append(f"{lead}{c['name']}  {c['share']}")
    if c.get("missing"):
        lines.append(f"{pad}! {c['missing']}")
        return
    svc = c.get("service")
    if svc:
        lines.append(
            f"{pad}service {svc['entry']} ({svc['host']}:{svc['port']}, {svc['source']}), "
            f"{svc['location']}, resolution {svc['resolution']}"
        )
    dr = c.get("destination_rule")
    if dr:
        subset = dr.get("subset")
        where = f"DestinationRule {dr['name']} ({dr.get('source')})" if dr["name"] else "no rule"
        if subset:
            where += f", subset {subset['name']} {_labels(subset['labels'])}"
        lines.append(f"{pad}{where}")
    policy = c.get("policy", {})
    extra = [k for k in ("circuit_breakers", "outlier_detection", "http_protocol_options")
             if k in policy]  # fmt: skip
    lines.append(
        f"{pad}{policy.get('type')}, {policy.get('lb_policy')}"
        + "".join(f", {k} {policy[k]}" for k in extra)
    )
    tls = c.get("tls", {})
    text = f"{pad}TLS {tls.get('mode')} ({tls.get('wire')})"
    if tls.get("sni"):
        text += f", SNI {tls['sni']}"
    if tls.get("presents"):
        text += f", presents {tls['presents']}"
    if tls.get("server_identities"):
        text += f", accepts server {', '.join(tls['server_identities'])}"
    if tls.get("proxy_protocol"):
        text += f"; each connection starts with a PROXY protocol {tls['proxy_protocol']} header"
    lines.append(text)
    lines.append(f"{pad}  why: {tls.get('why')}")
    lines.append(f"{pad}endpoints ({c.get('endpoints_from')}):")
    endpoints = c.get("endpoints", [])
    for ep in endpoints[:MAX_ENDPOINTS]:
        _endpoint(lines, ep, pad + "  ")
    if len(endpoints) > MAX_ENDPOINTS:
        lines.append(f"{pad}  ... {len(endpoints) - MAX_ENDPOINTS} more (-o json lists them)")
    if c.get("no_endpoints"):
        lines.append(f"{pad}  ! {c['no_endpoints']}")


MAX_ENDPOINTS = 10


def _endpoint(lines: list[str], ep: Mapping[str, Any], pad: str) -> None:
    text = f"{pad}{ep['address']}"
    for key in ("workload", "locality"):
        if ep.get(key):
            text += f"  {ep[key]}"
    if ep.get("weight", 1) != 1:
        text += f"  weight {ep['weight']}"
    lines.append(text)
    more = pad + "    "
    if "accepts" in ep:
        sidecar = f"{_mark(ep['accepts'])} its sidecar"
        if ep.get("gateway"):
            sidecar = f"{_mark(ep['accepts'])} its gateway ({ep['gateway']})"
        if ep.get("mtls"):
            sidecar += f": {ep['mtls']['mode']}, decided by {ep['mtls']['by']}"
        if ep.get("server_identity"):
            sidecar += f", presents {ep['server_identity']}"
        if ep.get("checks_client"):
            sidecar += f", checks the caller's certificate: {', '.join(ep['checks_client'])}"
        if ep.get("why"):
            sidecar += f": {ep['why']}"
        lines.append(more + sidecar)
    elif ep.get("sidecar") is None and ep.get("workload") == "":
        lines.append(more + "no sidecar of the mesh: the endpoint itself answers")
    if ep.get("identity_mismatch"):
        lines.append(f"{more}! {ep['identity_mismatch']}")
    if ep.get("authorization"):
        a = ep["authorization"]
        lines.append(f"{more}{_mark(a['allowed'])} authorization: {a['why']}")
