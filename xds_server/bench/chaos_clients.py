"""Chaos with simulated clients: hostile xDS clients beside a well-behaved fleet, and the
memory a huge config leaves behind.

hostile  A fleet of simulated proxies (as `pocketmesh bench` runs them) is synced and a
         route change timed; then hostile clients join: streams that never read,
         thousands of streams at once, huge name lists, undecodable bytes, a wrong type,
         no node, a huge node id, nonces never sent, a client that NACKs everything.
         The same change is timed again with all of them attached. Figures: server RSS
         at each step, the fleet's push latency with and without them, the status each
         bad client got, and the longest server log line.
memory   RSS with a huge valid config loaded, and after it is replaced by a small one,
         three times over.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from xds_server import xds_types
from xds_server.bench import fleet_run, mesh
from xds_server.bench.fleet import Fleet
from xds_server.bench.processes import ServerProcess, memory_mb
from xds_server.bench.stats import ProgressBar

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]


def _request(node: str = "", type_url: str = xds_types.CLUSTER, **fields: Any) -> bytes:
    request = DiscoveryRequest(type_url=type_url, **fields)
    if node:
        request.node.id = node
    return request.SerializeToString()


class Loop:
    """An asyncio loop in a thread, for grpc.aio clients next to blocking harness code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class HostileClients:
    def __init__(self, target: str, node_ids: list[str]) -> None:
        self.target = target
        self.node_ids = node_ids
        self.channels: list[grpc.aio.Channel] = []
        self.calls: list[Any] = []
        self.statuses: dict[str, str] = {}
        self.nack_responses = 0

    def _call(self) -> Any:
        channel = grpc.aio.insecure_channel(self.target, options=OPTIONS)
        self.channels.append(channel)
        method = channel.stream_stream(
            ADS, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        call = method()
        self.calls.append(call)
        return call

    async def stalled(self, count: int) -> None:
        """Streams that ask for their config and never read a byte of it."""
        for i in range(count):
            await self._call().write(_request(self.node_ids[i % len(self.node_ids)]))

    async def many(self, count: int) -> float:
        """`count` streams at once; seconds until every one got its first response."""
        calls = [self._call() for _ in range(count)]
        started = time.perf_counter()

        async def one(i: int, call: Any) -> None:
            await call.write(_request(self.node_ids[i % len(self.node_ids)]))
            await call.read()

        await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)))
        return time.perf_counter() - started

    async def refused(self, name: str, *messages: bytes) -> None:
        """Send `messages` and keep the status the server ends the stream with."""
        call = self._call()
        try:
            for message in messages:
                await call.write(message)
            while True:
                if await call.read() == grpc.aio.EOF:
                    break
        except grpc.aio.AioRpcError as err:
            details = (err.details() or "")[:120]
            self.statuses[name] = f"{err.code().name}: {details}"
            return
        self.statuses[name] = "no status (the stream stayed open)"

    async def huge_names(self, rounds: int, names: int) -> None:
        """Subscription changes of `names` names each, on one stream (under the cap)."""
        call = self._call()
        await call.write(_request(self.node_ids[0], xds_types.ENDPOINT))
        for r in range(rounds):
            batch = [f"n{r}-{j}" for j in range(names)]
            await call.write(_request(type_url=xds_types.ENDPOINT, resource_names=batch))
        await asyncio.sleep(0.5)

    async def nack_forever(self, seconds: float) -> None:
        """NACK every response, and send nonces never sent, for `seconds`."""
        call = self._call()
        await call.write(_request(self.node_ids[0]))
        deadline = time.monotonic() + seconds
        from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(call.read(), timeout=deadline - time.monotonic())
            except TimeoutError:
                break
            if raw == grpc.aio.EOF:
                break
            response = DiscoveryResponse.FromString(raw)
            self.nack_responses += 1
            nack = DiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
            nack.error_detail.code = 13
            nack.error_detail.message = "rejected\n" * 1000
            await call.write(nack.SerializeToString())
            await call.write(_request(response_nonce="99999", version_info="from-the-future"))

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            await channel.close()


def _longest_log_line(path: Path, start: int) -> tuple[int, int]:
    with path.open("rb") as f:
        f.seek(start)
        lines = f.read().splitlines()
    return len(lines), max((len(line) for line in lines), default=0)


