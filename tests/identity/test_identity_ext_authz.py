"""AuthorizationPolicy `action: CUSTOM` enforced by real sidecars through Envoy's ext_authz,
against the ext_authz server `pocketmesh up` runs (Istio's sample: allow on
`x-ext-authz: allow`), started here with its HTTP and gRPC APIs.

productpage and ratings call reviews through their sidecars over mTLS; db is a TCP
service. The providers are declared in the mesh settings (the `istio` ConfigMap of
istio-system, Istio's MeshConfig.extensionProviders); their services are
ServiceEntries whose endpoint is the server on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import ControlPlaneThread, free_port, running, start_all, wait_until
from tests.identity.ext_authz_server import ExtAuthzServer
from tests.identity.mesh import add_db, reviews_via, start_sidecar, write_mesh_and_start_apps
from tests.identity.settle import Policies
from xds_server.ext_authz_app import DENY_BODY, RESULT_HEADER
from xds_server.identity import IdentityOptions

NET = "127.0.81"
PRODUCTPAGE, RATINGS = f"{NET}.10:15001", f"{NET}.12:15001"
DB_ADDRESS = (f"{NET}.13", 3306)

REGISTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz, namespace: default}}
spec:
  hosts: [ext-authz.default.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 8000, name: http, protocol: HTTP}}
  - {{number: 9000, name: grpc, protocol: GRPC}}
  endpoints: [{{address: 127.0.0.1, ports: {{http: {http}, grpc: {grpc}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dead-authz, namespace: default}}
spec:
  hosts: [dead-authz.default.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {dead}}}}}]
"""


def mesh_settings(extra: str = "") -> str:
    return textwrap.dedent(
        """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: istio, namespace: istio-system}
        data:
          mesh: |-
            extensionProviders:
            - name: sample-ext-authz-grpc
              envoyExtAuthzGrpc:
                service: ext-authz.default.svc.cluster.local
                port: 9000
            - name: sample-ext-authz-http
              envoyExtAuthzHttp:
                service: ext-authz.default.svc.cluster.local
                port: "8000"
                pathPrefix: /check
                includeRequestHeadersInCheck: ["x-ext-authz"]
                headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
                headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
            - name: dead
              envoyExtAuthzHttp:
                service: dead-authz.default.svc.cluster.local
                port: 8000
        """
    ) + textwrap.indent(textwrap.dedent(extra), " " * 4)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ext-authz")
    config = root / "config"
    config.mkdir()
    apps: list[Any] = [*write_mesh_and_start_apps(config, NET), add_db(config, NET)]
    server = ExtAuthzServer(allow_service_account="productpage").start()
    registry = REGISTRY.format(http=server.http_port, grpc=server.grpc_port, dead=free_port())
    (config / "ext-authz.yaml").write_text(registry)
    (config / "mesh-settings.yaml").write_text(mesh_settings())
    plane = ControlPlaneThread(config, identity=IdentityOptions(), watch=False).start()
    names = ("productpage", "reviews", "ratings", "db")
    envoys = [start_sidecar(plane, config, root, n) for n in names]
    with running(*apps, server, plane, *envoys):
        start_all(envoys)
        wait_until(lambda: call(PRODUCTPAGE)[0] == 200, timeout=10, what="mesh up")
        yield {"server": server, "plane": plane, "policies": Policies(plane, config, envoys)}


@pytest.fixture
def apply(mesh: dict[str, Any]) -> Iterator[Any]:
    policies: Policies = mesh["policies"]
    yield policies.write
    policies.clear()


