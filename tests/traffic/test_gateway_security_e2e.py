"""RequestAuthentication and AuthorizationPolicy on an ingress gateway, as Istio's
"authentication policy at ingress" task has them: the policies sit in the root
namespace and select the gateway's workload; the gateway checks them before it routes.
"""

from __future__ import annotations

from tests.e2e.harness import wait_until
from tests.identity.jwt_issuer import Issuer
from tests.traffic.apps import direct
from tests.traffic.mesh import NET, Mesh

ISSUER = Issuer("testing@secure.istio.io")
FORGER = Issuer("testing@secure.istio.io")  # the same issuer name, other keys
POLICIES = f"""\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt-example, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER.name}
    jwks: '{ISSUER.jwks()}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: frontend-ingress, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: DENY
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
  - to: [{{operation: {{paths: [/status/418]}}}}]
"""
HOST = {"Host": "httpbin.example.com"}


def status(headers: dict[str, str] | None = None, path: str = "/status/200") -> int:
    return direct(f"{NET}.5:8080", path, headers={**HOST, **(headers or {})}).status


def test_the_gateway_checks_tokens_and_policies_before_routing(mesh: Mesh) -> None:
    mesh.use("ingress-gateway", extra={"gateway-jwt.yaml": POLICIES})
    mesh.envoy("istio-ingressgateway", "istio-system")
    wait_until(lambda: status() == 403, timeout=10, what="no token: denied at the gateway")
    token = {"Authorization": f"Bearer {ISSUER.token()}"}
    assert status(token) == 200
    assert status({"Authorization": f"Bearer {FORGER.token()}"}) == 401
    assert status(token, "/status/418") == 403  # DENY by path, token or not
    mesh.use("ingress-gateway")
    wait_until(lambda: status() == 200, timeout=10, what="the policies gone from the gateway")


CLAIM_ROUTES = f"""\
{POLICIES.split("---")[0]}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: claims-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8081, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: route-jwt}}
spec:
  hosts: ["*"]
  gateways: [claims-gateway]
  http:
  - name: blue
    match:
    - headers:
        "@request.auth.claims.group": {{exact: blue}}
    route: [{{destination: {{host: httpbin, subset: v2, port: {{number: 8000}}}}}}]
  - name: default
    route: [{{destination: {{host: httpbin, subset: v1, port: {{number: 8000}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin}}
spec:
  host: httpbin
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"""


def test_the_gateway_routes_on_a_verified_claim(mesh: Mesh) -> None:
    """Istio's "JWT claim based routing": `@request.auth.claims.*` header matches."""
    mesh.use(extra={"claims.yaml": CLAIM_ROUTES})
    mesh.envoy("istio-ingressgateway", "istio-system")

    def app(headers: dict[str, str] | None = None) -> str:
        reply = direct(f"{NET}.5:8081", "/headers", headers=headers or {})
        return f"{reply.status} {reply.app}"

    blue = {"Authorization": f"Bearer {ISSUER.token(group='blue')}"}
    wait_until(lambda: app(blue) == "200 httpbin-v2", timeout=10, what="the blue claim routed")
    assert app({"Authorization": f"Bearer {ISSUER.token(group='red')}"}) == "200 httpbin-v1"
    assert app() == "200 httpbin-v1"  # no token: no claim
    # A header of that name cannot stand in for the claim: it is not even a header name.
    assert app({"@request.auth.claims.group": "blue"}).startswith("400")
