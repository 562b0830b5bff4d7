"""The CA directory on disk: create, load, and keep the rotation state in it.

Two layouts are understood.

pocketmesh (self-signed root), written by `init_ca_dir`::

    root-cert.pem     the signing root (0644)
    root-key.pem      its private key, PKCS#8 (0600)
    rotation.json     root-rotation state, once there is any (0644)
    roots/<key-id>-cert.pem, roots/<key-id>-key.pem
                      every root named in rotation.json (keys 0600)
    svids/<hash>.json issued workload SVIDs with their keys (0600; `ca.svid_store`)
    xds-token.key     the proxy token key (0600; xds_server.identity.auth)

Istio ``cacerts`` (an intermediate signed by an external root, plugged in)::

    ca-cert.pem       the intermediate CA certificate that signs leaves
    ca-key.pem        its private key
    cert-chain.pem    ca-cert.pem and any further intermediates (the root may be
                      included too; it is ignored) — optional if the root signed ca-cert
    root-cert.pem     the external root(s): the trust bundle

``ca-key.pem`` present means cacerts (as in Istio, plugged-in certs win). The
directory is mode 0700 and private keys 0600; every write is atomic (temp file +
fsync + rename, `ca.files`), with rotation.json written last so it never names a file
that is not there: a crash or a full disk at any write leaves the previous state
loadable, and a rotation step that cannot be saved is taken back in memory. Keys are
checked before use: writable by others is refused, readable by others warned about.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.authority import CertificateAuthority
from ca.certificates import load_pem_certificates
from ca.clock import Clock, utc_now
from ca.errors import CaDirError, CaDirExists, CaDirNotFound, CaError
from ca.files import (
    CERT_MODE,
    KEY_MODE,
    check_private_dir,
    io_errors,
    make_private_dir,
    read_private,
    write_atomic,
    write_new,
)
from ca.keys import (
    DEFAULT_RSA_BITS,
    KeyType,
    PrivateKey,
    generate_private_key,
    load_private_key_pem,
    private_key_to_pem,
)
from ca.roots import ROOT_VALIDITY, create_root_certificate, trust_domain_of
from ca.rotation import DEFAULT_MIN_OVERLAP, DEFAULT_PERSIST_SLACK, RootRotation
from ca.signer import Signer
from ca.spiffe_id import validate_trust_domain
from ca.svid import MAX_TTL
from ca.svid_store import SVIDS_DIR, SvidStore

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CERT_CHAIN",
    "DEFAULT_TRUST_DOMAIN",
    "ROOT_CERT",
    "ROOT_KEY",
    "ROTATION_STATE",
    "CaDirectory",
    "Layout",
    "detect_layout",
    "ensure_ca_dir",
    "init_ca_dir",
    "load_ca_dir",
]

ROOT_CERT = "root-cert.pem"
ROOT_KEY = "root-key.pem"
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CERT_CHAIN = "cert-chain.pem"
ROTATION_STATE = "rotation.json"
ROOTS_DIR = "roots"
DEFAULT_TRUST_DOMAIN = "cluster.local"

Layout = Literal["pocketmesh", "cacerts"]
_CA_FILES = (ROOT_CERT, ROOT_KEY, CA_CERT, CA_KEY, CERT_CHAIN, ROTATION_STATE)
_PEM = serialization.Encoding.PEM


# -- files ---------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise CaDirError(f"missing {path}")
    with io_errors(path, "read"):
        return path.read_bytes()


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        return load_pem_certificates(_read(path), source=str(path))
    except CaDirError:
        raise
    except CaError as exc:
        raise CaDirError(str(exc)) from exc


def _load_key(path: Path) -> PrivateKey:
    if not path.is_file():
        raise CaDirError(f"missing {path}")
    try:
        return load_private_key_pem(read_private(path), source=str(path))
    except CaDirError:
        raise
    except CaError as exc:
        raise CaDirError(str(exc)) from exc


def _signer(
    cert: x509.Certificate,
    key: PrivateKey,
    where: Path,
    chain: list[x509.Certificate] | None = None,
    anchors: list[x509.Certificate] | None = None,
) -> Signer:
    try:
        return Signer(cert, key, chain=chain or (), anchors=anchors)
    except CaError as exc:
        raise CaDirError(f"{where}: {exc}") from exc


# -- layout --------------------------------------------------------------------------


def detect_layout(directory: str | os.PathLike[str]) -> Layout | None:
    """ "cacerts" if ca-key.pem is there, "pocketmesh" if root-key.pem is, else None."""
    path = Path(directory)
    if (path / CA_KEY).exists() or (path / CA_CERT).exists():
        return "cacerts"
    if (path / ROOT_KEY).exists() or (path / ROTATION_STATE).exists():
        return "pocketmesh"
    return None


class CaDirectory:
    """A CA directory; saves rotation state for a `CertificateAuthority` (its `StateSink`)."""

    def __init__(self, path: str | os.PathLike[str], layout: Layout) -> None:
        self.path = Path(path)
        self.layout: Layout = layout
        self._written: dict[Path, bytes] = {}
        self._lock = threading.Lock()

    def _root_files(self, key_id: str) -> tuple[Path, Path]:
        roots = self.path / ROOTS_DIR
        return roots / f"{key_id}-cert.pem", roots / f"{key_id}-key.pem"

    def _put(self, path: Path, data: bytes, mode: int) -> None:
        if self._written.get(path) == data:
            return
        if path.exists():
            with io_errors(path, "read"):
                if path.read_bytes() == data:
                    self._written[path] = data
                    return
        write_atomic(path, data, mode)
        self._written[path] = data

    def svid_store(self) -> SvidStore:
        """Where issued workload SVIDs are kept (``svids/``)."""
        return SvidStore(self.path / SVIDS_DIR)

    def save_rotation(self, rotation: RootRotation) -> None:
        """Write every trusted root, the active one as root-cert/key.pem, then rotation.json."""
        if self.layout != "pocketmesh":
            return  # a plugged-in CA does not rotate; nothing of ours to keep
        with self._lock:
            self._save(rotation)

    def _save(self, rotation: RootRotation) -> None:
        entries = rotation.entries
        make_private_dir(self.path / ROOTS_DIR)
        keep: set[Path] = set()
        for entry in entries:
            cert_path, key_path = self._root_files(entry.key_id)
            keep.update((cert_path, key_path))
            self._put(cert_path, entry.signer.certificate.public_bytes(_PEM), CERT_MODE)
            self._put(key_path, private_key_to_pem(entry.signer.private_key), KEY_MODE)
        active = rotation.active.signer
        self._put(self.path / ROOT_KEY, private_key_to_pem(active.private_key), KEY_MODE)
        self._put(self.path / ROOT_CERT, active.certificate.public_bytes(_PEM), CERT_MODE)
        state = json.dumps(rotation.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
        self._put(self.path / ROTATION_STATE, state, CERT_MODE)
        for stale in (self.path / ROOTS_DIR).glob("*.pem"):
            if stale not in keep:
                with suppress(OSError):
                    stale.unlink()
                self._written.pop(stale, None)
        # Temporary files a crash left mid-write (they may hold a key).
        for leftover in [*self.path.glob(".*.tmp"), *(self.path / ROOTS_DIR).glob(".*.tmp")]:
            with suppress(OSError):
                leftover.unlink()

    def load_rotation(self, *, min_overlap: timedelta, persist_slack: timedelta) -> RootRotation:
        """The rotation state from rotation.json and the roots/ files it names."""
        state_path = self.path / ROTATION_STATE
        try:
            data = json.loads(_read(state_path))
        except ValueError as exc:
            raise CaDirError(f"{state_path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("roots"), list):
            raise CaDirError(f"{state_path}: expected an object with a 'roots' list")
        signers: dict[str, Signer] = {}
        for item in data["roots"]:
            key_id = item.get("key_id") if isinstance(item, dict) else None
            if not isinstance(key_id, str) or not key_id.isalnum():
                raise CaDirError(f"{state_path}: bad root entry {item!r}")
            cert_path, key_path = self._root_files(key_id)
            certs = _load_certs(cert_path)
            signers[key_id] = _signer(certs[0], _load_key(key_path), cert_path)
        try:
            return RootRotation.from_dict(
                data, signers, min_overlap=min_overlap, persist_slack=persist_slack
            )
        except CaError as exc:
            raise CaDirError(f"{state_path}: {exc}") from exc


def _resolve_trust_domain(requested: str | None, certs: list[x509.Certificate], where: Path) -> str:
    found = next((td for c in certs if (td := trust_domain_of(c)) is not None), None)
    if requested is not None:
        validate_trust_domain(requested)
        if found is not None and found != requested:
            raise CaDirError(f"{where}: the CA is for trust domain {found!r}, not {requested!r}")
        return requested
    return found or DEFAULT_TRUST_DOMAIN


# -- public API ----------------------------------------------------------------------


def init_ca_dir(
    directory: str | os.PathLike[str],
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    key_type: KeyType = "ec",
    rsa_bits: int = DEFAULT_RSA_BITS,
    clock: Clock = utc_now,
    *,
    rng: Callable[[], float] = random.random,
    root_validity: timedelta = ROOT_VALIDITY,
    min_overlap: timedelta = DEFAULT_MIN_OVERLAP,
    persist_slack: timedelta = DEFAULT_PERSIST_SLACK,
    max_ttl: timedelta = MAX_TTL,
) -> CertificateAuthority:
    """Create a CA directory with a new self-signed root and return the CA.

    Writes root-key.pem (0600) and root-cert.pem in `directory` (created, or tightened,
    to 0700). The root: ECDSA P-256 (or RSA `rsa_bits`), 10 years, subject
    O=pocketmesh with the trust domain in the CN.

    Raises:
        CaDirExists: the directory already holds CA files of either layout.
        InvalidSpiffeId: `trust_domain` is not a valid trust domain name.
        InvalidKeyType: bad `key_type` or `rsa_bits`.
    """
    path = Path(directory)
    validate_trust_domain(trust_domain)
    present = [name for name in _CA_FILES if (path / name).exists()]
    if present:
        raise CaDirExists(
            f"{path} already holds a CA ({', '.join(present)}); refusing to overwrite it — "
            "use load_ca_dir, or remove the directory to start over"
        )
    key = generate_private_key(key_type, rsa_bits)
    now = clock()
    cert = create_root_certificate(key, trust_domain, now=now, validity=root_validity)
    make_private_dir(path)
    write_new(path / ROOT_KEY, private_key_to_pem(key), KEY_MODE)
    write_new(path / ROOT_CERT, cert.public_bytes(_PEM), CERT_MODE)
    store = CaDirectory(path, "pocketmesh")
    rotation = RootRotation.single(
        Signer(cert, key), now, min_overlap=min_overlap, persist_slack=persist_slack
    )
    return CertificateAuthority(
        rotation,
        trust_domain=trust_domain,
        clock=clock,
        rng=rng,
        max_ttl=max_ttl,
        state_sink=store,
    )


def load_ca_dir(
    directory: str | os.PathLike[str],
    *,
    trust_domain: str | None = None,
    clock: Clock = utc_now,
    rng: Callable[[], float] = random.random,
    min_overlap: timedelta = DEFAULT_MIN_OVERLAP,
    persist_slack: timedelta = DEFAULT_PERSIST_SLACK,
    max_ttl: timedelta = MAX_TTL,
) -> CertificateAuthority:
    """Load a CA directory of either layout (see the module docstring).

    The trust domain comes from the certificates' ``spiffe://<td>`` URI SAN when they
    carry one; `trust_domain`, if given, must agree with it (and is used when they
    carry none; the fallback is cluster.local).

    Raises:
        CaDirNotFound: no CA files in `directory`.
        CaDirError: partial, unreadable or inconsistent files (named in the message).
    """
    path = Path(directory)
    layout = detect_layout(path)
    if layout is None:
        raise CaDirNotFound(
            f"no CA in {path}: expected {ROOT_CERT} + {ROOT_KEY}, or Istio cacerts "
            f"({CA_CERT}, {CA_KEY}, {CERT_CHAIN}, {ROOT_CERT})"
        )
    store = CaDirectory(path, layout)
    if layout == "pocketmesh":
        check_private_dir(path)  # cacerts are often a mounted Secret: its files are checked
    if layout == "cacerts":
        for name in (CA_CERT, CA_KEY, ROOT_CERT):
            if not (path / name).is_file():
                raise CaDirError(f"incomplete Istio cacerts in {path}: {name} is missing")
        ca_cert = _load_certs(path / CA_CERT)[0]
        ca_key = _load_key(path / CA_KEY)
        roots = _load_certs(path / ROOT_CERT)
        chain = _load_certs(path / CERT_CHAIN) if (path / CERT_CHAIN).exists() else []
        signer = _signer(ca_cert, ca_key, path / CA_CERT, chain=chain, anchors=roots)
        rotation = RootRotation.single(
            signer, signer.not_before, min_overlap=min_overlap, persist_slack=persist_slack
        )
        td = _resolve_trust_domain(trust_domain, [ca_cert, *roots], path)
        return CertificateAuthority(
            rotation, trust_domain=td, clock=clock, rng=rng, max_ttl=max_ttl, state_sink=None
        )

    if (path / ROTATION_STATE).exists():
        # rotation.json is authoritative; root-cert.pem/root-key.pem mirror its active root
        rotation = store.load_rotation(min_overlap=min_overlap, persist_slack=persist_slack)
    else:
        for name in (ROOT_CERT, ROOT_KEY):
            if not (path / name).is_file():
                raise CaDirError(f"incomplete CA in {path}: {name} is missing")
        root_cert = _load_certs(path / ROOT_CERT)[0]
        base = _signer(root_cert, _load_key(path / ROOT_KEY), path / ROOT_CERT)
        rotation = RootRotation.single(
            base, base.not_before, min_overlap=min_overlap, persist_slack=persist_slack
        )
    td = _resolve_trust_domain(trust_domain, [e.signer.certificate for e in rotation.entries], path)
    return CertificateAuthority(
        rotation, trust_domain=td, clock=clock, rng=rng, max_ttl=max_ttl, state_sink=store
    )


def ensure_ca_dir(
    directory: str | os.PathLike[str],
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    key_type: KeyType = "ec",
    rsa_bits: int = DEFAULT_RSA_BITS,
    clock: Clock = utc_now,
    *,
    rng: Callable[[], float] = random.random,
    min_overlap: timedelta = DEFAULT_MIN_OVERLAP,
    persist_slack: timedelta = DEFAULT_PERSIST_SLACK,
    max_ttl: timedelta = MAX_TTL,
) -> CertificateAuthority:
    """Load the CA in `directory` if there is one (it must be for `trust_domain`), else
    create one with `init_ca_dir`."""
    if detect_layout(directory) is not None:
        return load_ca_dir(
            directory,
            trust_domain=trust_domain,
            clock=clock,
            rng=rng,
            min_overlap=min_overlap,
            persist_slack=persist_slack,
            max_ttl=max_ttl,
        )
    return init_ca_dir(
        directory,
        trust_domain,
        key_type,
        rsa_bits,
        clock,
        rng=rng,
        min_overlap=min_overlap,
        persist_slack=persist_slack,
        max_ttl=max_ttl,
    )
