"""`pocketmesh status` and `pocketmesh config-dump`: ask the running server's debug address.

`status` is `istioctl proxy-status`: one row per connected proxy stream, one column
per xDS type (SYNCED / STALE / NOT SENT / ERROR with the version), then every NACK
message in full. `config-dump` prints what the server sends one proxy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from typing import Any
from urllib.parse import urlencode

import yaml

from xds_server.app import DEFAULT_DEBUG_ADDRESS
from xds_server.protocol.untrusted import KEEP_LIMIT, shown

TYPES = ("cluster", "listener", "endpoint", "route", "secret")
COLUMNS = {"cluster": "CDS", "listener": "LDS", "endpoint": "EDS", "route": "RDS", "secret": "SDS"}
VERSION_CHARS = 8


class Unreachable(Exception):
    pass


def register(sub: Any) -> None:
    status = sub.add_parser(
        "status", help="every connected proxy and its per-type sync state (like proxy-status)"
    )
    _debug_address(status)
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.set_defaults(func=run_status)

    dump = sub.add_parser("config-dump", help="what the server sends one proxy")
    dump.add_argument("proxy", help="proxy id: WORKLOAD.NAMESPACE, e.g. productpage.default")
    dump.add_argument("--type", choices=TYPES, help="only this xDS type")
    dump.add_argument("-o", "--output", choices=("json", "yaml"), default="json")
    _debug_address(dump)
    dump.set_defaults(func=run_config_dump)


def _debug_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug-address",
        default=DEFAULT_DEBUG_ADDRESS,
        help="the server's debug HTTP address (%(default)s)",
    )


def fetch(address: str, path: str, timeout: float = 5.0) -> Any:
    """GET a JSON document from the debug address."""
    host, _, port = address.rpartition(":")
    try:
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
    except (OSError, ValueError) as err:
        raise Unreachable(
            f"cannot reach the pocketmesh debug address {address} ({err}); "
            "is `pocketmesh serve` or `pocketmesh up` running? (--debug-address)"
        ) from None
    value = json.loads(body or b"null")
    if resp.status != 200:
        message = (
            value.get("error") if isinstance(value, dict) else body[:200].decode(errors="replace")
        )
        raise Unreachable(f"{address}{path}: HTTP {resp.status}: {message}")
    return value


# -- status ------------------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    try:
        streams = fetch(args.debug_address, "/debug/syncz")
        config = fetch(args.debug_address, "/debug/config")
    except Unreachable as err:
        print(f"pocketmesh status: {err}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps({"config": config, "proxies": streams}, indent=2))
    else:
        sys.stdout.write(render_status(streams, config))
    return 0


def render_status(streams: list[dict[str, Any]], config: dict[str, Any]) -> str:
    head = f"config generation {config.get('generation')} from {config.get('config_dir')}"
    errors = config.get("errors") or []
    if errors and not config.get("generation"):
        # Started on a broken config: nothing is sent, proxies keep their last config.
        head += f": {len(errors)} error(s), no valid config yet: proxies are sent nothing"
    elif errors:
        head += f": {len(errors)} error(s), serving the last good config"
    lines = [head]
    if config.get("ca_dir"):
        auth = "no proxy tokens"
        if config.get("proxy_auth"):
            tls = config.get("xds_tls")
            auth = "client certificates required" if tls else "proxy tokens required"
        lines.append(f"mesh CA {config['ca_dir']} ({auth})")
    if errors:
        # The rejected edit, located: what to fix while the last good config serves.
        lines += ["", "Config errors (not applied):", *(f"  {e}" for e in errors), ""]
    if not streams:
        lines.append("no proxies connected")
        return "\n".join(lines) + "\n"
    rows = [["NAME", "STREAM", *(COLUMNS[t] for t in TYPES), "CONNECTED"]]
    nacks: list[str] = []
    for conn in sorted(streams, key=lambda c: (c["proxy"], c["stream"])):
        cells = []
        for short in TYPES:
            state = conn["types"].get(short)
            cells.append(_cell(state))
            if state and state["state"] == "ERROR":
                # Envoy's words, but a client's: escaped, so they cannot drive the terminal.
                nacks.append(
                    f"{shown(conn['proxy'])} {short}: rejected version {state['sent_version']}, "
                    f"still running {state['acked_version'] or 'nothing'}:\n"
                    f"    {shown(state['nack'], KEEP_LIMIT)}"
                )
        kind = "delta" if conn.get("delta") else "sotw"
        rows.append([shown(conn["proxy"]), f"{conn['stream']} ({kind})", *cells,
                     f"{conn['connected_seconds']}s"])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if nacks:
        lines += ["", "NACKs (Envoy's message, verbatim):", *(f"  {n}" for n in nacks)]
    return "\n".join(lines) + "\n"


def _cell(state: dict[str, Any] | None) -> str:
    if state is None:
        return "-"  # not subscribed
    name = state["state"]
    # SYNCED shows what Envoy runs; STALE and ERROR what was sent and not (yet) accepted.
    version = state["acked_version"] if name == "SYNCED" else state["sent_version"]
    return f"{name} {version[:VERSION_CHARS]}" if version else name


# -- config-dump ----------------------------------------------------------------------


def run_config_dump(args: argparse.Namespace) -> int:
    query = {"proxy": args.proxy, **({"type": args.type} if args.type else {})}
    try:
        dump = fetch(args.debug_address, "/debug/config_dump?" + urlencode(query))
    except Unreachable as err:
        print(f"pocketmesh config-dump: {err}", file=sys.stderr)
        return 1
    if not any(dump.get("resources", {}).values()):
        print(
            f"pocketmesh config-dump: the server has nothing for proxy {args.proxy!r} "
            "(proxy ids are WORKLOAD.NAMESPACE; `pocketmesh status` lists connected ones)",
            file=sys.stderr,
        )
        return 1
    if args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(dump, sort_keys=False))
    else:
        print(json.dumps(dump, indent=2))
    return 0
