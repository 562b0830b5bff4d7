"""`pocketmesh explain WORKLOAD [HOST[:PORT][/PATH]]`: why a request goes where it goes.

Like `istioctl x describe`: the workload's Sidecar scope, PeerAuthentication mode per
port, AuthorizationPolicies and RequestAuthentications; with a destination, the
virtual host and route that match (and why the earlier ones do not), the
VirtualService rule, DestinationRule and subset, the clusters and endpoints with their
weights, the TLS on the wire, and what each endpoint's sidecar does with it.

It asks the running control plane (`--debug-address`, as `status` does: the config it
serves, not the files as they are now), or with `--config PATH` builds the same answer
offline from config files with the server's loader and generators.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from xds_server.app import DEFAULT_DEBUG_ADDRESS
from xds_server.commands.status import Unreachable, fetch
from xds_server.explain import (
    BadRequest,
    OfflineError,
    UnknownWorkload,
    explain,
    offline,
    parse_destination,
    render,
)

EXAMPLES = """\
examples:
  pocketmesh explain productpage                         # what applies to the workload
  pocketmesh explain productpage reviews:9080/ -H 'end-user: jason'
  pocketmesh explain ingressgateway.default 127.0.10.10:8080/ -H 'Host: bookinfo.example'
  pocketmesh explain sleep tcp-echo:9000                 # a TCP service
  pocketmesh explain productpage reviews:9080 --config config/examples/request-routing
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "explain",
        help="why a workload's request goes where it goes (like istioctl x describe)",
        description=__doc__.split("\n\n", 1)[1],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "workload", help="the proxy: NAME.NAMESPACE, NAME (in default), or its address"
    )
    parser.add_argument(
        "destination",
        nargs="?",
        metavar="HOST[:PORT][/PATH]",
        help="what the workload calls, as its app sends it through its sidecar "
        "(http://HOST[:PORT]/PATH); for a gateway the host and port a client uses "
        "(https://... for TLS); a TCP service is HOST:PORT",
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeat); `Host: x` sets the authority",
    )
    parser.add_argument("-X", "--method", default="GET", help="request method (%(default)s)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--config",
        action="append",
        type=Path,
        metavar="PATH",
        help="compute offline from these config files or directories (repeat to merge), "
        "instead of asking the running control plane",
    )
    parser.add_argument(
        "--no-identity",
        action="store_true",
        help="with --config: a mesh without workload identities, as `serve --no-identity`",
    )
    parser.add_argument(
        "--debug-address",
        default=DEFAULT_DEBUG_ADDRESS,
        help="the running control plane's debug address (%(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        result = _offline(args) if args.config else _online(args)
    except (BadRequest, UnknownWorkload, OfflineError, Unreachable) as err:
        print(f"pocketmesh explain: {err}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        sys.stdout.write(render(result))
    return 0


def _offline(args: argparse.Namespace) -> dict[str, Any]:
    missing = [str(p) for p in args.config if not p.exists()]
    if missing:
        raise OfflineError(f"no such config path: {', '.join(missing)}")
    request = None
    if args.destination:
        request = parse_destination(args.destination, headers=args.header, method=args.method)
    state = offline(args.config, identity=not args.no_identity)
    return explain(state, args.workload, request)


def _online(args: argparse.Namespace) -> dict[str, Any]:
    if args.destination:  # checked here: a typo is reported without a round trip
        parse_destination(args.destination, headers=args.header, method=args.method)
    query: list[tuple[str, str]] = [("proxy", args.workload)]
    if args.destination:
        query += [("dest", args.destination), ("method", args.method)]
        query += [("header", h) for h in args.header]
    try:
        result: dict[str, Any] = fetch(args.debug_address, "/debug/explain?" + urlencode(query))
    except ValueError:  # not JSON: a server without /debug/explain
        raise Unreachable(
            f"the control plane at {args.debug_address} does not answer /debug/explain "
            "(an older pocketmesh?); compute offline: --config PATH"
        ) from None
    except Unreachable as err:
        text = str(err)
        if ": HTTP 4" in text:  # the server's own words: unknown proxy, bad destination
            raise Unreachable(text.split(": HTTP ", 1)[1][5:]) from None
        raise Unreachable(f"{text}; or compute offline: --config PATH") from None
    result["source"] = f"{result['source']} at {args.debug_address}"
    return result
