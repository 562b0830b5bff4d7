"""RequestAuthentication in Galley: the model, the key sets (inline, file, URL, OpenID
discovery) and every mistake located at its field; the JWKS fetcher's cache."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jwt
import pytest

from tests.identity.jwt_issuer import Issuer
from xds_server.galley.jwks import NO_KEYS_JWKS, JwksFetcher, jwks_problems, public_jwks
from xds_server.galley.loader import LoadResult, load_paths, parse_documents
from xds_server.galley.model_security import ClaimToHeader, JwtHeader

ISSUER = Issuer("https://issuer.example")


def parse(text: str) -> LoadResult:
    return parse_documents(textwrap.dedent(text), "ra.yaml")


def errors(result: LoadResult) -> list[str]:
    return [str(e) for e in result.errors]


def ra(rules: str, name: str = "jwt") -> str:
    return (
        "apiVersion: security.istio.io/v1\n"
        "kind: RequestAuthentication\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec:\n"
        "  jwtRules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    )


def test_rules_into_the_model_with_only_public_keys() -> None:
    private = json.loads(ISSUER.jwks())
    # The whole private key pasted by mistake.
    private["keys"][0] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ISSUER.rsa))
    secret = private["keys"][0]["d"]
    result = parse(
        ra(
            f"""\
            - issuer: {ISSUER.name}
              audiences: [a, b]
              jwks: '{json.dumps(private)}'
              fromHeaders: [{{name: X-JWT, prefix: "Bearer "}}]
              fromParams: [token]
              fromCookies: [session]
              outputPayloadToHeader: X-Payload
              outputClaimToHeaders: [{{header: X-Group, claim: a.b}}]
              forwardOriginalToken: true
              timeout: 2s
              spaceDelimitedClaims: [roles]
            """
        )
    )
    assert errors(result) == []
    assert [w.message for w in result.warnings] == [
        "holds private key material: only the public keys are sent to Envoy"
    ]
    assert result.config is not None
    (policy,) = result.config.request_authentications
    (rule,) = policy.jwt_rules
    assert (rule.issuer, rule.audiences, rule.timeout_ms) == (ISSUER.name, ("a", "b"), 2000)
    assert rule.from_headers == (JwtHeader("x-jwt", "Bearer "),)
    assert rule.output_claim_to_headers == (ClaimToHeader("x-group", "a.b"),)
    assert (rule.output_payload_to_header, rule.forward_original_token) == ("x-payload", True)
    assert secret not in rule.jwks and '"d"' not in rule.jwks
    assert jwks_problems(rule.jwks) == []


def test_mistakes_are_located() -> None:
    result = parse(
        ra(
            """\
            - audiences: [""]
            - issuer: x
              jwks: '{"keys": [{"kty": "EC", "crv": "secp256k1", "x": "a", "y": "b"}]}'
            - issuer: y
              jwksUri: ftp://example.com/keys
            - issuer: z
              jwks: 'not json'
              fromHeaders: [{prefix: "Bearer "}]
              outputClaimToHeaders: [{header: "x y", claim: c}]
              timeout: soon
            """
        )
    )
    assert errors(result) == [
        "ra.yaml:6: RequestAuthentication default/jwt: spec.jwtRules[0].issuer: needs an "
        "issuer or a jwksUri (as in Istio)",
        "ra.yaml:6: RequestAuthentication default/jwt: spec.jwtRules[0].audiences[0]: '' must "
        "not be empty",
        "ra.yaml:8: RequestAuthentication default/jwt: spec.jwtRules[1].jwks: keys[0] crv "
        "'secp256k1' is not one Envoy supports for EC (P-256, P-384, P-521)",
        "ra.yaml:10: RequestAuthentication default/jwt: spec.jwtRules[2].jwksUri: "
        "'ftp://example.com/keys' must be an http://, https:// or file: URL",
        "ra.yaml:12: RequestAuthentication default/jwt: spec.jwtRules[3].jwks: is not JSON "
        "(JSONDecodeError at character 0)",
        "ra.yaml:13: RequestAuthentication default/jwt: spec.jwtRules[3].fromHeaders[0].name: "
        "required field missing",
        "ra.yaml:14: RequestAuthentication default/jwt: spec.jwtRules[3].outputClaimToHeaders[0]"
        ".header: 'x y' must be letters, digits, '-' and '_'",
        "ra.yaml:15: RequestAuthentication default/jwt: spec.jwtRules[3].timeout: 'soon' must "
        "be a duration like '10s', '0.5s' or '100ms'",
    ]


def test_a_key_set_from_a_file_relative_to_the_document(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jwks.json").write_text(ISSUER.jwks())
    (tmp_path / "ra.yaml").write_text(
        ra(f"- issuer: {ISSUER.name}\n  jwksUri: file:keys/jwks.json\n")
    )
    result = load_paths([tmp_path])
    assert errors(result) == []
    assert result.config is not None
    (rule,) = result.config.request_authentications[0].jwt_rules
    assert rule.jwks == public_jwks(ISSUER.jwks())
    (tmp_path / "keys" / "jwks.json").write_text('{"keys": []}')
    assert errors(load_paths([tmp_path])) == [
        f"{tmp_path}/ra.yaml:7: RequestAuthentication default/jwt: spec.jwtRules[0].jwksUri: "
        f'{tmp_path}/keys/jwks.json has no keys: "keys" must be a non-empty list of JSON Web Keys'
    ]
    (tmp_path / "keys" / "jwks.json").unlink()
    (only,) = errors(load_paths([tmp_path]))
    assert only.endswith(
        f"spec.jwtRules[0].jwksUri: cannot read {tmp_path}/keys/jwks.json: "
        "No such file or directory"
    )


class FakeWeb:
    """URL -> answer (bytes, or an exception to raise); records each fetch and its timeout."""

    def __init__(self, answers: dict[str, bytes | Exception]) -> None:
        self.answers = answers
        self.fetched: list[tuple[str, float]] = []

    def __call__(self, url: str, timeout: float) -> bytes:
        self.fetched.append((url, timeout))
        answer = self.answers.get(url, OSError("connection refused"))
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_jwks_uri_fetch_timeout(tmp_path: Path) -> None:
    """`timeout` is how long the control plane may take to fetch the key set (Istio's)."""
    web = FakeWeb({"https://keys.example/jwks.json": ISSUER.jwks().encode()})
    text = ra(
        f"- issuer: {ISSUER.name}\n  jwksUri: https://keys.example/jwks.json\n  timeout: 1.5s\n"
    )
    (tmp_path / "ra.yaml").write_text(text)
    result = load_paths([tmp_path], jwks=JwksFetcher(http_get=web))
    assert errors(result) == [] and result.warnings == ()
    assert web.fetched == [("https://keys.example/jwks.json", 1.5)]
    assert result.config is not None
    assert result.config.request_authentications[0].jwt_rules[0].jwks == public_jwks(ISSUER.jwks())


def test_an_unreachable_key_set_fails_closed_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "ra.yaml").write_text(
        ra(f"- issuer: {ISSUER.name}\n  jwksUri: https://keys.example/jwks.json\n- issuer: plain\n")
    )
    result = load_paths([tmp_path], jwks=JwksFetcher(http_get=FakeWeb({})))
    assert errors(result) == []
    assert [f"{w.line}: {w.field}: {w.message}" for w in result.warnings] == [
        "7: spec.jwtRules[0].jwksUri: cannot fetch the key set: connection refused; tokens "
        "from issuer 'https://issuer.example' are refused (401) until it succeeds",
        "8: spec.jwtRules[1].issuer: has no jwks or jwksUri, and the issuer is not an http(s) "
        "URL to discover them from: every token from 'plain' is refused (401)",
    ]
    assert result.config is not None
    first, second = result.config.request_authentications[0].jwt_rules
    assert (first.jwks, first.jwks_missing) == ("", "connection refused")
    assert second.jwks_missing == "no key set"
    assert jwks_problems(NO_KEYS_JWKS) == []  # what Envoy gets instead: a key nobody holds


