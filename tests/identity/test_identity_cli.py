"""`pocketmesh ca init|inspect`, `bootstrap --ca-dir/--xds-tls`, and `serve`'s identity flags."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from ca import load_ca_dir
from tests.e2e.harness import free_port
from tests.identity.mesh import write_mesh
from xds_server.cli import build_parser, main
from xds_server.commands.serve import options_from
from xds_server.identity.auth import ProxyTokens
from xds_server.identity.credentials import ProxyCredentials


def test_ca_init_then_inspect_an_svid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = tmp_path / "ca"
    assert main(["ca", "init", "--dir", str(ca_dir), "--trust-domain", "example.org"]) == 0
    assert "trust domain example.org" in capsys.readouterr().out
    assert (ca_dir / "root-key.pem").stat().st_mode & 0o777 == 0o600
    assert (ca_dir / "xds-token.key").stat().st_mode & 0o777 == 0o600
    # A second init refuses to overwrite the root.
    assert main(["ca", "init", "--dir", str(ca_dir)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err

    svid = load_ca_dir(ca_dir).issue_svid(("example.org", "shop", "cart"))
    pem = tmp_path / "cart.pem"
    pem.write_bytes(svid.cert_chain_pem)
    assert main(["ca", "inspect", str(pem), "--ca-dir", str(ca_dir)]) == 0
    out = capsys.readouterr().out
    assert "spiffe://example.org/ns/shop/sa/cart" in out
    assert "pocketmesh root CA example.org" in out  # the issuer
    assert "verified" in out

    other = tmp_path / "other"
    main(["ca", "init", "--dir", str(other)])
    capsys.readouterr()
    assert main(["ca", "inspect", str(pem), "--ca-dir", str(other)]) == 0
    assert "verified" not in capsys.readouterr().out.split("Chain:")[1]


def test_bootstrap_embeds_a_token_or_with_xds_tls_a_client_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ca_dir = tmp_path / "config", tmp_path / "ca"
    config.mkdir()
    write_mesh(config, "127.0.81", {"productpage": 1, "reviews": 2, "ratings": 3})
    main(["ca", "init", "--dir", str(ca_dir)])
    capsys.readouterr()
    args = ["bootstrap", "--workload", "reviews", "--config", str(config), "--ca-dir", str(ca_dir)]
    # No running mesh to ask (one on the default ports must not change this bootstrap).
    args += ["--debug-address", f"127.0.0.1:{free_port()}"]
    tokens = ProxyTokens.load_or_create(ca_dir)

    # Plaintext xDS: the token, as gRPC metadata; the user is told where it shows.
    assert main(args) == 0
    out, err = capsys.readouterr()
    (service,) = yaml.safe_load(out)["dynamic_resources"]["ads_config"]["grpc_services"]
    token = tokens.token("reviews.default")
    assert service["initial_metadata"] == [{"key": "x-pocketmesh-token", "value": token}]
    assert "/config_dump" in err and "--xds-tls" in err

    # xDS over TLS: a client certificate naming the node, and no token anywhere.
    assert main([*args, "--xds-tls"]) == 0
    out, err = capsys.readouterr()
    boot = yaml.safe_load(out)
    assert token not in out and err == ""
    (service,) = boot["dynamic_resources"]["ads_config"]["grpc_services"]
    assert "initial_metadata" not in service
    tls = boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    validation = tls["common_tls_context"]["validation_context"]
    assert "BEGIN CERTIFICATE" in validation["trusted_ca"]["inline_string"]
    assert validation["match_typed_subject_alt_names"][0]["matcher"]["exact"] == (
        "spiffe://cluster.local/ns/istio-system/sa/istiod"
    )
    (pair,) = tls["common_tls_context"]["tls_certificates"]
    cert = pair["certificate_chain"]["inline_string"].encode()
    assert "PRIVATE KEY" in pair["private_key"]["inline_string"]
    assert ProxyCredentials.node_of(cert) == "reviews.default"
    # Signed by the xDS client CA this CA directory's token key derives.
    ca = x509.load_pem_x509_certificate(tokens.credentials().ca_pem)
    x509.load_pem_x509_certificate(cert).verify_directly_issued_by(ca)


def test_serve_identity_flags(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    options = options_from(parse(["serve", "--ca-dir", str(tmp_path), "--svid-ttl", "90s"]))
    assert options.identity is not None
    assert options.identity.ca_dir == tmp_path
    assert options.identity.svid_ttl == timedelta(seconds=90)
    # Proxy authentication is on unless turned off.
    assert not options.identity.xds_tls and options.identity.proxy_auth
    options = options_from(parse(["serve", "--xds-tls", "--no-proxy-auth"]))
    assert options.identity is not None and options.identity.xds_tls
    assert not options.identity.proxy_auth
    assert options_from(parse(["serve", "--no-identity"])).identity is None
    with pytest.raises(SystemExit):
        parse(["serve", "--svid-ttl", "soon"])


def test_bootstrap_redirected_to_a_file_makes_it_private(tmp_path: Path) -> None:
    """`pocketmesh bootstrap > X.yaml`: the shell makes X.yaml with the umask's mode
    (0644 here); the command makes it 0600 before writing the credential in."""
    import os
    import stat
    import subprocess
    import sys

    config, ca_dir = tmp_path / "config", tmp_path / "ca"
    config.mkdir()
    write_mesh(config, "127.0.81", {"productpage": 1, "reviews": 2, "ratings": 3})
    main(["ca", "init", "--dir", str(ca_dir)])
    target = tmp_path / "reviews.yaml"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    os.fchmod(fd, 0o644)
    argv = [sys.executable, "-m", "xds_server.cli", "bootstrap", "--workload", "reviews",
            "--config", str(config), "--ca-dir", str(ca_dir), "--xds-tls",
            "--debug-address", f"127.0.0.1:{free_port()}"]  # fmt: skip
    with os.fdopen(fd, "w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in target.read_text()
    # A pipe is left alone (and works).
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and yaml.safe_load(piped.stdout)["node"]["id"] == "reviews.default"