def call(
    proxy: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    status, raw, response_headers = reviews_via(proxy, path, headers)
    body = raw.decode(errors="replace")
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = body
    return status, data, response_headers


def custom(name: str, provider: str, rules: str, app: str = "reviews") -> str:
    return (
        "apiVersion: security.istio.io/v1\n"
        "kind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec:\n"
        f"  selector: {{matchLabels: {{app: {app}}}}}\n"
        "  action: CUSTOM\n"
        f"  provider: {{name: {provider}}}\n"
        "  rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    )


ALLOW = {"x-ext-authz": "allow"}
HEADERS_ONLY = "- to: [{operation: {paths: ['/headers*']}}]\n"


def test_grpc_provider_decides_for_the_paths_its_rules_select(
    apply: Any, mesh: dict[str, Any]
) -> None:
    server: ExtAuthzServer = mesh["server"]
    apply("custom", custom("ext-authz", "sample-ext-authz-grpc", HEADERS_ONLY))
    status, echo, _ = call(PRODUCTPAGE, "/headers", ALLOW)
    assert status == 200
    assert echo["headers"][RESULT_HEADER] == "allowed"  # the provider's header, to the app
    status, body, headers = call(PRODUCTPAGE, "/headers", {"x-ext-authz": "deny"})
    assert (status, body, headers[RESULT_HEADER]) == (403, DENY_BODY, "denied")
    # Without the header the sample allows the service account it was told to:
    # productpage's (the caller's SPIFFE ID reached it), not ratings'.
    assert call(PRODUCTPAGE, "/headers")[0] == 200
    assert call(RATINGS, "/headers")[0] == 403
    before = len(server.checks("grpc"))
    assert call(RATINGS, "/other")[0] == 200  # no rule selects it: the provider is not asked
    assert len(server.checks("grpc")) == before
    assert server.checks("grpc")[-1] == (False, "/headers")


def test_http_provider_with_path_prefix_and_header_lists(apply: Any, mesh: dict[str, Any]) -> None:
    server: ExtAuthzServer = mesh["server"]
    apply("custom", custom("ext-authz", "sample-ext-authz-http", HEADERS_ONLY))
    status, echo, _ = call(PRODUCTPAGE, "/headers", ALLOW)
    assert status == 200
    assert echo["headers"][RESULT_HEADER] == "allowed"  # headersToUpstreamOnAllow
    assert server.checks("http")[-1] == (True, "/check/headers")  # pathPrefix
    status, body, headers = call(PRODUCTPAGE, "/headers", {"x-ext-authz": "no"})
    assert (status, body, headers[RESULT_HEADER]) == (403, DENY_BODY, "denied")
    # The HTTP API sees only the headers named (includeRequestHeadersInCheck): no
    # SPIFFE ID, so without the header everyone is denied.
    assert call(PRODUCTPAGE, "/headers")[0] == 403
    assert call(RATINGS, "/")[0] == 200


def test_a_provider_that_does_not_answer(apply: Any, mesh: dict[str, Any]) -> None:
    plane: ControlPlaneThread = mesh["plane"]
    apply("custom", custom("ext-authz", "dead", "- {}\n"))
    assert call(PRODUCTPAGE, "/", ALLOW)[0] == 403  # fail closed: Envoy's default status
    apply(
        "mesh-settings",
        mesh_settings(
            """\
            - name: dead-503
              envoyExtAuthzHttp:
                service: dead-authz.default.svc.cluster.local
                port: 8000
                statusOnError: "503"
            - name: dead-open
              envoyExtAuthzHttp:
                service: dead-authz.default.svc.cluster.local
                port: 8000
                failOpen: true
            """
        ),
    )
    apply("custom", custom("ext-authz", "dead-503", "- {}\n"))
    assert call(PRODUCTPAGE)[0] == 503
    apply("custom", custom("ext-authz", "dead-open", "- {}\n"))
    assert call(PRODUCTPAGE)[0] == 200
    apply("custom", None)
    apply("mesh-settings", mesh_settings())
    assert plane.plane.config_status.errors == ()


def test_custom_then_deny_then_allow_and_the_providers_metadata(apply: Any) -> None:
    apply("custom", custom("ext-authz", "sample-ext-authz-grpc", HEADERS_ONLY))
    apply(
        "deny",
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: deny-bob, namespace: default}
        spec:
          selector: {matchLabels: {app: reviews}}
          action: DENY
          rules: [{when: [{key: "request.headers[x-user]", values: [bob]}]}]
        """,
    )
    # The provider allows, then DENY still denies: CUSTOM cannot bypass DENY (Istio).
    assert call(PRODUCTPAGE, "/headers", {**ALLOW, "x-user": "bob"})[0] == 403
    assert call(PRODUCTPAGE, "/headers", {**ALLOW, "x-user": "alice"})[0] == 200
    # ALLOW on what the provider wrote in its dynamic metadata: only what it checked.
    apply(
        "allow",
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: checked, namespace: default}
        spec:
          selector: {matchLabels: {app: reviews}}
          rules:
          - when:
            - key: experimental.envoy.filters.http.ext_authz[ext-authz-check-result]
              values: [allowed]
        """,
    )
    assert call(PRODUCTPAGE, "/headers", ALLOW)[0] == 200
    assert call(PRODUCTPAGE, "/other", ALLOW)[0] == 403  # never checked: no metadata


def tcp_echo(source: str | None = None, via: tuple[str, int] = DB_ADDRESS) -> bytes:
    bind = (source, 0) if source else None
    with socket.create_connection(via, timeout=2, source_address=bind) as conn:
        conn.sendall(b"hello db")
        try:
            return conn.recv(100)
        except OSError:
            return b""


def test_grpc_provider_on_a_tcp_port(apply: Any) -> None:
    apply("custom", custom("db-authz", "sample-ext-authz-grpc", "- {}\n", app="db"))
    # Straight to db's sidecar in plaintext: no SPIFFE ID, the sample denies: closed.
    assert tcp_echo(f"{NET}.50") == b""
    # Through productpage's sidecar (its TCP listener for db): mTLS as productpage,
    # the service account the sample allows.
    assert tcp_echo(via=(f"{NET}.10", 3306)) == b"hello db"


def test_a_provider_no_mesh_settings_declare_is_refused(apply: Any, mesh: dict[str, Any]) -> None:
    plane: ControlPlaneThread = mesh["plane"]
    apply("custom", custom("ext-authz", "sample-ext-authz-grpc", HEADERS_ONLY))
    generation = plane.plane.config_status.generation
    apply("custom", custom("ext-authz", "nobody", HEADERS_ONLY), accepted=False)
    (error,) = plane.plane.config_status.errors
    assert (
        "custom.yaml:7: AuthorizationPolicy default/ext-authz: spec.provider.name: "
        "no extension provider 'nobody': the mesh settings (" in error
    ), error
    assert "declare dead, sample-ext-authz-grpc, sample-ext-authz-http" in error, error
    assert plane.plane.config_status.generation == generation  # nothing pushed
    assert call(PRODUCTPAGE, "/headers", {"x-ext-authz": "deny"})[0] == 403  # still in force
