"""Gateway servers and their TLS, VirtualService tls[]: every mistake, with its line.

Istio's validateServer / validateTLSOptions / validateTLSRoute, each finding located
at the field that is wrong; the files and Secrets a server names are read and
checked at load time, so a missing or mismatched certificate never reaches Envoy.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.traffic.tls_upstream import Pki
from xds_server.galley.loader import load_paths

HEAD = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
"""


def findings(tmp_path: Path, servers: str, extra: str = "") -> list[str]:
    (tmp_path / "gw.yaml").write_text(
        HEAD + textwrap.indent(textwrap.dedent(servers), "  ") + extra
    )
    result = load_paths([tmp_path / "gw.yaml"])
    return [
        f"{e.line}: {'warning: ' if e.severity == 'warning' else ''}{e.field}: {e.message}"
        for e in (*result.errors, *result.warnings)
        if "selects no WorkloadEntry" not in e.message
    ]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    one, other = Pki(root, "one"), Pki(root, "other")
    cert, key = one.issue("a.example.com", dns=("a.example.com",))
    cert2, key2 = one.issue("b.example.com", dns=("b.example.com",))
    return {"cert": cert, "key": key, "cert2": cert2, "key2": key2, "ca": one.ca_file,
            "other_key": other.issue("x")[1]}  # fmt: skip


