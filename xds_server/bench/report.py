"""The terminal table and the JSON file of a benchmark run."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def _get(d: dict[str, Any] | None, path: str) -> float | None:
    value: Any = d
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, int | float) else None


# (label, path in a scenario dict, unit, target text)
FLEET_ROWS = (
    ("initial sync, all ACKed", "initial.all_acked_s", "s", "<= 3 s (2 s unscoped)"),
    ("initial sync, p99 proxy", "initial.per_proxy_s.p99", "s", ""),
    ("server CPU, initial sync", "initial.server_cpu_s", "s", ""),
    ("server CPU per proxy sync", "initial.server_cpu_per_proxy_ms", "ms", ""),
    ("bytes per proxy, initial", "initial.bytes_per_proxy", "B", ""),
    ("stream redials (setup failed)", "initial.reconnects", "", ""),
    ("route change: p50 from trigger", "route.from_trigger_s.p50", "s", ""),
    ("route change: p99 from trigger", "route.from_trigger_s.p99", "s", "<= 0.25 s"),
    ("route change: max from trigger", "route.from_trigger_s.max", "s", ""),
    ("route change: build+publish", "route.build_and_publish_s", "s", ""),
    ("route change: p99 from publish", "route.from_publish_s.p99", "s", ""),
    ("route change: bytes/proxy", "route.bytes_per_updated_proxy", "B", ""),
    ("route change: proxies updated", "route.proxies_updated", "", ""),
    ("endpoint change: p50 from trigger", "endpoint.from_trigger_s.p50", "s", ""),
    ("endpoint change: p99 from trigger", "endpoint.from_trigger_s.p99", "s", "<= 0.25 s"),
    ("endpoint change: max from trigger", "endpoint.from_trigger_s.max", "s", ""),
    ("endpoint change: build+publish", "endpoint.build_and_publish_s", "s", ""),
    ("endpoint change: p99 from publish", "endpoint.from_publish_s.p99", "s", ""),
    ("endpoint change: bytes/proxy", "endpoint.bytes_per_updated_proxy", "B", ""),
    ("server peak RSS", "server_peak_rss_mb", "MB", "< 500 MB"),
)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit:
        return f"{value:g} {unit}"
    return f"{value:g}"


def _table(header: list[str], rows: list[list[str]]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    yield "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    yield "  ".join("-" * w for w in widths)
    for row in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))


def render(results: dict[str, Any]) -> str:
    lines = []
    m = results.get("machine", {})
    lines.append(f"pocketmesh bench: {m.get('nproc')} CPUs, {m.get('cpu_model')}")
    for group in results.get("fleet", []):
        lines.append("")
        lines.append(f"{group['mesh']} -- {group['protocol']}")
        pm, floor = group.get("pocketmesh"), group.get("floor")
        rows = []
        for label, path, unit, target in FLEET_ROWS:
            ours, base = _get(pm, path), _get(floor, path)
            if ours is None and base is None:
                continue
            ratio = f"{ours / base:.2f}x" if ours is not None and base else "-"
            rows.append([label, _fmt(ours, unit), _fmt(base, unit), ratio, target])
        lines.extend(_table(["figure", "pocketmesh", "floor", "ratio", "target"], rows))
    envoy = results.get("envoy", [])
    if envoy:
        lines.append("")
        lines.append("one real Envoy, ready (admin /ready 200), median of runs")
        rows = [
            [
                f"{e['eds_clusters']:,}",
                _fmt(e["xds_ready_s"], "s"),
                _fmt(e["static_ready_s"], "s"),
                f"{e['ratio']:.2f}x",
                _fmt(e.get("floor_ready_s"), "s"),
                _ratio(e.get("ratio_to_floor")),
                f"{e['server_cpu_per_envoy_s'] * 1000:.1f} ms",
            ]
            for e in envoy
        ]
        header = [
            "EDS clusters",
            "pocketmesh ADS",
            "static .pb",
            "ratio",
            "floor ADS",
            "vs floor",
            "server CPU/Envoy",
        ]
        lines.extend(_table(header, rows))
        lines.append("targets: ratio <= 1.1x; server CPU per Envoy <= 20 ms at 1,000 clusters")
    for name, figure in results.get("micro", {}).items():
        lines.append(f"{name}: {figure}")
    return "\n".join(lines)


def render_markdown(results: dict[str, Any]) -> str:
    """The same tables as `render`, as Markdown (for the README's performance section)."""
    lines = []
    for group in results.get("fleet", []):
        pm, floor = group.get("pocketmesh"), group.get("floor")
        lines += ["", f"**{group['mesh']}, {group['protocol']}**", ""]
        lines += ["| figure | pocketmesh | floor | ratio | target |", "|---|---|---|---|---|"]
        for label, path, unit, target in FLEET_ROWS:
            ours, base = _get(pm, path), _get(floor, path)
            if ours is None and base is None:
                continue
            ratio = f"{ours / base:.2f}x" if ours is not None and base else "-"
            lines.append(
                f"| {label} | {_fmt(ours, unit)} | {_fmt(base, unit)} | {ratio} | {target} |"
            )
    envoy = results.get("envoy", [])
    if envoy:
        lines += [
            "",
            "| EDS clusters | pocketmesh ADS | static .pb | ratio | bare-gRPC floor ADS "
            "| pocketmesh vs floor | server CPU per Envoy |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for e in envoy:
            lines.append(
                f"| {e['eds_clusters']:,} | {_fmt(e['xds_ready_s'], 's')} | "
                f"{_fmt(e['static_ready_s'], 's')} | {e['ratio']:.2f}x | "
                f"{_fmt(e.get('floor_ready_s'), 's')} | {_ratio(e.get('ratio_to_floor'))} | "
                f"{e['server_cpu_per_envoy_s'] * 1000:.1f} ms |"
            )
    return "\n".join(lines).strip() + "\n"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
