"""Issued SVIDs kept beside the CA, so a restarted control plane re-issues nothing.

One file per SPIFFE ID under ``<ca dir>/svids/`` (0700), named by a hash of the ID,
holding the chain, the private key and the renewal time as JSON (0600, written
atomically). Whether a loaded SVID may still be handed out is the CA's decision
(`CertificateAuthority.reusable`); a file that is damaged, names another SPIFFE ID or
whose key does not match its certificate is ignored and replaced on the next issue.

Writing is best effort: a CA directory on a read-only mount (a Kubernetes Secret)
still issues certificates, it only cannot remember them (one warning says so).
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509

from ca.certificates import load_pem_certificates
from ca.clock import ensure_utc
from ca.errors import CaError
from ca.files import KEY_MODE, make_private_dir, read_private, write_atomic
from ca.keys import load_private_key_pem
from ca.spiffe_id import SpiffeId
from ca.svid import IssuedSvid, spiffe_id_of_svid

__all__ = ["SVIDS_DIR", "SvidStore"]

log = logging.getLogger("pocketmesh.ca")

SVIDS_DIR: Final = "svids"
_FORMAT = 1


def _aki(cert: x509.Certificate) -> str:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return ""
    return aki.key_identifier.hex() if aki.key_identifier else ""


class SvidStore:
    """The SVIDs issued to workloads, one file each; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._warned = False

    def path_of(self, spiffe_id: SpiffeId) -> Path:
        digest = hashlib.sha256(spiffe_id.uri.encode()).hexdigest()[:32]
        return self.directory / f"{digest}.json"

    def save(self, svid: IssuedSvid) -> bool:
        """Keep `svid` (0600, atomic); False, with one warning, when it cannot be written."""
        body = {
            "format": _FORMAT,
            "spiffe_id": svid.spiffe_id.uri,
            "renew_at": svid.renew_at.isoformat(),
            "cert_chain_pem": svid.cert_chain_pem.decode(),
            "private_key_pem": svid.private_key_pem.decode(),
        }
        data = json.dumps(body, indent=1).encode() + b"\n"
        try:
            make_private_dir(self.directory)
            # Not fsynced: a file lost to a power cut only means one re-issue.
            write_atomic(self.path_of(svid.spiffe_id), data, KEY_MODE, durable=False)
        except CaError as err:
            if not self._warned:
                self._warned = True
                log.warning("cannot keep issued SVIDs (they are re-issued on restart): %s", err)
            return False
        return True

    def load(self, spiffe_id: SpiffeId) -> IssuedSvid | None:
        """The SVID kept for `spiffe_id`, or None (none kept, or not usable as it is)."""
        path = self.path_of(spiffe_id)
        if not path.is_file():
            return None
        try:
            return self._parse(read_private(path, "workload key"), spiffe_id)
        except (CaError, ValueError, KeyError, TypeError) as err:
            log.warning("ignoring the kept SVID %s for %s: %s", path, spiffe_id, err)
            return None

    @staticmethod
    def _parse(data: bytes, spiffe_id: SpiffeId) -> IssuedSvid:
        body = json.loads(data)
        if body.get("format") != _FORMAT or body.get("spiffe_id") != spiffe_id.uri:
            raise ValueError("another format or another SPIFFE ID")
        chain_pem = str(body["cert_chain_pem"]).encode()
        key_pem = str(body["private_key_pem"]).encode()
        leaf = load_pem_certificates(chain_pem, source="kept SVID")[0]
        key = load_private_key_pem(key_pem, source="kept SVID key")
        if key.public_key() != leaf.public_key():
            raise ValueError("the key does not match the certificate")
        if spiffe_id_of_svid(leaf) != spiffe_id:
            raise ValueError("the certificate names another SPIFFE ID")
        return IssuedSvid(
            cert_chain_pem=chain_pem,
            private_key_pem=key_pem,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            serial=leaf.serial_number,
            renew_at=ensure_utc(datetime.fromisoformat(str(body["renew_at"]))),
            issuer_key_id=_aki(leaf),
            certificate=leaf,
            spiffe_id=spiffe_id,
        )

    def prune(self, now: datetime) -> int:
        """Delete kept SVIDs that have expired (identities gone from the config); how many."""
        removed = 0
        if not self.directory.is_dir():
            return 0
        for path in self.directory.glob("*.json"):
            try:
                body = json.loads(path.read_bytes())
                leaf = load_pem_certificates(str(body["cert_chain_pem"]).encode())[0]
                expired = leaf.not_valid_after_utc <= now
            except (OSError, CaError, ValueError, KeyError, TypeError):
                expired = True  # unreadable: worth nothing, and may hold a key
            if expired:
                with suppress(OSError):
                    path.unlink()
                    removed += 1
        for stale in self.directory.glob(".*.tmp"):  # left by a crash mid-write
            with suppress(OSError):
                stale.unlink()
        return removed
