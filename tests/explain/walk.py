"""Every hop of an example, each with its explanation (shared by the offline and the
real-Envoy tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.explain.hops import Hop, entry_hops, next_hops
from xds_server.explain import parse_destination
from xds_server.galley.model import MeshConfig
from xds_server.runner.plan import MeshPlan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"
DEMO = ROOT / "config" / "demo"
MAX_HOPS = 40


def example_names() -> list[str]:
    """Every example folder (the registry `bookinfo` is not one), and the demo."""
    names = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "bookinfo")
    return ["demo", *names]


def lines_of(plan: MeshPlan) -> list[str]:
    """The example's try lines, and `up`'s Open line (its entry)."""
    lines = list(plan.tries)
    if plan.entry is not None:
        lines.append(plan.entry.curl)
    return lines


Ask = Callable[[Hop], dict[str, Any]]


def walk(
    config: MeshConfig, plan: MeshPlan, ask: Ask, extra: Sequence[str] = ()
) -> list[tuple[Hop, dict[str, Any]]]:
    """Every hop reachable from the entry requests (and `extra` lines), each with `ask`'s
    explanation."""
    queue = [h for line in [*lines_of(plan), *extra] for h in entry_hops(line, config)]
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    done = []
    while queue and len(done) < MAX_HOPS:
        hop = queue.pop(0)
        key = (hop.caller, hop.destination, hop.headers)
        if key in seen:
            continue
        seen.add(key)
        answer = ask(hop)
        done.append((hop, answer))
        queue += next_hops(hop, answer, plan)
    return done


# More requests than the try lines make, for the matches and refusals they do not show:
# curl lines on the examples' own addresses (127.0.10.x for the demo, 127.0.73.x else).
EXTRA: dict[str, list[str]] = {
    "demo": [
        "curl -x http://127.0.10.1:15001 http://ratings:9080/",  # AuthorizationPolicy: 403
        "curl http://127.0.10.4:9080/",  # plaintext to a STRICT port: refused
        "curl -x http://127.0.10.1:15001 http://nothere:9080/",  # no virtual host: 404
        "curl -x http://127.0.10.1:15001 http://REVIEWS.default:9080/",  # hosts fold case
        "curl -x http://127.0.10.1:15001 http://reviews/",  # the only HTTP port: no port
        "curl -x http://127.0.10.1:15001 http://reviews:9081/",  # no such port: 404
        "curl -H 'Host: anything.example' http://127.0.10.10:8080/x",  # the gateway's `*`
    ],
    "routing-features": [
        f"curl -x http://127.0.73.10:15001 {args}"
        for args in (
            "http://reviews:9080/items/42",
            "http://reviews:9080/items/4x2",
            "http://reviews:9080/CASE/x",
            "-H 'x-group: beta1' http://reviews:9080/",
            "-H 'x-group: alpha' http://reviews:9080/",
            "-H 'x-id: abc' http://reviews:9080/",
            "-H 'x-id: abz' http://reviews:9080/",
            "-H 'x-debug: 1' http://reviews:9080/",
            "http://reviews:9080/?version=v3",
            "http://reviews:9080/?version=v3x",
            "-X POST http://reviews:9080/",
            "http://reviews.default.svc:9080/",
            "-H 'x-a: 1' http://reviews:9080/and",
            "http://reviews:9080/and",
            "http://reviews:9080/or",
            "http://reviews:9080/without",
            "-H 'x-skip: 1' http://reviews:9080/without",
            "http://reviews:9080/source",
            "http://reviews:9080/port",
            "http://reviews:9080/old/x",
            "http://reviews:9080/redirect",
            "http://reviews:9080/secure",
            "http://reviews:9080/headers",
            "http://reviews:9080/split",
            "http://reviews:9080/cors",
            "http://reviews:9080/no-rule-matches",
        )
    ]
    + ["curl -x http://127.0.73.11:15001 http://reviews:9080/source"],  # not productpage
    "ingress-gateway": [
        "curl -H 'Host: HTTPBIN.example.com:8080' http://127.0.73.5:8080/delay/1",
        "curl -H 'Host: httpbin.example.com' http://127.0.73.5:8080/headers",
        "curl -H 'Host: other.example.com' http://127.0.73.5:8080/status/200",
    ],
    "ingress-sni-passthrough": [  # the TLS the gateway passes through ends at my-nginx
        "curl --resolve nginx.example.com:8443:127.0.73.50 https://nginx.example.com:8443/",
    ],
    "secure-ingress-gateway": [
        "curl -H 'Host: httpbin.example.com' http://127.0.73.5:8080/status/200",  # 301
        "curl --resolve other.example.com:8443:127.0.73.5 https://other.example.com:8443/",
    ],
}


def extra_lines(name: str, net: str | None = None) -> list[str]:
    """The extra lines of an example, on `net` (a copy's 127.x.y block) if given."""
    lines = EXTRA.get(name, [])
    if net is None:
        return list(lines)
    old = "127.0.10." if name == "demo" else "127.0.73."
    return [line.replace(old, f"{net}.") for line in lines]


def request_of(hop: Hop) -> Any:
    return parse_destination(hop.destination, headers=hop.headers, method=hop.method)
