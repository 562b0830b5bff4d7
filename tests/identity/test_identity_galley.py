"""PeerAuthentication and AuthorizationPolicy: parsed into the model, mistakes with file:line."""

from __future__ import annotations

import textwrap

from xds_server.galley.loader import LoadResult, parse_documents
from xds_server.galley.model_security import AuthzRule, Condition, OperationMatch, SourceMatch


def parse(text: str) -> LoadResult:
    return parse_documents(textwrap.dedent(text), "sec.yaml")


def errors(result: LoadResult) -> list[str]:
    return [str(e) for e in result.errors]


def test_peer_authentication_levels_and_port_level() -> None:
    result = parse(
        """\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: default, namespace: istio-system}
        spec: {mtls: {mode: STRICT}}
        ---
        apiVersion: security.istio.io/v1beta1
        kind: PeerAuthentication
        metadata: {name: reviews, namespace: default}
        spec:
          selector: {matchLabels: {app: reviews}}
          portLevelMtls:
            9080: {mode: DISABLE}
        """
    )
    assert errors(result) == []
    assert result.config is not None
    reviews, mesh = result.config.peer_authentications  # sorted by namespace, name
    assert (mesh.meta.key, mesh.mode, mesh.selector) == ("istio-system/default", "STRICT", None)
    assert reviews.mode == "UNSET"
    assert dict(reviews.selector or {}) == {"app": "reviews"}
    assert dict(reviews.port_level) == {9080: "DISABLE"}


def test_peer_authentication_mistakes_name_file_line_and_field() -> None:
    result = parse(
        """\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: bad, namespace: default}
        spec:
          mtls: {mode: STRICTEST}
          portLevelMtls:
            http: {mode: STRICT}
        """
    )
    assert errors(result) == [
        "sec.yaml:5: PeerAuthentication default/bad: spec.mtls.mode: 'STRICTEST' must be one of "
        "DISABLE, PERMISSIVE, STRICT, UNSET",
        "sec.yaml:6: PeerAuthentication default/bad: spec.portLevelMtls: portLevelMtls needs a "
        "selector with matchLabels (as in Istio)",
        "sec.yaml:7: PeerAuthentication default/bad: spec.portLevelMtls.http: port 'http' must be "
        "a number from 1 to 65535",
    ]
    assert result.config is None


def test_authorization_policy_rules_into_the_model() -> None:
    result = parse(
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: reviews, namespace: default}
        spec:
          selector: {matchLabels: {app: reviews}}
          action: DENY
          rules:
          - from:
            - source: {principals: [cluster.local/ns/default/sa/a], ipBlocks: [10.0.0.0/8]}
            to:
            - operation: {methods: [POST], paths: [/admin*], ports: ["9080", 9081]}
            when:
            - {key: "request.headers[x-user]", notValues: [bob]}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: allow-nothing, namespace: default}
        spec: {}
        """
    )
    assert errors(result) == []
    assert result.config is not None
    nothing, reviews = result.config.authorization_policies
    assert (nothing.action, nothing.rules, nothing.selector) == ("ALLOW", (), None)
    assert reviews.action == "DENY"
    assert reviews.rules == (
        AuthzRule(
            sources=(
                SourceMatch(
                    principals=("cluster.local/ns/default/sa/a",), ip_blocks=("10.0.0.0/8",)
                ),
            ),
            operations=(OperationMatch(methods=("POST",), paths=("/admin*",), ports=(9080, 9081)),),
            conditions=(Condition("request.headers[x-user]", not_values=("bob",)),),
        ),
    )


def test_authorization_policy_mistakes_name_file_line_and_field() -> None:
    result = parse(
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: bad, namespace: default}
        spec:
          action: CUSTOM
          rules:
          - from:
            - source: {requestPrincipals: ["*"], ipBlocks: [10.0.0.300]}
            to:
            - operation: {ports: [http], paths: ["/a/{**}/b/{*}"]}
            when:
            - {key: "request.auth.claims[iss]", values: [x]}
            - {key: source.principal}
            - {key: source.ip, values: [somewhere]}
            - {key: destination.name, values: [x]}
            - {key: "request.headers[]", values: [x]}
        """
    )
    assert errors(result) == [
        "sec.yaml:4: AuthorizationPolicy default/bad: spec.provider: CUSTOM needs provider.name",
        "sec.yaml:8: AuthorizationPolicy default/bad: spec.rules[0].from[0].source."
        "requestPrincipals: requestPrincipals cannot be used with action CUSTOM (as in Istio)",
        "sec.yaml:8: AuthorizationPolicy default/bad: spec.rules[0].from[0].source.ipBlocks[0]: "
        "'10.0.0.300' must be an IP address or a CIDR range",
        "sec.yaml:10: AuthorizationPolicy default/bad: spec.rules[0].to[0].operation.ports[0]: "
        "'http' must be a port number from 1 to 65535",
        "sec.yaml:10: AuthorizationPolicy default/bad: spec.rules[0].to[0].operation.paths[0]: "
        "'/a/{**}/b/{*}' is not a valid path template: {**} must be the last operator",
        "sec.yaml:12: AuthorizationPolicy default/bad: spec.rules[0].when[0].key: "
        "'request.auth.claims[iss]' cannot be used with action CUSTOM (as in Istio)",
        "sec.yaml:13: AuthorizationPolicy default/bad: spec.rules[0].when[1].key: "
        "'source.principal' cannot be used with action CUSTOM (as in Istio)",
        "sec.yaml:13: AuthorizationPolicy default/bad: spec.rules[0].when[1]: needs values or "
        "notValues",
        "sec.yaml:14: AuthorizationPolicy default/bad: spec.rules[0].when[2].values[0]: "
        "'somewhere' must be an IP address or a CIDR range",
        "sec.yaml:15: AuthorizationPolicy default/bad: spec.rules[0].when[3].key: "
        "'destination.name' is deprecated: only supported in v1alpha1",
        "sec.yaml:16: AuthorizationPolicy default/bad: spec.rules[0].when[4].key: "
        "'request.headers[]' must be request.headers[NAME]",
    ]


def test_policies_selecting_nobody_and_second_namespace_wide_policy_are_warnings() -> None:
    result = parse(
        """\
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: reviews, namespace: default}
        spec: {address: 127.0.0.3, labels: {app: reviews}}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: zz, namespace: default}
        spec: {mtls: {mode: STRICT}}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: aa, namespace: default}
        spec: {mtls: {mode: DISABLE}}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: typo, namespace: default}
        spec:
          selector: {matchLabels: {app: reveiws}}
        """
    )
    assert errors(result) == []
    assert [str(w) for w in result.warnings] == [
        "sec.yaml:8: warning: PeerAuthentication default/zz: metadata.name: another "
        "namespace-wide PeerAuthentication in 'default' applies instead: default/aa "
        "(sec.yaml:13)",
        "sec.yaml:20: warning: AuthorizationPolicy default/typo: spec.selector: selects no "
        "WorkloadEntry in namespace 'default': no effect",
    ]
