"""Envoy's matching rules as `explain` replays them (`xds_server.explain.envoy_match`):
unit tests of each rule, and real Envoy as the judge of a table of requests against a
route configuration that uses every kind of domain and matcher (each route answers
with its own name, so Envoy tells which one it picked)."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

from tests.e2e.harness import envoy_binary, free_port, get, wait_until
from xds_server.explain.envoy_match import (
    header_check,
    query_params,
    route_checks,
    select_virtual_host,
    strip_port,
    verdict,
)
from xds_server.explain.request import BadRequest, Request, parse_destination, parse_header


def route(name: str, match: dict[str, object]) -> dict[str, object]:
    return {
        "name": name,
        "match": match,
        "direct_response": {"status": 200, "body": {"inline_string": name}},
    }


VHOSTS = [
    {"name": "exact", "domains": ["a.example.com"], "routes": [route("exact", {"prefix": "/"})]},
    {"name": "exact-port", "domains": ["a.example.com:8080"],
     "routes": [route("exact-port", {"prefix": "/"})]},
    {"name": "suffix", "domains": ["*.example.com"], "routes": [route("suffix", {"prefix": "/"})]},
    {"name": "suffix-long", "domains": ["*-bar.example.com"],
     "routes": [route("suffix-long", {"prefix": "/"})]},
    {"name": "prefix", "domains": ["foo.*"], "routes": [route("prefix", {"prefix": "/"})]},
    {
        "name": "matchers",
        "domains": ["m"],
        "routes": [
            route("exact-path", {"path": "/exact"}),
            route("regex", {"safe_regex": {"regex": "/items/[0-9]+"}}),
            route("nocase", {"prefix": "/case", "case_sensitive": False}),
            route("absent-inverted", {"prefix": "/inv", "headers": [
                {"name": "x-skip", "string_match": {"exact": "1"}, "invert_match": True}]}),
            route("not-present", {"prefix": "/np", "headers": [
                {"name": "x-skip", "present_match": True, "invert_match": True}]}),
            route("present-false", {"prefix": "/pf", "headers": [
                {"name": "x-skip", "present_match": False}]}),
            route("joined", {"prefix": "/join", "headers": [
                {"name": "x-v", "string_match": {"exact": "a,b"}}]}),
            route("one-value", {"prefix": "/join", "headers": [
                {"name": "x-v", "string_match": {"exact": "b"}}]}),
            route("no-value", {"prefix": "/none", "headers": [
                {"name": "x-v", "string_match": {"exact": "a"}, "invert_match": True}]}),
            route("range", {"prefix": "/range", "headers": [
                {"name": "x-n", "range_match": {"start": 10, "end": 20}}]}),
            route("method", {"prefix": "/m", "headers": [
                {"name": ":method", "string_match": {"exact": "POST"}}]}),
            route("query", {"prefix": "/q", "query_parameters": [
                {"name": "v", "string_match": {"prefix": "a"}}]}),
            route("query-present", {"prefix": "/qp", "query_parameters": [
                {"name": "flag", "present_match": True}]}),
            route("suffix-ci", {"prefix": "/s", "headers": [
                {"name": "x-s", "string_match": {"suffix": "END", "ignore_case": True}}]}),
        ],
    },
    {"name": "any", "domains": ["*"], "routes": [route("any", {"prefix": "/"})]},
]  # fmt: skip

# (authority, path, method, headers): Envoy's body names the vhost's route it took.
CASES = [
    ("a.example.com", "/", "GET", {}),
    ("A.Example.COM", "/", "GET", {}),
    ("a.example.com:8080", "/", "GET", {}),
    ("a.example.com:9090", "/", "GET", {}),  # the port is part of the domain: no exact
    ("b.example.com", "/", "GET", {}),
    ("x-bar.example.com", "/", "GET", {}),  # the longer suffix wins
    ("-bar.example.com", "/", "GET", {}),  # needs one more character: the shorter one
    ("b.example.com:8080", "/", "GET", {}),  # ports break suffixes: the catch-all
    ("foo.anything", "/", "GET", {}),
    ("foo.", "/", "GET", {}),
    ("elsewhere", "/", "GET", {}),
    ("m", "/exact", "GET", {}),
    ("m", "/exact?x=1", "GET", {}),  # path matchers ignore the query
    ("m", "/exact/more", "GET", {}),
    ("m", "/items/42", "GET", {}),
    ("m", "/items/42/x", "GET", {}),  # the whole path must match a regex
    ("m", "/CASE/x", "GET", {}),
    ("m", "/inv", "GET", {}),  # an absent header fails even an inverted matcher
    ("m", "/inv", "GET", {"x-skip": "2"}),
    ("m", "/inv", "GET", {"x-skip": "1"}),
    ("m", "/np", "GET", {}),
    ("m", "/np", "GET", {"x-skip": "1"}),
    ("m", "/pf", "GET", {}),
    ("m", "/join", "GET", {"x-v": ["a", "b"]}),  # one of the values matching is enough
    ("m", "/join", "GET", {"x-v": "a,b"}),  # one value with a comma
    ("m", "/none", "GET", {"x-v": ["b", "a"]}),  # inverted: no value may match
    ("m", "/none", "GET", {"x-v": ["b", "c"]}),
    ("m", "/range", "GET", {"x-n": "15"}),
    ("m", "/range", "GET", {"x-n": "20"}),
    ("m", "/range", "GET", {"x-n": "x"}),
    ("m", "/m", "POST", {}),
    ("m", "/m", "GET", {}),
    ("m", "/q?v=abc", "GET", {}),
    ("m", "/q?w=1&v=b", "GET", {}),
    ("m", "/q?v=b&v=a", "GET", {}),  # the first value counts
    ("m", "/q?v=a%20b", "GET", {}),  # not URL-decoded
    ("m", "/qp?flag", "GET", {}),
    ("m", "/qp?other=1", "GET", {}),
    ("m", "/s", "GET", {"x-s": "the-end"}),
    ("m", "/nothing", "GET", {}),
]


def predicted(authority: str, path: str, method: str, headers: dict[str, object]) -> str:
    """The route `explain` says Envoy takes (`-`: none, a 404)."""
    config = ParseDict({"name": "t", "virtual_hosts": VHOSTS}, route_pb2.RouteConfiguration())
    pairs = tuple(
        (k, v) for k, vs in headers.items() for v in (vs if isinstance(vs, list) else [vs])
    )
    sent = (("host", authority), *((k, str(v)) for k, v in pairs))
    request = Request(host=authority.lower(), path=path, method=method, headers=sent)
    vhost = select_virtual_host(config, request.authority).vhost
    if vhost is None:
        return "-"
    for r in vhost.routes:
        if verdict(route_checks(r.match, request)) is True:
            return r.name
    return "-"


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("match")
    port, admin = free_port(), free_port()
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "l",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                     "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "t",
                            "route_config": {"name": "t", "virtual_hosts": VHOSTS},
                            "http_filters": [{
                                "name": "envoy.filters.http.router",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters."
                                             "http.router.v3.Router"},
                            }],
                        },
                    }]}],
                }
            ]
        },
    }  # fmt: skip
    config = root / "envoy.yaml"
    config.write_text(yaml.safe_dump(bootstrap))
    log = (root / "envoy.log").open("wb")
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(config), "--use-dynamic-base-id", "--disable-hot-restart",
         "-l", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(
            lambda: get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
            timeout=20,
            what=f"envoy /ready ({Path(log.name).read_text(errors='replace')[-500:]})",
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def envoy_took(address: str, authority: str, path: str, method: str,
               headers: dict[str, object]) -> str:  # fmt: skip
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", authority)
        for name, values in headers.items():
            for value in values if isinstance(values, list) else [values]:
                conn.putheader(name, str(value))
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read().decode()
        return body if resp.status == 200 else "-"
    finally:
        conn.close()


def test_real_envoy_takes_the_route_explain_predicts(envoy: str) -> None:
    for case in CASES:
        assert envoy_took(envoy, *case) == predicted(*case), case


def test_the_table_exercises_every_route() -> None:
    taken = {predicted(*case) for case in CASES}
    names = {r["name"] for v in VHOSTS for r in v["routes"]}  # type: ignore[attr-defined]
    assert names | {"-"} == taken


# -- unit tests -------------------------------------------------------------------------


def test_virtual_host_domains() -> None:
    config = route_pb2.RouteConfiguration(
        virtual_hosts=[
            rc.VirtualHost(name="short", domains=["*.com"]),
            rc.VirtualHost(name="long", domains=["*.example.com"]),
        ]
    )
    assert select_virtual_host(config, "a.example.com").vhost.name == "long"  # type: ignore[union-attr]
    assert select_virtual_host(config, "a.org").vhost is None
    choice = select_virtual_host(config, "A.EXAMPLE.COM")
    assert (choice.domain, choice.how, choice.host) == (
        "*.example.com",
        "suffix wildcard",
        "a.example.com",
    )
    config.ignore_port_in_host_matching = True
    assert select_virtual_host(config, "a.example.com:80").vhost.name == "long"  # type: ignore[union-attr]


def test_header_checks_say_what_the_request_had() -> None:
    matcher = rc.HeaderMatcher(name="end-user")
    matcher.string_match.exact = "jason"
    check = header_check(matcher, {})
    assert (check.condition, check.ok, check.saw) == (
        'header end-user: exact "jason"',
        False,
        "end-user absent",
    )
    assert header_check(matcher, {"end-user": ["jason"]}).ok is True
    matcher.invert_match = True
    assert header_check(matcher, {}).ok is False  # Envoy: an absent header never matches
    assert (
        header_check(matcher, {"end-user": ["x"]}).condition == 'header end-user: not exact "jason"'
    )


def test_jwt_claim_matches_are_decided_from_the_bearer_token() -> None:
    # As the generators build `@request.auth.claims[groups]` (Istio's claim routing).
    one = value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact="dev"))
    either = value_pb2.ValueMatcher(
        or_match=value_pb2.OrMatcher(
            value_matchers=[
                value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one)),
                one,
            ]
        )
    )
    match = rc.RouteMatch(prefix="/")
    match.dynamic_metadata.add(
        filter="envoy.filters.http.jwt_authn",
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in ("payload", "groups")],
        value=either,
    )

    def token(claims: dict[str, object]) -> str:
        def part(d: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

        return f"Bearer {part({'alg': 'none'})}.{part(claims)}.sig"

    def check(*headers: tuple[str, str]) -> object:
        (_, claim) = route_checks(match, Request("h", headers=headers))
        return claim.ok, claim.saw

    assert check() == (False, "no bearer token: no claims")
    ok, saw = check(("authorization", token({"groups": ["ops", "dev"]})))
    assert ok is True and "if the token verifies" in saw
    assert check(("authorization", token({"groups": "dev"})))[0] is True
    assert check(("authorization", token({"groups": ["ops"]})))[0] is False
    assert check(("authorization", token({"sub": "x"})))[0] is False
    assert check(("authorization", "Bearer not-a-jwt"))[0] is None
    match.dynamic_metadata[0].invert = True
    assert check()[0] is True


def test_undecidable_conditions_are_not_guessed() -> None:
    match = rc.RouteMatch(prefix="/")
    match.dynamic_metadata.add(filter="envoy.filters.http.ext_authz")
    checks = route_checks(match, Request("h"))
    assert verdict(checks) is None and "dynamic metadata" in checks[-1].condition
    bad = rc.RouteMatch()
    bad.safe_regex.regex = "(?<!x)y"  # RE2 has no look-behind
    assert verdict(route_checks(bad, Request("h", path="y"))) is not False


def test_requests_parse_as_curl_sends_them() -> None:
    r = parse_destination("Reviews:9080/a?b=1", headers=["End-User: jason", "Host: x:1"])
    assert (r.host, r.port, r.path, r.authority, r.path_only) == (
        "reviews",
        9080,
        "/a?b=1",
        "x:1",
        "/a",
    )
    assert r.header_map()["end-user"] == ["jason"]
    assert parse_destination("https://h/").scheme == "https"
    assert parse_destination("h").authority == "h" and parse_destination("h").path == "/"
    assert query_params("/p?a=1&a=2&b#f") == {"a": "1", "b": ""}
    assert strip_port("[::1]:80") == "[::1]" and strip_port("[::1]") == "[::1]"
    assert parse_header("x-debug:") == ("x-debug", "")
    for bad in ("", "ftp://h", "user@h", ":80"):
        with pytest.raises(BadRequest):
            parse_destination(bad)
    with pytest.raises(BadRequest):
        parse_header("no colon")


def test_envoy_config_round_trips() -> None:
    config = ParseDict({"name": "t", "virtual_hosts": VHOSTS}, route_pb2.RouteConfiguration())
    assert (
        MessageToDict(config, preserving_proto_field_name=True)["virtual_hosts"][0]["name"]
        == "exact"
    )
