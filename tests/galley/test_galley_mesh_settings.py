"""The mesh settings (the `istio` ConfigMap of istio-system, Istio's MeshConfig) and the
CUSTOM AuthorizationPolicies that name its extension providers: located findings,
inside `data.mesh` too."""

from __future__ import annotations

import textwrap

from xds_server.galley.loader import LoadResult, parse_documents

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: authz, namespace: foo}
spec:
  hosts: [authz.foo.svc.cluster.local]
  ports: [{number: 9000, name: grpc, protocol: GRPC}, {number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
"""


def parse(text: str) -> LoadResult:
    return parse_documents(textwrap.dedent(text), "mesh.yaml")


def parse_mesh(mesh: str) -> LoadResult:
    """The mesh settings document with `mesh` as its `data.mesh` (lines 6 on)."""
    return parse(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
        "data:\n  mesh: |-\n" + textwrap.indent(textwrap.dedent(mesh), "    ")
    )


def errors(result: LoadResult) -> list[str]:
    return [str(e) for e in result.errors]


def test_providers_into_the_model() -> None:
    result = parse(
        SERVICE
        + textwrap.dedent(
            """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: istio, namespace: istio-system}
        data:
          mesh: |-
            extensionProviders:
            - name: grpc
              envoyExtAuthzGrpc:
                {service: foo/authz.foo.svc.cluster.local, port: "9000", timeout: 2s}
            - name: http
              envoyExtAuthzHttp:
                service: authz.foo.svc.cluster.local
                port: 8000
                includeHeadersInCheck: [x-a]
                includeAdditionalHeadersInCheck: {x-b: c}
                statusOnError: "503"
        """
        )
    )
    assert errors(result) == []
    assert [(w.line, w.field, w.message) for w in result.warnings] == [
        (
            23,
            "data.mesh.extensionProviders[1].envoyExtAuthzHttp.includeHeadersInCheck",
            "deprecated: use includeRequestHeadersInCheck",
        )
    ]
    assert result.config is not None
    (settings,) = result.config.mesh_settings
    grpc, http = settings.extension_providers
    assert (grpc.grpc, grpc.service, grpc.namespace, grpc.port, grpc.timeout_ms) == (
        True, "authz.foo.svc.cluster.local", "foo", 9000, 2000,
    )  # fmt: skip
    assert (http.include_request_headers, http.include_additional_headers) == (
        ("x-a",), (("x-b", "c"),),
    )  # fmt: skip
    assert http.status_on_error == 503


def test_mistakes_inside_the_mesh_text_are_located_at_their_line() -> None:
    result = parse_mesh(
        """\
        enableTracing: true
        extensionProviders:
        - name: Bad_Name
          envoyExtAuthzHttp: {service: "*.example.com", port: 0, pathPrefix: check}
        - name: both
          envoyExtAuthzHttp: {service: a.example.com, port: 80}
          envoyExtAuthzGrpc: {service: a.example.com, port: 80}
        - name: tracing
          zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
        - name: status
          envoyExtAuthzGrpc: {service: a.example.com, port: 80, statusOnError: nope}
        - name: dup
          envoyExtAuthzGrpc: {service: a.example.com, port: 80}
        - name: dup
          envoyExtAuthzGrpc: {service: a.example.com, port: 80}
        """
    )
    prefix = "mesh.yaml:{}: ConfigMap istio-system/istio: data.mesh."
    assert errors(result) == [
        prefix.format(6) + "enableTracing: not supported by pocketmesh yet",
        prefix.format(8) + "extensionProviders[0].name: 'Bad_Name' must be a DNS-1123 label: "
        "lower-case letters, digits and '-', starting and ending with a letter or digit",
        prefix.format(9) + "extensionProviders[0].envoyExtAuthzHttp.service: '*.example.com' "
        "must name one host, not a wildcard",
        prefix.format(9) + "extensionProviders[0].envoyExtAuthzHttp.port: 0 must be a port "
        "number from 1 to 65535",
        prefix.format(9) + "extensionProviders[0].envoyExtAuthzHttp.pathPrefix: 'check' must "
        "begin with '/' (as in Istio)",
        prefix.format(10) + "extensionProviders[1]: must set exactly one of envoyExtAuthzHttp, "
        "envoyExtAuthzGrpc",
        prefix.format(13) + "extensionProviders[2]: must set exactly one of envoyExtAuthzHttp, "
        "envoyExtAuthzGrpc",
        prefix.format(14) + "extensionProviders[2].zipkin: not supported by pocketmesh yet "
        "(a Telemetry provider: Telemetry is not supported yet)",
        prefix.format(16) + "extensionProviders[3].envoyExtAuthzGrpc.statusOnError: 'nope' must "
        'be an HTTP status code Envoy knows, like "403"',
        prefix.format(19) + "extensionProviders[5].name: provider name 'dup' is already used "
        "(line 17)",
    ]


def test_the_mesh_settings_are_one_configmap_of_yaml() -> None:
    result = parse(
        """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: my-config, namespace: default}
        data: {key: value}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: istio, namespace: istio-system}
        data:
          mesh: |-
            extensionProviders: [
        """
    )
    assert errors(result) == [
        "mesh.yaml:3: ConfigMap default/my-config: metadata.name: pocketmesh reads one "
        "ConfigMap, the mesh settings istio-system/istio (Istio's MeshConfig), not "
        "default/my-config",
        "mesh.yaml:10: ConfigMap istio-system/istio: data.mesh: is not YAML: did not find "
        "expected node content",
    ]


def test_custom_policies_name_a_provider_for_a_service_port_of_the_registry() -> None:
    result = parse(
        SERVICE
        + textwrap.dedent(
            """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: istio, namespace: istio-system}
        data:
          mesh: |
            extensionProviders:
            - name: on-http-port
              envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 8000}
            - {name: unused, envoyExtAuthzHttp: {service: nowhere.example.com, port: 80}}
            - name: missing
              envoyExtAuthzHttp: {service: bar/authz.foo.svc.cluster.local, port: 8000}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: a, namespace: foo}
        spec: {action: CUSTOM, provider: {name: on-http-port}, rules: [{}]}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: b, namespace: foo}
        spec: {action: CUSTOM, provider: {name: nobody}, rules: [{}]}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: c, namespace: foo}
        spec: {action: CUSTOM, provider: {name: missing}, rules: [{}]}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: d, namespace: foo}
        spec: {action: DENY, provider: {name: missing}}
        """
        )
    )
    assert errors(result) == [
        "mesh.yaml:17: ConfigMap istio-system/istio: data.mesh.extensionProviders[0]."
        "envoyExtAuthzGrpc.service: port 8000 of authz.foo.svc.cluster.local is HTTP: a gRPC "
        "provider needs a GRPC or HTTP2 port (gRPC is HTTP/2)",
        "mesh.yaml:20: ConfigMap istio-system/istio: data.mesh.extensionProviders[2]."
        "envoyExtAuthzHttp.service: no ServiceEntry in namespace 'bar' declares host "
        "'authz.foo.svc.cluster.local'",
        "mesh.yaml:30: AuthorizationPolicy foo/b: spec.provider.name: no extension provider "
        "'nobody': the mesh settings (mesh.yaml:12) declare missing, on-http-port, unused",
        "mesh.yaml:40: AuthorizationPolicy foo/d: spec.provider: provider is only for action "
        "CUSTOM, not DENY",
        "mesh.yaml:40: AuthorizationPolicy foo/d: spec.rules: DENY without rules never matches: "
        "add an empty rule {} to match every request (as Istio says)",
    ]
    assert [w.message for w in result.warnings] == [
        "no ServiceEntry declares host 'nowhere.example.com' (no policy uses it yet)"
    ]


def test_a_custom_policy_without_mesh_settings() -> None:
    result = parse(
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: ext-authz, namespace: foo, annotations: {"istio.io/dry-run": "maybe"}}
        spec: {action: CUSTOM, provider: {name: my-custom-authz}}
        """
    )
    assert errors(result) == [
        'mesh.yaml:3: AuthorizationPolicy foo/ext-authz: metadata.annotations["istio.io/dry-run"]'
        ": 'maybe' must be true or false",
        "mesh.yaml:4: AuthorizationPolicy foo/ext-authz: spec.rules: CUSTOM without rules never "
        "matches: add an empty rule {} to match every request (as Istio says)",
    ]


