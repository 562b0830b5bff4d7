"""Workload certificates: one SVID per (namespace, serviceAccount), renewed on time.

Wraps Citadel's `CertificateAuthority` with the cache a control plane needs:
certificates are issued on first use, shared by every proxy of one identity,
renewed once the CA's clock passes their `renew_at` (half-life, jittered), and
all re-issued when a new root starts signing. With a CA directory, every SVID is
also kept on disk (`ca.SvidStore`): a restarted control plane hands each proxy the
certificate it already holds, and issues only what is due. Root rotation is driven from here
in three steps that keep every request working:

1. `begin_root_rotation`: the new root joins the trust bundle (ROOTCA) only;
2. `activate_new_root` (once every proxy has ACKed that bundle): the new root
   signs, and every SVID is re-issued under it;
3. `prune`: the old root leaves the bundle once the last certificate it signed
   has expired.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from ca import CertificateAuthority, IssuedSvid, RootEntry, SpiffeId, SvidStore
from ca.svid import DEFAULT_SVID_TTL
from xds_server.identity import metrics

log = logging.getLogger("pocketmesh.identity")

IdentityKey = tuple[str, str]  # (namespace, serviceAccount)


class WorkloadIssuer:
    def __init__(
        self,
        ca: CertificateAuthority,
        ttl: timedelta = DEFAULT_SVID_TTL,
        store: SvidStore | None = None,
    ) -> None:
        self.ca = ca
        self.ttl = ttl
        self.store = store
        self._svids: dict[IdentityKey, IssuedSvid] = {}
        self._lock = threading.Lock()
        if store is not None:
            store.prune(ca.clock())

    @property
    def trust_domain(self) -> str:
        return self.ca.trust_domain

    def spiffe_id(self, namespace: str, service_account: str) -> SpiffeId:
        return SpiffeId.for_workload(self.trust_domain, namespace, service_account)

    def svid(self, namespace: str, service_account: str) -> IssuedSvid:
        """The current SVID of an identity, issued on first use."""
        key = (namespace, service_account)
        with self._lock:
            svid = self._svids.get(key)
            if svid is None:
                svid = self._kept(key)
            if svid is None:
                svid = self._issue(key)
                metrics.svids_issued.labels("first").inc()
            self._svids[key] = svid
            return svid

    def _kept(self, key: IdentityKey) -> IssuedSvid | None:
        """The SVID kept on disk for `key`, if it may still be handed out."""
        if self.store is None:
            return None
        svid = self.store.load(self.spiffe_id(*key))
        if svid is None or not self.ca.reusable(svid, self.ttl):
            return None
        metrics.svids_reused.inc()
        log.info(
            "kept SVID for %s reused (serial %x, renewal at %s)",
            svid.spiffe_id, svid.serial, f"{svid.renew_at:%Y-%m-%d %H:%M:%S}",
        )  # fmt: skip
        return svid

    def issued(self) -> dict[IdentityKey, IssuedSvid]:
        """The current SVID of every identity issued so far."""
        with self._lock:
            return dict(self._svids)

    def renew_due(self) -> list[IdentityKey]:
        """Re-issue every SVID whose renewal time has come; returns the identities renewed."""
        now = self.ca.clock()
        with self._lock:
            due = [key for key, svid in self._svids.items() if now >= svid.renew_at]
            for key in due:
                self._svids[key] = self._issue(key)
                metrics.svids_issued.labels("renewal").inc()
        for namespace, sa in due:
            log.info("renewed SVID for %s", self.spiffe_id(namespace, sa))
        return due

    def reissue_all(self) -> list[IdentityKey]:
        with self._lock:
            keys = list(self._svids)
            for key in keys:
                self._svids[key] = self._issue(key)
                metrics.svids_issued.labels("root").inc()
        return keys

    def _issue(self, key: IdentityKey) -> IssuedSvid:
        svid = self.ca.issue_svid((self.trust_domain, *key), ttl=self.ttl)
        if self.store is not None:
            self.store.save(svid)
        return svid

    # -- roots --------------------------------------------------------------------

    def trust_bundle_pem(self) -> bytes:
        metrics.trusted_roots.set(len(self.ca.trust_bundle))
        return self.ca.trust_bundle_pem()

    @property
    def rotation_pending(self) -> bool:
        return self.ca.rotation.pending is not None

    def begin_root_rotation(self) -> RootEntry:
        entry = self.ca.begin_root_rotation()
        log.info("root rotation: new root %s added to the trust bundle", entry.key_id)
        return entry

    def activate_new_root(self) -> RootEntry:
        """Sign with the pending root from now on and move every identity to it.

        Forced past the CA's minimum overlap: the caller has seen every proxy ACK
        the bundle holding the new root, which is what the overlap stands for.
        """
        entry = self.ca.activate_new_root(force=True)
        renewed = self.reissue_all()
        log.info(
            "root rotation: root %s now signs; %d identities re-issued", entry.key_id, len(renewed)
        )
        return entry

    def prune(self) -> tuple[RootEntry, ...]:
        gone = self.ca.prune()
        for entry in gone:
            log.info("root rotation: root %s left the trust bundle", entry.key_id)
        return gone
