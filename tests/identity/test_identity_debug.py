"""The debug address: who may change state, what a refused rotation says, how many roots
repeated rotations leave, and that no private key or token leaves through it (or
through a sidecar's admin interface)."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from cryptography import x509

from ca.keys import private_key_to_pem
from tests.e2e.harness import ControlPlaneThread, get, running, start_all, wait_until
from tests.identity.mesh import call, start_sidecar, write_mesh_and_start_apps
from xds_server import xds_types
from xds_server.debug_http import admin_refusal
from xds_server.identity import IdentityOptions
from xds_server.identity.auth import TOKEN_KEY_FILE

NET = "127.0.83"


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple:
    host, _, path = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request(method, "/" + path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("debug")
    config, ca_dir = root / "config", root / "ca"
    config.mkdir()
    apps = write_mesh_and_start_apps(config, NET)
    # The renew loop runs only when the test says (tick), so a rotation stays pending.
    options = IdentityOptions(ca_dir=ca_dir, tick_seconds=3600)
    plane = ControlPlaneThread(config, watch=False, identity=options).start()
    with running(*apps, plane):
        yield {"plane": plane, "config": config, "root": root, "ca_dir": ca_dir}


def test_state_changing_requests_from_elsewhere_are_refused_with_a_reason() -> None:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        ("10.1.2.3", 40000) if key == "peername" else default
    )
    remote = make_mocked_request("POST", "/debug/ca/rotate-root", transport=transport)
    reason = admin_refusal(remote, remote_admin=False)
    assert reason is not None
    assert "only from loopback" in reason and "10.1.2.3" in reason
    assert "--debug-remote-admin" in reason
    assert admin_refusal(remote, remote_admin=True) is None
    read = make_mocked_request("GET", "/debug/syncz", transport=transport)
    assert admin_refusal(read, remote_admin=False) is None


def test_loopback_may_reload_a_web_page_may_not(mesh: dict[str, Any]) -> None:
    url = mesh["plane"].debug_url
    status, body = request(url + "/debug/reload", "POST")
    assert status == 200 and json.loads(body)["ok"]
    status, body = request(url + "/debug/reload", "POST", {"Origin": "http://evil.example"})
    assert status == 403
    assert "came from a web page" in json.loads(body)["error"]


def test_rotation_refuses_while_pending_and_bounds_retired_roots(mesh: dict[str, Any]) -> None:
    plane, ca_dir = mesh["plane"], mesh["ca_dir"]
    identity = plane.plane.identity
    url = plane.debug_url + "/debug/ca/rotate-root"
    # A workload holds an SVID: each retired root signed one that is still valid.
    plane.call(lambda: identity.issuer.svid("default", "productpage"))
    statuses = []
    for _ in range(30):
        status, body = request(url, "POST")
        statuses.append(status)
        if status == 200:
            # A second request before the proxies have the new bundle: a clear 409.
            again, why = request(url, "POST")
            assert again == 409, why
            assert "already in progress" in json.loads(why)["error"]
        else:
            assert status == 409, body
            assert "retired roots are still trusted" in json.loads(body)["error"]
            assert "Traceback" not in body
        plane.call(identity.tick)  # every proxy (none) has the bundle: the new root signs
    limit = identity.ca.rotation.max_retired
    assert statuses.count(200) == limit, statuses
    assert len(identity.ca.trust_bundle) == 1 + limit
    assert len(list((ca_dir / "roots").iterdir())) == 2 * (1 + limit)  # cert + key each
    status, body = request(plane.debug_url + "/debug/ca")
    assert status == 200 and len(json.loads(body)["roots"]) == 1 + limit


def _key_material(mesh: dict[str, Any]) -> list[str]:
    """Strings that must never appear: every private key PEM (and its base64, which is
    how Envoy shows inline bytes) and the token key."""
    identity = mesh["plane"].plane.identity
    pems = [svid.private_key_pem for svid in identity.issuer.issued().values()]
    pems += [private_key_to_pem(e.signer.private_key) for e in identity.ca.rotation.entries]
    needles = ["PRIVATE KEY", (mesh["ca_dir"] / TOKEN_KEY_FILE).read_text().strip()]
    for pem in pems:
        body = b"".join(pem.splitlines()[1:-1]).decode()
        needles += [body[:48], body[-48:], base64.b64encode(pem).decode()[:64]]
    return needles


def test_no_key_material_on_the_debug_address_or_in_envoy_dumps(mesh: dict[str, Any]) -> None:
    plane = mesh["plane"]
    envoys = [
        start_sidecar(plane, mesh["config"], mesh["root"], name)
        for name in ("productpage", "reviews")
    ]
    with running(*envoys):
        start_all(envoys)
        wait_until(
            lambda: call(f"{NET}.10:15001", "http://reviews:9080/")[0] == 200,
            timeout=15,
            what="productpage -> reviews over mTLS",
        )
        debug = plane.debug_url
        pages = [
            "/healthz", "/ready", "/metrics", "/debug/syncz", "/debug/config", "/debug/ca",
        ]  # fmt: skip
        for proxy in ("productpage.default", "reviews.default", "ghost.default"):
            pages.append(f"/debug/config_dump?proxy={proxy}")
            for short in xds_types.SHORT_NAMES.values():
                pages.append(f"/debug/config_dump?proxy={proxy}&type={short}")
        outputs = {page: request(debug + page) for page in pages}
        for envoy in envoys:
            for page in ("/config_dump", "/config_dump?include_eds", "/certs", "/stats"):
                outputs[envoy.name + page] = get(envoy.admin + page)
        secret_dump = json.loads(outputs["/debug/config_dump?proxy=reviews.default"][1])
        (default,) = [s for s in secret_dump["resources"]["secret"] if s["name"] == "default"]
        assert default["resource"]["tls_certificate"]["private_key"] == "[redacted]"
        needles = _key_material(mesh)
        assert len(needles) > 10
        tokens = {e.name: plane.plane.identity.tokens.token(e.name) for e in envoys}
        for page, (status, body) in outputs.items():
            assert status == 200, (page, body[:200])
            leaked = [n[:20] for n in needles if n and n in body]
            assert not leaked, f"{page} shows key material: {leaked}"
            # The control plane shows no token; an Envoy's dump shows its bootstrap, so
            # its own token, to whoever reaches its admin address (see docs/faults.md),
            # and never another proxy's.
            own = page.split("/", 1)[0] if not page.startswith("/") else None
            shown = [name for name, token in tokens.items() if token in body and name != own]
            assert not shown, f"{page} shows the token of {shown}"
        # The certificates Envoy shows are the SVIDs the CA issued (public, expected).
        certs = json.loads(outputs["reviews.default/certs"][1])
        assert certs["certificates"], certs
        issued = plane.plane.identity.issuer.issued()
        assert any(
            x509.load_pem_x509_certificates(svid.cert_chain_pem)[0].serial_number
            == int(c["serial_number"], 16)
            for svid in issued.values()
            for entry in certs["certificates"]
            for c in entry.get("cert_chain", [])
        )


def test_kept_svids_and_keys_are_owner_only(mesh: dict[str, Any]) -> None:
    ca_dir: Path = mesh["ca_dir"]
    secret = ("root-key.pem", TOKEN_KEY_FILE)
    for path in [ca_dir, *ca_dir.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            assert mode == 0o700, path
        elif path.name in secret or (
            path.parent.name in ("svids", "roots") and (path.name.endswith(("-key.pem", ".json")))
        ):
            assert mode == 0o600, path
