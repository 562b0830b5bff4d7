"""Every Istio task of `config/examples/` run as `pocketmesh up config/examples/<task>`,
through real Envoy, sidecars and apps started by `up`, and checked twice: the
"Try:" line `up` prints is run as a user would (bash, curl) and gives the documented
answer, and the documented effect is measured over enough requests.

Each example runs as a copy on its own 127.x block with free app ports (the same
config, so two runs never collide); the registry files it links are copied in.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import wait_until
from tests.run.demo_mesh import EXAMPLES, example_copy, random_net
from tests.run.up_process import Up, running_up
from tests.traffic.apps import Reply, direct, request
from tests.traffic.gateway_clients import Refused, context, https_get

ROOT = Path(__file__).resolve().parents[2]


class Example:
    """One running example: its terminal's Open and Try lines, and ways to ask it."""

    def __init__(self, up: Up, net: str) -> None:
        self.up = up
        self.net = net
        text = up.wait_summary()
        opened = re.search(r"^Open:\s+(.+?)\s{4}\(via", text, re.M)
        assert opened, text
        self.open = opened.group(1)
        self.tries = re.findall(r"^Try:\s+(.+)$", text, re.M)
        assert len(self.tries) == 1, text
        self.logs = up.run_dir / "logs"

    def try_line(self, timeout: float = 30) -> tuple[str, float]:
        """Run the printed Try line in bash, from the repository root; (stdout, seconds)."""
        started = time.monotonic()
        out = subprocess.run(
            ["bash", "-c", self.tries[0]], cwd=ROOT, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        return out.stdout, time.monotonic() - started

    def page(self, headers: dict[str, str] | None = None, timeout: float = 10) -> dict[str, Any]:
        """GET productpage through its sidecar's inbound (the Open URL)."""
        url = re.search(r"curl (http://\S+)", self.open)
        assert url, self.open
        reply = direct(url.group(1).removeprefix("http://").split("/")[0], "/", headers=headers,
                       timeout=timeout)  # fmt: skip
        assert reply.status == 200, reply.body
        return reply.data

    def via(self, workload_octet: int, url: str, **kw: Any) -> Reply:
        """Send through a workload's sidecar proxy (curl -x)."""
        return request(f"{self.net}.{workload_octet}:15001", url, **kw)


def reviews_of(page: dict[str, Any]) -> dict[str, Any]:
    (hop,) = page["upstreams"]
    assert hop["status"] == 200, hop
    return dict(hop["answer"])


# -- the tasks on productpage -> reviews -> ratings -------------------------------------


def request_routing(ex: Example) -> None:
    out, _ = ex.try_line()
    assert out.strip() == '"workload": "reviews-v2"', out
    assert {reviews_of(ex.page({"end-user": "jason"}))["workload"] for _ in range(10)} == {
        "reviews-v2"
    }
    assert {reviews_of(ex.page())["workload"] for _ in range(10)} == {"reviews-v1"}


def traffic_shifting(ex: Example) -> None:
    out, _ = ex.try_line()
    assert set(out.split()) <= {'"workload":', '"reviews-v1"', '"reviews-v3"'}, out
    n = 200
    seen = Counter(reviews_of(ex.page())["workload"] for _ in range(n))
    assert set(seen) <= {"reviews-v1", "reviews-v3"}, seen
    # Binomial(200, 0.8): sd 2.8 %; +-12 % is over four standard deviations.
    assert 0.68 <= seen["reviews-v1"] / n <= 0.92, seen


def fault_injection_abort(ex: Example) -> None:
    out, _ = ex.try_line()
    assert '"status": 500, "answer": "fault filter abort"' in out, out
    ratings_log = ex.logs / "ratings-v1.app.log"
    before = ratings_log.read_text().count("GET ")
    for _ in range(5):
        reviews = reviews_of(ex.page({"end-user": "jason"}))
        assert reviews["workload"] == "reviews-v2"
        (ratings,) = reviews["upstreams"]
        assert ratings["status"] == 500 and ratings["answer"] == "fault filter abort", ratings
    assert ratings_log.read_text().count("GET ") == before  # aborted by reviews' sidecar
    others = reviews_of(ex.page())
    assert others["workload"] == "reviews-v1" and others["upstreams"] == []


def fault_injection_delay(ex: Example) -> None:
    out, seconds = ex.try_line()
    # jason's ratings are 7 s late: the apps give up after 5 s (as Bookinfo's do).
    assert "TimeoutError" in out, out
    assert seconds >= 4.5, seconds
    fast = reviews_of(ex.page(timeout=4))
    assert fast["workload"] == "reviews-v1" and fast["upstreams"] == []


def request_timeouts(ex: Example) -> None:
    out, _ = ex.try_line()
    assert '"status": 504, "answer": "upstream request timeout"' in out, out
    started = time.monotonic()
    page = ex.page()
    (hop,) = page["upstreams"]
    assert hop["status"] == 504 and hop["answer"] == "upstream request timeout", hop
    # Cut at 0.5 s: the page did not wait for ratings' 2 s delay.
    assert time.monotonic() - started < 2.0


def routing_features(ex: Example) -> None:
    out, _ = ex.try_line()
    assert re.search(r"(?i)x-rule: exact", out) and '"workload": "reviews-v1"' in out, out
    assert "I'm a teapot" in out, out
    reviews = "http://reviews:9080"
    exact = ex.via(10, reviews + "/exact")
    assert exact.status == 200 and exact.headers["x-rule"] == "exact", exact
    assert exact.data["workload"] == "reviews-v1"
    regex = ex.via(10, reviews + "/items/42")
    assert regex.headers["x-rule"] == "regex" and regex.data["workload"] == "reviews-v2"
    assert ex.via(10, reviews + "/direct").status == 418
    redirect = ex.via(10, reviews + "/redirect")
    assert redirect.status == 302 and redirect.headers["location"].endswith("/elsewhere")
    assert ex.via(10, reviews + "/no-rule-matches").status == 404


# -- httpbin, through sleep's sidecar or the ingress gateway -------------------------------


def circuit_breaking(ex: Example) -> None:
    out, _ = ex.try_line()
    codes = Counter(out.split())
    assert codes["200"] >= 1 and codes["503"] >= 1, out

    def call(_: int) -> Reply:
        return ex.via(15, "http://httpbin:8000/delay/1", timeout=10)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(call, range(8)))
    statuses = Counter(r.status for r in replies)
    overflowed = [r for r in replies if r.status == 503]
    assert statuses[200] >= 1 and overflowed, statuses
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflowed)


