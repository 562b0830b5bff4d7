"""RequestAuthentication -> Envoy's jwt_authn filter on a workload's inbound HTTP chains.

As Istio builds it (pilot/pkg/security/authn/policy_applier.go): one provider per JWT
rule of every RequestAuthentication applying to the workload (`origins-N`, rules
sorted by issuer), each with its key set inline; the requirement lets a request
without a token through and refuses one whose token fails verification (401):
  - one provider: requires_any {origins-0, allow_missing};
  - several: requires_any {origins-0, ..., requires_all {requires_any {origins-i,
    allow_missing}...}}, so a token from any issuer passes wherever it was found.
The verified payload goes to the dynamic metadata `envoy.filters.http.jwt_authn`
under `payload`, where the RBAC filters match `request.auth.*` and request principals.
"""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import empty_pb2

from xds_server.galley.jwks import NO_KEYS_JWKS
from xds_server.galley.model import MeshConfig, WorkloadEntry
from xds_server.galley.model_security import JwtRule, RequestAuthentication, workload_policies
from xds_server.generators.authz import JWT_AUTHN, JWT_PAYLOAD, IdentityKey
from xds_server.generators.typed_config import pack

# The RequestAuthentications that apply to one workload, as a hashable memo key.
AuthnKey = tuple[RequestAuthentication, ...]
NO_AUTHN: AuthnKey = IdentityKey(())  # type: ignore[assignment]  # a tuple, by identity

# Istio always treats these claims as space-delimited lists (buildSpaceDelimitedClaims).
SPACE_DELIMITED: Final = ("permission", "scope")


def authn_key(mesh: MeshConfig, workload: WorkloadEntry) -> AuthnKey:
    """The RequestAuthentications that apply to `workload`, in a stable order."""
    found = workload_policies(mesh.request_authentications, workload, mesh.root_namespace)
    found.sort(key=lambda p: (p.meta.namespace, p.meta.name))
    return IdentityKey(found)  # type: ignore[return-value]  # a tuple, hashed by identity


def jwt_filters(policies: AuthnKey, *, gateway: bool = False) -> list[hcm_pb2.HttpFilter]:
    """The jwt_authn filter, or none when no JWT rule applies. On a gateway a verified
    token clears the route cache, so that routes can match its claims (Istio)."""
    rules = sorted((r for p in policies for r in p.jwt_rules), key=lambda r: r.issuer)
    if not rules:
        return []
    config = jwt_pb2.JwtAuthentication(bypass_cors_preflight=True)
    inner: list[jwt_pb2.JwtRequirement] = []
    outer: list[jwt_pb2.JwtRequirement] = []
    for i, rule in enumerate(rules):
        name = f"origins-{i}"
        config.providers[name].CopyFrom(_provider(rule))
        config.providers[name].clear_route_cache = gateway
        one = jwt_pb2.JwtRequirement(provider_name=name)
        inner.append(
            jwt_pb2.JwtRequirement(
                requires_any=jwt_pb2.JwtRequirementOrList(
                    requirements=[one, jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty())]
                )
            )
        )
        outer.append(one)
    if len(inner) == 1:
        requires = inner[0]
    else:
        outer.append(
            jwt_pb2.JwtRequirement(requires_all=jwt_pb2.JwtRequirementAndList(requirements=inner))
        )
        requires = jwt_pb2.JwtRequirement(
            requires_any=jwt_pb2.JwtRequirementOrList(requirements=outer)
        )
    config.rules.append(
        jwt_pb2.RequirementRule(
            match=route_components_pb2.RouteMatch(prefix="/"), requires=requires
        )
    )
    return [hcm_pb2.HttpFilter(name=JWT_AUTHN, typed_config=pack(config))]


def _provider(rule: JwtRule) -> jwt_pb2.JwtProvider:
    claims = sorted({*rule.space_delimited_claims, *SPACE_DELIMITED})
    provider = jwt_pb2.JwtProvider(
        issuer=rule.issuer,
        audiences=list(rule.audiences),
        forward=rule.forward_original_token,
        forward_payload_header=rule.output_payload_to_header,
        payload_in_metadata=JWT_PAYLOAD,
        normalize_payload_in_metadata=jwt_pb2.JwtProvider.NormalizePayload(
            space_delimited_claims=claims
        ),
        from_headers=[
            jwt_pb2.JwtHeader(name=h.name, value_prefix=h.prefix) for h in rule.from_headers
        ],
        from_params=list(rule.from_params),
        from_cookies=list(rule.from_cookies),
        claim_to_headers=[
            jwt_pb2.JwtClaimToHeader(header_name=c.header, claim_name=c.claim)
            for c in rule.output_claim_to_headers
        ],
        # No key set could be had: a key nobody holds, so every token fails (Istio).
        local_jwks=base_pb2.DataSource(inline_string=rule.jwks or NO_KEYS_JWKS),
    )
    return provider