def test_dry_run_is_not_built_for_custom() -> None:
    result = parse(
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: ext-authz
          namespace: foo
          annotations: {"istio.io/dry-run": "true"}
        spec: {action: CUSTOM, provider: {name: my-custom-authz}, rules: [{}]}
        """
    )
    assert errors(result)[0] == (
        'mesh.yaml:6: AuthorizationPolicy foo/ext-authz: metadata.annotations["istio.io/dry-run"]'
        ": istio.io/dry-run with action CUSTOM (Istio would still call the provider) is not "
        "supported by pocketmesh yet"
    )


def test_access_log_settings() -> None:
    result = parse_mesh(
        """\
        accessLogFile: /var/log/envoy.log
        accessLogFormat: "%RESPONSE_CODE% %ROUTE_NAME%"
        """
    )
    assert errors(result) == []
    assert result.config is not None
    (settings,) = result.config.mesh_settings
    log = settings.access_log
    assert log is not None
    # Istio ends a text format with a newline when it has none.
    assert (log.path, log.encoding, log.text_format) == (
        "/var/log/envoy.log", "TEXT", "%RESPONSE_CODE% %ROUTE_NAME%\n",
    )  # fmt: skip


def test_access_log_mistakes() -> None:
    result = parse_mesh(
        """\
        accessLogFile: /dev/stdout
        accessLogEncoding: YAML
        accessLogFormat: "{not json"
        """
    )
    prefix = "mesh.yaml:{}: ConfigMap istio-system/istio: data.mesh."
    assert errors(result) == [
        prefix.format(7) + "accessLogEncoding: 'YAML' must be one of JSON, TEXT",
    ]
    no_file = parse_mesh(
        """\
        accessLogEncoding: JSON
        accessLogFormat: '{"code": 200}'
        """
    )
    assert errors(no_file) == [
        prefix.format(7)
        + "accessLogFormat: with accessLogEncoding JSON it must be a JSON object of strings"
    ]


def test_mesh_defaults_for_routes_and_sidecars() -> None:
    result = parse_mesh(
        """\
        outboundTrafficPolicy: {mode: ALLOW_ANY}
        defaultHttpRetryPolicy: {attempts: 2, perTryTimeout: 1s}
        """
    )
    assert errors(result) == []
    assert result.config is not None
    (settings,) = result.config.mesh_settings
    assert settings.outbound_mode == "ALLOW_ANY"
    retry = settings.default_http_retry
    assert retry is not None and (retry.attempts, retry.per_try_timeout_ms) == (2, 1000)
    wrong = parse_mesh(
        """\
        outboundTrafficPolicy: {mode: BLOCK}
        defaultHttpRetryPolicy: {attempts: two}
        """
    )
    prefix = "mesh.yaml:{}: ConfigMap istio-system/istio: data.mesh."
    assert errors(wrong) == [
        prefix.format(6) + "outboundTrafficPolicy.mode: 'BLOCK' must be one of ALLOW_ANY, "
        "REGISTRY_ONLY",
        prefix.format(7) + "defaultHttpRetryPolicy.attempts: expected integer, got string",
    ]
