"""RequestAuthentication enforced by real sidecars (Envoy's jwt_authn), with the
AuthorizationPolicy rules that read what it verified.

productpage and ratings call reviews through their sidecars over mTLS; the policies
sit on reviews. The tokens are signed here with keys made here (tests/identity/
jwt_issuer.py); key sets come inline, from a file, from an HTTP server on 127.0.0.1
(refreshed by the control plane), or by OpenID discovery. One control plane for the
module; each test writes its policy files, waits until they are in force, and
removes them.
"""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import ControlPlaneThread, running, start_all, wait_until
from tests.identity.jwt_issuer import Issuer, JwksServer
from tests.identity.mesh import reviews_via, start_sidecar, write_mesh_and_start_apps
from tests.identity.settle import Policies
from xds_server.galley.jwks import JwksFetcher
from xds_server.identity import IdentityOptions

NET = "127.0.79"
PRODUCTPAGE, RATINGS = f"{NET}.10:15001", f"{NET}.12:15001"
ISSUER = Issuer("https://issuer.example")
OTHER = Issuer("other@example.com")  # same kids, other keys: a forged signature


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("jwt")
    config = root / "config"
    config.mkdir()
    apps = write_mesh_and_start_apps(config, NET)
    server = JwksServer().start()
    # Tiny refresh intervals, so that a rotated key set or an issuer coming back shows.
    fetcher = JwksFetcher(refresh_after=1.0, retry_after=0.5)
    plane = ControlPlaneThread(
        config,
        identity=IdentityOptions(),
        jwks_fetcher=fetcher,
        jwks_check_every=0.2,
        watch=False,  # each test reloads when its files are written (tests/identity/settle.py)
    ).start()
    envoys = [start_sidecar(plane, config, root, n) for n in ("productpage", "reviews", "ratings")]
    with running(*apps, server, plane, *envoys):
        start_all(envoys)
        wait_until(lambda: call(PRODUCTPAGE)[0] == 200, timeout=10, what="mesh up")
        policies = Policies(plane, config, envoys)
        yield {
            "config": config,
            "plane": plane,
            "server": server,
            "root": root,
            "policies": policies,
        }


def call(
    proxy: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """GET reviews through a sidecar: (status, the echo app's JSON or {}, response headers)."""
    status, body, response_headers = reviews_via(proxy, path, headers)
    try:
        data = json.loads(body)
    except ValueError:
        data = {"raw": body.decode(errors="replace")}
    return status, data, response_headers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def becomes(
    expected: int, proxy: str = PRODUCTPAGE, path: str = "/", headers: dict[str, str] | None = None
) -> None:
    """For changes the control plane makes on its own clock (a key set refreshed)."""
    wait_until(
        lambda: call(proxy, path, headers)[0] == expected,
        timeout=15,
        what=f"{expected} for {path} via {proxy} {headers or ''}",
    )


@pytest.fixture
def apply(mesh: dict[str, Any]) -> Iterator[Any]:
    policies: Policies = mesh["policies"]
    yield policies.write
    policies.clear()


def request_authentication(name: str, rules: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\n"
        "kind: RequestAuthentication\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec:\n"
        "  selector: {matchLabels: {app: reviews}}\n"
        "  jwtRules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    )


def authorization_policy(name: str, action: str, rules: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\n"
        "kind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec:\n"
        "  selector: {matchLabels: {app: reviews}}\n"
        f"  action: {action}\n"
        "  rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    )


INLINE = f"""\
- issuer: {ISSUER.name}
  jwks: '{ISSUER.jwks()}'
"""


def test_valid_token_passes_invalid_token_gets_401_and_no_token_passes(apply: Any) -> None:
    apply("ra", request_authentication("jwt", INLINE))
    assert (
        call(PRODUCTPAGE, headers=bearer(OTHER.token(iss=ISSUER.name)))[0] == 401
    )  # in force: forged is refused
    status, echo, _ = call(PRODUCTPAGE, headers=bearer(ISSUER.token()))
    assert status == 200
    assert "authorization" not in echo["headers"]  # forwardOriginalToken: false (Istio)
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token(ec_key=True)))[0] == 200
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token(expires_in=-120)))[0] == 401
    assert call(PRODUCTPAGE, headers=bearer(OTHER.token()))[0] == 401  # issuer not configured
    assert call(PRODUCTPAGE, headers=bearer("not-a-jwt"))[0] == 401
    assert call(PRODUCTPAGE, path="/?access_token=" + OTHER.token(iss=ISSUER.name))[0] == 401
    assert call(PRODUCTPAGE)[0] == 200  # no token: passes, with no request principal
    assert call(RATINGS)[0] == 200