CASES = [
    (
        "a TLS server needs tls",
        "- port: {number: 443, name: tls, protocol: TLS}\n  hosts: [a.example.com]\n",
        ["7: spec.servers[0].tls: a TLS server needs tls settings (mode SIMPLE, PASSTHROUGH, ...)"],
    ),
    (
        "tls on plain HTTP is for httpsRedirect only",
        "- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n"
        "  tls: {mode: SIMPLE, credentialName: c}\n",
        [
            "9: spec.servers[0].tls: a plain HTTP server takes tls only for httpsRedirect; use "
            "protocol HTTPS to end TLS"
        ],
    ),
    (
        "no tls on TCP",
        "- port: {number: 31400, name: tcp, protocol: TCP}\n  hosts: ['*']\n"
        "  tls: {mode: SIMPLE}\n",
        [
            "9: spec.servers[0].tls.credentialName: mode SIMPLE needs a certificate: "
            "credentialName, or serverCertificate and privateKey",
            "9: spec.servers[0].tls: a TCP server takes no tls settings: use protocol TLS",
        ],
    ),
    (
        "ISTIO_MUTUAL takes no certificate",
        "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
        "  tls: {mode: ISTIO_MUTUAL, credentialName: c}\n",
        [
            "9: spec.servers[0].tls.credentialName: ISTIO_MUTUAL uses the gateway's mesh "
            "certificate and roots: no certificates may be given"
        ],
    ),
    (
        "PASSTHROUGH is the default, and ignores certificates (warned)",
        "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
        "  tls: {credentialName: c}\n",
        [
            "9: warning: spec.servers[0].tls.credentialName: PASSTHROUGH does not end TLS: this "
            "is not used (as in Istio); set mode: SIMPLE or MUTUAL to end TLS here"
        ],
    ),
    (
        "AUTO_PASSTHROUGH is refused, with the reason",
        "- port: {number: 15443, name: tls, protocol: TLS}\n  hosts: ['*.local']\n"
        "  tls: {mode: AUTO_PASSTHROUGH}\n",
        [
            "9: spec.servers[0].tls.mode: AUTO_PASSTHROUGH is not supported by pocketmesh yet: "
            "AUTO_PASSTHROUGH forwards mesh mTLS from sidecars of another network to the cluster "
            "named in its SNI (Istio's multi-network east-west gateway); pocketmesh runs one "
            "network, so nothing would ever send to it: use PASSTHROUGH with tls routes"
        ],
    ),
    (
        "an external SDS credential is refused",
        "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
        "  tls: {mode: SIMPLE, credentialName: 'sds://my-credential'}\n",
        [
            "9: spec.servers[0].tls.credentialName: credentialName 'sds://my-credential' (a sds:// "
            "credential source) is not supported by pocketmesh yet",
        ],
    ),
    (
        "one certificate source",
        "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
        "  tls: {mode: SIMPLE, credentialName: c, serverCertificate: a.crt, privateKey: a.key}\n",
        [
            "9: spec.servers[0].tls: only one of credentialName, credentialNames, "
            "serverCertificate/privateKey, tlsCertificates may be set, not serverCertificate, "
            "credentialName"
        ],
    ),
    (
        "MUTUAL with files needs the client CA; a CRL needs a client certificate",
        "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
        "  tls: {mode: MUTUAL, serverCertificate: a.crt, privateKey: a.key}\n"
        "- port: {number: 444, name: https2, protocol: HTTPS}\n  hosts: ['*']\n"
        "  tls: {mode: SIMPLE, serverCertificate: a.crt, privateKey: a.key, caCrl: a.crl}\n",
        [
            "9: spec.servers[0].tls.caCertificates: mode MUTUAL verifies client certificates: "
            "caCertificates is required",
            "12: spec.servers[1].tls.caCrl: mode SIMPLE asks for no client certificate: a CRL "
            "needs MUTUAL or OPTIONAL_MUTUAL",
        ],
    ),
    (
        "versions, ciphers, fingerprints",
        "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls:\n"
        "    mode: MUTUAL\n    credentialName: c\n    minProtocolVersion: TLSV1_3\n"
        "    maxProtocolVersion: TLSV1_2\n    cipherSuites: [NOT-A-CIPHER]\n"
        "    verifyCertificateHash: [abc]\n    verifyCertificateSpki: [abc]\n",
        [
            "12: spec.servers[0].tls.minProtocolVersion: TLSV1_3 is above maxProtocolVersion "
            "TLSV1_2",
            "15: spec.servers[0].tls.verifyCertificateHash[0]: 'abc' must be a hex SHA-256 of a "
            "certificate (64 hex digits, colons allowed)",
            "16: spec.servers[0].tls.verifyCertificateSpki[0]: 'abc' must be the base64 SHA-256 of "
            "a public key (44 characters)",
            "14: warning: spec.servers[0].tls.cipherSuites[0]: 'NOT-A-CIPHER' is not a cipher "
            "suite Istio allows: ignored, as Istio does",
        ],
    ),
    (
        "servers sharing a port",
        "- port: {number: 8080, name: http, protocol: HTTP}\n  hosts: ['*']\n"
        "- port: {number: 8080, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
        "  tls: {mode: PASSTHROUGH}\n"
        "- port: {number: 9000, name: tcp, protocol: TCP}\n  hosts: ['*']\n"
        "- port: {number: 9000, name: tcp2, protocol: MONGO}\n  hosts: ['*']\n"
        "- port: {number: 443, name: a, protocol: HTTPS}\n  hosts: [a.example.com]\n"
        "  tls: {mode: PASSTHROUGH}\n"
        "- port: {number: 443, name: a, protocol: TLS}\n  hosts: [a.example.com]\n"
        "  tls: {mode: PASSTHROUGH}\n",
        [
            "9: spec.servers[1].port: port 8080: spec.servers[0] is HTTP: a port carries plain "
            "HTTP servers, or TLS servers told apart by SNI, not both",
            "14: spec.servers[3].port: port 9000: spec.servers[2] is already a TCP server there: "
            "only TLS servers (told apart by SNI) can share a port",
            "19: spec.servers[5].port.name: port name 'a' is already used by spec.servers[4] "
            "(Istio: port names must be unique)",
            "19: warning: spec.servers[5].hosts: host 'a.example.com' on port 443 is already "
            "served by spec.servers[4]: this server is skipped, as in Istio",
        ],
    ),
    (
        "the admin port",
        "- port: {number: 15000, name: http, protocol: HTTP}\n  hosts: ['*']\n",
        ["7: spec.servers[0].port.number: 15000 is the gateway Envoy's admin port"],
    ),
]


