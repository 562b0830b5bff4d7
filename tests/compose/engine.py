"""The compose demo on a real Docker engine, for tests/compose (marker `docker`).

`ComposeProject` runs the repository's docker-compose.yml as docs/compose.md says
(compose v2 `docker compose` where installed, else v1 `docker-compose`), from a copy of
the checkout, so the tests' live edits touch only the copy, under a project name of its
own and free host ports. `remove()` takes down its containers, networks and volumes,
and what the tests started beside them, and says what it had to force.

Without an engine the tests skip, saying why; under CI=true they fail instead
(.ci/docker-up provides the engine, compose and the base images there).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from tests.e2e.harness import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
# What the compose file and its build context read (.dockerignore narrows the rest).
CHECKOUT = ("docker-compose.yml", ".dockerignore", "pyproject.toml", "README.md",
            "xds_server", "ca", "config", "deploy")  # fmt: skip
BASE_IMAGES = ("python:3.12-slim", "envoyproxy/envoy:v1.40-latest")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
TEST_LABEL = "io.pocketmesh.test-project"  # containers a test starts beside the project
UP_TIMEOUT = 900  # a cold build downloads the dependencies from PyPI


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def unavailable(reason: str) -> None:
    """Skip locally; fail under CI, where the engine must be there."""
    hint = "(.ci/docker-up installs and starts one, and builds the base images)"
    if in_ci():
        pytest.fail(f"CI=true but {reason} {hint}", pytrace=False)
    pytest.skip(f"{reason} {hint}")


def compose_command() -> list[str] | None:
    """Compose v2 (`docker compose`) if the docker CLI has it, else v1, else None."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return command
    return None


def engine() -> tuple[docker.DockerClient, list[str]]:
    """A client of a running engine and the compose command, or skip/fail saying why."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as err:  # docker's own errors, and requests' when no socket answers
        unavailable(f"no Docker engine answers ({type(err).__name__}: {err})")
        raise  # unreachable: unavailable() skips or fails
    command = compose_command()
    if command is None:
        unavailable("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")
        raise AssertionError("unreachable")
    missing = [image for image in BASE_IMAGES if not _has_image(client, image)]
    if missing:
        unavailable(f"base images missing: {', '.join(missing)}")
    return client, command


def _has_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


PROJECT_PREFIX = "pocketmesh-test-"


def remove_abandoned(client: docker.DockerClient) -> list[str]:
    """Projects of test runs whose process is gone (killed mid-run): their containers
    would come back with the engine (restart: unless-stopped) and hold the subnet."""
    removed = []
    for container in client.containers.list(all=True):
        labels = container.labels
        if _abandoned(labels.get(PROJECT_LABEL) or labels.get(TEST_LABEL) or ""):
            container.remove(force=True)
            removed.append(container.name)
    for kind in (client.networks, client.volumes):
        for item in kind.list(filters={"label": PROJECT_LABEL}):
            if _abandoned((item.attrs.get("Labels") or {}).get(PROJECT_LABEL, "")):
                item.remove()
                removed.append(item.name)
    return removed


def _abandoned(project: str) -> bool:
    pid = project.removeprefix(PROJECT_PREFIX).split("-")[0]
    return project.startswith(PROJECT_PREFIX) and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def copy_checkout(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CHECKOUT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


class ComposeProject:
    def __init__(self, client: docker.DockerClient, command: list[str], directory: Path) -> None:
        self.client = client
        self.command = command
        self.directory = directory
        self.name = f"{PROJECT_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.gateway_port = free_port()
        self.debug_port = free_port()
        # Every volume there was before: anything else at the end is this project's.
        self.volumes_before = {v.name for v in client.volumes.list()}
        self.env = {
            **os.environ,
            "POCKETMESH_GATEWAY_PORT": str(self.gateway_port),
            "POCKETMESH_DEBUG_PORT": str(self.debug_port),
        }

    # -- compose ----------------------------------------------------------------------

    def compose(self, *args: str, timeout: float = 120) -> str:
        argv = [*self.command, "-p", self.name, *args]
        result = subprocess.run(
            argv, cwd=self.directory, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{self.logs()}"
            )
        return result.stdout + result.stderr

    def up(self, *, build: bool) -> None:
        self.compose("up", "-d", *(["--build"] if build else []), timeout=UP_TIMEOUT)

    def down(self, *, volumes: bool = False) -> None:
        self.compose("down", "--timeout", "10", *(["-v"] if volumes else []))

    def logs(self, tail: int = 40) -> str:
        out = []
        for container in self.containers():
            text = container.logs(tail=tail).decode(errors="replace")
            out.append(f"--- {container.name} ({container.status})\n{text}")
        return "\n".join(out)

    # -- what the engine holds for this project ---------------------------------------

    def containers(self) -> list[Container]:
        label = f"{PROJECT_LABEL}={self.name}"
        return list(self.client.containers.list(all=True, filters={"label": label}))

    def networks(self) -> list[Any]:
        label = f"{PROJECT_LABEL}={self.name}"
        return list(self.client.networks.list(filters={"label": label}))

    def volumes(self) -> list[Any]:
        """The project's volumes, named or anonymous (made since it was created)."""
        label = f"{PROJECT_LABEL}={self.name}"
        labelled = self.client.volumes.list(filters={"label": label})
        names = {v.name for v in labelled}
        others = [
            v
            for v in self.client.volumes.list()
            if v.name not in self.volumes_before and v.name not in names
        ]
        return [*labelled, *others]

    def container(self, service: str) -> Container:
        label = [f"{PROJECT_LABEL}={self.name}", f"{SERVICE_LABEL}={service}"]
        (found,) = self.client.containers.list(all=True, filters={"label": label})
        return found

    @property
    def network(self) -> str:
        return f"{self.name}_mesh"

    def run_beside(self, image: str, command: list[str], **kw: Any) -> Container:
        """A container on the project's network that is not part of it (an attacker)."""
        return self.client.containers.run(
            image, command, network=self.network, detach=True,
            labels={TEST_LABEL: self.name}, **kw,
        )  # fmt: skip

    def remove(self) -> list[str]:
        """`down -v`, then force away anything left; returns what had to be forced."""
        forced: list[str] = []
        # The tests' own containers first: attached, they would keep the network.
        strays = self.client.containers.list(
            all=True, filters={"label": f"{TEST_LABEL}={self.name}"}
        )
        for container in strays:
            container.remove(force=True, v=True)
        try:
            self.down(volumes=True)
        except (AssertionError, subprocess.TimeoutExpired) as err:
            forced.append(f"down -v failed: {err}")
        for container in self.containers():
            forced.append(f"container {container.name}")
            container.remove(force=True, v=True)
        for network in self.networks():
            forced.append(f"network {network.name}")
            network.remove()
        for volume in self.volumes():
            forced.append(f"volume {volume.name}")
            volume.remove(force=True)
        return forced

    # -- talking to it ----------------------------------------------------------------

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def debug(self) -> str:
        return f"http://127.0.0.1:{self.debug_port}"

    def debug_json(self, path: str) -> Any:
        return json.loads(fetch(self.debug + path)[1])