def mirroring(ex: Example) -> None:
    out, _ = ex.try_line()
    assert out.startswith('"workload": "httpbin-v1"'), out
    log = ex.logs / "httpbin-v2.app.log"
    # The copy is fire and forget: the line waits a second for it; a loaded machine may
    # need longer, so the log is what counts.
    wait_until(lambda: "Host: httpbin-shadow" in log.read_text(), timeout=10, what="a copy")
    replies = [ex.via(15, f"http://httpbin:8000/headers?n={i}") for i in range(5)]
    assert {r.data.get("workload") for r in replies} == {"httpbin-v1"}

    def mirrored() -> set[str]:
        return set(re.findall(r"GET /headers\?n=(\d) \(Host: httpbin-shadow", log.read_text()))

    wait_until(lambda: mirrored() == {str(i) for i in range(5)}, timeout=10, what="5 copies")


def ingress_gateway(ex: Example) -> None:
    out, _ = ex.try_line()
    assert out.strip() == "418", out
    gateway = f"{ex.net}.5:8080"
    host = {"Host": "httpbin.example.com"}
    reply = direct(gateway, "/status/200", headers=host)
    assert reply.status == 200 and reply.data["workload"] in {"httpbin-v1", "httpbin-v2"}
    assert direct(gateway, "/headers", headers=host).status == 404  # no rule matches
    assert direct(gateway, "/status/200", headers={"Host": "other.example.com"}).status == 404


def secure_ingress_gateway(ex: Example) -> None:
    out, _ = ex.try_line()
    assert out.strip() == "418", out
    ca = EXAMPLES / "secure-ingress-gateway" / "example.com.crt"
    context = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection((f"{ex.net}.5", 8443), timeout=5)
    conn = http.client.HTTPConnection("httpbin.example.com", 8443, timeout=5)
    conn.sock = context.wrap_socket(raw, server_hostname="httpbin.example.com")
    try:
        conn.request("GET", "/status/200")
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200 and body["workload"] in {"httpbin-v1", "httpbin-v2"}
    redirect = direct(f"{ex.net}.5:8080", "/status/200", headers={"Host": "httpbin.example.com"})
    assert redirect.status == 301
    assert redirect.headers["location"] == "https://httpbin.example.com/status/200"


