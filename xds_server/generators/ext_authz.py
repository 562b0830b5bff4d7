"""AuthorizationPolicy `action: CUSTOM` -> an RBAC filter in shadow mode and Envoy's
ext_authz filter, per extension provider, as Istio's builder makes them.

The RBAC filter only evaluates the CUSTOM policies' rules (`shadow_rules`, action
DENY, named `istio-ext-authz-<provider>-ns[..]-policy[..]-rule[N]`); when one
matches, Envoy records its name in the filter's dynamic metadata
(`istio_ext_authz_shadow_effective_policy_id`), and the ext_authz filter right after
it asks the provider only when that name is there (`filter_enabled_metadata`). So
the provider is asked exactly for the requests the rules select, and its answer
decides: a denial is sent to the client as the provider wrote it.

The provider's service is called through the proxy's outbound cluster for it
(`outbound|<port>||<host>`), with the mesh's mTLS when the service has sidecars, as
Istio does. On TCP ports only gRPC providers can decide (Envoy's network ext_authz);
an HTTP provider there is left out, as in Istio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as network_ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import duration_pb2

from xds_server.galley.model_mesh import ExtAuthzProvider
from xds_server.galley.model_security import AuthorizationPolicy
from xds_server.generators.authz import HTTP_RBAC, NETWORK_RBAC, PolicyKey, rbac
from xds_server.generators.typed_config import pack

HTTP_EXT_AUTHZ: Final = "envoy.filters.http.ext_authz"
NETWORK_EXT_AUTHZ: Final = "envoy.filters.network.ext_authz"
MATCH_PREFIX: Final = "istio-ext-authz"
SHADOW_PREFIX: Final = "istio_ext_authz_"
EFFECTIVE_POLICY: Final = SHADOW_PREFIX + "shadow_effective_policy_id"


@dataclass(frozen=True, slots=True)
class ExtAuthzTarget:
    """A provider as one proxy reaches it: the outbound cluster of its service port."""

    provider: ExtAuthzProvider
    cluster: str


def http_filters(
    policies: PolicyKey, targets: Sequence[ExtAuthzTarget]
) -> list[hcm_pb2.HttpFilter]:
    out = []
    for target, custom in _by_provider(policies, targets):
        name = target.provider.name
        rules = rbac(custom, rbac_pb2.RBAC.DENY, http=True, name_prefix=_prefix(name))
        shadow = http_rbac_pb2.RBAC(shadow_rules=rules, shadow_rules_stat_prefix=SHADOW_PREFIX)
        out.append(hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(shadow)))
        out.append(hcm_pb2.HttpFilter(name=HTTP_EXT_AUTHZ, typed_config=pack(_http(target))))
    return out


def network_filters(
    policies: PolicyKey, targets: Sequence[ExtAuthzTarget], port: int
) -> list[listener_components_pb2.Filter]:
    out = []
    for target, custom in _by_provider(policies, targets):
        provider = target.provider
        if not provider.grpc:  # Istio: an HTTP provider cannot decide for a TCP connection
            continue
        rules = rbac(custom, rbac_pb2.RBAC.DENY, http=False, name_prefix=_prefix(provider.name))
        shadow = network_rbac_pb2.RBAC(
            stat_prefix=f"tcp.inbound_{port}",
            shadow_rules=rules,
            shadow_rules_stat_prefix=SHADOW_PREFIX,
        )
        check = network_ext_authz_pb2.ExtAuthz(
            stat_prefix="tcp.",
            grpc_service=_grpc_service(target),
            failure_mode_allow=provider.fail_open,
            transport_api_version=config_source_pb2.V3,
            filter_enabled_metadata=_enabled(NETWORK_RBAC, provider.name),
        )
        out.append(listener_components_pb2.Filter(name=NETWORK_RBAC, typed_config=pack(shadow)))
        out.append(listener_components_pb2.Filter(name=NETWORK_EXT_AUTHZ, typed_config=pack(check)))
    return out


def _by_provider(
    policies: PolicyKey, targets: Sequence[ExtAuthzTarget]
) -> list[tuple[ExtAuthzTarget, list[AuthorizationPolicy]]]:
    out = []
    for target in sorted(targets, key=lambda t: t.provider.name):
        custom = [
            p for p in policies if p.action == "CUSTOM" and p.provider == target.provider.name
        ]
        if custom:
            out.append((target, custom))
    return out


def _prefix(provider: str) -> str:
    return f"{MATCH_PREFIX}-{provider}-"


def _enabled(rbac_filter: str, provider: str) -> metadata_pb2.MetadataMatcher:
    """The provider is asked only when its RBAC rules matched (the policy name it set).
    `...-ns[` ends the prefix, so provider `a` never fires for provider `a-b`'s rules."""
    return metadata_pb2.MetadataMatcher(
        filter=rbac_filter,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=EFFECTIVE_POLICY)],
        value=value_pb2.ValueMatcher(
            string_match=string_pb2.StringMatcher(prefix=f"{_prefix(provider)}ns[")
        ),
    )


