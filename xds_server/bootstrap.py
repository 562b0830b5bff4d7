"""Envoy bootstrap for one workload's sidecar: everything else comes over ADS.

How the sidecar reaches xDS when the control plane goes away and comes back:

* Envoy keeps serving its last config while the xDS stream is down, and redials.
  Without a policy it redials with a jittered exponential backoff of 500 ms up to
  30 s (Envoy's `SubscriptionFactory` defaults): after an outage of 15 s the next
  attempt could be up to ~30 s away, and a full resync took 23 s. The bootstrap sets
  `retry_policy.retry_back_off` on the xDS gRPC service to `XDS_RETRY_BASE` up to
  `XDS_RETRY_MAX`, so a returning control plane is found within about a second;
  a redial is one TCP connect refused while it is down.
* The xDS cluster's source address is the workload's own when both are on loopback
  (how `pocketmesh up` runs), so the control plane can tell that a stream claiming a
  workload comes from that workload's address (see `identity.auth`).

What the admin interface shows: `/config_dump` includes this bootstrap. A token in
gRPC `initial_metadata` shows there in clear, so a bootstrap for xDS over TLS proves
its node id by a client certificate instead (`identity.credentials`), whose private
key Envoy redacts (`[redacted]`, inline or by `filename`). `admin_read_only` limits
the admin to the read-only endpoints (`READ_ONLY_ADMIN_PATHS`): anyone who reaches it
can look, nobody can stop the sidecar, drain it, or change its log level or runtime.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import yaml

from xds_server.galley.model import WorkloadEntry

ADMIN_PORT = 15000
XDS_CLUSTER = "xds-grpc"
XDS_RETRY_BASE = "0.1s"
XDS_RETRY_MAX = "1s"
# The admin endpoints that only read (Envoy 1.40), each with any query string. Left out:
# /quitquitquit, /drain_listeners, /healthcheck/fail|ok, /logging, /runtime_modify,
# /reset_counters, /reopen_logs, /cpuprofiler, /heapprofiler, /heap_dump, /tap and
# /stats/recentlookups/{enable,disable,clear}: they change or stop the sidecar, or
# write files. Envoy normalizes the path (`..`, `%xx`, `//`) before matching.
READ_ONLY_ADMIN_PATHS = (
    "/", "/help", "/ready", "/server_info", "/stats", "/stats/prometheus",
    "/stats/recentlookups", "/clusters", "/listeners", "/config_dump", "/certs", "/memory",
    "/runtime", "/init_dump", "/hot_restart_version",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BootstrapOptions:
    xds_address: str = "127.0.0.1:15010"
    delta: bool = False
    ads: bool = True  # False: the per-type services (CDS, LDS, then EDS, RDS) instead
    admin_port: int = ADMIN_PORT
    admin_address: str | None = None  # default: the workload's address
    admin_read_only: bool = False  # admin answers READ_ONLY_ADMIN_PATHS only
    # Identity (xds_server.identity): the proxy's token, sent as gRPC metadata on every
    # xDS stream (plaintext xDS); for an xDS port served over TLS the roots (PEM) and
    # the server's SPIFFE ID to verify it by, and the proxy's client certificate and
    # key. Each PEM inline, or by the path of a file Envoy reads (`*_file`). A client
    # certificate replaces the token: none is written beside it.
    token: str = ""
    xds_trusted_ca: str = ""
    xds_trusted_ca_file: str = ""
    xds_server_id: str = ""
    xds_client_cert: str = ""
    xds_client_cert_file: str = ""
    xds_client_key: str = ""
    xds_client_key_file: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.xds_trusted_ca or self.xds_trusted_ca_file)

    @property
    def client_certificate(self) -> bool:
        return bool(self.xds_client_cert or self.xds_client_cert_file) and bool(
            self.xds_client_key or self.xds_client_key_file
        )


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def sidecar_bootstrap(workload: WorkloadEntry, options: BootstrapOptions) -> dict[str, Any]:
    xds_host, xds_port = split_host_port(options.xds_address)
    admin_host = options.admin_address or workload.address
    app = workload.labels.get("app", workload.meta.name)
    metadata: dict[str, Any] = {
        "NAMESPACE": workload.meta.namespace,
        "WORKLOAD_NAME": workload.meta.name,
        "SERVICE_ACCOUNT": workload.service_account,
        "LABELS": dict(workload.labels),
    }
    if options.admin_port != ADMIN_PORT:
        # Where the control plane's web view reads this proxy's stats (at the WorkloadEntry's
        # address), as Istio's node metadata says it; 15000 when absent.
        metadata["PROXY_CONFIG"] = {"proxyAdminPort": options.admin_port}
    bootstrap = {
        "node": {
            "id": workload.proxy_id,
            # Istio's convention: the service cluster is app.namespace.
            "cluster": f"{app}.{workload.meta.namespace}",
            "metadata": metadata,
        },
        "admin": _admin(admin_host, options),
        "dynamic_resources": _dynamic_resources(options),
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC" if _is_ip(xds_host) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_host,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    **_bind_to_workload(xds_host, workload.address),
                    # gRPC needs HTTP/2; without it Envoy silently sends nothing.
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ]
        },
    }
    _secure_xds(bootstrap, options)
    return bootstrap


def _admin(host: str, options: BootstrapOptions) -> dict[str, Any]:
    admin: dict[str, Any] = {
        "address": {"socket_address": {"address": host, "port_value": options.admin_port}}
    }
    if options.admin_read_only:
        paths = "|".join(re.escape(p) for p in READ_ONLY_ADMIN_PATHS)
        # Matched against the whole normalized path and query (measured: an `exact`
        # /clusters refuses /clusters?format=json).
        admin["allow_paths"] = [{"safe_regex": {"regex": f"({paths})(\\?.*)?"}}]
    return admin


def _bind_to_workload(xds_host: str, workload_address: str) -> dict[str, Any]:
    """`upstream_bind_config` putting the xDS connection on the workload's address, when
    both it and the xDS server are loopback addresses of one family (one machine)."""
    try:
        server, own = ipaddress.ip_address(xds_host), ipaddress.ip_address(workload_address)
    except ValueError:
        return {}
    if not (server.is_loopback and own.is_loopback) or server.version != own.version:
        return {}
    source = {"address": str(own), "port_value": 0}
    return {"upstream_bind_config": {"source_address": source}}


def _pem(inline: str, filename: str) -> dict[str, str]:
    """An Envoy DataSource: the file Envoy reads, else the PEM inline."""
    return {"filename": filename} if filename else {"inline_string": inline}


def _secure_xds(bootstrap: dict[str, Any], options: BootstrapOptions) -> None:
    if options.token and not options.client_certificate:
        dynamic = bootstrap["dynamic_resources"]
        sources = [dynamic.get("ads_config")] + [
            dynamic.get(k, {}).get("api_config_source") for k in ("cds_config", "lds_config")
        ]
        for source in filter(None, sources):
            for service in source["grpc_services"]:
                service["initial_metadata"] = [
                    {"key": "x-pocketmesh-token", "value": options.token}
                ]
    if options.tls:
        roots = _pem(options.xds_trusted_ca, options.xds_trusted_ca_file)
        validation: dict[str, Any] = {"trusted_ca": roots}
        if options.xds_server_id:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "URI", "matcher": {"exact": options.xds_server_id}}
            ]
        # gRPC servers insist on ALPN h2.
        context: dict[str, Any] = {"alpn_protocols": ["h2"], "validation_context": validation}
        if options.client_certificate:
            chain = _pem(options.xds_client_cert, options.xds_client_cert_file)
            key = _pem(options.xds_client_key, options.xds_client_key_file)
            context["tls_certificates"] = [{"certificate_chain": chain, "private_key": key}]
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": context,
            },
        }


def _dynamic_resources(options: BootstrapOptions) -> dict[str, Any]:
    api_source = {
        "api_type": "DELTA_GRPC" if options.delta else "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [
            {
                "envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    # Redial a lost xDS stream within a second (see the module docstring).
                    "retry_policy": {
                        "retry_back_off": {
                            "base_interval": XDS_RETRY_BASE,
                            "max_interval": XDS_RETRY_MAX,
                        }
                    },
                }
            }
        ],
        # The first request carries the whole node (~60 KB); later ones need not.
        "set_node_on_first_message_only": True,
    }
    if options.ads:
        return {
            "ads_config": api_source,
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        }
    per_type = {"api_config_source": api_source, "resource_api_version": "V3"}
    return {"cds_config": per_type, "lds_config": copy.deepcopy(per_type)}


def render(bootstrap: dict[str, Any]) -> str:
    return yaml.safe_dump(bootstrap, sort_keys=False)
