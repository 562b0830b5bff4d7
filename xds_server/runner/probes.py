"""How `up` proves that what answers on a port is the process it started.

A port that answers is not proof: another process may hold it (a mesh left running,
anything on 15014). So each check names the process:

- the control plane's `/ready` carries its pid (`x-pocketmesh-pid`);
- an Envoy's admin `/server_info` carries its node id and the run id `up` put in
  its bootstrap's node metadata;
- an app answers `GET /_pocketmesh/identity` (HTTP) or the line
  `pocketmesh-identity` (TCP) with its workload and pid.

All of it uses http.client, not urllib: an `http_proxy` in the environment must not
get in the way of loopback requests.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from xds_server.bootstrap import split_host_port

RUN_ID_KEY = "POCKETMESH_UP_RUN"  # node metadata: which `up` started this Envoy
APP_IDENTITY_PATH = "/_pocketmesh/identity"
TCP_IDENTITY_LINE = b"pocketmesh-identity\n"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def request(
    address: str,
    path: str,
    *,
    method: str = "GET",
    host: str = "",
    timeout: float = 1.0,
    headers: dict[str, str] | None = None,
) -> Answer:
    hostname, port = split_host_port(address)
    conn = http.client.HTTPConnection(hostname, port, timeout=timeout)
    try:
        sent = {**({"Host": host} if host else {}), **(headers or {})}
        conn.request(method, path, headers=sent)
        resp = conn.getresponse()
        body = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def control_plane_pid(debug_address: str) -> int | None:
    """The pid of the control plane whose `/ready` answers 200 there, else None."""
    answer = request(debug_address, "/ready")
    if answer.status != 200:
        return None
    pid = answer.headers.get("x-pocketmesh-pid", "")
    return int(pid) if pid.isdigit() else None


def envoy_node(admin_address: str) -> tuple[str, str]:
    """(node id, run id) of the Envoy whose admin answers there."""
    info = request(admin_address, "/server_info").json()
    node = info.get("node") or {}
    return str(node.get("id", "")), str((node.get("metadata") or {}).get(RUN_ID_KEY, ""))


def envoy_live(admin_address: str) -> bool:
    """LIVE (initial xDS fetch done) and no listener still warming (waiting for secrets
    or clusters): its listeners take connections."""
    if request(admin_address, "/ready").status != 200:
        return False
    stats = request(admin_address, "/stats?filter=listener_manager.total_listeners_warming$")
    for line in stats.body.decode().splitlines():
        name, _, value = line.partition(": ")
        if name.endswith("total_listeners_warming"):
            return value.strip() == "0"
    return True


def app_identity(listen: str, protocol: str) -> dict[str, Any]:
    if protocol == "tcp":
        host, port = split_host_port(listen)
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(TCP_IDENTITY_LINE)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        found = json.loads(data or b"null")
    else:
        answer = request(listen, APP_IDENTITY_PATH)
        found = answer.json() if answer.status == 200 else None
    return found if isinstance(found, dict) else {}


# -- the control plane's debug address ------------------------------------------------


def listen_addresses(debug_address: str, proxy: str) -> list[tuple[str, int]]:
    """Where the control plane tells `proxy` to listen (its listeners' addresses)."""
    query = urlencode({"proxy": proxy, "type": "listener"})
    dump = request(debug_address, f"/debug/config_dump?{query}", timeout=5.0).json()
    found = []
    for item in (dump.get("resources") or {}).get("listener") or ():
        address = ((item.get("resource") or {}).get("address") or {}).get("socket_address") or {}
        if "address" in address and "port_value" in address:
            found.append((str(address["address"]), int(address["port_value"])))
    return found


def in_use(host: str, port: int) -> str:
    """Why `host:port` cannot be listened on ("" if it can). Binding without
    SO_REUSEPORT fails wherever anything listens, even an Envoy that set it: Envoy's
    listeners do, and two of them on one address would split the connections silently.
    (With SO_REUSEADDR, as Linux still refuses it next to a listening socket.)"""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            # As Envoy binds: connections of an earlier run in TIME_WAIT do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        return err.strerror or str(err)
    return ""


def syncz(debug_address: str) -> list[dict[str, Any]]:
    streams = request(debug_address, "/debug/syncz", timeout=5.0).json()
    return streams if isinstance(streams, list) else []


def config_status(debug_address: str) -> dict[str, Any]:
    status = request(debug_address, "/debug/config", timeout=5.0).json()
    return status if isinstance(status, dict) else {}


@dataclass(frozen=True, slots=True)
class Reload:
    ok: bool
    generation: int
    errors: tuple[str, ...]


def reload(
    debug_address: str,
    hold: Iterable[str] = (),
    timeout: float = 120.0,
    changed: Iterable[str] = (),
) -> Reload:
    """`POST /debug/reload`: load, validate and publish now; the answer says how it went.
    `hold`: proxy ids whose endpoints stay out of this generation (their sidecars still
    get their config), until a reload without them. `changed`: the edited files, which
    the control plane reports as the push's trigger."""
    query = {"hold": ",".join(sorted(hold)), "changed": ",".join(sorted(changed))}
    query = {k: v for k, v in query.items() if v}
    path = "/debug/reload" + (f"?{urlencode(query)}" if query else "")
    answer = request(debug_address, path, method="POST", timeout=timeout)
    body = answer.json() if answer.body else {}
    if not isinstance(body, dict) or "generation" not in body:
        raise OSError(f"POST /debug/reload answered HTTP {answer.status}: {answer.body[:200]!r}")
    return Reload(bool(body.get("ok")), int(body["generation"]), tuple(body.get("errors") or ()))


def proxy_synced(streams: list[dict[str, Any]], proxy: str, generation: int) -> str | None:
    """None while `proxy` is not yet SYNCED at `generation`; "" once it is; Envoy's NACK
    message if it rejected something (waiting will not mend that)."""
    mine = [s for s in streams if s.get("proxy") == proxy]
    if not mine:
        return None
    for stream in mine:
        for short, state in (stream.get("types") or {}).items():
            if state.get("state") == "ERROR":
                return f"{short}: {state.get('nack')}"
        if stream.get("generation", 0) < generation:
            return None
        if any(t.get("state") != "SYNCED" for t in (stream.get("types") or {}).values()):
            return None
    return ""
