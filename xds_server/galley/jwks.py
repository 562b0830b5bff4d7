"""JSON Web Key Sets: checked as Envoy's jwt_authn reads them, and fetched for `jwksUri`.

`jwks_problems` checks a key set the way Envoy's verifier (jwt_verify_lib) parses it:
JSON with a non-empty `keys` list, each key of a type and curve Envoy verifies with
(RSA, EC P-256/P-384/P-521, oct, OKP Ed25519), its parameters decoding to a real key
(PyJWT and cryptography build it). `public_jwks` is the set Envoy is sent: the public
members only, so a private key someone pasted never reaches a proxy or a config dump.
Messages never quote key material.

`JwksFetcher` gets what `jwksUri` names (an http(s) URL, or a `file:` path) and, with
no `jwksUri`, what an http(s) issuer's OpenID discovery document names, as istiod's
JWKS resolver does. A fetcher keeps what it fetched for as long as its owner (the
control plane) lives: a URL is fetched again once its copy is `REFRESH_AFTER` old (a
failed one after `RETRY_AFTER`), and a failed fetch falls back on the last good copy.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from jwt.exceptions import PyJWTError

__all__ = [
    "MAX_JWKS_BYTES",
    "NO_KEYS_JWKS",
    "REFRESH_AFTER",
    "RETRY_AFTER",
    "Fetched",
    "JwksFetcher",
    "jwks_problems",
    "public_jwks",
]

MAX_JWKS_BYTES = 1 << 20
REFRESH_AFTER = 20 * 60.0  # Istio's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL
RETRY_AFTER = 60.0  # Istio's JwtPubKeyRefreshIntervalOnFailure

# Sent when no key set could be had: an RSA public key whose private half was
# discarded when it was made, so no token verifies (fail closed, as Istio does).
NO_KEYS_JWKS = json.dumps(
    {
        "keys": [
            {
                "kty": "RSA",
                "e": "AQAB",
                "kid": "pocketmesh-no-keys",
                "n": "olNx1CvP5iN-52Yga-s0mHFJ2Hs1_eEx_4ET--As6f2O3mKKL2oy15sIUC_rt82XRM"
                "-XBvB0uHNxfVlCt7rKZs3bwTim9WmGcEwXPNS8LJole4-_nn-L28uD3x-ztuKCXxSb"
                "VX7Z1D6WaP5xQdPG1L04Le3dpupQsc0K0o8Ph01wTGLxeW5F6WWP5k_UiThF51D9B3"
                "h4rYcUb5aEMhuXLB9N4QuMtOck79s0tdrstTyi3cAFeyV1E_X6rmeSqkyvkObd9BZW"
                "DOtihfEMi_BwV6i7e9UVYUlitVqZm_iMHsnTMHL4rz5KpYxk9suTSHARXJ53tENOdH"
                "Vt1Kun5_aoEQ",
            }
        ]
    },
    sort_keys=True,
)

# What Envoy's verifier takes: key types, curves, and the algorithms a key may name.
_CURVES = {
    "EC": {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"},
    "OKP": {"Ed25519": "EdDSA"},
}
_ALGS = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384", "ES512"},
    "oct": {"HS256", "HS384", "HS512"},
    "OKP": {"EdDSA"},
}
# The members a verifier needs; private ones are dropped (`oct` keys are secrets by nature).
_PUBLIC = {
    "RSA": ("kty", "kid", "alg", "use", "n", "e"),
    "EC": ("kty", "kid", "alg", "use", "crv", "x", "y"),
    "OKP": ("kty", "kid", "alg", "use", "crv", "x"),
    "oct": ("kty", "kid", "alg", "use", "k"),
}
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth")


def _parse(text: str) -> tuple[list[object] | None, str | None]:
    try:
        value = json.loads(text)
    except ValueError as err:
        return None, f"is not JSON ({err.__class__.__name__} at character {_position(err)})"
    if not isinstance(value, dict) or "keys" not in value:
        return None, 'is not a JSON Web Key Set: expected an object with a "keys" list'
    keys = value["keys"]
    if not isinstance(keys, list) or not keys:
        return None, 'has no keys: "keys" must be a non-empty list of JSON Web Keys'
    return keys, None


def _position(err: ValueError) -> int:
    return int(getattr(err, "pos", 0))


def _key_problem(key: object) -> str | None:
    if not isinstance(key, dict):
        return "is not a JSON object"
    kty = key.get("kty")
    if kty not in _ALGS:
        return f"kty {kty!r} is not one Envoy verifies with (RSA, EC, oct, OKP)"
    alg = key.get("alg")
    crv = key.get("crv")
    if kty in _CURVES:
        curves = _CURVES[kty]
        if crv not in curves:
            return f"crv {crv!r} is not one Envoy supports for {kty} ({', '.join(curves)})"
        if alg is None:
            alg = curves[crv]
    if alg is not None and alg not in _ALGS[kty]:
        return f"alg {alg!r} does not go with kty {kty} ({', '.join(sorted(_ALGS[kty]))})"
    try:
        jwt.PyJWK(key, algorithm=alg or None)
    except PyJWTError as err:
        # PyJWT's messages may quote the key: name only what kind of problem it was.
        return f"is not a valid {kty} key ({err.__class__.__name__})"
    except Exception as err:  # cryptography refusing a value (a bad modulus, a point off the curve)
        return f"is not a valid {kty} key ({err.__class__.__name__})"
    return None


def jwks_problems(text: str) -> list[str]:
    """What is wrong with a JSON Web Key Set (empty: nothing), each a phrase that
    reads after "jwks"; `keys[N] ...` for one key."""
    keys, problem = _parse(text)
    if problem is not None:
        return [problem]
    assert keys is not None
    return [f"keys[{i}] {p}" for i, key in enumerate(keys) if (p := _key_problem(key))]


def has_private_keys(text: str) -> bool:
    keys, _ = _parse(text)
    return any(
        isinstance(k, dict) and k.get("kty") != "oct" and any(m in k for m in _PRIVATE)
        for k in keys or ()
    )


def public_jwks(text: str) -> str:
    """The key set Envoy is sent: each key's public members, in a stable form."""
    keys, problem = _parse(text)
    if problem is not None or keys is None:
        raise ValueError(f"jwks {problem}")
    kept = []
    for key in keys:
        assert isinstance(key, dict)
        members = _PUBLIC.get(str(key.get("kty")), ())
        kept.append({m: key[m] for m in members if m in key})
    return json.dumps({"keys": kept}, sort_keys=True)


