"""Workload identity: SVIDs by SDS, proxy authentication, rotation (Citadel meets Pilot).

* ``secrets.py`` — the SDS Secret protobufs `default` and `ROOTCA`
* ``issuer.py``  — one SVID per (namespace, serviceAccount), renewals, root rotation
* ``sds.py``     — the cache's SecretSource: each proxy's secrets as Resources
* ``auth.py``    — per-workload tokens: where a proxy's claim to a node id is checked
* ``runtime.py`` — the running pieces together: attach to the cache, the renew loop
* ``metrics.py`` — SVIDs issued, roots trusted, proxies refused
"""

from xds_server.identity.runtime import DEFAULT_CA_DIR, IdentityOptions, IdentityRuntime

__all__ = ["DEFAULT_CA_DIR", "IdentityOptions", "IdentityRuntime"]
