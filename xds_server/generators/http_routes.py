"""VirtualService HTTP routes -> Envoy routes (Istio's `route.BuildHTTPRoutes`).

One Envoy route per match block (blocks are OR; the fields of one block are
AND), in the VirtualService's order, so the first match wins. No catch-all is
added after them: a request no rule matches gets Envoy's 404, as in Istio.
Faults and CORS go in per-route filter config, read by the fault and CORS filters
that every HTTP connection manager pocketmesh builds carries (`HTTP_FILTERS`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from xds_server.galley.model import MeshConfig, labels_match
from xds_server.galley.model_security import routing_claims
from xds_server.galley.model_traffic import (
    MESH_GATEWAY,
    CorsPolicy,
    Destination,
    Fault,
    HeaderOps,
    HTTPMatch,
    HTTPRoute,
    KeyMatch,
    Redirect,
    Retries,
    StringMatch,
    VirtualService,
    gateway_key,
)
from xds_server.generators import naming
from xds_server.generators.authz import JWT_AUTHN, JWT_PAYLOAD
from xds_server.generators.traffic_index import TrafficIndex, service_port
from xds_server.generators.traffic_policy import duration, hash_policies
from xds_server.generators.typed_config import pack

PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
NO_TIMEOUT = duration_pb2.Duration(seconds=0)
# Istio's retryOn when `retries` gives attempts but no retryOn.
ISTIO_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
_SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def traffic_http_filters() -> list[hcm_pb2.HttpFilter]:
    """The filters VirtualService features need, before the router (empty: inactive)."""
    return [
        hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
        hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors())),
    ]


def virtual_service_routes(
    traffic: TrafficIndex,
    vs: VirtualService,
    *,
    port: int,
    labels: Mapping[str, str],
    namespace: str,
    gateway: str = MESH_GATEWAY,
    tls: bool = False,
) -> list[rc.Route]:
    """The Envoy routes of `vs` for a listener on `port` of a proxy with `labels` in
    `namespace` (what `sourceLabels` and `sourceNamespace` match); `tls`: the listener
    ends TLS (a redirect's scheme defaults to https, Istio's IsTLS)."""
    routes: list[rc.Route] = []
    for i, _, match, name in named_matches(vs):
        if unmet_match_field(match, vs, port, labels, namespace, gateway) is None:
            routes.append(_route(traffic, vs.http[i], match, name, port, tls))
    for route in routes:  # which VirtualService made it, as Istio records it (`explain`)
        route.metadata.filter_metadata["istio"].update({"config": naming.config_path(vs.meta)})
    return routes


def named_matches(vs: VirtualService) -> Iterator[tuple[int, int, HTTPMatch, str]]:
    """Every match block of `vs` in order (a rule without one has one that matches all):
    (http index, match index, match, the name of the Envoy route it makes: `http[].name`,
    else `<ns>/<vs>.<index>`, plus the block's name, or its index when there are several).
    `explain` maps routes back to rules by these names."""
    for i, http in enumerate(vs.http):
        matches = http.match or (HTTPMatch(),)
        for j, match in enumerate(matches):
            name = http.name or f"{vs.meta.key}.{i}"
            if match.name:
                name = f"{name}.{match.name}"
            elif len(matches) > 1:
                name = f"{name}.{j}"
            yield i, j, match, name


def unmet_match_field(
    match: HTTPMatch,
    vs: VirtualService,
    port: int,
    labels: Mapping[str, str],
    namespace: str,
    gateway: str,
) -> str | None:
    """The field of `match` that keeps it off a listener on `port` of a proxy with
    `labels` in `namespace` serving `gateway` (`port`, `sourceNamespace`, `gateways`,
    `sourceLabels`), or None: the block is built there."""
    if match.port is not None and match.port != port:
        return "port"
    if match.source_namespace and match.source_namespace != namespace:
        return "sourceNamespace"
    if match.gateways and gateway not in {
        gateway_key(g, vs.meta.namespace) for g in match.gateways
    }:
        return "gateways"
    if match.source_labels is not None and not labels_match(match.source_labels, labels):
        return "sourceLabels"
    return None


# --- match ---------------------------------------------------------------------------


def _route_match(match: HTTPMatch) -> rc.RouteMatch:
    result = rc.RouteMatch()
    uri = match.uri
    if uri is None or (uri.kind == "prefix" and uri.value == "/"):
        result.prefix = "/"
    elif uri.kind == "exact":
        result.path = uri.value
    elif uri.kind == "prefix":
        result.prefix = uri.value
    else:
        regex = f"(?i){uri.value}" if match.ignore_uri_case else uri.value
        result.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=regex))
    if match.ignore_uri_case and uri is not None and uri.kind != "regex":
        result.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=False))
    for key in match.headers:
        if (claims := routing_claims(key.name)) is not None and key.match is not None:
            result.dynamic_metadata.append(_claim(claims, key.match))
        else:
            result.headers.append(_header(key))
    if match.method is not None:
        result.headers.append(_header(KeyMatch(":method", match.method)))
    if match.authority is not None:
        result.headers.append(_header(KeyMatch(":authority", match.authority)))
    if match.scheme is not None:
        result.headers.append(_header(KeyMatch(":scheme", match.scheme)))
    for key in match.without_headers:
        if (claims := routing_claims(key.name)) is not None and key.match is not None:
            claim = _claim(claims, key.match)
            claim.invert = True
            result.dynamic_metadata.append(claim)
            continue
        header = _header(key)
        header.invert_match = True
        result.headers.append(header)
    for key in match.query_params:
        param = rc.QueryParameterMatcher(name=key.name)
        if key.match is None:
            param.present_match = True
        else:
            param.string_match.CopyFrom(string_matcher(key.match))
        result.query_parameters.append(param)
    return result


def _claim(claims: tuple[str, ...], match: StringMatch) -> metadata_pb2.MetadataMatcher:
    """`@request.auth.claims...`: the claim jwt_authn verified, a string or a list holding
    one that matches (Istio's MetadataMatcherForJWTClaims); only gateways verify JWTs
    before routing, so on a sidecar such a match never holds (as in Istio)."""
    one = value_pb2.ValueMatcher(string_match=string_matcher(match))
    either = value_pb2.ValueMatcher(
        or_match=value_pb2.OrMatcher(
            value_matchers=[
                value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one)),
                one,
            ]
        )
    )
    return metadata_pb2.MetadataMatcher(
        filter=JWT_AUTHN,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (JWT_PAYLOAD, *claims)],
        value=either,
    )


def _header(key: KeyMatch) -> rc.HeaderMatcher:
    if key.match is None:
        return rc.HeaderMatcher(name=key.name, present_match=True)
    return rc.HeaderMatcher(name=key.name, string_match=string_matcher(key.match))


def string_matcher(match: StringMatch, *, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if match.kind == "exact":
        return string_pb2.StringMatcher(exact=match.value, ignore_case=ignore_case)
    if match.kind == "prefix":
        return string_pb2.StringMatcher(prefix=match.value, ignore_case=ignore_case)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))


# --- action --------------------------------------------------------------------------


def _route(
    traffic: TrafficIndex, http: HTTPRoute, match: HTTPMatch, name: str, port: int, tls: bool
) -> rc.Route:
    route = rc.Route(name=name, match=_route_match(match), stat_prefix=match.stat_prefix)
    if http.redirect is not None:
        redirect = rc.RedirectAction(response_code=_REDIRECT_CODES[http.redirect.code])
        if http.redirect.uri:
            redirect.path_redirect = http.redirect.uri
        if http.redirect.authority:
            redirect.host_redirect = http.redirect.authority
        if http.redirect.scheme:
            redirect.scheme_redirect = http.redirect.scheme
        if http.redirect.prefix_rewrite:
            redirect.prefix_rewrite = http.redirect.prefix_rewrite
        _redirect_port(redirect, http.redirect, port, tls)
        route.redirect.CopyFrom(redirect)
    elif http.direct_response is not None:
        route.direct_response.CopyFrom(
            rc.DirectResponseAction(
                status=http.direct_response.status,
                body=base_pb2.DataSource(inline_string=http.direct_response.body)
                if http.direct_response.body
                else None,
            )
        )
    else:
        route.route.CopyFrom(_action(traffic, http, port))
        if not route.route.HasField("weighted_clusters"):  # one destination: on the route
            [picked] = [d for d in http.route if d.weight > 0]
            _header_ops(route, picked.request_headers, request=True)
            _header_ops(route, picked.response_headers, request=False)
    _header_ops(route, http.request_headers, request=True)
    _header_ops(route, http.response_headers, request=False)
    if http.fault is not None:
        route.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(_fault(http.fault)))
    if http.cors is not None:
        route.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(_cors(http.cors)))
    return route


def _redirect_port(redirect: rc.RedirectAction, given: Redirect, port: int, tls: bool) -> None:
    """Istio's ApplyRedirect: `port`, or derivePort FROM_REQUEST_PORT (the listener's
    port; FROM_PROTOCOL_DEFAULT is Envoy's default), never spelled out when it is the
    scheme's default (80 for http, 443 for https)."""
    if given.port is None and not given.derive_port:
        return
    number = given.port or (port if given.derive_port == "FROM_REQUEST_PORT" else 0)
    scheme = given.scheme or ("https" if tls else "http")
    if (number, scheme) in ((80, "http"), (443, "https")):
        number = 0
    if number:
        redirect.port_redirect = number


def destination_port(traffic: TrafficIndex, dest: Destination, listener_port: int) -> int:
    service = traffic.service(dest.host)
    if service is None:  # validation rejects this; keep the generator total anyway
        return dest.port or listener_port
    return service_port(service, dest.port, listener_port)


def cluster_for(traffic: TrafficIndex, dest: Destination, listener_port: int) -> str:
    """`outbound|<port>|<subset>|<host>` for a destination (see `service_port`)."""
    port = destination_port(traffic, dest, listener_port)
    return naming.outbound_cluster(port, dest.host, dest.subset)


def _action(traffic: TrafficIndex, http: HTTPRoute, port: int) -> rc.RouteAction:
    action = rc.RouteAction(timeout=NO_TIMEOUT)
    weighted = [d for d in http.route if d.weight > 0]
    if len(weighted) == 1:
        action.cluster = cluster_for(traffic, weighted[0].destination, port)
    else:
        clusters = []
        for d in weighted:
            cluster = rc.WeightedCluster.ClusterWeight(
                name=cluster_for(traffic, d.destination, port),
                weight=wrappers_pb2.UInt32Value(value=d.weight),
            )
            _header_ops(cluster, d.request_headers, request=True)
            _header_ops(cluster, d.response_headers, request=False)
            clusters.append(cluster)
        action.weighted_clusters.CopyFrom(rc.WeightedCluster(clusters=clusters))
    # consistentHash of the (first) destination's DestinationRule: what to hash on.
    first = weighted[0].destination
    policy = traffic.policy(first.host, destination_port(traffic, first, port), first.subset)
    action.hash_policy.extend(hash_policies(policy))
    if http.timeout_ms is not None:
        action.timeout.CopyFrom(duration(http.timeout_ms))
    retries = http.retries if http.retries is not None else mesh_default_retries(traffic.mesh)
    if retries is not None and retries.attempts > 0:
        action.retry_policy.CopyFrom(retry_policy(retries, hashing=bool(action.hash_policy)))
    mirrors = list(http.mirrors)
    if http.mirror is not None:
        mirrors.insert(0, (http.mirror, http.mirror_percent))
    for mirror, percent in mirrors:
        if percent > 0:
            action.request_mirror_policies.append(
                rc.RouteAction.RequestMirrorPolicy(
                    cluster=cluster_for(traffic, mirror, port),
                    runtime_fraction=base_pb2.RuntimeFractionalPercent(
                        default_value=_fraction(percent)
                    ),
                )
            )
    if http.rewrite is not None:
        if http.rewrite.uri:
            action.prefix_rewrite = http.rewrite.uri
        if http.rewrite.regex:
            action.regex_rewrite.CopyFrom(
                regex_pb2.RegexMatchAndSubstitute(
                    pattern=regex_pb2.RegexMatcher(regex=http.rewrite.regex),
                    substitution=http.rewrite.substitution,
                )
            )
        if http.rewrite.authority:
            action.host_rewrite_literal = http.rewrite.authority
    return action


def mesh_default_retries(mesh: MeshConfig) -> Retries | None:
    """The mesh settings' defaultHttpRetryPolicy (None: no retries, pocketmesh's default)."""
    return mesh.settings.default_http_retry if mesh.settings else None


def retry_policy(retries: Retries, *, hashing: bool) -> rc.RetryPolicy:
    """Istio's retry.ConvertPolicy: `hashing`, the route hashes to one host."""
    retry = rc.RetryPolicy(
        retry_on=retries.retry_on or ISTIO_RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=retries.attempts),
    )
    if retries.per_try_timeout_ms is not None:
        retry.per_try_timeout.CopyFrom(duration(retries.per_try_timeout_ms))
    if not retries.retry_on:
        retry.retriable_status_codes.append(503)  # Istio's default retries 503s
    # Istio: a retry picks a host not tried yet (5 picks), unless the route hashes to
    # one host (consistentHash); retryIgnorePreviousHosts says so explicitly.
    ignore_previous = retries.ignore_previous_hosts
    if ignore_previous is None:
        ignore_previous = not hashing
    if ignore_previous:
        retry.retry_host_predicate.append(
            rc.RetryPolicy.RetryHostPredicate(
                name=PREVIOUS_HOSTS,
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        )
    retry.host_selection_retry_max_attempts = 5
    if retries.backoff_ms is not None:
        retry.retry_back_off.base_interval.CopyFrom(duration(retries.backoff_ms))
    if retries.retry_remote_localities:  # Istio: retry in other localities
        retry.retry_priority.CopyFrom(
            rc.RetryPolicy.RetryPriority(
                name=PREVIOUS_PRIORITIES,
                typed_config=pack(
                    previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2)
                ),
            )
        )
    return retry


def _fraction(percent: float) -> percent_pb2.FractionalPercent:
    # Istio's percentages are doubles: a million parts keeps four decimals.
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def _fault(fault: Fault) -> fault_pb2.HTTPFault:
    result = fault_pb2.HTTPFault()
    if fault.delay_ms is not None:
        result.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(fault.delay_ms), percentage=_fraction(fault.delay_percent)
            )
        )
    if fault.abort_status is not None:
        abort = fault_pb2.FaultAbort(percentage=_fraction(fault.abort_percent))
        if fault.abort_grpc:
            abort.grpc_status = fault.abort_status
        else:
            abort.http_status = fault.abort_status
        result.abort.CopyFrom(abort)
    return result


def _cors(cors: CorsPolicy) -> cors_pb2.CorsPolicy:
    result = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(m) for m in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.max_age_ms is not None:
        result.max_age = str(cors.max_age_ms // 1000)
    if cors.allow_credentials is not None:
        result.allow_credentials.CopyFrom(wrappers_pb2.BoolValue(value=cors.allow_credentials))
    # Istio spells out Envoy's default (forward preflights no origin matches) unless IGNORE.
    result.forward_not_matching_preflights.CopyFrom(
        wrappers_pb2.BoolValue(value=cors.forward_unmatched_preflights)
    )
    return result


def _header_ops(
    route: rc.Route | rc.WeightedCluster.ClusterWeight, ops: HeaderOps, *, request: bool
) -> None:
    add = route.request_headers_to_add if request else route.response_headers_to_add
    remove = route.request_headers_to_remove if request else route.response_headers_to_remove
    for action, pairs in ((_SET, ops.set), (_ADD, ops.add)):
        for key, value in pairs:
            add.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=key, value=value), append_action=action
                )
            )
    remove.extend(ops.remove)
