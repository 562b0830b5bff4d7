"""The PEM files DestinationRules and Gateways name, read and checked on every load.

`trafficPolicy.tls` names `clientCertificate`, `privateKey` and `caCertificates` by
path; the parser keeps only the path (its cache is keyed by the YAML text, and a
renewed certificate does not change the YAML). Here every file is read, checked as
Envoy would check it, and put into the model, so the generators can hand it to the
proxies by SDS and a changed file is a changed DestinationRule. A missing,
unreadable or malformed file is an error located at the field naming it.

SIMPLE and MUTUAL without `caCertificates` (nor `credentialName`, nor
`insecureSkipVerify`) verify the upstream against the system's roots, as Istio does:
the bundle the control plane's OpenSSL uses (`SSL_CERT_FILE` overrides it).

A Gateway server that ends TLS names `serverCertificate`/`privateKey` (or several
`tlsCertificates`), `caCertificates` and `caCrl` the same way; they are read and
checked here too (a key that matches its certificate, one certificate per key type).
"""

from __future__ import annotations

import dataclasses
import functools
import ssl
from collections.abc import Callable, Iterable, Sequence

from .documents import ParsedDoc
from .errors import ERROR, ConfigError
from .model import Sidecar
from .model_traffic import (
    ClientTLS,
    DestinationRule,
    Gateway,
    PemFile,
    ServerCertificate,
    ServerTLS,
    Subset,
    TrafficPolicy,
)
from .pem import certificates_problem, crl_problem, key_pair_problems, key_type

__all__ = ["load_tls_files", "system_roots_path"]


def system_roots_path() -> str:
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.openssl_cafile


_Read = tuple[str, PemFile, str]  # a file read: (the field naming it, the file, its text)


class _Reader:
    """Reads each file once per load, remembering what was wrong with it."""

    def __init__(self) -> None:
        self._texts: dict[str, str | Exception] = {}

    def read(self, path: str) -> str | Exception:
        found = self._texts.get(path)
        if found is None:
            try:
                with open(path, encoding="utf-8-sig") as f:
                    found = f.read()
            except (OSError, UnicodeDecodeError, ValueError) as err:
                found = err
            self._texts[path] = found
        return found

    def read_files(
        self, at: str, files: Iterable[tuple[str, PemFile]], error: Callable[[str, str], None]
    ) -> list[_Read]:
        """(field, file, text) of each of `files` (fields under `at`) that can be read; the
        others are errors at their fields."""
        texts: list[_Read] = []
        for name, pem_file in files:
            text = self.read(pem_file.path)
            if isinstance(text, Exception):
                reason = getattr(text, "strerror", None) or str(text)
                error(f"{at}.{name}", f"cannot read {pem_file.path}: {reason}")
            else:
                texts.append((name, pem_file, text))
        return texts


def load_tls_files(docs: Sequence[ParsedDoc]) -> tuple[list[ParsedDoc], list[ConfigError]]:
    """`docs` with each DestinationRule's files read into it, and the errors found."""
    reader = _Reader()
    errors: list[ConfigError] = []
    out: list[ParsedDoc] = []
    for doc in docs:
        rule = doc.resource
        if isinstance(rule, Gateway | Sidecar):
            found_gw: list[ConfigError] = []
            report_gw = functools.partial(_report, doc, found_gw)
            loaded_gw: Gateway | Sidecar = (
                _load_gateway(rule, reader, report_gw)
                if isinstance(rule, Gateway)
                else _load_sidecar(rule, reader, report_gw)
            )
            errors += found_gw
            out.append(doc if found_gw else dataclasses.replace(doc, resource=loaded_gw))
            continue
        if not isinstance(rule, DestinationRule) or not any(
            t.originates for t in rule.tls_settings()
        ):
            out.append(doc)
            continue
        found: list[ConfigError] = []
        report = functools.partial(_report, doc, found)
        loaded = _map_tls(rule, functools.partial(_fill, reader=reader, error=report))
        errors += found
        out.append(doc if found else dataclasses.replace(doc, resource=loaded))
    return out, errors


def _fill(tls: ClientTLS, reader: _Reader, error: Callable[[str, str], None]) -> ClientTLS:
    if not tls.originates or tls.credential_name:
        return tls
    texts = {f.path: text for _, f, text in reader.read_files(tls.path, tls.files(), error)}
    cert, key = tls.client_certificate, tls.private_key
    if (
        cert is not None
        and key is not None
        and (chain_pem := texts.get(cert.path)) is not None
        and (key_pem := texts.get(key.path)) is not None
    ):
        _check_key_pair(
            (f"{tls.path}.clientCertificate", cert, chain_pem),
            (f"{tls.path}.privateKey", key, key_pem),
            error,
        )
    ca = tls.ca_certificates
    if ca is None and not tls.insecure_skip_verify:
        # Istio's "system" roots: no caCertificates still verifies the upstream.
        ca = PemFile(system_roots_path())
        text = reader.read(ca.path) if ca.path else FileNotFoundError("no system CA bundle")
        if isinstance(text, Exception):
            error(
                f"{tls.path}.caCertificates",
                f"not set, and the system roots cannot be read ({text}): name the CA bundle "
                "that verifies the upstream",
            )
        else:
            texts[ca.path] = text
    ca_pem = texts.get(ca.path) if ca is not None else None
    if ca is not None and ca_pem is not None and (problem := certificates_problem(ca_pem)):
        error(f"{tls.path}.caCertificates", f"{ca.path} {problem}")
    crl = tls.ca_crl
    crl_pem = texts.get(crl.path) if crl is not None else None
    if crl is not None and crl_pem is not None and (problem := crl_problem(crl_pem)):
        error(f"{tls.path}.caCrl", f"{crl.path} {problem}")
    return dataclasses.replace(
        tls,
        client_certificate=_loaded(tls.client_certificate, texts),
        private_key=_loaded(tls.private_key, texts),
        ca_certificates=_loaded(ca, texts),
        ca_crl=_loaded(crl, texts),
    )


