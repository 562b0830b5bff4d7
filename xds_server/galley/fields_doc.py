"""docs/fields.md, generated from the registry of kinds and their field tables.

    python -m xds_server.galley.fields_doc > docs/fields.md

A test compares the file with `render()`, so the reference cannot drift from what
the validator accepts and the generators build.
"""

from __future__ import annotations

from collections import Counter

from .fields import Field, Status, walk
from .registry import KINDS, NOT_YET_KINDS, Kind

_STATUS = {
    Status.SUPPORTED: "supported",
    Status.DEPRECATED: "deprecated (warns)",
    Status.NO_EFFECT: "no effect (warns)",
    Status.LABEL: "label",
    Status.RESTRICTED: "restricted",
    Status.NOT_YET: "**not yet** (refused)",
}

_HEADER = """\
# Supported fields

Generated from pocketmesh's registry of kinds (`xds_server/galley/registry.py`) by
`python -m xds_server.galley.fields_doc`; a test fails when this file and the code
differ. Every field Istio's API defines for these kinds is listed with what
pocketmesh does when a document sets it:

- **supported**: built into the Envoy config; a test sets the field and proves the
  generated resources change (`tests/generators/test_field_coverage.py`).
- **deprecated (warns)**: built, with a warning that Istio deprecates it.
- **no effect (warns)**: Istio itself does nothing with it here; accepted with a warning.
- **label**: a name for people and tools; checked, shapes no traffic (as in Istio).
- **restricted**: only the values that mean what pocketmesh always does are accepted
  (see the note); any other value is refused with a located error.
- **not yet (refused)**: refused as
  `file:line: Kind ns/name: field: not supported by pocketmesh yet`.

Nothing is accepted and silently ignored: a field not listed here is an error
(`unknown field`, with a "did you mean" when one is close).

`metadata`: `name` and `namespace` (default `default`) identify a resource;
`labels` and `annotations` are kept for tools and shape no traffic, except a
WorkloadEntry's `metadata.labels`, which Istio merges into its `spec.labels` (the
metadata's win), and an AuthorizationPolicy's `istio.io/dry-run` annotation (`"true"`:
its rules are evaluated and counted, never enforced, as in Istio). The Kubernetes
bookkeeping fields (`uid`, `resourceVersion`, `creationTimestamp`, `managedFields`, ...)
and a top-level `status` are accepted and skipped, as `kubectl get -o yaml` writes them.

Lists are written `name[]`, maps with keys you choose `name.<key>`. A table used in
several places (a DestinationRule traffic policy at the top, per subset and per
port) is listed in each.
"""


_TLS_NOTES = """\
## DestinationRule TLS, in detail

- `DISABLE`: plaintext. `ISTIO_MUTUAL`: the mesh's mTLS, the proxy's SVID (`default`)
  and the mesh roots (`ROOTCA`) by SDS; the peer must present one of the destination's
  SPIFFE IDs (its workloads' and the ServiceEntry's `subjectAltNames`), or the rule's
  `subjectAltNames`; SNI `outbound_.<port>_.<subset>_.<host>` unless `sni` is set. A
  control plane without workload identities (`serve --no-identity`) cannot give it: a
  config asking for it is rejected (`file:line: DestinationRule ns/name: ...`), never
  built as plaintext.
- `SIMPLE` / `MUTUAL`: TLS originated by the proxy, TLS 1.2 to 1.3, `h2` ALPN on
  HTTP/2 ports. `clientCertificate`, `privateKey` and `caCertificates` are paths
  (relative ones to the YAML file's folder) read by the control plane on every load,
  checked (PEM that parses, a key that matches its certificate and that Envoy takes),
  and sent to the proxies that see the host by SDS, named as Istio names them
  (`file-cert:<cert>~<key>`, `file-root:<ca>`): a missing or bad file is an error at
  the field that names it, and a renewed file is pushed on the next reload (SDS only).
  Without `caCertificates` the upstream is verified against the system roots of the
  control plane (Istio: the proxy's), unless `insecureSkipVerify: true`.
- `credentialName` names a `kubernetes.io/tls` Secret document in the rule's own
  namespace (Istio reads it from the proxy's): `tls.crt` and `tls.key` are the client
  certificate (`MUTUAL`), `ca.crt` the roots (required unless `insecureSkipVerify`).
  Unlike Istio, it applies to sidecars too, not only to gateways.
- SNI: `sni`, else (HTTP ports) the request's host with Envoy's `auto_sni`, checked
  against the certificate (`auto_san_validation`) when no `subjectAltNames` are given,
  as Istio does; on TCP ports, the rule's host.
- Asking for TLS never yields plaintext: TLS settings with no `mode` (Istio's default,
  `DISABLE`) are an error that asks for the mode, since TLS was meant. Fields a mode
  does not use (certificate fields with an explicit `DISABLE` or with `ISTIO_MUTUAL`,
  client certificates with `SIMPLE`) are accepted as Istio accepts them, with a warning
  that they have no effect; they are never silently unused.
"""