def _timeout(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)


def _grpc_service(target: ExtAuthzTarget) -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
            cluster_name=target.cluster, authority=target.provider.service
        ),
        timeout=_timeout(target.provider.timeout_ms),
    )


def _patterns(values: Sequence[str]) -> string_pb2.ListStringMatcher:
    """Istio's generateHeaders: exact, `prefix*` or `*suffix`, case-insensitive."""
    matchers = []
    for value in values:
        if value.startswith("*"):
            matchers.append(string_pb2.StringMatcher(suffix=value[1:], ignore_case=True))
        elif value.endswith("*"):
            matchers.append(string_pb2.StringMatcher(prefix=value[:-1], ignore_case=True))
        else:
            matchers.append(string_pb2.StringMatcher(exact=value, ignore_case=True))
    return string_pb2.ListStringMatcher(patterns=matchers)


def _http(target: ExtAuthzTarget) -> ext_authz_pb2.ExtAuthz:
    provider = target.provider
    config = ext_authz_pb2.ExtAuthz(
        failure_mode_allow=provider.fail_open,
        transport_api_version=config_source_pb2.V3,
        clear_route_cache=provider.clear_route_cache,
        filter_enabled_metadata=_enabled(HTTP_RBAC, provider.name),
    )
    if provider.status_on_error:
        config.status_on_error.CopyFrom(http_status_pb2.HttpStatus(code=provider.status_on_error))
    if provider.request_body is not None:
        body = provider.request_body
        config.with_request_body.CopyFrom(
            ext_authz_pb2.BufferSettings(
                max_request_bytes=body.max_request_bytes,
                allow_partial_message=body.allow_partial_message,
                pack_as_bytes=body.pack_as_bytes,
            )
        )
    if provider.grpc:
        config.grpc_service.CopyFrom(_grpc_service(target))
        return config
    service = ext_authz_pb2.HttpService(
        path_prefix=provider.path_prefix,
        server_uri=http_uri_pb2.HttpUri(
            uri=f"http://{provider.service}",
            cluster=target.cluster,
            timeout=_timeout(provider.timeout_ms),
        ),
    )
    if provider.include_additional_headers:
        service.authorization_request.CopyFrom(
            ext_authz_pb2.AuthorizationRequest(
                headers_to_add=[
                    base_pb2.HeaderValue(key=k, value=v)
                    for k, v in provider.include_additional_headers
                ]
            )
        )
    if (
        provider.headers_to_upstream_on_allow
        or provider.headers_to_downstream_on_deny
        or provider.headers_to_downstream_on_allow
    ):
        response = ext_authz_pb2.AuthorizationResponse()
        if provider.headers_to_upstream_on_allow:
            response.allowed_upstream_headers.CopyFrom(
                _patterns(provider.headers_to_upstream_on_allow)
            )
        if provider.headers_to_downstream_on_deny:
            response.allowed_client_headers.CopyFrom(
                _patterns(provider.headers_to_downstream_on_deny)
            )
        if provider.headers_to_downstream_on_allow:
            response.allowed_client_headers_on_success.CopyFrom(
                _patterns(provider.headers_to_downstream_on_allow)
            )
        service.authorization_response.CopyFrom(response)
    config.http_service.CopyFrom(service)
    if provider.include_request_headers:
        config.allowed_headers.CopyFrom(_patterns(provider.include_request_headers))
    return config
