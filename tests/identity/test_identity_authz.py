"""AuthorizationPolicy enforced by real sidecars: DENY, ALLOW by principal, precedence,
allow-nothing, `when` on headers, AUDIT.

productpage and ratings both call reviews through their sidecars; the policies sit
on reviews. One control plane for the module; each test writes its policy file,
waits until it is in force, and removes it.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ControlPlaneThread, running, start_all, wait_until
from tests.identity.mesh import (
    add_db,
    direct,
    reviews_via,
    start_sidecar,
    write_mesh_and_start_apps,
)
from xds_server.identity import IdentityOptions

NET = "127.0.78"
PRODUCTPAGE, REVIEWS, RATINGS = f"{NET}.10:15001", f"{NET}.11", f"{NET}.12:15001"
DB_ADDRESS = (f"{NET}.13", 3306)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("authz")
    config = root / "config"
    config.mkdir()
    apps: list[Any] = [*write_mesh_and_start_apps(config, NET), add_db(config, NET)]
    plane = ControlPlaneThread(config, identity=IdentityOptions()).start()
    names = ("productpage", "reviews", "ratings", "db")
    envoys = [start_sidecar(plane, config, root, n) for n in names]
    with running(*apps, plane, *envoys):
        start_all(envoys)
        wait_until(lambda: status(PRODUCTPAGE) == 200, timeout=10, what="mesh up")
        yield {"config": config, "plane": plane, "reviews": envoys[1]}


def status(proxy: str, path: str = "/", headers: dict[str, str] | None = None) -> int:
    return reviews_via(proxy, path, headers)[0]


def becomes(
    expected: int, proxy: str, path: str = "/", headers: dict[str, str] | None = None
) -> None:
    """Wait until `proxy` answers `expected` for `path`.

    A listener change applies to new connections; a caller's pooled connection keeps
    the old filter chain until Envoy drains it, so every caller is waited for.
    """
    wait_until(
        lambda: status(proxy, path, headers) == expected,
        timeout=10,
        what=f"{expected} for {path} via {proxy} {headers or ''}",
    )


@pytest.fixture
def apply(mesh: dict[str, Any]) -> Iterator[Any]:
    written: list[Path] = []

    def write(name: str, text: str | None) -> None:
        """Write the policy file `name`; None removes it."""
        path = mesh["config"] / f"{name}.yaml"
        if text is None:
            path.unlink()
            return
        path.write_text(text)
        written.append(path)

    yield write
    for path in written:
        path.unlink(missing_ok=True)
    becomes(200, PRODUCTPAGE)
    becomes(200, RATINGS)


def test_deny_policy_gives_403(apply: Any) -> None:
    apply("deny", policy("deny-admin", "DENY", "  - to: [{operation: {paths: ['/admin*']}}]"))
    becomes(403, PRODUCTPAGE, "/admin/x")
    becomes(403, RATINGS, "/admin")
    becomes(200, PRODUCTPAGE, "/")
    becomes(200, RATINGS, "/public")


def test_allow_for_one_principal_lets_exactly_that_caller_through(apply: Any) -> None:
    apply(
        "allow",
        policy(
            "only-productpage",
            "ALLOW",
            "  - from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]",
        ),
    )
    becomes(403, RATINGS)
    becomes(200, PRODUCTPAGE)
    # A plaintext caller has no principal at all.
    assert direct(f"http://{REVIEWS}:9080/")[0] == 403


def test_deny_wins_over_allow_and_empty_spec_allows_nothing(apply: Any) -> None:
    apply(
        "allow",
        policy(
            "allow-productpage",
            "ALLOW",
            "  - from: [{source: {namespaces: [default], notPrincipals: ['*/sa/ratings']}}]",
        ),
    )
    apply(
        "deny",
        policy("deny-secret", "DENY", "  - to: [{operation: {paths: [/secret], methods: [GET]}}]"),
    )
    becomes(403, PRODUCTPAGE, "/secret")
    becomes(200, PRODUCTPAGE, "/")
    becomes(403, RATINGS, "/")

    apply(
        "nothing",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: allow-nothing, namespace: default}\nspec: {}\n",
    )
    # allow-nothing adds no rule, but ALLOW policies are OR-ed: productpage still matches one.
    becomes(200, PRODUCTPAGE, "/")
    apply("allow", None)
    becomes(403, PRODUCTPAGE)
    becomes(403, RATINGS)


def test_when_on_request_header_and_source_principal(apply: Any) -> None:
    apply(
        "when",
        policy(
            "alice-from-productpage",
            "ALLOW",
            "  - when:\n"
            "    - {key: 'request.headers[x-user]', values: [alice]}\n"
            "    - {key: source.principal, values: [cluster.local/ns/default/sa/productpage]}",
        ),
    )
    becomes(403, PRODUCTPAGE)
    becomes(200, PRODUCTPAGE, headers={"x-user": "alice"})
    becomes(403, PRODUCTPAGE, headers={"x-user": "bob"})
    becomes(403, RATINGS, headers={"x-user": "alice"})


def test_audit_policy_marks_but_does_not_deny(apply: Any, mesh: dict[str, Any]) -> None:
    reviews = mesh["reviews"]

    def logged() -> int:
        # The RBAC filter with action LOG counts what it saw under its `audit.` prefix.
        return reviews.stats("rbac").get("http.inbound_9080.rbac.audit.allowed", 0)

    before = logged()
    apply("audit", policy("audit-all", "AUDIT", "  - to: [{operation: {methods: [GET]}}]"))
    wait_until(
        lambda: status(PRODUCTPAGE) == 200 and logged() > before,
        timeout=10,
        what="AUDIT logging requests",
    )
    becomes(200, RATINGS)


def tcp_echo(source: str, payload: bytes = b"hello db") -> bytes:
    """Send `payload` to db's sidecar from the address `source`; what came back.

    At least 5 bytes: PERMISSIVE's TLS inspector waits for a whole record header.
    """
    with socket.create_connection(DB_ADDRESS, timeout=2, source_address=(source, 0)) as conn:
        conn.sendall(payload)
        try:
            return conn.recv(100)
        except OSError:
            return b""


def direct_from(source: str) -> int:
    conn = http.client.HTTPConnection(REVIEWS, 9080, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_ip_blocks_on_http_and_tcp_ports(apply: Any) -> None:
    denied, other = f"{NET}.50", f"{NET}.51"
    wait_until(lambda: tcp_echo(denied) == b"hello db", timeout=10, what="db echo (plaintext TCP)")
    deny_ip = f"  - from: [{{source: {{ipBlocks: [{denied}/32]}}}}]"
    apply("ip", policy("deny-ip", "DENY", deny_ip))
    apply("ip-db", policy("deny-ip-db", "DENY", deny_ip, app="db"))
    wait_until(lambda: direct_from(denied) == 403, timeout=10, what="HTTP denied by ipBlocks")
    assert direct_from(other) == 200
    wait_until(lambda: tcp_echo(denied) == b"", timeout=10, what="TCP denied by ipBlocks")
    assert tcp_echo(other) == b"hello db"


def policy(name: str, action: str, rules: str, app: str = "reviews") -> str:
    return (
        "apiVersion: security.istio.io/v1\n"
        "kind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec:\n"
        f"  selector: {{matchLabels: {{app: {app}}}}}\n"
        f"  action: {action}\n"
        "  rules:\n"
        f"{rules}\n"
    )
