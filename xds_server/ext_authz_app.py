"""An external authorizer, as Istio's `samples/extauthz` server: Envoy's ext_authz check
over HTTP and over gRPC (`envoy.service.auth.v3.Authorization`), for the External
Authorization task (`config/examples/ext-authz`, `pocketmesh.io/app: ext-authz`).

A request is allowed when it carries `x-ext-authz: allow`; without that header, when
its caller's SPIFFE ID ends in `/sa/<allow_service_account>`; else it is denied with
403 and the sample's body. Either way the answer carries `x-ext-authz-check-result:
allowed|denied` (and the gRPC answer sets it on the request Envoy forwards), and the
gRPC answer puts `{"ext-authz-check-result": ...}` in the filter's dynamic metadata.
Each check is logged. `GET /_pocketmesh/identity` on the HTTP port names the process,
as the demo app's does, so `pocketmesh up` can prove it started this one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

log = logging.getLogger("pocketmesh.ext_authz")

CHECK_HEADER = "x-ext-authz"
ALLOWED_VALUE = "allow"
RESULT_HEADER = "x-ext-authz-check-result"
RECEIVED_HEADER = "x-ext-authz-check-received"
IDENTITY_PATH = "/_pocketmesh/identity"
DENY_BODY = (
    f"denied by ext_authz for not found header `{CHECK_HEADER}: {ALLOWED_VALUE}` in the request"
)


@dataclass
class Settings:
    workload: str = "ext-authz"
    service: str = "ext-authz"
    version: str = "v1"
    http_listen: str | None = "127.0.0.1:8000"
    grpc_listen: str | None = "127.0.0.1:9000"
    allow_service_account: str = "a"
    # What the servers decided, in order (for tests and the log): (api, allowed, path).
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def identity(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "service": self.service,
            "version": self.version,
            "pid": os.getpid(),
        }


def decide(settings: Settings, headers: dict[str, str], principal: str) -> bool:
    value = headers.get(CHECK_HEADER)
    if value is not None:
        return value == ALLOWED_VALUE
    return principal.endswith("/sa/" + settings.allow_service_account)


# --- HTTP API ------------------------------------------------------------------------


def http_app(settings: Settings) -> web.Application:
    async def identity(_: web.Request) -> web.Response:
        return web.json_response(settings.identity())

    async def check(request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        allowed = decide(settings, headers, "")
        settings.checks.append(("http", allowed, request.path_qs))
        log.info("[HTTP][%s] %s %s%s", "allowed" if allowed else "denied", request.method,
                 request.host, request.path_qs)  # fmt: skip
        received = f"{request.method} {request.host}{request.path_qs}"
        out = {
            RESULT_HEADER: "allowed" if allowed else "denied",
            RECEIVED_HEADER: received[:1000],
        }
        if allowed:
            return web.Response(status=200, headers=out)
        return web.Response(status=403, headers=out, text=DENY_BODY)

    app = web.Application()
    app.router.add_route("GET", IDENTITY_PATH, identity)
    app.router.add_route("*", "/{tail:.*}", check)
    return app


# --- gRPC API ------------------------------------------------------------------------


class Authorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Any
    ) -> external_auth_pb2.CheckResponse:
        attributes = request.attributes
        http = attributes.request.http
        allowed = decide(self.settings, dict(http.headers), attributes.source.principal)
        self.settings.checks.append(("grpc", allowed, http.path))
        result = "allowed" if allowed else "denied"
        log.info("[gRPC][%s] %s %s%s", result, http.method, http.host, http.path)
        headers = [
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=RESULT_HEADER, value=result)
            ),
        ]
        metadata = struct_pb2.Struct()
        metadata.update({"ext-authz-check-result": result})
        if allowed:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(headers=headers),
                dynamic_metadata=metadata,
            )
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
                body=DENY_BODY,
                headers=headers,
            ),
            dynamic_metadata=metadata,
        )


async def run(
    settings: Settings, stop: asyncio.Event, started: asyncio.Event | None = None
) -> None:
    """Serve both APIs until `stop` is set. Raises OSError when an address is taken."""
    runner: web.AppRunner | None = None
    server: grpc.aio.Server | None = None
    try:
        if settings.http_listen:
            runner = web.AppRunner(http_app(settings), access_log=None)
            await runner.setup()
            host, port = settings.http_listen.rsplit(":", 1)
            await web.TCPSite(runner, host.strip("[]"), int(port)).start()
        if settings.grpc_listen:
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
                Authorization(settings), server
            )
            try:
                bound = server.add_insecure_port(settings.grpc_listen)
            except RuntimeError:
                bound = 0
            if not bound:
                raise OSError(f"cannot listen on {settings.grpc_listen}")
            await server.start()
        log.info("ext_authz: HTTP on %s, gRPC on %s", settings.http_listen, settings.grpc_listen)
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        if server is not None:
            await server.stop(0.2)
        if runner is not None:
            await runner.cleanup()