# --- fetching -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a fetch gave: the text, or why there is none; `stale` when the text is an
    earlier copy kept because the latest fetch failed."""

    text: str | None
    problem: str | None = None
    stale: bool = False


HttpGet = Callable[[str, float], bytes]


def _http_get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        final = urllib.parse.urlsplit(response.geturl()).scheme
        if final not in ("http", "https"):
            raise OSError(f"redirected to a {final}: URL")
        data: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise OSError(f"more than {MAX_JWKS_BYTES} bytes")
    return data


@dataclass
class _Entry:
    text: str | None  # the last good copy
    fetched_at: float  # when it was last tried
    problem: str | None  # why the last try failed


class JwksFetcher:
    """Fetches http(s) key sets (and OpenID discovery documents) for the loader.

    Thread-safe: loads run in worker threads. `http_get` and `clock` are injectable
    for tests; the default fetches with urllib, verifying TLS with the system roots.
    """

    def __init__(
        self,
        *,
        http_get: HttpGet = _http_get,
        clock: Callable[[], float] = time.monotonic,
        refresh_after: float = REFRESH_AFTER,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self._get = http_get
        self._clock = clock
        self._refresh_after = refresh_after
        self._retry_after = retry_after
        self._entries: dict[str, _Entry] = {}
        self._touched: set[str] = set()  # URLs a load asked for since the last sweep
        self._lock = threading.Lock()

    def fetch(self, url: str, timeout: float) -> Fetched:
        """The text at `url`, fetched unless a fresh enough copy is kept."""
        with self._lock:
            entry = self._entries.get(url)
            self._touched.add(url)
        if entry is None or self._due(entry):
            entry = self._try(url, timeout, entry)
        if entry.problem is None:
            return Fetched(entry.text)
        return Fetched(entry.text, entry.problem, stale=entry.text is not None)

    def discover(self, issuer: str, timeout: float) -> tuple[str | None, Fetched]:
        """OpenID discovery: (the jwks_uri the issuer's configuration names, its key set)."""
        where = issuer.rstrip("/") + "/.well-known/openid-configuration"
        found = self.fetch(where, timeout)
        if found.text is None:
            return None, Fetched(None, f"OpenID discovery at {where} failed: {found.problem}")
        try:
            uri = json.loads(found.text).get("jwks_uri")
        except (ValueError, AttributeError):
            uri = None
        if not isinstance(uri, str) or urllib.parse.urlsplit(uri).scheme not in (
            "http",
            "https",
        ):
            return None, Fetched(None, f"{where} names no http(s) jwks_uri")
        return uri, self.fetch(uri, timeout)

    def due(self) -> list[str]:
        """URLs whose copy is old enough to be fetched again."""
        with self._lock:
            return [url for url, entry in self._entries.items() if self._due(entry)]

    def refresh(self, timeout: float = 5.0) -> bool:
        """Fetch every URL that is due; True when any result differs from before
        (new content, or a failure starting or ending)."""
        changed = False
        for url in self.due():
            with self._lock:
                before = self._entries.get(url)
            after = self._try(url, timeout, before)
            if before is None or (before.text, before.problem) != (after.text, after.problem):
                changed = True
        return changed

    def sweep(self) -> None:
        """After a load: forget the URLs it did not ask for (no longer named), so they
        are not refreshed for nothing."""
        with self._lock:
            for url in [u for u in self._entries if u not in self._touched]:
                del self._entries[url]
            self._touched.clear()

    def _due(self, entry: _Entry) -> bool:
        wait = self._retry_after if entry.problem is not None else self._refresh_after
        return self._clock() - entry.fetched_at >= wait

    def _try(self, url: str, timeout: float, before: _Entry | None) -> _Entry:
        now = self._clock()
        try:
            data = self._get(url, timeout)
            text: str | None = data.decode("utf-8-sig")
            problem = None
        except UnicodeDecodeError:
            text, problem = None, "the answer is not UTF-8 text"
        except urllib.error.HTTPError as err:
            text, problem = None, f"HTTP {err.code}"
        except urllib.error.URLError as err:
            text, problem = None, str(err.reason)
        except (OSError, ValueError) as err:
            text, problem = None, str(err) or err.__class__.__name__
        if text is None and before is not None:
            text = before.text  # keep the last good copy
        entry = _Entry(text, now, problem)
        with self._lock:
            self._entries[url] = entry
        return entry