def secure_ingress_mutual(ex: Example) -> None:
    """The Try line presents the client certificate: 418. Without it, or with a
    certificate the Secret's CA did not sign, the handshake fails."""
    out, _ = ex.try_line()
    assert out.strip() == "418", out
    folder = EXAMPLES / "secure-ingress-mutual"
    address = f"{ex.net}.5:8443"
    host = "httpbin.example.com"
    good = context(folder / "example.com.crt", (folder / "client.example.com.crt",
                                                folder / "client.example.com.key"))  # fmt: skip
    answer = https_get(address, host, "/status/200", good)
    assert answer.status == 200 and answer.data["workload"] in {"httpbin-v1", "httpbin-v2"}
    with pytest.raises(Refused):
        https_get(address, host, "/status/200", context(folder / "example.com.crt"))
    # A certificate of the other example's CA is not one this gateway trusts.
    other = EXAMPLES / "secure-ingress-gateway" / "example.com.crt"
    with pytest.raises(Refused):
        https_get(address, host, "/status/200", context(other))


def ingress_sni_passthrough(ex: Example) -> None:
    """nginx's certificate answers through the ingress gateway, which ends no TLS."""
    out, _ = ex.try_line()
    assert out == "Welcome to nginx!\n", out
    ca = EXAMPLES / "ingress-sni-passthrough" / "example.com.crt"
    answer = https_get(f"{ex.net}.5:8443", "nginx.example.com", "/", context(ca))
    assert answer.status == 200 and answer.peer_cn == "nginx.example.com"
    assert answer.data == {"body": "Welcome to nginx!\n"}
    # The ingress gateway's own config holds no certificate for the name.
    admin = f"{ex.net}.5:{ex.up.admin_port}"
    dump = direct(admin, "/config_dump?resource=dynamic_listeners").body
    assert "nginx.example.com" in dump and "BEGIN CERTIFICATE" not in dump, dump[:2000]
    with pytest.raises(Refused):  # a name no tls route lists: no filter chain
        https_get(f"{ex.net}.5:8443", "other.example.com", "/", context(ca))


def tcp_ingress(ex: Example) -> None:
    out, _ = ex.try_line()
    lines = out.splitlines()
    assert lines == ["tcp-echo-v1 hello"] * 5, out
    with socket.create_connection((f"{ex.net}.5", 31400), timeout=5) as sock:
        sock.sendall(b"world\n")
        assert sock.recv(1024) == b"tcp-echo-v1 world\n"


def load_balancing(ex: Example) -> None:
    out, _ = ex.try_line()
    answers = re.findall(r'"workload": "([^"]+)"', out)
    assert len(answers) == 6 and len(set(answers[:3])) == 1 and len(set(answers[3:])) == 1, out
    landed: set[str] = set()
    for user in (f"user-{i}" for i in range(12)):
        seen = {
            ex.via(15, "http://reviews:9080/", headers={"x-user": user}).data["workload"]
            for _ in range(3)
        }
        assert len(seen) == 1, (user, seen)  # sticky: one user, one instance
        landed |= seen
    assert len(landed) >= 2, landed  # and the users spread over the instances


# -- security: sleep calls httpbin --------------------------------------------------------


def jwt_authentication(ex: Example) -> None:
    out, _ = ex.try_line()
    assert out.split() == ["200", "401", "403"], out
    token = (EXAMPLES / "jwt-authentication" / "demo.jwt").read_text().strip()
    url = "http://httpbin:8000/headers"
    for _ in range(5):
        valid = ex.via(15, url, headers={"Authorization": f"Bearer {token}"})
        assert valid.status == 200 and valid.data["workload"] in {"httpbin-v1", "httpbin-v2"}
        assert "authorization" not in valid.data["headers"]  # the token stops at the sidecar
        forged = token[: token.rindex(".") + 1] + "c2lnbmF0dXJl"
        assert ex.via(15, url, headers={"Authorization": f"Bearer {forged}"}).status == 401
        assert ex.via(15, url).status == 403  # no token: no request principal
    forged = token[: token.rindex(".") + 1] + "c2lnbmF0dXJl"
    refused = ex.via(15, url, headers={"Authorization": f"Bearer {forged}"})
    assert refused.body == "Jwt verification fails", refused


def ext_authz(ex: Example) -> None:
    out, _ = ex.try_line()
    assert out.split() == ["403", "200", "200"], out
    url = "http://httpbin:8000/headers"
    denied = ex.via(15, url, headers={"x-ext-authz": "deny"})
    assert denied.status == 403
    assert (
        denied.body
        == "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
    )
    assert ex.via(15, url).status == 403  # sleep's account is not the one the sample allows
    allowed = ex.via(15, url, headers={"x-ext-authz": "allow"})
    assert allowed.status == 200 and allowed.data["workload"] in {"httpbin-v1", "httpbin-v2"}
    assert allowed.data["headers"]["x-ext-authz-check-result"] == "allowed"  # the server's
    log = ex.logs / "ext-authz.app.log"
    wait_until(lambda: "[gRPC][allowed]" in log.read_text(), timeout=5, what="the check logged")
    checked = log.read_text().count("[gRPC]")
    assert ex.via(15, "http://httpbin:8000/ip").status == 200  # not checked: no rule selects it
    assert log.read_text().count("[gRPC]") == checked


