"""Which Secret a gateway server's `credentialName` means, and where its client CA is.

Istio looks a gateway's credentials up in the gateway workload's namespace;
pocketmesh also looks in the Gateway's own (a config written for one namespace works
as written). The client CA of a MUTUAL server comes, as in Istio's SDS for
`<name>-cacert`, from `caCertCredentialName` if set, else a Secret named
`<credentialName>-cacert`, else the credential Secret itself (`ca.crt` / `cacert`).
Galley checks with these, and the gateway generator builds with the same answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .model_traffic import ServerTLS, TLSCredential

__all__ = ["CA_SUFFIX", "client_ca", "find_secret"]

CA_SUFFIX = "-cacert"


def find_secret(
    secrets: Iterable[TLSCredential], name: str, namespaces: Sequence[str]
) -> TLSCredential | None:
    """The Secret `name` of the first of `namespaces` that has one."""
    by_key = {s.meta.key: s for s in secrets}
    for namespace in namespaces:
        found = by_key.get(f"{namespace}/{name}")
        if found is not None:
            return found
    return None


def client_ca(
    secrets: Iterable[TLSCredential], tls: ServerTLS, namespaces: Sequence[str]
) -> tuple[str, TLSCredential | None]:
    """(the Secret name looked for, the Secret holding the client CA, if any)."""
    secrets = tuple(secrets)
    if tls.ca_cert_credential_name:
        name = tls.ca_cert_credential_name
        return name, find_secret(secrets, name, namespaces)
    base = tls.credential_name
    for name in (base + CA_SUFFIX, base):
        found = find_secret(secrets, name, namespaces)
        if found is not None and found.ca_pem:
            return name, found
    return base + CA_SUFFIX, None
