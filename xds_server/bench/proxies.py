"""Simulated sidecars: asyncio gRPC ADS clients that subscribe and ACK like Envoy.

SotW order, as Envoy does it: CDS wildcard; on clusters, EDS by name, CDS ACK,
LDS wildcard; on listeners, RDS by name, LDS ACK; EDS and RDS ACKed on arrival.
Delta is the same dance with subscribe/unsubscribe lists. Each client records
when it first held a complete config and when it sent each ACK, so the
orchestrator can tell convergence after a change. Clients run many to a
process, in worker processes apart from the server (see `run_worker`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2 as d

from xds_server import listener_filters, xds_types

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW_METHOD = ADS + "StreamAggregatedResources"
DELTA_METHOD = ADS + "DeltaAggregatedResources"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),
    # One connection per proxy, as with real sidecars: no subchannel sharing.
    ("grpc.use_local_subchannel_pool", 1),
]


def _identity(data: bytes) -> bytes:
    return data


def eds_names(clusters: Iterable[cluster_pb2.Cluster]) -> set[str]:
    return {
        c.eds_cluster_config.service_name or c.name
        for c in clusters
        if c.type == cluster_pb2.Cluster.EDS
    }


def rds_names(listeners: Iterable[listener_pb2.Listener]) -> set[str]:
    return {name for listener in listeners for name in listener_filters.rds_names(listener)}


@dataclass(slots=True)
class ProxyStats:
    node_id: str
    connected_at: float = 0.0
    synced_at: float = 0.0  # first time CDS, EDS, LDS and RDS were all ACKed
    acks: int = 0
    nacks: int = 0
    last_ack_at: float = 0.0
    responses: int = 0
    bytes_received: int = 0
    error: str = ""  # why the last stream failed, if one did
    reconnects: int = 0
    acked: set[str] = field(default_factory=set)  # types ACKed at least once

    def summary(self) -> tuple[Any, ...]:
        return (
            self.node_id,
            self.connected_at,
            self.synced_at,
            self.acks,
            self.last_ack_at,
            self.responses,
            self.bytes_received,
            self.error,
            self.reconnects,
        )


class SimulatedProxy:
    """One ADS stream. `delta` picks the protocol; the dance is the same."""

    def __init__(self, node_id: str, delta: bool) -> None:
        self.stats = ProxyStats(node_id)
        self.delta = delta
        self._node = d.DiscoveryRequest().node
        self._node.id = node_id
        self._node.cluster = node_id.split(".", 1)[0]
        self._eds: set[str] = set()
        self._rds: set[str] = set()
        self._clusters: dict[str, str] = {}  # delta: cluster -> its EDS name ("" if not EDS)
        self._listeners: dict[str, frozenset[str]] = {}  # delta: listener -> RDS names
        self._lds_started = False
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def run(self, target: str, stop: asyncio.Event) -> None:
        """Hold one stream open until `stop`; like Envoy, redial after a failed stream."""
        backoff = 0.1
        while not stop.is_set():
            failure = await self._stream(target, stop)
            if failure is None:
                return
            self.stats.reconnects += 1
            self.stats.error = failure
            self._reset()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 2.0)

    async def _stream(self, target: str, stop: asyncio.Event) -> str | None:
        """One stream until `stop` (None) or until it fails: then why, as one line
        (status; which side saw it first, when, after how many responses)."""
        dialed, responses = time.time(), self.stats.responses
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            method = DELTA_METHOD if self.delta else SOTW_METHOD
            call = channel.stream_stream(
                method, request_serializer=_identity, response_deserializer=_identity
            )(wait_for_ready=True)
            self.stats.connected_at = self.stats.connected_at or time.time()
            self._send(xds_types.CLUSTER, first=True)
            writer = asyncio.create_task(self._write(call))
            reader = asyncio.create_task(self._read(call))
            stopping = asyncio.create_task(stop.wait())
            try:
                done, _ = await asyncio.wait(
                    [reader, writer, stopping], return_when=asyncio.FIRST_COMPLETED
                )
                if stop.is_set():
                    return None
                code = await call.code()
                first = "reader" if reader in done else "writer"
                exc = next((t.exception() for t in done if t.exception()), None)
                return (
                    f"stream ended: {code.name} {await call.details()} "
                    f"[{first} first, {time.time() - dialed:.3f}s after dial, "
                    f"{self.stats.responses - responses} responses; "
                    f"{type(exc).__name__ if exc else 'no exception'}; "
                    f"{await call.debug_error_string()}]"  # type: ignore[attr-defined]
                )
            finally:
                for task in (reader, writer, stopping):
                    task.cancel()
                await asyncio.gather(reader, writer, stopping, return_exceptions=True)
                call.cancel()

    def _reset(self) -> None:
        self._eds.clear()
        self._rds.clear()
        self._clusters.clear()
        self._listeners.clear()
        self._lds_started = False
        self._outbox = asyncio.Queue()
        if not self.stats.synced_at:
            self.stats.acked.clear()  # a sync counts only when one stream completes it

    async def _write(self, call: Any) -> None:
        while True:
            await call.write(await self._outbox.get())

    async def _read(self, call: Any) -> None:
        while True:
            data = await call.read()
            if data is grpc.aio.EOF:
                return
            self.stats.responses += 1
            self.stats.bytes_received += len(data)
            if self.delta:
                self._on_delta(d.DeltaDiscoveryResponse.FromString(data))
            else:
                self._on_sotw(d.DiscoveryResponse.FromString(data))

    # -- requests -----------------------------------------------------------------

    def _send(
        self,
        type_url: str,
        *,
        first: bool = False,
        names: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        version: str = "",
        nonce: str = "",
    ) -> None:
        if self.delta:
            req = d.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce)
            req.resource_names_subscribe.extend(sorted(names))
            req.resource_names_unsubscribe.extend(sorted(unsubscribe))
        else:
            req = d.DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce)
            req.resource_names.extend(sorted(names))
        if first:
            req.node.CopyFrom(self._node)
        self._outbox.put_nowait(req.SerializeToString())

    def _ack(self, type_url: str, version: str, nonce: str) -> None:
        if self.delta:
            self._send(type_url, nonce=nonce)
        else:
            self._send(type_url, names=self._names(type_url), version=version, nonce=nonce)
        s = self.stats
        s.acks += 1
        s.last_ack_at = time.time()
        s.acked.add(type_url)
        if not s.synced_at and self._complete():
            s.synced_at = s.last_ack_at

    def _names(self, type_url: str) -> set[str]:
        if type_url == xds_types.ENDPOINT:
            return self._eds
        if type_url == xds_types.ROUTE:
            return self._rds
        return set()

    def _complete(self) -> bool:
        acked = self.stats.acked
        return (
            xds_types.CLUSTER in acked
            and xds_types.LISTENER in acked
            and (not self._eds or xds_types.ENDPOINT in acked)
            and (not self._rds or xds_types.ROUTE in acked)
        )

    # -- SotW -------------------------------------------------------------------

    def _on_sotw(self, resp: d.DiscoveryResponse) -> None:
        t = resp.type_url
        if t == xds_types.CLUSTER:
            clusters = [cluster_pb2.Cluster.FromString(a.value) for a in resp.resources]
            self._resubscribe(xds_types.ENDPOINT, eds_names(clusters))
        elif t == xds_types.LISTENER:
            listeners = [listener_pb2.Listener.FromString(a.value) for a in resp.resources]
            self._resubscribe(xds_types.ROUTE, rds_names(listeners))
        self._ack(t, resp.version_info, resp.nonce)
        if t == xds_types.CLUSTER and not self._lds_started:
            self._lds_started = True
            self._send(xds_types.LISTENER)

    def _resubscribe(self, type_url: str, names: set[str]) -> None:
        current = self._names(type_url)
        if names == current:
            return
        current.clear()
        current.update(names)
        if self.delta:
            return
        self._send(type_url, names=names)

    # -- Delta ------------------------------------------------------------------

    def _on_delta(self, resp: d.DeltaDiscoveryResponse) -> None:
        t = resp.type_url
        if t == xds_types.CLUSTER:
            for r in resp.resources:
                c = cluster_pb2.Cluster.FromString(r.resource.value)
                self._clusters[r.name] = next(iter(eds_names([c])), "")
            for name in resp.removed_resources:
                self._clusters.pop(name, None)
            self._delta_resubscribe(xds_types.ENDPOINT, {n for n in self._clusters.values() if n})
        elif t == xds_types.LISTENER:
            for r in resp.resources:
                listener = listener_pb2.Listener.FromString(r.resource.value)
                self._listeners[r.name] = frozenset(rds_names([listener]))
            for name in resp.removed_resources:
                self._listeners.pop(name, None)
            self._delta_resubscribe(xds_types.ROUTE, set().union(*self._listeners.values()))
        self._ack(t, resp.system_version_info, resp.nonce)
        if t == xds_types.CLUSTER and not self._lds_started:
            self._lds_started = True
            self._send(xds_types.LISTENER)

    def _delta_resubscribe(self, type_url: str, names: set[str]) -> None:
        current = self._names(type_url)
        added, gone = names - current, current - names
        if added or gone:
            current.clear()
            current.update(names)
            self._send(type_url, names=added, unsubscribe=gone)


# -- the worker process ------------------------------------------------------------
# A plain subprocess (`python -m xds_server.bench.proxies`), driven by JSON lines
# on stdin/stdout: importable from anywhere, no multiprocessing main-module rules.


def _reply(message: Any) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _worker(target: str, node_ids: list[str], delta: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    proxies = [SimulatedProxy(n, delta) for n in node_ids]
    # Imports done: say so, and dial only when every worker is ready (one start line).
    _reply("ready")
    if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != '"go"':
        return
    runs = [asyncio.create_task(p.run(target, stop)) for p in proxies]
    while not stop.is_set():
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == '"status"':
            _reply([p.stats.summary() for p in proxies])
        elif line in ('"stop"', ""):  # "" is EOF: the harness is gone
            stop.set()
    await asyncio.gather(*runs, return_exceptions=True)
    _reply("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description="simulated ADS proxies (bench worker)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--delta", action="store_true")
    parser.add_argument("--nodes", required=True, help="file with one node id per line")
    args = parser.parse_args()
    node_ids = Path(args.nodes).read_text().split()
    asyncio.run(_worker(args.target, node_ids, args.delta))


if __name__ == "__main__":
    main()
