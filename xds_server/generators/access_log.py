"""MeshConfig's access log (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`):
one file access logger on every HTTP connection manager and TCP proxy of every sidecar
and gateway, with Istio's default line or fields unless a format is given (Istio's
`telemetry_logging.go`, for the mesh-wide file log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from google.protobuf import struct_pb2

from xds_server.galley.model import MeshConfig
from xds_server.generators.typed_config import pack

if TYPE_CHECKING:
    from xds_server.generators.push_context import PushContext

__all__ = [
    "FILE_ACCESS_LOG",
    "ISTIO_JSON_FORMAT",
    "ISTIO_TEXT_FORMAT",
    "AccessLogs",
    "access_logs",
    "mesh_access_logs",
]
AccessLogs = tuple[accesslog_pb2.AccessLog, ...]

FILE_ACCESS_LOG: Final = "envoy.access_loggers.file"
ISTIO_TEXT_FORMAT: Final = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
ISTIO_JSON_FORMAT: Final = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def mesh_access_logs(ctx: PushContext) -> AccessLogs:
    """`access_logs` of the push context's mesh, built once per push context."""
    return ctx.memoize(("access-logs",), lambda: access_logs(ctx.mesh))


def access_logs(mesh: MeshConfig) -> AccessLogs:
    """The mesh's access loggers (none unless the mesh settings name a file)."""
    settings = mesh.settings.access_log if mesh.settings else None
    if settings is None:
        return ()
    if settings.encoding == "JSON":
        fields = struct_pb2.Struct()
        fields.update(dict(settings.json_format) or ISTIO_JSON_FORMAT)
        log_format = substitution_format_string_pb2.SubstitutionFormatString(json_format=fields)
    else:
        log_format = substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(
                inline_string=settings.text_format or ISTIO_TEXT_FORMAT
            )
        )
    logger = file_pb2.FileAccessLog(path=settings.path, log_format=log_format)
    return (accesslog_pb2.AccessLog(name=FILE_ACCESS_LOG, typed_config=pack(logger)),)