_GATEWAY_NOTES = """\
## Gateways and routes: deliberate non-goals

How each Gateway server and VirtualService route becomes Envoy config is told in
[traffic.md](traffic.md#gateways-and-routes). Refused on purpose, each with a
located error:

- `Gateway spec.servers[].tls.mode: AUTO_PASSTHROUGH`: it forwards mesh mTLS from
  sidecars of another network to the cluster named in Istio's multi-network SNI
  (`outbound_.<port>_.<subset>_.<host>`); pocketmesh runs one network, so nothing
  would ever send to it. Use `PASSTHROUGH` with `tls[]` routes.
- `credentialName: sds://...` or `kubernetes-gateway://...`: credentials from an
  external SDS provider or a Gateway API reference; pocketmesh reads Secret documents.
- `VirtualService spec.tls[].match[].destinationSubnets` (and `tcp[]`'s): without
  iptables a sidecar sees its own address as the destination, never the original one.
"""


def _kind_section(kind: Kind) -> list[str]:
    counts = Counter(f.status for _, f in walk(kind.spec))
    summary = ", ".join(f"{counts[s]} {s.value}" for s in Status if counts[s])
    api = kind.api_versions()
    where = "its top-level fields" if kind.document_level else "`spec`"
    lines = [
        f"## {kind.kind}",
        "",
        f"`{api}`; {where}: {summary}. A change reaches {kind.reach.value}.",
        "",
        "| Field | Status | Notes |",
        "|---|---|---|",
    ]
    prefix = "" if kind.document_level else "spec"
    for path, field in walk(kind.spec, prefix):
        lines.append(f"| `{path}` | {_STATUS[field.status]} | {_note(field)} |")
    return [*lines, ""]


def _note(field: Field) -> str:
    return field.note.replace("|", "\\|")


def counts() -> dict[str, dict[str, int]]:
    """Per kind, how many field paths have each status (for reports)."""
    return {
        k.kind: {s.value: n for s, n in Counter(f.status for _, f in walk(k.spec)).items()}
        for k in KINDS
    }


_SECURITY_NOTES = """\
## Security kinds, in detail

- **The mesh settings** are Istio's MeshConfig where Istio users keep it: YAML text under
  `data.mesh` of the ConfigMap `istio` in `istio-system` (the only ConfigMap pocketmesh
  reads; any other is an error). Of MeshConfig, `extensionProviders` of the ext_authz
  kinds are built; every other field is refused, located at its own line inside
  `data.mesh` (the trust domain is `serve --trust-domain`).
- **RequestAuthentication** `jwksUri`: an `http(s)://` URL is fetched by the control
  plane (timeout: the rule's `timeout`, 5 s by default), kept, refreshed every 20
  minutes (a failed URL retried every minute) and sent to the proxies inline, as
  istiod does. A URL that cannot be fetched warns, and that issuer's tokens are refused
  (401) until it can be (fail closed, as Istio); a fetched key set that is not JSON Web
  Keys is an error. `file:` URLs are read on every load (relative paths from the YAML
  file's folder). No `jwks` and no `jwksUri`: OpenID discovery when the issuer is an
  http(s) URL. Private key members are never sent to Envoy.
- **AuthorizationPolicy** `action: CUSTOM` needs `provider.name` to name a provider of
  the mesh settings whose `service` is a ServiceEntry host with that `port` (a GRPC or
  HTTP2 port for `envoyExtAuthzGrpc`); anything else is an error. Several providers on
  one workload each get their own filters. As in Istio, CUSTOM runs first, then
  jwt_authn, then AUDIT, DENY, ALLOW; on TCP ports only gRPC providers decide.
- `targetRef` / `targetRefs` (Gateway API and waypoint attachment) are refused:
  pocketmesh has no Gateway API kinds and no waypoints; use `selector`.
"""


def render() -> str:
    lines = [_HEADER]
    for kind in KINDS:
        lines += _kind_section(kind)
    lines.append(_TLS_NOTES)
    lines.append(_GATEWAY_NOTES)
    lines.append(_SECURITY_NOTES)
    lines.append("## Kinds not supported yet")
    lines.append("")
    lines.append(
        "Refused by name (`kind: 'X' is not supported by pocketmesh yet`): "
        + ", ".join(f"{name} (`{group}`)" for name, group in sorted(NOT_YET_KINDS.items()))
        + ". Any other kind is an `unknown kind` error."
    )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
