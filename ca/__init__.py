"""Citadel: pocketmesh's certificate authority. Knows SPIFFE and X.509, nothing of xDS.

Where things live:

* ``spiffe_id.py``  — SPIFFE ID syntax: where a SPIFFE ID is checked
* ``keys.py``       — key generation and PEM
* ``roots.py``      — self-signed roots, same-key re-issue, intermediates
* ``signer.py``     — a validated CA cert + key + chain, prepared for fast signing
* ``svid.py``       — what an X.509-SVID contains; the leaf structure check
* ``authority.py``  — `CertificateAuthority`: issue SVIDs / server certs, drive rotation
* ``rotation.py``   — when to renew leaves; the root-rotation state machine
* ``bundle.py``     — the trust bundle (all roots currently trusted)
* ``store.py``      — the CA directory on disk (pocketmesh and Istio cacerts layouts)
* ``svid_store.py`` — issued workload SVIDs kept beside it, reused after a restart
* ``files.py``      — secret files: atomic writes with exact modes, permission checks
* ``verify.py``     — verifying a presented chain against a bundle
* ``inspect.py``    — human-readable certificate reports
* ``errors.py``     — the exception tree; ``clock.py`` — the injectable clock
"""

from ca.authority import CertificateAuthority, Identity, StateSink
from ca.bundle import TrustBundle
from ca.clock import Clock, ManualClock, utc_now
from ca.errors import (
    CaDirError,
    CaDirExists,
    CaDirNotFound,
    CaError,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateParseError,
    ChainInvalid,
    InvalidCaCertificate,
    InvalidKeyType,
    InvalidSpiffeId,
    InvalidSvid,
    InvalidTtl,
    IssuanceError,
    RotationError,
    SvidVerificationError,
    TrustDomainMismatch,
    UnknownRoot,
)
from ca.inspect import (
    CertificateReport,
    ChainStatus,
    InspectionReport,
    analyze_certificate,
    inspect_certificate,
)
from ca.keys import KeyType
from ca.rotation import RootEntry, RootRotation, RootState, renewal_time
from ca.signer import Signer
from ca.spiffe_id import SpiffeId, validate_trust_domain
from ca.store import CaDirectory, detect_layout, ensure_ca_dir, init_ca_dir, load_ca_dir
from ca.svid import IssuedCertificate, IssuedServerCertificate, IssuedSvid
from ca.svid_store import SvidStore
from ca.verify import verify_chain, verify_svid

__all__ = [
    "CaDirError",
    "CaDirExists",
    "CaDirNotFound",
    "CaDirectory",
    "CaError",
    "CertificateAuthority",
    "CertificateExpired",
    "CertificateNotYetValid",
    "CertificateParseError",
    "CertificateReport",
    "ChainInvalid",
    "ChainStatus",
    "Clock",
    "Identity",
    "InspectionReport",
    "InvalidCaCertificate",
    "InvalidKeyType",
    "InvalidSpiffeId",
    "InvalidSvid",
    "InvalidTtl",
    "IssuanceError",
    "IssuedCertificate",
    "IssuedServerCertificate",
    "IssuedSvid",
    "KeyType",
    "ManualClock",
    "RootEntry",
    "RootRotation",
    "RootState",
    "RotationError",
    "Signer",
    "SpiffeId",
    "StateSink",
    "SvidStore",
    "SvidVerificationError",
    "TrustBundle",
    "TrustDomainMismatch",
    "UnknownRoot",
    "analyze_certificate",
    "detect_layout",
    "ensure_ca_dir",
    "init_ca_dir",
    "inspect_certificate",
    "load_ca_dir",
    "renewal_time",
    "utc_now",
    "validate_trust_domain",
    "verify_chain",
    "verify_svid",
]
