"""The TLS a gateway server ends: Envoy's DownstreamTlsContext from a server's `tls`.

Istio's `BuildListenerTLSContext`, for the modes that end TLS at the gateway:

- SIMPLE: the server's certificate(s); no client certificate asked for;
- MUTUAL: a client certificate is required and verified against the client CA
  (`caCertificates`, or the Secret's), its CRL, `subjectAltNames`,
  `verifyCertificateSpki` / `verifyCertificateHash`; `insecureSkipVerify` asks for it
  but lets an unverified one through;
- OPTIONAL_MUTUAL: the same, but a client without a certificate is let in;
- ISTIO_MUTUAL: the gateway's own mesh certificate (`default`) and the mesh roots
  (`ROOTCA`) by SDS; the client must present a mesh identity (one of
  `subjectAltNames`, if given).

Certificates from files and Secrets go inline, to this gateway only (Envoy's config
dump redacts private keys). A certificate that cannot be found is `ServerUnbuilt`:
the generator skips that server and reports why.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import wrappers_pb2

from xds_server.galley.credentials import client_ca, find_secret
from xds_server.galley.model_traffic import GatewayServer, ServerTLS, TLSCredential
from xds_server.generators.mtls import TLS_SOCKET, common_tls_context, san_matchers
from xds_server.generators.typed_config import pack

__all__ = ["HTTP_ALPN", "ServerUnbuilt", "server_tls_socket", "user_tls_socket"]

# Istio's minProtocolVersion / maxProtocolVersion -> Envoy's TLS parameters.
TLS_VERSIONS = {
    "TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO,
    "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSV1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSV1_3": common_pb2.TlsParameters.TLSv1_3,
}
HTTP_ALPN = ("h2", "http/1.1")  # Istio's ALPNHttp


class ServerUnbuilt(Exception):
    """A server whose TLS cannot be built: the message says why (it is skipped)."""


def server_tls_socket(
    server: GatewayServer,
    secrets: Sequence[TLSCredential],
    namespaces: Sequence[str],
    trust_domain: str,
    workload_identity: bool,
) -> base_pb2.TransportSocket:
    """The transport socket ending `server`'s TLS; `namespaces` are where its Secrets are
    looked up, in order (the gateway workload's, then the Gateway's)."""
    tls = server.tls
    if tls is None or not tls.terminates:
        raise ValueError(f"server on port {server.port} does not end TLS")
    alpn = HTTP_ALPN if server.protocol == "HTTPS" else ()
    if tls.mode == "ISTIO_MUTUAL":
        if not workload_identity:
            raise ServerUnbuilt(
                "tls mode ISTIO_MUTUAL needs the gateway's mesh certificate, and this control "
                "plane issues none (--no-identity)"
            )
        sans = tls.subject_alt_names
        common = (
            common_tls_context(uri_exact=sans)
            if sans
            else common_tls_context(uri_prefix=f"spiffe://{trust_domain}/")
        )
        common.alpn_protocols.extend(alpn)
        context = tls_pb2.DownstreamTlsContext(
            common_tls_context=common, require_client_certificate=wrappers_pb2.BoolValue(value=True)
        )
        return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))
    return user_tls_socket(tls, alpn, secrets, namespaces)


def user_tls_socket(
    tls: ServerTLS,
    alpn: Sequence[str],
    secrets: Sequence[TLSCredential] = (),
    namespaces: Sequence[str] = (),
) -> base_pb2.TransportSocket:
    """TLS ended with the user's certificate (SIMPLE, MUTUAL, OPTIONAL_MUTUAL): a
    gateway server's, or a Sidecar ingress port's (files only, no Secrets)."""
    common = tls_pb2.CommonTlsContext(alpn_protocols=alpn)
    common.tls_certificates.extend(_certificates(tls, secrets, namespaces))
    if tls.verifies_clients:
        common.validation_context.CopyFrom(_validation(tls, secrets, namespaces))
    params = common_pb2.TlsParameters()
    if tls.min_protocol_version:
        params.tls_minimum_protocol_version = TLS_VERSIONS[tls.min_protocol_version]
    if tls.max_protocol_version:
        params.tls_maximum_protocol_version = TLS_VERSIONS[tls.max_protocol_version]
    params.cipher_suites.extend(tls.cipher_suites)
    if params != common_pb2.TlsParameters():
        common.tls_params.CopyFrom(params)
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=common,
        require_client_certificate=wrappers_pb2.BoolValue(value=tls.mode == "MUTUAL"),
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def _certificates(
    tls: ServerTLS, secrets: Sequence[TLSCredential], namespaces: Sequence[str]
) -> list[common_pb2.TlsCertificate]:
    found = []
    for cert in tls.certificates:
        if cert.credential_name:
            secret = find_secret(secrets, cert.credential_name, namespaces)
            if secret is None or not secret.has_key_pair:
                raise ServerUnbuilt(
                    f"no Secret {cert.credential_name!r} with a certificate and key in "
                    f"namespace {' or '.join(namespaces)}"
                )
            chain, key = secret.cert_pem, secret.key_pem
        else:
            if cert.chain is None or cert.key is None or not cert.chain.pem or not cert.key.pem:
                raise ServerUnbuilt("its certificate files were not read")
            chain, key = cert.chain.pem, cert.key.pem
        found.append(
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_string=chain),
                private_key=base_pb2.DataSource(inline_string=key),
            )
        )
    if not found:
        raise ServerUnbuilt("it names no certificate")
    return found


def _validation(
    tls: ServerTLS, secrets: Sequence[TLSCredential], namespaces: Sequence[str]
) -> common_pb2.CertificateValidationContext:
    """How a client certificate is checked (MUTUAL, OPTIONAL_MUTUAL)."""
    if tls.credential_name:
        looked_for, holder = client_ca(secrets, tls, namespaces)
        if holder is None or not holder.ca_pem:
            raise ServerUnbuilt(f"no client CA: no Secret {looked_for!r} with ca.crt")
        ca, crl = holder.ca_pem, holder.crl_pem
    else:
        if tls.ca_certificates is None or not tls.ca_certificates.pem:
            raise ServerUnbuilt("its caCertificates file was not read")
        ca = tls.ca_certificates.pem
        crl = tls.ca_crl.pem if tls.ca_crl is not None else ""
    context = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_string=ca),
        match_typed_subject_alt_names=san_matchers(tls.subject_alt_names),
        verify_certificate_spki=tls.verify_certificate_spki,
        verify_certificate_hash=tls.verify_certificate_hash,
    )
    if crl:
        context.crl.CopyFrom(base_pb2.DataSource(inline_string=crl))
    if tls.insecure_skip_verify:
        context.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    return context
