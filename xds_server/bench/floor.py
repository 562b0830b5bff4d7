"""The floor: a bare grpc.aio ADS server streaming pre-encoded responses.

It serves exactly what pocketmesh would serve (the views come from pocketmesh's
own snapshot, built before it listens), but does no translation and keeps no
protocol state beyond "has this type been answered for these names": ACKs are
read and dropped. SIGUSR1 moves to the next config generation and pushes, to
every open stream, the types whose content changed (SotW: the whole type;
Delta: the changed resources). What it achieves is the best any Python control
plane could do on this machine with these clients.

Run: python -m xds_server.bench.floor --port P --config DIR [--config DIR2 ...]
It prints one JSON line, "ready", when it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2 as d

from xds_server import xds_types
from xds_server.cache.resource import Resource, set_version
from xds_server.cache.snapshot import MeshSnapshot
from xds_server.galley.loader import load_paths
from xds_server.grpc_api.services import SERVER_OPTIONS
from xds_server.protocol import wire

TYPES = (xds_types.CLUSTER, xds_types.ENDPOINT, xds_types.LISTENER, xds_types.ROUTE)
Encoded = dict[str, bytes]  # type_url -> one encoded response


@dataclass(slots=True)
class Generation:
    sotw: dict[str, Encoded] = field(default_factory=dict)  # node -> full SotW responses
    delta: dict[str, Encoded] = field(default_factory=dict)  # node -> full Delta responses
    # node -> responses that move a client from the previous generation to this one
    sotw_push: dict[str, list[bytes]] = field(default_factory=dict)
    delta_push: dict[str, list[bytes]] = field(default_factory=dict)


def _sotw(type_url: str, items: dict[str, Resource], nonce: str) -> tuple[str, bytes]:
    version = set_version((n, r.version) for n, r in items.items())
    body = wire.discovery_response(
        version_info=version,
        resources=(items[n].any_bytes for n in sorted(items)),
        type_url=type_url,
        nonce=nonce,
    )
    return version, body


def _delta(type_url: str, items: list[Resource], removed: list[str], nonce: str) -> bytes:
    return wire.delta_discovery_response(
        system_version_info="",
        resources=(r.delta_bytes for r in items),
        type_url=type_url,
        nonce=nonce,
        removed_resources=removed,
    )


def encode_generations(config_dirs: list[Path]) -> list[Generation]:
    """Every proxy's responses for each config, shared between proxies with equal views."""
    gens: list[Generation] = []
    previous: MeshSnapshot | None = None
    for number, config_dir in enumerate(config_dirs, start=1):
        result = load_paths([config_dir])
        if result.config is None:
            raise SystemExit("\n".join(str(e) for e in result.errors))
        snap = MeshSnapshot(result.config, number)
        gen = Generation()
        shared: dict[tuple[str, str], bytes] = {}
        shared_delta: dict[tuple[str, str], bytes] = {}
        nonce = str(number)
        for node in snap.proxy_ids:
            view = snap.view(node)
            gen.sotw[node], gen.delta[node] = {}, {}
            pushes_sotw: list[bytes] = []
            pushes_delta: list[bytes] = []
            for t in TYPES:
                items = dict(view.resources(t))
                version, body = _sotw(t, items, nonce)
                body = shared.setdefault((t, version), body)
                gen.sotw[node][t] = body
                gen.delta[node][t] = shared_delta.setdefault(
                    (t, version),
                    _delta(t, [items[n] for n in sorted(items)], [], nonce),
                )
                if previous is None:
                    continue
                before = previous.view(node).resources(t)
                changed = [items[n] for n in sorted(items) if n not in before
                           or before[n].version != items[n].version]  # fmt: skip
                removed = sorted(n for n in before if n not in items)
                if changed or removed:
                    pushes_sotw.append(body)
                    pushes_delta.append(_delta(t, changed, removed, nonce))
            gen.sotw_push[node], gen.delta_push[node] = pushes_sotw, pushes_delta
        gens.append(gen)
        previous = snap
    return gens


class FloorServer:
    def __init__(self, generations: list[Generation]) -> None:
        self.generations = generations
        self.current = 0
        self._streams: dict[int, tuple[str, bool, asyncio.Queue[bytes]]] = {}

    def advance(self) -> None:
        if self.current + 1 >= len(self.generations):
            return
        self.current += 1
        gen = self.generations[self.current]
        for node, delta, outbox in self._streams.values():
            pushes = gen.delta_push if delta else gen.sotw_push
            for body in pushes.get(node, ()):
                outbox.put_nowait(body)

    async def stream(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, delta: bool
    ) -> None:
        outbox: asyncio.Queue[bytes] = asyncio.Queue()
        node = ""
        answered: dict[str, tuple[str, ...]] = {}

        async def read() -> None:
            nonlocal node
            async for req in requests:
                node = node or req.node.id
                if node and (id(outbox) not in self._streams):
                    self._streams[id(outbox)] = (node, delta, outbox)
                gen = self.generations[self.current]
                responses = gen.delta if delta else gen.sotw
                names = tuple(req.resource_names_subscribe if delta else req.resource_names)
                if req.type_url not in answered or (names and names != answered[req.type_url]):
                    answered[req.type_url] = names
                    body = responses.get(node, {}).get(req.type_url)
                    if body is not None:
                        outbox.put_nowait(body)
            outbox.put_nowait(b"")

        reader = asyncio.create_task(read())
        try:
            while (body := await outbox.get()) != b"":
                await context.write(body)
        finally:
            reader.cancel()
            self._streams.pop(id(outbox), None)


def _identity(data: bytes) -> bytes:
    return data


def handlers(floor: FloorServer) -> list[grpc.GenericRpcHandler]:
    async def sotw(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await floor.stream(requests, context, False)

    async def delta(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await floor.stream(requests, context, True)

    methods = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            sotw, request_deserializer=d.DiscoveryRequest.FromString,
            response_serializer=_identity),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            delta, request_deserializer=d.DeltaDiscoveryRequest.FromString,
            response_serializer=_identity),
    }  # fmt: skip
    service = "envoy.service.discovery.v3.AggregatedDiscoveryService"
    return [grpc.method_handlers_generic_handler(service, methods)]


async def serve(port: int, config_dirs: list[Path]) -> None:
    floor = FloorServer(encode_generations(config_dirs))
    server = grpc.aio.server(handlers=handlers(floor), options=SERVER_OPTIONS)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, floor.advance)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    sys.stdout.write(json.dumps("ready") + "\n")
    sys.stdout.flush()
    await stop.wait()
    await server.stop(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description="bare gRPC floor server (bench)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", action="append", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.config))


if __name__ == "__main__":
    main()