def test_a_fetched_key_set_that_is_not_one_is_an_error(tmp_path: Path) -> None:
    web = FakeWeb({"https://keys.example/jwks.json": b"<html>not found</html>"})
    (tmp_path / "ra.yaml").write_text(
        ra("- issuer: x\n  jwksUri: https://keys.example/jwks.json\n")
    )
    (only,) = errors(load_paths([tmp_path], jwks=JwksFetcher(http_get=web)))
    assert only.endswith(
        "spec.jwtRules[0].jwksUri: the key set fetched from https://keys.example/jwks.json is "
        "not JSON (JSONDecodeError at character 0)"
    )


def test_openid_discovery() -> None:
    web = FakeWeb(
        {
            "https://issuer.example/.well-known/openid-configuration": json.dumps(
                {"jwks_uri": "https://issuer.example/keys"}
            ).encode(),
            "https://issuer.example/keys": ISSUER.jwks().encode(),
        }
    )
    uri, found = JwksFetcher(http_get=web).discover("https://issuer.example/", 5)
    assert (uri, found.text, found.problem) == ("https://issuer.example/keys", ISSUER.jwks(), None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_fetcher_keeps_refreshes_and_falls_back() -> None:
    url = "https://keys.example/jwks.json"
    web = FakeWeb({url: b"one"})
    clock = Clock()
    fetcher = JwksFetcher(http_get=web, clock=clock, refresh_after=60, retry_after=5)
    assert fetcher.fetch(url, 1).text == "one"
    assert fetcher.fetch(url, 1).text == "one" and len(web.fetched) == 1  # kept
    assert fetcher.due() == [] and not fetcher.refresh()
    clock.now = 61
    web.answers[url] = b"two"
    assert fetcher.due() == [url] and fetcher.refresh()  # rotated: a reload is due
    assert fetcher.fetch(url, 1).text == "two"
    clock.now = 130
    web.answers[url] = OSError("down")
    assert fetcher.refresh()  # a failure starting is a change too
    stale = fetcher.fetch(url, 1)
    assert (stale.text, stale.problem, stale.stale) == ("two", "down", True)  # last good copy
    clock.now = 134
    assert fetcher.due() == []  # a failed URL is retried after retry_after, not at once
    clock.now = 136
    assert fetcher.due() == [url]
    fetcher.sweep()  # the load asked for it: kept
    fetcher.sweep()  # no load asked since: forgotten
    assert fetcher.due() == []


@pytest.mark.parametrize(
    ("jwks", "problem"),
    [
        ('{"keys": {}}', 'has no keys: "keys" must be a non-empty list of JSON Web Keys'),
        ("[]", 'is not a JSON Web Key Set: expected an object with a "keys" list'),
        ('{"keys": [{"kty": "RSA", "alg": "ES256", "n": "x", "e": "AQAB"}]}',
         "keys[0] alg 'ES256' does not go with kty RSA (PS256, PS384, PS512, RS256, RS384, "
         "RS512)"),
        ('{"keys": [{"kty": "OKP", "crv": "X25519", "x": "a"}]}',
         "keys[0] crv 'X25519' is not one Envoy supports for OKP (Ed25519)"),
        ('{"keys": [{"kty": "DSA"}]}',
         "keys[0] kty 'DSA' is not one Envoy verifies with (RSA, EC, oct, OKP)"),
    ],
)  # fmt: skip
def test_key_set_problems(jwks: str, problem: str) -> None:
    assert jwks_problems(jwks) == [problem]


def test_a_request_authentication_selecting_nobody_warns() -> None:
    result = parse(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        "metadata: {name: typo, namespace: default}\n"
        "spec: {selector: {matchLabels: {app: reveiws}}}\n"
    )
    assert [w.message for w in result.warnings] == [
        "selects no WorkloadEntry in namespace 'default': no effect"
    ]
