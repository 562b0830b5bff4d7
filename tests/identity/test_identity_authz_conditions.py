"""The rest of AuthorizationPolicy through real sidecars: remoteIpBlocks, serviceAccounts,
trustDomains, the destination.ip / destination.port / connection.sni / source.* /
request.headers[:pseudo] conditions, path templates, and dry-run.

productpage and ratings call reviews through their sidecars over mTLS (the SNI is
`outbound_.9080_._.reviews...`); the test also calls reviews' sidecar directly, in
plaintext (PERMISSIVE), from an address of its choosing and with the headers it likes.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import ControlPlaneThread, running, start_all, wait_until
from tests.identity.mesh import reviews_via, start_sidecar, write_mesh_and_start_apps
from tests.identity.settle import Policies
from xds_server.identity import IdentityOptions

NET = "127.0.82"
PRODUCTPAGE, RATINGS = f"{NET}.10:15001", f"{NET}.12:15001"
REVIEWS = f"{NET}.11"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("authz-conditions")
    config = root / "config"
    config.mkdir()
    apps = write_mesh_and_start_apps(config, NET)
    plane = ControlPlaneThread(config, identity=IdentityOptions(), watch=False).start()
    envoys = [start_sidecar(plane, config, root, n) for n in ("productpage", "reviews", "ratings")]
    with running(*apps, plane, *envoys):
        start_all(envoys)
        wait_until(lambda: via(PRODUCTPAGE) == 200, timeout=10, what="mesh up")
        yield {"policies": Policies(plane, config, envoys), "reviews": envoys[1]}


@pytest.fixture
def apply(mesh: dict[str, Any]) -> Iterator[Any]:
    policies: Policies = mesh["policies"]

    def write(name: str, action: str, rules: str, annotations: str = "") -> None:
        policies.write(
            name,
            "apiVersion: security.istio.io/v1\n"
            "kind: AuthorizationPolicy\n"
            f"metadata: {{name: {name}, namespace: default{annotations}}}\n"
            "spec:\n"
            "  selector: {matchLabels: {app: reviews}}\n"
            f"  action: {action}\n"
            f"  rules:\n{rules}\n",
        )

    yield write
    policies.clear()


def via(proxy: str, path: str = "/", method: str = "GET") -> int:
    """Call reviews through a sidecar (mTLS from there)."""
    return reviews_via(proxy, path, method=method)[0]


def direct(
    source: str = f"{NET}.50", headers: dict[str, str] | None = None, path: str = "/"
) -> int:
    """Call reviews' sidecar straight, in plaintext, from `source`."""
    conn = http.client.HTTPConnection(REVIEWS, 9080, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_remote_ip_blocks_read_the_client_address_from_x_forwarded_for(apply: Any) -> None:
    apply("remote", "DENY", "  - from: [{source: {remoteIpBlocks: [10.1.2.0/24]}}]")
    assert direct(headers={"X-Forwarded-For": "10.1.2.3"}) == 403
    assert direct(headers={"X-Forwarded-For": "10.1.2.3, 192.0.2.7"}) == 200  # the last entry
    assert direct(headers={"X-Forwarded-For": "10.9.9.9"}) == 200
    assert direct() == 200  # no header: the peer's own address
    apply("remote", "DENY", "  - from: [{source: {notRemoteIpBlocks: [10.1.2.0/24]}}]")
    assert direct(headers={"X-Forwarded-For": "10.1.2.3"}) == 200
    assert direct() == 403
    apply("remote", "DENY", f"  - when: [{{key: remote.ip, values: ['{NET}.51']}}]")
    assert direct(f"{NET}.51") == 403
    assert direct(f"{NET}.52") == 200


def test_service_accounts_and_trust_domains(apply: Any) -> None:
    apply("sa", "ALLOW", "  - from: [{source: {serviceAccounts: [productpage]}}]")
    assert via(PRODUCTPAGE) == 200
    assert via(RATINGS) == 403
    assert direct() == 403  # plaintext: no identity at all
    apply("sa", "ALLOW", "  - from: [{source: {serviceAccounts: [other/productpage]}}]")
    assert via(PRODUCTPAGE) == 403  # another namespace's productpage
    apply("sa", "DENY", "  - when: [{key: source.serviceAccount, values: [default/ratings]}]")
    assert via(RATINGS) == 403
    assert via(PRODUCTPAGE) == 200
    apply("sa", "ALLOW", "  - from: [{source: {trustDomains: ['cluster.*']}}]")
    assert via(RATINGS) == 200
    assert direct() == 403
    apply("sa", "ALLOW", "  - from: [{source: {notTrustDomains: [cluster.local]}}]")
    assert via(PRODUCTPAGE) == 403
    apply("sa", "DENY", "  - when: [{key: source.trustDomain, values: [cluster.local]}]")
    assert via(PRODUCTPAGE) == 403
    assert direct() == 200


def test_destination_and_connection_conditions(apply: Any) -> None:
    apply("dst", "DENY", f"  - when: [{{key: destination.ip, values: ['{NET}.0/24']}}]")
    assert via(PRODUCTPAGE) == 403
    apply("dst", "DENY", "  - when: [{key: destination.ip, values: ['10.0.0.0/8']}]")
    assert via(PRODUCTPAGE) == 200
    apply("dst", "DENY", "  - when: [{key: destination.port, notValues: ['9080']}]")
    assert via(PRODUCTPAGE) == 200
    apply("dst", "DENY", "  - when: [{key: destination.port, values: ['9080']}]")
    assert via(PRODUCTPAGE) == 403
    # The mesh's mTLS carries Istio's SNI; a plaintext caller sends none.
    apply(
        "dst", "DENY", "  - when: [{key: connection.sni, values: ['outbound_.9080_._.reviews*']}]"
    )
    assert via(PRODUCTPAGE) == 403
    assert direct() == 200


def test_pseudo_headers_and_path_templates(apply: Any) -> None:
    apply("method", "DENY", "  - when: [{key: 'request.headers[:method]', values: [POST]}]")
    assert via(PRODUCTPAGE, method="POST") == 403
    assert via(PRODUCTPAGE) == 200
    apply(
        "method",
        "ALLOW",
        "  - to: [{operation: {paths: ['/api/{*}/info', '/files/{**}']}}]\n"
        "    when: [{key: 'request.headers[:authority]', values: ['reviews*']}]",
    )
    assert via(PRODUCTPAGE, "/api/v1/info") == 200
    assert via(PRODUCTPAGE, "/files/a/b/c.txt") == 200
    assert via(PRODUCTPAGE, "/api/v1/x/info") == 403  # {*} is one segment
    assert via(PRODUCTPAGE, "/api/info") == 403
    assert direct(path="/api/v1/info", headers={"Host": "other"}) == 403  # :authority


def test_dry_run_is_counted_and_never_enforced(apply: Any, mesh: dict[str, Any]) -> None:
    reviews = mesh["reviews"]
    dry = ', annotations: {"istio.io/dry-run": "true"}'
    apply("dry", "DENY", "  - to: [{operation: {paths: [/secret]}}]", dry)
    key = "http.inbound_9080.rbac.istio_dry_run_deny_.shadow_denied"
    before = reviews.stats("rbac").get(key, 0)
    assert via(PRODUCTPAGE, "/secret") == 200  # not enforced
    assert via(PRODUCTPAGE, "/open") == 200
    wait_until(
        lambda: reviews.stats("rbac").get(key, 0) == before + 1,
        timeout=5,
        what=f"{key} counting the one request the dry-run DENY matched",
    )
    # A dry-run ALLOW alone allows everything (nothing enforced) and counts its denials.
    apply("dry", "ALLOW", "  - to: [{operation: {paths: [/open]}}]", dry)
    allow_key = "http.inbound_9080.rbac.istio_dry_run_allow_.shadow_denied"
    before = reviews.stats("rbac").get(allow_key, 0)
    assert via(PRODUCTPAGE, "/elsewhere") == 200
    wait_until(
        lambda: reviews.stats("rbac").get(allow_key, 0) == before + 1,
        timeout=5,
        what=f"{allow_key} counting the request the dry-run ALLOW would deny",
    )
