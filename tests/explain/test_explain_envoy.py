"""`explain` names the route and cluster real requests take: checked against real Envoy on
the demo and on every example of config/examples/ (the folders are iterated, so an
example added later is checked too).

Each example runs on an in-process control plane with workload identities and one real
Envoy per WorkloadEntry (sidecars and gateways, as `up` runs them; the apps are not
needed: routing happens in the caller's Envoy). A test seam adds an access log to every
HTTP connection manager and TCP proxy Envoy is sent, with Envoy's own `%ROUTE_NAME%`,
`%UPSTREAM_CLUSTER%` and `%RESPONSE_CODE%`. Every request the example's try line (and
`up`'s Open line) makes, hop by hop, is explained by `pocketmesh explain` against the
running control plane (the debug address), sent for real through the same proxy, and
Envoy's log line must show the route and a cluster the explanation names, and the
status it predicts where the proxies decide it (404, 403, redirects, direct answers,
fault aborts). The offline answer (`--config`) must be the same.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from tests.e2e.harness import (
    ControlPlaneThread,
    Envoy,
    get,
    running,
    sidecar,
    start_all,
    wait_until,
)
from tests.explain.hops import PROBE, Hop
from tests.explain.walk import example_names, extra_lines, request_of, walk
from tests.run.demo_mesh import demo_copy, example_copy, random_net
from xds_server import xds_types
from xds_server.cli import main
from xds_server.explain import explain, offline
from xds_server.galley.loader import load_paths
from xds_server.identity import IdentityOptions
from xds_server.runner.plan import plan_mesh

LOG_FORMAT = {
    "route": "%ROUTE_NAME%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "code": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "probe": f"%REQ({PROBE.upper()})%",
}
SPLIT_SAMPLES = 50  # a 20 % share is missed by all 50 with probability 1e-5
DECIDED = {"403", "404", "301", "302", "303", "307", "308", "418", "500", "503"}


class AccessLogs:
    """Test seam: every HTTP connection manager and TCP proxy a proxy is sent logs to
    <dir>/<node id>.log, one JSON object per request or connection."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, node_id: str) -> Path:
        return self.directory / f"{node_id}.log"

    def __call__(self, node_id: str, generated: dict[str, dict[str, Message]]) -> None:
        fmt = struct_pb2.Struct()
        fmt.update(LOG_FORMAT)
        logger = file_pb2.FileAccessLog(
            path=str(self.path(node_id)),
            log_format=substitution_format_string_pb2.SubstitutionFormatString(json_format=fmt),
        )
        log = accesslog_pb2.AccessLog(name="envoy.access_loggers.file")
        log.typed_config.Pack(logger)
        for listener in generated.get(xds_types.LISTENER, {}).values():
            chains = [*listener.filter_chains, listener.default_filter_chain]  # type: ignore[attr-defined]
            for chain in chains:
                for f in chain.filters:
                    for kind in (hcm_pb2.HttpConnectionManager, tcp_proxy_pb2.TcpProxy):
                        if f.typed_config.Is(kind.DESCRIPTOR):
                            config = kind()
                            f.typed_config.Unpack(config)
                            config.access_log.append(log)
                            f.typed_config.Pack(config)

    def lines(self, node_id: str) -> list[dict[str, Any]]:
        path = self.path(node_id)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def example_mesh(
    root: Path, name: str, net: str
) -> Iterator[tuple[Path, ControlPlaneThread, AccessLogs]]:
    config = demo_copy(root, net) if name == "demo" else example_copy(root, name, net)
    logs = AccessLogs(root / "access")
    logs.directory.mkdir()
    identity = IdentityOptions(ca_dir=None, proxy_auth=False)
    plane = ControlPlaneThread(config, transform=logs, identity=identity).start()
    loaded = load_paths([config]).config
    assert loaded is not None
    envoys = []
    for workload in loaded.workload_entries:
        base = sidecar(workload, plane.xds_address, root)
        envoys.append(Envoy(base.bootstrap, root, workload.proxy_id, file_flush_ms=20))
    with running(plane, *envoys):
        start_all(envoys, 30)
        wait_synced(plane, [e.name for e in envoys])
        yield config, plane, logs


def wait_synced(plane: ControlPlaneThread, proxies: list[str]) -> None:
    def synced() -> bool:
        state = json.loads(get(plane.debug_url + "/debug/syncz")[1])
        # Every type a proxy asked for (one with no HTTP listener asks for no routes).
        seen = {
            c["proxy"]: {"cluster", "listener"} <= set(c["types"])
            and all(t["state"] == "SYNCED" for t in c["types"].values())
            for c in state
        }
        return all(seen.get(p) for p in proxies)

    wait_until(synced, timeout=30, what=f"{', '.join(proxies)} SYNCED on every type")


def cli_explain(debug: str, hop: Hop) -> dict[str, Any]:
    """`pocketmesh explain ... -o json`, against the running control plane."""
    argv = ["explain", hop.caller, hop.destination, "-X", hop.method, "-o", "json"]
    for header in hop.headers:
        argv += ["-H", header]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--debug-address", debug])
    assert code == 0, (argv, out.getvalue())
    return dict(json.loads(out.getvalue()))


# -- sending for real -------------------------------------------------------------------