# -- locality load balancing -----------------------------------------------------------


def locality_failover(ex: Example) -> None:
    """Istio's task: region1.zone1 first; its instance stopped, the first call fails and
    the rest go to region1.zone2; that one stopped too, to region2.zone3 (the failover
    region), never region3.zone4."""
    hello = "http://helloworld.sample:5000/hello"
    assert {ex.via(75, hello).data.get("version") for _ in range(6)} == {"region1.zone1"}
    out, _ = ex.try_line()
    lines = out.split()
    assert lines[:2] == ['"version":', '"region1.zone1"'], out
    versions = [v.strip('"') for v in lines if v.startswith('"region')]
    assert versions[0] == "region1.zone1" and versions[-1] == "region2.zone3", out
    assert "region3.zone4" not in out, out
    assert "503" in lines, out  # the first call after a stop fails, as in the task
    answers = {ex.via(75, hello).data.get("version") for _ in range(10)}
    assert answers == {"region2.zone3"}, answers


# -- egress ------------------------------------------------------------------------------


def egress(ex: Example) -> None:
    """A ServiceEntry (DNS) reaches a service outside the mesh; a host outside the
    registry gets 404 (REGISTRY_ONLY), unless the client's Sidecar says ALLOW_ANY; with
    an egressProxy, such requests go to that service, Host unchanged."""
    out, _ = ex.try_line()
    assert out.split("\n")[:4] == [
        '"workload": "httpbin-external"',
        "404",
        '"workload": "httpbin-external"',
        '"host": "unregistered.example"',
    ], out
    reply = ex.via(15, "http://httpbin.external/status/418")
    assert reply.status == 418  # the external app answered, through sleep's sidecar
    assert ex.via(15, "http://nowhere.example/").status == 404
    # curl-egress: the egress proxy (httpbin.external) got the request for a host
    # outside the registry, Host and path as sent.
    reply = ex.via(83, "http://unregistered.example/anything")
    assert reply.data["workload"] == "httpbin-external", reply
    assert (reply.data["headers"]["host"], reply.data["path"]) == (
        "unregistered.example",
        "/anything",
    )


# -- TCP ---------------------------------------------------------------------------------


def tcp_traffic_shifting(ex: Example) -> None:
    out, _ = ex.try_line()
    lines = out.splitlines()
    assert len(lines) == 10 and all(re.fullmatch(r"tcp-echo-v[12] hello", x) for x in lines), out

    def send() -> str:
        with socket.create_connection((f"{ex.net}.15", 9000), timeout=5) as sock:
            sock.sendall(b"hello\n")
            return sock.recv(1024).decode().split(" ")[0]

    n = 200
    seen = Counter(send() for _ in range(n))
    assert set(seen) <= {"tcp-echo-v1", "tcp-echo-v2"}, seen
    assert 0.66 <= seen["tcp-echo-v1"] / n <= 0.94, seen  # 80 %: over four sd either way


TASKS: dict[str, Callable[[Example], None]] = {
    "request-routing": request_routing,
    "traffic-shifting": traffic_shifting,
    "fault-injection-abort": fault_injection_abort,
    "fault-injection-delay": fault_injection_delay,
    "request-timeouts": request_timeouts,
    "routing-features": routing_features,
    "circuit-breaking": circuit_breaking,
    "mirroring": mirroring,
    "ingress-gateway": ingress_gateway,
    "secure-ingress-gateway": secure_ingress_gateway,
    "load-balancing": load_balancing,
    "tcp-traffic-shifting": tcp_traffic_shifting,
    "secure-ingress-mutual": secure_ingress_mutual,
    "ingress-sni-passthrough": ingress_sni_passthrough,
    "tcp-ingress": tcp_ingress,
    "jwt-authentication": jwt_authentication,
    "ext-authz": ext_authz,
    "locality-failover": locality_failover,
    "egress": egress,
}


def test_every_task_folder_is_checked_here() -> None:
    folders = {p.name for p in EXAMPLES.iterdir() if p.is_dir()} - {"bookinfo"}
    assert folders == set(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_example_runs_with_up_and_does_what_it_says(tmp_path: Path, task: str) -> None:
    net = random_net()
    config = example_copy(tmp_path, task, net)
    with running_up(tmp_path, [config]) as up:
        example = Example(up, net)
        text = up.text()
        assert "✗" not in text and "!" not in text.split("Mesh is up")[1], text
        TASKS[task](example)