def fetch(url: str, *, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def chain_problems(reply: dict[str, Any], path: str = "gateway") -> list[str]:
    """Every hop of a demo-app reply that did not answer 200, with where it was."""
    problems = []
    for upstream in reply.get("upstreams", []):
        where = f"{path} -> {upstream.get('url')}"
        if upstream.get("status") != 200:
            problems.append(f"{where}: {upstream.get('status')} {upstream.get('error', '')}")
        elif isinstance(upstream.get("answer"), dict):
            problems += chain_problems(upstream["answer"], where)
    return problems


def wait_for_chain(project: ComposeProject, timeout: float = 120) -> dict[str, Any]:
    """The first full answer through the gateway: every hop 200."""

    def chain() -> dict[str, Any] | None:
        status, body = fetch(project.gateway + "/")
        reply = json.loads(body) if status == 200 else None
        return reply if reply is not None and not chain_problems(reply) else None

    try:
        return dict(
            wait_until(chain, timeout=timeout, interval=0.5, what="the chain via the gateway")
        )
    except AssertionError as err:
        raise AssertionError(f"{err}\n{project.logs()}") from None


def wait_all_synced(project: ComposeProject, proxies: int, timeout: float = 60) -> list[Any]:
    """/debug/syncz: `proxies` streams, every type SYNCED at the current generation."""
    generation = project.debug_json("/debug/config")["generation"]

    def synced() -> list[Any] | None:
        streams = project.debug_json("/debug/syncz")
        if len(streams) != proxies:
            return None
        for stream in streams:
            states = {t["state"] for t in stream["types"].values()}
            if stream["generation"] != generation or states != {"SYNCED"}:
                return None
        return list(streams)

    return list(wait_until(synced, timeout=timeout, interval=0.2, what=f"{proxies} proxies synced"))
