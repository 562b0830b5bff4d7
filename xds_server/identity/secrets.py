"""SDS: the two secrets every sidecar asks for, named as Istio names them.

`default` is the proxy's own X.509-SVID (chain + key) as a `tls_certificate`;
`ROOTCA` is the trust bundle (every root currently trusted) as a
`validation_context`. Pure functions: PEM in, protobuf out.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from ca import IssuedSvid

WORKLOAD_SECRET: Final = "default"
ROOT_SECRET: Final = "ROOTCA"

Secret: TypeAlias = secret_pb2.Secret


def workload_secret(svid: IssuedSvid) -> Secret:
    # The chain starts with the leaf that matches the key (Envoy requires it).
    return Secret(
        name=WORKLOAD_SECRET,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=svid.cert_chain_pem),
            private_key=base_pb2.DataSource(inline_bytes=svid.private_key_pem),
        ),
    )


def root_secret(bundle_pem: bytes) -> Secret:
    return Secret(
        name=ROOT_SECRET,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=bundle_pem)
        ),
    )