def send(hop: Hop, timeout: float = 2.0) -> str:
    """Send the hop through Envoy; the status, or what went wrong."""
    try:
        if hop.send == "tcp":
            host, port = hop.address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=timeout) as sock:
                sock.sendall(b"hello\n")
                with contextlib.suppress(OSError):
                    sock.recv(1024)
            return "tcp"
        host, port = hop.address.rsplit(":", 1)
        headers = hop.header_map
        if hop.send == "tls":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if hop.client_cert[0]:  # curl --cert/--key: a gateway that wants one (MUTUAL)
                context.load_cert_chain(*hop.client_cert)
            raw = socket.create_connection((host, int(port)), timeout=timeout)
            conn = http.client.HTTPConnection(hop.server_name, int(port), timeout=timeout)
            conn.sock = context.wrap_socket(raw, server_hostname=hop.server_name)
            target = hop.url
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
            if hop.send == "proxy":
                target = hop.url
                headers.setdefault("host", hop.url.split("://", 1)[1].split("/", 1)[0])
            else:
                target = hop.url
        try:
            conn.request(hop.method, target, headers=headers)
            return str(conn.getresponse().status)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as err:
        return f"failed: {type(err).__name__}"


def envoy_says(logs: AccessLogs, hop: Hop, probe: int, before: int, *, tcp: bool) -> dict[str, Any]:
    """The caller's access log line for this request (TCP: the next connection's)."""

    def line() -> dict[str, Any] | None:
        lines = logs.lines(hop.caller)
        if tcp:
            return lines[before] if len(lines) > before else None
        return next((x for x in lines if x.get("probe") == str(probe)), None)

    found: dict[str, Any] = wait_until(
        line, timeout=10, what=f"{hop.caller}'s access log line for {hop.destination}"
    )
    return found


def blank(value: Any) -> str:
    """Envoy logs an unset value as `-` (or null in JSON)."""
    return "" if value in (None, "-") else str(value)


# -- the test ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", example_names())
def test_explain_names_the_route_and_cluster_envoy_takes(tmp_path: Path, name: str) -> None:
    net = random_net()
    with example_mesh(tmp_path, name, net) as (config_dir, plane, logs):
        config = load_paths([config_dir]).config
        assert config is not None
        plan = plan_mesh(config, [config_dir])
        debug = plane.debug_url.removeprefix("http://")
        state = offline([config_dir])
        probes = iter(range(1, 10_000))
        checked: list[str] = []

        def ask(hop: Hop) -> dict[str, Any]:
            probe = next(probes)
            probed = hop.with_probe(probe)
            answer = cli_explain(debug, probed)
            check(probed, probe, answer)
            # The offline answer is the same one.
            same = explain(state, probed.caller, request_of(probed))["destination"]
            online = answer["destination"]
            assert summary(same) == summary(online), (probed, summary(same), summary(online))
            return answer

        def check(hop: Hop, probe: int, answer: dict[str, Any]) -> None:
            d = answer["destination"]
            result = d["outcome"]["result"]
            where = (
                f"{name}: {hop.caller} -> {hop.destination} {hop.headers}: explain: {d['outcome']}"
            )
            before = len(logs.lines(hop.caller))
            status = send(hop)
            no_certificate = (d.get("tls") or {}).get("mode") == "MUTUAL" and not hop.client_cert[0]
            if result == "refused" or no_certificate:  # (MUTUAL: explain says a client needs one)
                assert status.startswith("failed"), f"{where}; Envoy answered {status}"
                checked.append(f"{hop.caller} {hop.destination}: refused")
                return
            # A TCP proxy (a TCP service, TLS passed through) logs connections, not requests.
            tcp = hop.send == "tcp" or ("clusters" in d and "routes" not in d)
            seen = envoy_says(logs, hop, probe, before, tcp=tcp)
            where += f"; Envoy: {seen}, client saw {status}"
            route = d.get("route")
            # A condition explain cannot decide (another filter's metadata): Envoy took one
            # of the undecided routes, or else the one explain names.
            undecided = {r["name"] for r in d.get("routes", []) if r["matched"] is None}
            if undecided and blank(seen["route"]) in undecided:
                checked.append(f"{hop.caller} {hop.destination}: undecided {seen['route']}")
                return
            if not tcp:
                assert blank(seen["route"]) == (route["name"] if route else ""), where
            if result in DECIDED and not tcp:
                assert blank(seen["code"]) == result, where
            if result in DECIDED and tcp and hop.send == "tls":  # refused past the proxy
                assert status.startswith("failed"), where
            names = [c["name"] for c in d.get("clusters", [])]
            if result == "routed":
                assert blank(seen["cluster"]) in names, where
                if len(names) > 1 and not tcp:
                    split(hop, d, logs, where, [next(probes) for _ in range(SPLIT_SAMPLES)])
            checked.append(f"{hop.caller} {hop.destination}: {seen['route']} {seen['cluster']}")

        hops = walk(config, plan, ask, extra_lines(name, net))
        assert hops and checked, name


def split(hop: Hop, d: dict[str, Any], logs: AccessLogs, where: str, probes: list[int]) -> None:
    """A weighted split: every destination with a 20 % share or more shows up."""
    for probe in probes:
        send(hop.with_probe(probe))
    wanted = {str(p) for p in probes}

    def all_logged() -> Counter[str]:
        lines = [x for x in logs.lines(hop.caller) if x.get("probe") in wanted]
        return (
            Counter(blank(x["cluster"]) for x in lines) if len(lines) == len(wanted) else Counter()
        )

    seen = wait_until(all_logged, timeout=15, what=f"{SPLIT_SAMPLES} log lines")
    expected = {c["name"] for c in d["clusters"] if float(c["share"].rstrip("%")) >= 20}
    assert set(seen) <= {c["name"] for c in d["clusters"]}, (where, seen)
    assert expected <= set(seen), (where, seen)


def summary(d: dict[str, Any]) -> tuple[Any, ...]:
    route = d.get("route") or {}
    clusters = [(c["name"], c["share"]) for c in d.get("clusters", [])]
    return d["outcome"]["result"], route.get("name"), route.get("virtual_service"), clusters