def _check_key_pair(chain: _Read, key: _Read, error: Callable[[str, str], None]) -> bool:
    """A certificate chain and its private key checked as Envoy loads them, problems
    reported at their fields; True when the chain itself parses."""
    (chain_at, chain_file, chain_pem), (key_at, key_file, key_pem) = chain, key
    chain_problem, key_problem = key_pair_problems(chain_pem, key_pem)
    if chain_problem is not None:
        error(chain_at, f"{chain_file.path} {chain_problem}")
    if key_problem is not None:
        if key_problem.startswith("does not match"):
            key_problem = f"does not match the first certificate of {chain_file.path}"
        error(key_at, f"{key_file.path} {key_problem}")
    return chain_problem is None


def _map_tls(rule: DestinationRule, fill: Callable[[ClientTLS], ClientTLS]) -> DestinationRule:
    """The rule with `fill` applied to every `tls` it sets."""

    def policy(p: TrafficPolicy | None) -> TrafficPolicy | None:
        if p is None:
            return None
        return dataclasses.replace(
            p,
            tls=fill(p.tls) if p.tls is not None else None,
            port_level=tuple((n, policy(lp) or lp) for n, lp in p.port_level),
        )

    subsets = tuple(Subset(s.name, s.labels, policy(s.traffic_policy)) for s in rule.subsets)
    return dataclasses.replace(rule, traffic_policy=policy(rule.traffic_policy), subsets=subsets)


def _report(doc: ParsedDoc, found: list[ConfigError], field: str, message: str) -> None:
    assert doc.meta is not None
    line = doc.lines.get(field) or doc.lines.get(field.rpartition(".")[0], doc.meta.source.line)
    found.append(ConfigError(doc.file, line, doc.kind, doc.meta.key, field, message, ERROR))


# --- Gateways ---------------------------------------------------------------------


def _load_gateway(gateway: Gateway, reader: _Reader, error: Callable[[str, str], None]) -> Gateway:
    servers = tuple(
        dataclasses.replace(s, tls=_fill_server(s.tls, reader, error))
        if s.tls is not None and s.tls.terminates and s.tls.files()
        else s
        for s in gateway.servers
    )
    return dataclasses.replace(gateway, servers=servers)


def _load_sidecar(sidecar: Sidecar, reader: _Reader, error: Callable[[str, str], None]) -> Sidecar:
    """The files of each ingress port's tls (the TLS the sidecar ends), as a gateway's."""
    ingress = tuple(
        dataclasses.replace(i, tls=_fill_server(i.tls, reader, error)) if i.tls is not None else i
        for i in sidecar.ingress
    )
    return dataclasses.replace(sidecar, ingress=ingress)


def _fill_server(tls: ServerTLS, reader: _Reader, error: Callable[[str, str], None]) -> ServerTLS:
    texts = {f.path: text for _, f, text in reader.read_files(tls.path, tls.files(), error)}
    certificates: list[ServerCertificate] = []
    key_types: dict[str, str] = {}  # key type -> where the first such certificate is
    for cert in tls.certificates:
        if cert.chain is None or cert.key is None:
            certificates.append(cert)
            continue
        where = f"{tls.path}.{cert.where}." if cert.where else f"{tls.path}."
        chain_pem, key_pem = texts.get(cert.chain.path), texts.get(cert.key.path)
        if (
            chain_pem is not None
            and key_pem is not None
            and _check_key_pair(
                (f"{where}serverCertificate", cert.chain, chain_pem),
                (f"{where}privateKey", cert.key, key_pem),
                error,
            )
        ):
            kind = key_type(chain_pem)
            first = key_types.setdefault(kind, f"{where}serverCertificate")
            if first != f"{where}serverCertificate":
                error(
                    f"{where}serverCertificate",
                    f"Envoy serves one certificate per key type, and {first} is already {kind}",
                )
        certificates.append(
            dataclasses.replace(
                cert,
                chain=_loaded(cert.chain, texts),
                key=_loaded(cert.key, texts),
            )
        )
    ca, crl = tls.ca_certificates, tls.ca_crl
    for name, found, check in (
        ("caCertificates", ca, certificates_problem),
        ("caCrl", crl, crl_problem),
    ):
        pem = texts.get(found.path) if found is not None else None
        if found is not None and pem is not None and (problem := check(pem)) is not None:
            error(f"{tls.path}.{name}", f"{found.path} {problem}")
    return dataclasses.replace(
        tls,
        certificates=tuple(certificates),
        ca_certificates=_loaded(ca, texts),
        ca_crl=_loaded(crl, texts),
    )


def _loaded(pem_file: PemFile | None, texts: dict[str, str]) -> PemFile | None:
    if pem_file is None or pem_file.path not in texts:
        return pem_file
    return PemFile(pem_file.path, texts[pem_file.path])