def test_request_principals_required_gives_403_without_a_token(apply: Any) -> None:
    apply("ra", request_authentication("jwt", INLINE))
    apply(
        "ap",
        authorization_policy(
            "require-jwt",
            "ALLOW",
            f"- from: [{{source: {{requestPrincipals: ['{ISSUER.name}/*']}}}}]",
        ),
    )
    assert call(PRODUCTPAGE)[0] == 403  # no token: no request principal
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token()))[0] == 200
    assert call(RATINGS, headers=bearer(ISSUER.token("bob")))[0] == 200
    assert call(PRODUCTPAGE, headers=bearer(OTHER.token(iss=ISSUER.name)))[0] == 401
    apply(
        "deny",
        authorization_policy(
            "not-bob",
            "DENY",
            f"- from: [{{source: {{requestPrincipals: ['{ISSUER.name}/bob']}}}}]",
        ),
    )
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token("bob")))[0] == 403
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token("alice")))[0] == 200
    apply("deny", None)
    apply(
        "ap",
        authorization_policy(
            "only-alice",
            "ALLOW",
            f"- from: [{{source: {{requestPrincipals: ['*'], "
            f"notRequestPrincipals: ['{ISSUER.name}/bob']}}}}]",
        ),
    )
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token("bob")))[0] == 403
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token("carol")))[0] == 200
    assert call(PRODUCTPAGE)[0] == 403


def test_claims_audiences_presenter_and_principal_conditions(apply: Any) -> None:
    apply("ra", request_authentication("jwt", INLINE))
    apply(
        "ap",
        authorization_policy(
            "claims",
            "ALLOW",
            f"""\
            - when:
              - {{key: 'request.auth.claims[groups]', values: [admins]}}
              - {{key: 'request.auth.claims[org][team]', values: ['sre*']}}
              - {{key: request.auth.audiences, values: [reviews.example]}}
              - {{key: request.auth.presenter, values: [web-app]}}
              - key: request.auth.principal
                values: ['{ISSUER.name}/*']
                notValues: ['*/mallory']
              - {{key: 'request.auth.claims[scope]', values: [write]}}
            """,
        ),
    )
    good = {
        "groups": ["users", "admins"],
        "org": {"team": "sre-east"},
        "aud": "reviews.example",
        "azp": "web-app",
        "scope": "read write",  # space-delimited: matched as a list (Istio)
    }
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token(**good)))[0] == 200
    for change in (
        {"groups": ["users"]},
        {"groups": "admin"},
        {"org": {"team": "dev"}},
        {"aud": ["other", "elsewhere"]},
        {"azp": "cli"},
        {"scope": "read"},
    ):
        assert call(PRODUCTPAGE, headers=bearer(ISSUER.token(**{**good, **change})))[0] == 403, (
            change
        )
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token("mallory", **good)))[0] == 403
    assert (
        call(
            PRODUCTPAGE, headers=bearer(ISSUER.token(**{**good, "aud": ["x", "reviews.example"]}))
        )[0]
        == 200
    )
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token(**{**good, "groups": "admins"})))[0] == 200
    assert call(PRODUCTPAGE)[0] == 403


