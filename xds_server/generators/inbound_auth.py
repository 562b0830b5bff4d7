"""The filters a workload's security plan puts in front of its app, in Istio's order.

HTTP (pilot/pkg/networking/core/listener_builder.go): CUSTOM (an RBAC filter in
shadow mode and ext_authz, per provider), then jwt_authn (RequestAuthentication),
then the RBAC filters of AUDIT, DENY and ALLOW. TCP: CUSTOM (gRPC providers), then
the RBAC filters. Each part is built by its own module: `ext_authz`, `authn`, `authz`.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xds_server.generators import authn, authz, ext_authz
from xds_server.generators.tls_plan import InboundSecurity


def http_filters(
    security: InboundSecurity, port: int, *, gateway: bool = False
) -> list[hcm_pb2.HttpFilter]:
    return [
        *ext_authz.http_filters(security.policies, security.ext_authz),
        *authn.jwt_filters(security.authn, gateway=gateway),
        *authz.http_filters(security.policies, port),
    ]


def network_filters(security: InboundSecurity, port: int) -> list[listener_components_pb2.Filter]:
    return [
        *ext_authz.network_filters(security.policies, security.ext_authz, port),
        *authz.network_filters(security.policies, port),
    ]