@pytest.mark.parametrize(("servers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gateway_findings(tmp_path: Path, servers: str, expected: list[str]) -> None:
    assert sorted(findings(tmp_path, servers)) == sorted(expected)


def test_files_are_read_and_checked_where_they_are_named(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    base = "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls:\n"
    missing = (
        base
        + f"    mode: SIMPLE\n    serverCertificate: {tmp_path}/nope.crt\n"
        + f"    privateKey: {pki['key']}\n"
    )
    assert findings(tmp_path, missing) == [
        f"11: spec.servers[0].tls.serverCertificate: cannot read {tmp_path}/nope.crt: "
        "No such file or directory"
    ]
    wrong_key = (
        base
        + f"    mode: SIMPLE\n    serverCertificate: {pki['cert']}\n"
        + f"    privateKey: {pki['other_key']}\n"
    )
    assert findings(tmp_path, wrong_key) == [
        f"12: spec.servers[0].tls.privateKey: {pki['other_key']} does not match the first "
        f"certificate of {pki['cert']}"
    ]
    same_type = base + (
        "    mode: SIMPLE\n    tlsCertificates:\n"
        f"    - {{serverCertificate: {pki['cert']}, privateKey: {pki['key']}}}\n"
        f"    - {{serverCertificate: {pki['cert2']}, privateKey: {pki['key2']}}}\n"
    )
    assert findings(tmp_path, same_type) == [
        "13: spec.servers[0].tls.tlsCertificates[1].serverCertificate: Envoy serves one "
        "certificate per key type, and spec.servers[0].tls.tlsCertificates[0].serverCertificate "
        "is already ECDSA secp256r1"
    ]
    # Relative paths are relative to the file naming them.
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "a.crt").write_bytes(pki["cert"].read_bytes())
    (tmp_path / "certs" / "a.key").write_bytes(pki["key"].read_bytes())
    relative = (
        base + "    mode: SIMPLE\n    serverCertificate: certs/a.crt\n    privateKey: certs/a.key\n"
    )
    assert findings(tmp_path, relative) == []


def test_a_mutual_secret_needs_a_client_ca(tmp_path: Path, pki: dict[str, Path]) -> None:
    import base64

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    secret = (
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: c}\ntype: kubernetes.io/tls\n"
        f"data: {{tls.crt: {b64(pki['cert'])}, tls.key: {b64(pki['key'])}}}\n"
    )
    server = (
        "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
        "  tls: {mode: MUTUAL, credentialName: c}\n"
    )
    assert findings(tmp_path, server, secret) == [
        "9: spec.servers[0].tls.credentialName: mode MUTUAL verifies client certificates, and "
        "there is no client CA: no Secret 'c-cacert' with ca.crt (or cacert) in namespace "
        "default, nor a ca.crt in 'c'"
    ]
    cacert = (
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: c-cacert}\n"
        f"data: {{cacert: {b64(pki['ca'])}}}\n"
    )
    assert findings(tmp_path, server, secret + cacert) == []


def test_tls_routes_name_sni_within_their_hosts(tmp_path: Path) -> None:
    vs = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  tls:
  - match: [{sniHosts: [a.example.com, other.org], port: 443}]
    route: [{destination: {host: a.example.com}}]
  - match: []
"""
    (tmp_path / "vs.yaml").write_text(vs)
    messages = [f"{e.line}: {e.field}: {e.message}" for e in load_paths([tmp_path]).errors]
    assert (
        "8: spec.tls[0].match[0].sniHosts[1]: SNI host 'other.org' is not within the "
        "VirtualService's hosts (*.example.com)" in messages
    )
    assert "10: spec.tls[1].match: must not be empty" in messages
    assert "10: spec.tls[1].route: required field missing" in messages


def test_a_ca_only_secret_cannot_be_a_client_certificate(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    """Opaque Secrets may hold a CA alone (Istio's <name>-cacert): a DestinationRule's
    MUTUAL cannot present one as its client certificate."""
    import base64

    ca = base64.b64encode(pki["ca"].read_bytes()).decode()
    (tmp_path / "dr.yaml").write_text(f"""\
apiVersion: v1
kind: Secret
metadata: {{name: only-ca}}
data: {{ca.crt: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api}}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {{mode: MUTUAL, credentialName: only-ca}}
""")
    messages = [f"{e.line}: {e.field}: {e.message}" for e in load_paths([tmp_path]).errors]
    assert messages == [
        "12: spec.trafficPolicy.tls.credentialName: Secret default/only-ca has no certificate "
        "and key (tls.crt/tls.key or cert/key) to present: MUTUAL needs them"
    ]
