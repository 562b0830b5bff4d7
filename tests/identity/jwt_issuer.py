"""A JWT issuer for tests: keys made here, tokens signed with them (PyJWT), and a tiny
HTTP server for the key set (and an OpenID discovery document), on 127.0.0.1.

No network: the key set is served from this machine, or written inline or to a file.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class Issuer:
    """One issuer: an RSA and an EC key (`kid`s rsa-1, ec-1), and tokens signed with them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> str:
        keys = []
        for kid, algorithm, key in (
            ("rsa-1", jwt.algorithms.RSAAlgorithm, self.rsa.public_key()),
            ("ec-1", jwt.algorithms.ECAlgorithm, self.ec.public_key()),
        ):
            jwk = json.loads(algorithm.to_jwk(key))
            jwk["kid"] = kid
            keys.append(jwk)
        return json.dumps({"keys": keys})

    def token(
        self,
        sub: str = "alice",
        *,
        ec_key: bool = False,
        expires_in: float = 3600,
        iss: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {"iss": iss or self.name, "sub": sub, "iat": now, "exp": now + int(expires_in)}
        payload.update(claims)
        if ec_key:
            return jwt.encode(payload, self.ec, algorithm="ES256", headers={"kid": "ec-1"})
        return jwt.encode(payload, self.rsa, algorithm="RS256", headers={"kid": "rsa-1"})


class JwksServer:
    """Serves `/jwks.json` (what `jwks` holds now, changeable) and, for OpenID discovery,
    `/.well-known/openid-configuration` naming it. Counts the key set's fetches."""

    def __init__(self, jwks: str = "") -> None:
        self.jwks = jwks
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/jwks.json" and owner.jwks:
                    owner.fetches += 1
                    self._send(200, owner.jwks)
                elif self.path == "/.well-known/openid-configuration":
                    self._send(
                        200, json.dumps({"issuer": owner.url, "jwks_uri": owner.url + "/jwks.json"})
                    )
                else:
                    self._send(404, "{}")

            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> JwksServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
