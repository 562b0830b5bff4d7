"""DestinationRule `trafficPolicy.tls`: Istio's rules, the files it names, each error located.

Certificate files are read on every load (not cached with the YAML), checked the way
Envoy would take them, and a missing or bad one is an error at the field naming it.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from xds_server.galley.loader import LoadResult, load_paths

DATA = Path(__file__).resolve().parents[1] / "traffic" / "data"


def rule(tmp_path: Path, tls: str, extra: str = "") -> LoadResult:
    """A DestinationRule whose `tls` block starts on line 9 of dr.yaml."""
    text = textwrap.dedent(
        """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: api
          namespace: shop
        spec:
          host: api.example.com
          trafficPolicy:
            tls:
        """
    ) + textwrap.indent(textwrap.dedent(tls), "      ")
    (tmp_path / "dr.yaml").write_text(text + extra)
    return load_paths([tmp_path / "dr.yaml"])


def errors(result: LoadResult) -> list[str]:
    return [str(e).split("dr.yaml:", 1)[-1] for e in result.errors]


def copy_data(tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    shutil.copytree(DATA, folder)
    return folder


def test_mutual_with_files_is_read_into_the_model(tmp_path: Path) -> None:
    certs = copy_data(tmp_path)
    result = rule(
        tmp_path,
        """\
        mode: MUTUAL
        clientCertificate: certs/client.crt
        privateKey: certs/client.key
        caCertificates: certs/ca.crt
        subjectAltNames: [api.example.com, "spiffe://td/ns/a/sa/b"]
        sni: api.example.com
        """,
    )
    assert result.errors == (), errors(result)
    assert result.config is not None
    [dr] = result.config.destination_rules
    assert dr.traffic_policy is not None
    tls = dr.traffic_policy.tls
    assert tls is not None and tls.mode == "MUTUAL"
    # Relative paths are relative to the document's folder; the text is read at load.
    assert tls.client_certificate is not None and tls.private_key is not None
    assert tls.client_certificate.path == str(certs / "client.crt")
    assert tls.client_certificate.pem == (certs / "client.crt").read_text()
    assert tls.ca_certificates is not None and "BEGIN CERTIFICATE" in tls.ca_certificates.pem
    assert tls.subject_alt_names == ("api.example.com", "spiffe://td/ns/a/sa/b")
    assert (tls.sni, tls.insecure_skip_verify) == ("api.example.com", False)


def test_a_renewed_file_changes_the_rule_though_the_yaml_does_not(tmp_path: Path) -> None:
    certs = copy_data(tmp_path)
    tls = "mode: SIMPLE\ncaCertificates: certs/ca.crt\n"
    first = rule(tmp_path, tls).config
    (certs / "ca.crt").write_text((certs / "client.crt").read_text())  # another PEM cert
    second = rule(tmp_path, tls).config
    assert first is not None and second is not None
    assert first.destination_rules != second.destination_rules


def test_simple_without_roots_verifies_against_the_system_roots(tmp_path: Path) -> None:
    config = rule(tmp_path, "mode: SIMPLE\n").config
    assert config is not None
    policy = config.destination_rules[0].traffic_policy
    assert policy is not None and policy.tls is not None
    roots = policy.tls.ca_certificates
    assert roots is not None and "BEGIN CERTIFICATE" in roots.pem  # Istio's "system" roots


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (
            f"mode: DISABLE\ncaCertificates: {DATA}/ca.crt\nsni: a.example.com\n",
            [
                "11: warning: DestinationRule shop/api: spec.trafficPolicy.tls.caCertificates: "
                "has no effect with mode DISABLE",
                "12: warning: DestinationRule shop/api: spec.trafficPolicy.tls.sni: has no "
                "effect with mode DISABLE",
            ],
        ),
        (
            f"mode: SIMPLE\nclientCertificate: {DATA}/client.crt\n",
            [
                "11: warning: DestinationRule shop/api: spec.trafficPolicy.tls.clientCertificate:"
                " has no effect with mode SIMPLE"
            ],
        ),
    ],
)
def test_fields_the_mode_does_not_use_are_accepted_with_a_warning(
    tmp_path: Path, tls: str, expected: list[str]
) -> None:
    """Istio accepts them and does nothing with them: so does pocketmesh, saying so."""
    result = rule(tmp_path, tls)
    assert result.config is not None, errors(result)
    found = [str(w).split(":", 1)[1] for w in result.warnings if "tls." in str(w)]
    assert len(found) == len(expected), found
    for got, want in zip(found, expected, strict=True):
        assert got.startswith(want), (got, want)
    policy = result.config.destination_rules[0].traffic_policy
    assert policy is not None and policy.tls is not None
    assert policy.tls.client_certificate is None or policy.tls.mode == "MUTUAL"


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (
            "mode: MUTUAL\ncaCertificates: /nonexistent/ca.crt\n",
            [
                "9: DestinationRule shop/api: spec.trafficPolicy.tls.clientCertificate: "
                "required for mode MUTUAL",
                "9: DestinationRule shop/api: spec.trafficPolicy.tls.privateKey: "
                "required for mode MUTUAL",
            ],
        ),
        (
            "mode: SIMPLE\ncaCertificates: /nonexistent/ca.crt\n",
            [
                "11: DestinationRule shop/api: spec.trafficPolicy.tls.caCertificates: cannot "
                "read /nonexistent/ca.crt: No such file or directory"
            ],
        ),
        (
            f"mode: MUTUAL\nclientCertificate: {DATA}/client.crt\nprivateKey: {DATA}/ca.crt\n",
            [
                f"12: DestinationRule shop/api: spec.trafficPolicy.tls.privateKey: {DATA}/ca.crt "
                "is not an unencrypted PEM private key: "
            ],
        ),
        (
            f"mode: SIMPLE\ncaCertificates: {DATA}/client.key\n",
            [
                f"11: DestinationRule shop/api: spec.trafficPolicy.tls.caCertificates: "
                f"{DATA}/client.key is not a PEM certificate bundle: "
            ],
        ),
        (
            # No mode is Istio's DISABLE: the file would be ignored and traffic plaintext.
            f"caCertificates: {DATA}/ca.crt\n",
            [
                "10: DestinationRule shop/api: spec.trafficPolicy.tls.caCertificates: needs a "
                "tls.mode: without one the mode is DISABLE (plaintext"
            ],
        ),
        (
            "mode: SIMPLE\ninsecureSkipVerify: true\nsubjectAltNames: [a.example.com]\n",
            [
                "12: DestinationRule shop/api: spec.trafficPolicy.tls.subjectAltNames: cannot "
                "be set with insecureSkipVerify: true"
            ],
        ),
        (
            "mode: SIMPLE\ncredentialName: nope\n",
            [
                "11: DestinationRule shop/api: spec.trafficPolicy.tls.credentialName: no Secret "
                "'nope' of type kubernetes.io/tls in namespace shop"
            ],
        ),
        (
            "mode: SIMPLE\ncaCrl: /x.crl\n",
            [
                "11: DestinationRule shop/api: spec.trafficPolicy.tls.caCrl: cannot read "
                "/x.crl: No such file or directory"
            ],
        ),
        (
            "mode: SIMPLE\ninsecureSkipVerify: true\ncaCrl: /x.crl\n",
            [
                "12: DestinationRule shop/api: spec.trafficPolicy.tls.caCrl: cannot be set with "
                "insecureSkipVerify: true"
            ],
        ),
        (
            "mode: SIMPLE\ncredentialName: api-cred\ncaCrl: /x.crl\n",
            [
                "9: DestinationRule shop/api: spec.trafficPolicy.tls.credentialName: "
                "credentialName cannot be combined with clientCertificate, privateKey, "
                "caCertificates or caCrl"
            ],
        ),
        (
            "mode: SIMPLE\nsni: 'not a host'\n",
            ["11: DestinationRule shop/api: spec.trafficPolicy.tls.sni: 'not a host' must be "],
        ),
    ],
)
def test_rules(tmp_path: Path, tls: str, expected: list[str]) -> None:
    result = rule(tmp_path, tls)
    assert result.config is None
    found = errors(result)
    assert len(found) == len(expected), found
    for got, want in zip(found, expected, strict=True):
        assert got.startswith(want), (got, want)


def test_a_secret_without_ca_verifies_nothing_so_it_is_refused(tmp_path: Path) -> None:
    secret = f"""\
---
apiVersion: v1
kind: Secret
metadata: {{name: client, namespace: shop}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{textwrap.indent((DATA / "client.crt").read_text(), "    ")}
  tls.key: |
{textwrap.indent((DATA / "client.key").read_text(), "    ")}
"""
    result = rule(tmp_path, "mode: MUTUAL\ncredentialName: client\n", secret)
    assert errors(result) == [
        "11: DestinationRule shop/api: spec.trafficPolicy.tls.credentialName: Secret shop/client "
        "has no ca.crt to verify the upstream with: add one, or set insecureSkipVerify: true"
    ]
    ok = rule(tmp_path, "mode: MUTUAL\ncredentialName: client\ninsecureSkipVerify: true\n", secret)
    assert ok.errors == ()


def test_export_to_everywhere_and_somewhere_is_refused(tmp_path: Path) -> None:
    """Istio's validateExportTo: '*' exports everywhere, nothing else may be listed."""
    (tmp_path / "dr.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: api}\nspec:\n  host: api.example.com\n  exportTo: ['*', '.']\n"
    )
    result = load_paths([tmp_path / "dr.yaml"])
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/dr.yaml:6: DestinationRule default/api: spec.exportTo: cannot have both "
        "public (*) and non-public exportTo values"
    ]
