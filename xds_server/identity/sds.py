"""The cache's SecretSource: each proxy's `default` and `ROOTCA`, as Resources.

A proxy's identity comes from its WorkloadEntry in the snapshot being served
(namespace + serviceAccount); a node id that names no workload gets no secret.
Each Resource is serialized once per issued certificate and shared by every
proxy of that identity. `epoch` counts changes; `bump()` is called after a
renewal or a bundle change, and the cache then wakes the streams.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ca import CaError
from xds_server import xds_types
from xds_server.cache.resource import Resource
from xds_server.identity.issuer import IdentityKey, WorkloadIssuer
from xds_server.identity.secrets import ROOT_SECRET, WORKLOAD_SECRET, root_secret, workload_secret

if TYPE_CHECKING:
    from xds_server.cache.snapshot import MeshSnapshot

log = logging.getLogger("pocketmesh.identity")


class IdentitySecrets:
    def __init__(self, issuer: WorkloadIssuer) -> None:
        self.issuer = issuer
        self._epoch = 0
        self._lock = threading.Lock()
        self._workload: dict[IdentityKey, tuple[int, Resource]] = {}  # serial -> resource
        self._root: tuple[bytes, Resource] | None = None
        self._failed: set[IdentityKey] = set()

    @property
    def epoch(self) -> int:
        return self._epoch

    def bump(self) -> None:
        with self._lock:
            self._epoch += 1

    def identity_of(self, node_id: str, snapshot: MeshSnapshot) -> IdentityKey | None:
        proxy = snapshot.push_context.proxy(node_id)
        if proxy is None:
            return None
        return (proxy.namespace, proxy.workload.service_account)

    def resources(self, node_id: str, snapshot: MeshSnapshot) -> Mapping[str, Resource]:
        key = self.identity_of(node_id, snapshot)
        if key is None:
            return {}
        try:
            workload = self._workload_resource(key)
        except CaError as err:
            # No certificate (e.g. the CA itself expired): serve the rest, say why, once.
            if key not in self._failed:
                self._failed.add(key)
                log.error("cannot issue an SVID for proxy %s: %s", node_id, err)
            return {ROOT_SECRET: self._root_resource()}
        self._failed.discard(key)
        return {WORKLOAD_SECRET: workload, ROOT_SECRET: self._root_resource()}

    def _workload_resource(self, key: IdentityKey) -> Resource:
        svid = self.issuer.svid(*key)
        with self._lock:
            held = self._workload.get(key)
            if held is None or held[0] != svid.serial:
                resource = Resource(xds_types.SECRET, WORKLOAD_SECRET, workload_secret(svid))
                held = self._workload[key] = (svid.serial, resource)
            return held[1]

    def _root_resource(self) -> Resource:
        pem = self.issuer.trust_bundle_pem()
        with self._lock:
            if self._root is None or self._root[0] != pem:
                self._root = (pem, Resource(xds_types.SECRET, ROOT_SECRET, root_secret(pem)))
            return self._root[1]