def test_token_locations_and_what_the_app_is_given(apply: Any) -> None:
    apply(
        "ra",
        request_authentication(
            "jwt",
            f"""\
            - issuer: {ISSUER.name}
              jwks: '{ISSUER.jwks()}'
              audiences: [reviews.example]
              fromHeaders: [{{name: x-jwt-assertion, prefix: "Token "}}]
              fromParams: [my_token]
              outputPayloadToHeader: x-jwt-payload
              outputClaimToHeaders: [{{header: x-jwt-group, claim: group}}]
              forwardOriginalToken: true
            """,
        ),
    )
    token = ISSUER.token(aud="reviews.example", group="blue")
    forged = OTHER.token(iss=ISSUER.name, aud="reviews.example")
    assert call(PRODUCTPAGE, headers={"x-jwt-assertion": "Token " + forged})[0] == 401
    status, echo, _ = call(PRODUCTPAGE, headers={"x-jwt-assertion": "Token " + token})
    assert status == 200
    headers = echo["headers"]
    assert headers["x-jwt-assertion"] == "Token " + token  # forwardOriginalToken: true
    payload = json.loads(base64.urlsafe_b64decode(headers["x-jwt-payload"] + "=="))
    assert (payload["sub"], payload["group"]) == ("alice", "blue")
    assert headers["x-jwt-group"] == "blue"
    assert call(PRODUCTPAGE, path=f"/?my_token={token}")[0] == 200
    # Only the locations named are read: the Authorization header is not one of them.
    assert call(PRODUCTPAGE, headers=bearer(OTHER.token(iss=ISSUER.name)))[0] == 200
    # The audience is checked: a token for another audience is refused (Envoy: 403).
    wrong = ISSUER.token(aud="other.example")
    assert call(PRODUCTPAGE, headers={"x-jwt-assertion": "Token " + wrong})[0] == 403


def test_jwks_uri_from_a_server_is_refreshed_and_fails_closed(
    apply: Any, mesh: dict[str, Any]
) -> None:
    server: JwksServer = mesh["server"]
    server.jwks = ""  # the issuer's key set is not there yet: 404
    issuer = Issuer(server.url)
    apply(
        "ra",
        request_authentication(
            "jwt", f"- issuer: {issuer.name}\n  jwksUri: {server.url}/jwks.json\n"
        ),
    )
    plane: ControlPlaneThread = mesh["plane"]
    wait_until(
        lambda: any("cannot fetch the key set" in w for w in plane.plane.config_status.warnings),
        timeout=10,
        what="a warning that the key set cannot be fetched",
    )
    # Fail closed: its tokens are refused; a request without one is not affected.
    becomes(401, headers=bearer(issuer.token()))
    assert call(PRODUCTPAGE)[0] == 200
    server.jwks = issuer.jwks()  # the issuer is back: the next retry takes its keys
    becomes(200, headers=bearer(issuer.token()))
    rotated = Issuer(server.url)
    server.jwks = rotated.jwks()  # a rotated key set is picked up on refresh
    becomes(200, headers=bearer(rotated.token()))
    becomes(401, headers=bearer(issuer.token()))  # the old keys are gone


def test_jwks_from_a_file_and_by_openid_discovery(apply: Any, mesh: dict[str, Any]) -> None:
    keys = mesh["root"] / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "jwks.json").write_text(OTHER.jwks())
    server: JwksServer = mesh["server"]
    discovered = Issuer(server.url)
    server.jwks = discovered.jwks()
    apply(
        "ra",
        request_authentication(
            "jwt",
            f"""\
            - issuer: {OTHER.name}
              jwksUri: file://{keys / "jwks.json"}
            - issuer: {discovered.name}
            """,
        ),
    )
    assert call(PRODUCTPAGE, headers=bearer(OTHER.token()))[0] == 200
    assert call(PRODUCTPAGE, headers=bearer(discovered.token()))[0] == 200
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token()))[0] == 401


def test_a_bad_key_set_is_refused_and_the_last_good_config_kept(
    apply: Any, mesh: dict[str, Any]
) -> None:
    apply("ra", request_authentication("jwt", INLINE))
    apply(
        "ap",
        authorization_policy(
            "require-jwt", "ALLOW", "- from: [{source: {requestPrincipals: ['*']}}]"
        ),
    )
    assert call(PRODUCTPAGE)[0] == 403
    plane: ControlPlaneThread = mesh["plane"]
    generation = plane.plane.config_status.generation
    bad = '- issuer: x\n  jwks: \'{"keys": [{"kty": "RSA"}]}\'\n'
    apply("ra", request_authentication("jwt", bad), accepted=False)
    (error,) = plane.plane.config_status.errors
    assert error.endswith(
        "ra.yaml:8: RequestAuthentication default/jwt: spec.jwtRules[0].jwks: keys[0] is not a "
        "valid RSA key (InvalidKeyError)"
    ), error
    assert plane.plane.config_status.generation == generation  # nothing pushed
    assert call(PRODUCTPAGE)[0] == 403  # the last good policies still hold
    assert call(PRODUCTPAGE, headers=bearer(ISSUER.token()))[0] == 200
