"""`pocketmesh bench`: convergence, memory and cost against the bare-gRPC floor."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from xds_server.bench import chaos
from xds_server.bench.report import render, render_markdown, write_json
from xds_server.bench.run import PRESETS, BenchOptions, run


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark convergence and cost with simulated proxies and real Envoy",
        description=(
            "Generate a mesh, start pocketmesh (and the bare-gRPC floor) as separate "
            "processes, connect simulated ADS proxies from worker processes, and time "
            "initial sync, a route change and an endpoint change; then time one real "
            "Envoy becoming ready over ADS against a static bootstrap."
        ),
    )
    p.add_argument(
        "--preset",
        action="append",
        choices=sorted(PRESETS),
        help="mesh shape(s) to run; repeatable (default: scoped and unscoped)",
    )
    p.add_argument("--services", type=int, help="override the preset's service count")
    p.add_argument("--endpoints", type=int, help="endpoints (WorkloadEntries) per service")
    p.add_argument("--namespaces", type=int, help="namespaces the services spread over")
    p.add_argument("--proxies", type=int, help="simulated proxies")
    p.add_argument("--protocol", choices=["sotw", "delta", "both"], default="both")
    p.add_argument("--no-floor", action="store_true", help="skip the bare-gRPC floor runs")
    p.add_argument("--no-changes", action="store_true", help="initial sync only")
    p.add_argument("--workers", type=int, default=2, help="proxy worker processes (%(default)s)")
    p.add_argument(
        "--envoy-clusters",
        default="100,1000,5000",
        help="EDS cluster counts for the real-Envoy runs; '' to skip (%(default)s)",
    )
    p.add_argument("--envoy-runs", type=int, default=3, help="runs per count (median)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON of every figure")
    p.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    p.add_argument("--workdir", type=Path, help="keep configs and logs here (default: temp)")
    p.add_argument(
        "--chaos",
        nargs="?",
        const=",".join(chaos.SCENARIOS),
        metavar="SCENARIO,...",
        help="run fault scenarios instead: " + ", ".join(chaos.SCENARIOS) + " (default: all;"
        " see docs/faults.md); figures go to --out (chaos.json)",
    )
    p.add_argument(
        "--small", action="store_true", help="with --chaos: the CI size (short outages, samples)"
    )
    p.set_defaults(func=main)  # fmt: skip


def options_from(args: argparse.Namespace) -> BenchOptions:
    meshes = []
    for name in args.preset or ["scoped", "unscoped"]:
        spec = PRESETS[name]
        overrides = {
            k: getattr(args, k)
            for k in ("services", "endpoints", "namespaces", "proxies")
            if getattr(args, k) is not None
        }
        meshes.append(replace(spec, **overrides))
    clusters = tuple(int(c) for c in args.envoy_clusters.split(",") if c.strip())
    return BenchOptions(
        meshes=meshes,
        protocols=("sotw", "delta") if args.protocol == "both" else (args.protocol,),
        floor=not args.no_floor,
        changes=not args.no_changes,
        workers=args.workers,
        envoy_clusters=clusters,
        envoy_runs=args.envoy_runs,
        workdir=args.workdir,
    )


def run_chaos(args: argparse.Namespace) -> int:
    scenarios = tuple(s.strip() for s in args.chaos.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in chaos.SCENARIOS]
    if unknown:
        print(
            f"pocketmesh bench: unknown chaos scenario {', '.join(unknown)}; "
            f"one of {', '.join(chaos.SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    out = args.out if args.out != Path("bench.json") else Path("chaos.json")
    results = chaos.run(scenarios, small=args.small, workdir=args.workdir)
    write_json(results, out)
    text = chaos.render(results)
    if args.markdown is not None:
        args.markdown.write_text(text)
    print(text)
    print(f"every figure: {out}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.chaos is not None:
        return run_chaos(args)
    try:
        options = options_from(args)
    except ValueError as err:
        print(f"pocketmesh bench: {err}", file=sys.stderr)
        return 2
    results = run(options)
    write_json(results, args.out)
    if args.markdown is not None:
        args.markdown.write_text(render_markdown(results))
    print(render(results))
    print(f"\nevery figure: {args.out}")
    return 0