def hostile(workdir: Path, *, small: bool) -> dict[str, Any]:
    if small:
        spec = mesh.MeshSpec(services=6, endpoints=2, namespaces=2, proxies=8)
        sizes = {"stalled": 50, "many": 300, "rounds": 5, "names": 40_000}
    else:
        spec = mesh.MeshSpec(services=100, endpoints=2, namespaces=10, proxies=200)
        sizes = {"stalled": 500, "many": 3000, "rounds": 20, "names": 40_000}
    nack_seconds = 3.0 if small else 10.0
    workdir.mkdir(parents=True, exist_ok=True)
    dirs, _ = fleet_run.write_generations(spec, workdir / "config")
    live = workdir / "live"
    shutil.copytree(dirs[0], live)
    log = workdir / "pocketmesh.log"
    server = ServerProcess(live, log).start()
    ids = mesh.proxy_ids(spec)
    fleet = Fleet(server.target, ids, delta=False, workers=2)
    loop = Loop()
    clients = HostileClients(server.target, ids)
    bar = ProgressBar(enabled=False)
    out: dict[str, Any] = {"scenario": "hostile", "mesh": spec.label(), "sizes": sizes}

    def rss() -> float:
        return round(memory_mb(server.pid)[0], 1)

    def change(number: int) -> dict[str, Any]:
        figures = fleet_run._change(spec, server, fleet, "route", number, dirs, live, bar, 0.5)
        return {k: figures[k] for k in ("from_trigger_s", "from_publish_s", "proxies_updated")}

    run: Callable[[Awaitable[Any]], Any] = loop.run
    try:
        fleet.start()
        fleet.wait_synced(timeout=120)
        out["rss_mb_fleet_synced"] = rss()
        out["route_change_without_hostile_clients"] = change(2)
        log_start = log.stat().st_size
        run(clients.stalled(sizes["stalled"]))
        out["rss_mb_with_stalled_streams"] = rss()
        out["many_streams_all_answered_s"] = round(run(clients.many(sizes["many"])), 3)
        out["rss_mb_with_many_streams"] = rss()
        run(clients.huge_names(sizes["rounds"], sizes["names"]))
        out["rss_mb_after_huge_name_lists"] = rss()
        nacking = asyncio.run_coroutine_threadsafe(clients.nack_forever(nack_seconds), loop.loop)
        huge_node = "n" * 100_000
        bad = [
            ("undecodable bytes", b"\xff\xfe garbage \x00" * 64),
            ("a type it does not serve", _request(ids[0], "type.googleapis.com/garbage")),
            ("no node id", _request("")),
            ("a huge node id", _request(huge_node)),
            ("100k names", _request(ids[0], resource_names=[f"c{i}" for i in range(100_000)])),
        ]
        for name, message in bad:
            run(clients.refused(name, message))
        out["route_change_with_hostile_clients"] = change(1)
        nacking.result(60)
        out["rss_mb_with_every_hostile_client"] = rss()
        out["statuses"] = dict(clients.statuses)
        out["nack_forever_responses_received"] = clients.nack_responses
        run(clients.close())
        time.sleep(2)
        out["rss_mb_after_they_left"] = rss()
        lines, longest = _longest_log_line(log, log_start)
        out["server_log_lines_during_hostile_phase"] = lines
        out["server_log_longest_line_bytes"] = longest
        out["server_peak_rss_mb"] = round(memory_mb(server.pid)[1], 1)
    finally:
        loop.stop()
        fleet.stop()
        server.stop()
    return out


def memory(workdir: Path, *, small: bool, rounds: int = 3) -> dict[str, Any]:
    """RSS with a huge valid config, then after it is replaced by a small one."""
    services = 1_000 if small else 20_000
    big_spec = mesh.MeshSpec(services=services, endpoints=1, namespaces=100, proxies=4)
    small_spec = mesh.MeshSpec(services=10, endpoints=1, namespaces=2, proxies=4)
    big, little, live = workdir / "big", workdir / "small", workdir / "live"
    mesh.write(big_spec, big)
    mesh.write(small_spec, little)
    shutil.copytree(little, live)
    server = ServerProcess(live, workdir / "pocketmesh.log").start()
    fleet = Fleet(server.target, mesh.proxy_ids(small_spec), delta=False, workers=1)
    size_mb = sum(p.stat().st_size for p in big.rglob("*.yaml")) / 1e6
    out: dict[str, Any] = {
        "scenario": "memory",
        "huge_config": f"{big_spec.label()}, {size_mb:.1f} MB of YAML",
        "rounds": [],
    }
    try:
        fleet.start()
        fleet.wait_synced(timeout=120)
        out["rss_mb_small_config"] = round(memory_mb(server.pid)[0], 1)
        for _ in range(rounds):
            row: dict[str, Any] = {}
            for name, source in (("huge", big), ("small_again", little)):
                shutil.rmtree(live)
                shutil.copytree(source, live)
                started = time.perf_counter()
                result = server.reload()
                row[f"{name}_reload_s"] = round(time.perf_counter() - started, 2)
                row[f"{name}_ok"] = bool(result.get("ok"))
                row[f"rss_mb_{name}"] = round(memory_mb(server.pid)[0], 1)
            time.sleep(2)
            row["rss_mb_2s_later"] = round(memory_mb(server.pid)[0], 1)
            out["rounds"].append(row)
        out["server_peak_rss_mb"] = round(memory_mb(server.pid)[1], 1)
    finally:
        fleet.stop()
        server.stop()
    return out
