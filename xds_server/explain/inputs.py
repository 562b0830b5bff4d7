"""What `explain` reads: a mesh model and the resources each proxy is sent.

Two sources, one shape: the snapshot a running control plane publishes (its debug
address answers `/debug/explain` from it), or one built here from config files with
the server's own loader and generators (`offline`), so both give the answer the
proxies' Envoys act on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

from xds_server import xds_types
from xds_server.cache.snapshot import InconsistentSnapshot, MeshSnapshot
from xds_server.galley.loader import load_paths
from xds_server.galley.model import MeshConfig
from xds_server.generators.frozen import peek
from xds_server.generators.push_context import PushContext

# type_url -> resource name -> message, for one proxy.
Resources = Mapping[str, Mapping[str, Message]]
_TYPES = (xds_types.CLUSTER, xds_types.ENDPOINT, xds_types.LISTENER, xds_types.ROUTE)


@dataclass(frozen=True, slots=True)
class MeshState:
    mesh: MeshConfig
    push_context: PushContext
    resources: Callable[[str], Resources]  # node id -> what that proxy is sent
    generation: int
    source: str  # where this came from, for the reader

    def listeners(self, node_id: str) -> Mapping[str, Message]:
        return self.resources(node_id).get(xds_types.LISTENER, {})


class OfflineError(Exception):
    """The config files do not load or do not build; the message says why."""


def from_snapshot(snapshot: MeshSnapshot, source: str) -> MeshState:
    """The resources a published snapshot sends each proxy (SDS secrets left out)."""

    def resources(node_id: str) -> Resources:
        view = snapshot.view(node_id)
        return {t: {n: peek(r.message) for n, r in view.resources(t).items()} for t in _TYPES}

    return MeshState(snapshot.mesh, snapshot.push_context, resources, snapshot.generation, source)


def offline(
    paths: Sequence[Path], *, identity: bool = True, trust_domain: str = "cluster.local"
) -> MeshState:
    """Load and build `paths` as `serve --config` would (with workload identities unless
    `identity` is False, as `serve --no-identity`)."""
    result = load_paths(list(paths), trust_domain=trust_domain)
    if result.config is None:
        raise OfflineError("\n".join(str(e) for e in result.errors))
    mesh = result.config
    if identity:
        mesh = dataclasses.replace(mesh, workload_identity=True, trust_domain=trust_domain)
    try:
        snapshot = MeshSnapshot(mesh, 1)
    except InconsistentSnapshot as err:
        raise OfflineError(f"{', '.join(map(str, paths))}: {err}") from None
    where = ", ".join(str(p) for p in paths)
    mode = "mTLS" if identity else "no identities (--no-identity)"
    return from_snapshot(snapshot, f"config files {where} ({mode})")
