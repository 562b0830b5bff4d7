"""Every field the schemas accept is enforced on Envoy, warns, or is refused.

The field tables (`galley.fields`, one per kind in `galley.registry`) are walked:

- each SUPPORTED or DEPRECATED field must have a case below: a document setting it,
  and the same document without it (or with another value). Both must load without
  errors, and the Envoy resources generated for every proxy must differ. A field
  added to a table without a case fails `test_every_accepted_field_has_a_case`; one
  with a case but no generator behind it fails `test_each_case_changes_the_output`;
- DEPRECATED fields must also warn;
- NOT_YET fields are set in a sample document and must be refused with
  `file:line: Kind ns/name: field: not supported by pocketmesh yet`;
- NO_EFFECT fields must warn and change nothing; LABEL fields must change nothing;
- RESTRICTED fields must refuse a value other than the ones they allow.

A table used in several places (a traffic policy at the top, per subset, per port;
a string match under uri, headers, CORS origins) is proven field by field once, and
each place that uses it is proven as a whole (removing it changes the output).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.traffic.gateway_clients import fingerprints, revoke
from tests.traffic.tls_upstream import Pki
from xds_server.galley.fields import Field, Shape, Status
from xds_server.galley.loader import LoadResult, load_paths
from xds_server.galley.registry import BY_KIND, KINDS, Kind
from xds_server.generators import PushContext, generate

REMOVE: Any = object()


@dataclass(frozen=True)
class Case:
    """`path` (concrete, with indices) is removed, or set to `alt`; `also` are other
    edits the variant needs to stay valid."""

    path: str
    alt: Any = REMOVE
    also: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    docs: str  # YAML; the first document is the one the cases edit
    cases: tuple[Case | str, ...]

    @property
    def kind(self) -> Kind:
        return BY_KIND[yaml.safe_load_all(self.docs).__next__()["kind"]]


# --- the mesh every sample is added to ----------------------------------------------

BASE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9443, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  workloadSelector: {labels: {app: tcp-echo}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8443, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.80.40}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage, namespace: default}
spec: {address: 127.0.80.1, labels: {app: productpage}, serviceAccount: productpage}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.80.2, labels: {app: reviews, version: v1}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 127.0.80.3, labels: {app: reviews, version: v2}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v1, namespace: default}
spec: {address: 127.0.80.4, labels: {app: ratings, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tcp-echo-v1, namespace: default}
spec: {address: 127.0.80.5, labels: {app: tcp-echo, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tcp-echo-v2, namespace: default}
spec: {address: 127.0.80.6, labels: {app: tcp-echo, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress, namespace: default}
spec: {address: 127.0.80.9, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: other}
spec: {address: 127.0.80.30, labels: {app: sleep}}
---
apiVersion: v1
kind: Secret
metadata: {name: credential, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$CERT1
  tls.key: |
$KEY1
  ca.crt: |
$CA
---
apiVersion: v1
kind: Secret
metadata: {name: credential2, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$CERT2
  tls.key: |
$KEY2
  ca.crt: |
$CA
"""

GATEWAY = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
"""

REVIEWS_SUBSETS = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""

TCP_SUBSETS = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo, namespace: default}
spec:
  host: tcp-echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""

# --- the samples, one kind after another ------------------------------------------------

SERVICE_ENTRY = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  addresses: [10.9.0.1]
  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 8081}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 127.0.80.20
    labels: {version: v1}
    ports: {http: 8082}
    serviceAccount: api
    locality: us/east
    weight: 3
  - address: 127.0.80.21
  exportTo: ["."]
""",
        (
            Case("spec.hosts", ["api2.example.com"]),
            "spec.addresses",
            "spec.ports",
            Case("spec.ports[0].number", 8090),
            Case("spec.ports[0].protocol", "TCP"),
            Case("spec.ports[0].name", "web"),
            "spec.ports[0].targetPort",
            Case("spec.resolution", "DNS"),
            "spec.endpoints",
            Case("spec.endpoints[0].address", "127.0.80.22"),
            "spec.endpoints[0].labels",
            "spec.endpoints[0].ports",
            "spec.endpoints[0].serviceAccount",
            "spec.endpoints[0].locality",
            "spec.endpoints[0].weight",
            "spec.exportTo",
        ),
    ),
    # Another name for the reviews workloads: auto-mTLS applies, so location and
    # subjectAltNames show.
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-alias, namespace: default}
spec:
  hosts: [reviews.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/legacy"]
""",
        (
            Case("spec.location", "MESH_EXTERNAL"),
            "spec.workloadSelector",
            Case("spec.workloadSelector.labels", {"app": "ratings"}),
            "spec.subjectAltNames",
        ),
    ),
]

WORKLOAD_ENTRY = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v2, namespace: default}
spec:
  address: 127.0.80.7
  labels: {app: ratings, version: v2}
  ports: {http: 9999}
  serviceAccount: ratings
  locality: eu/west/b
  weight: 5
""",
        (
            Case("spec.address", "127.0.80.8"),
            "spec.labels",
            "spec.ports",
            "spec.serviceAccount",
            "spec.locality",
            "spec.weight",
        ),
    ),
]

SIDECAR = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:19080
    captureMode: NONE
  egress:
  - hosts: ["./reviews.default.svc.cluster.local"]
    captureMode: DEFAULT
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""",
        (
            "spec.workloadSelector",
            Case("spec.workloadSelector.labels", {"app": "ratings"}),
            "spec.ingress",
            Case("spec.ingress[0].port", {"number": 9081, "protocol": "HTTP"}),
            Case("spec.ingress[0].port.number", 9081),
            Case("spec.ingress[0].port.protocol", "TCP"),
            "spec.ingress[0].bind",
            "spec.ingress[0].defaultEndpoint",
            "spec.egress",
            Case("spec.egress[0].hosts", ["./*"]),
            Case("spec.outboundTrafficPolicy", {"mode": "ALLOW_ANY"}),
            Case("spec.outboundTrafficPolicy.mode", "ALLOW_ANY"),
        ),
    ),
]

VIRTUAL_SERVICE = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: first
    match:
    - {sourceNamespace: other}
    - name: m
      uri: {prefix: /api}
      method: {exact: GET}
      authority: {prefix: reviews}
      scheme: {exact: http}
      headers: {end-user: {exact: jason}}
      queryParams: {q: {regex: "a.*"}}
      withoutHeaders: {x-skip: {}}
      port: 9080
      sourceLabels: {app: productpage}
      sourceNamespace: default
      ignoreUriCase: true
      statPrefix: reviews-api
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9443}}
      weight: 80
      headers:
        request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
        response: {set: {x-d: "1"}}
    - destination: {host: reviews}
      weight: 20
    rewrite: {uri: /v1, authority: reviews.internal}
    timeout: 3s
    retries:
      attempts: 3
      perTryTimeout: 1s
      retryOn: 5xx
      retryRemoteLocalities: true
      retryIgnorePreviousHosts: false
      backoff: 25ms
    fault:
      delay: {fixedDelay: 1s, percentage: {value: 10}}
      abort: {httpStatus: 503, percentage: {value: 5}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 50}
    headers: {request: {set: {x-e: "1"}}, response: {add: {x-f: "2"}}}
    corsPolicy:
      allowOrigins: [{exact: "https://a.com"}]
      allowMethods: [GET]
      allowHeaders: [x-h]
      exposeHeaders: [x-i]
      maxAge: 24h
      allowCredentials: true
      unmatchedPreflights: IGNORE
  - route: [{destination: {host: reviews}}]
"""
        + REVIEWS_SUBSETS,
        (
            Case("spec.hosts", ["ratings"]),
            Case("spec.http", [{"route": [{"destination": {"host": "reviews"}}]}]),
            "spec.http[0].name",
            "spec.http[0].match",
            "spec.http[0].match[1].name",
            "spec.http[0].match[1].uri",
            Case("spec.http[0].match[1].uri.prefix", "/other"),
            "spec.http[0].match[1].method",
            Case("spec.http[0].match[1].method.exact", "POST"),
            "spec.http[0].match[1].authority",
            "spec.http[0].match[1].scheme",
            "spec.http[0].match[1].headers",
            "spec.http[0].match[1].queryParams",
            Case("spec.http[0].match[1].queryParams.q.regex", "b.*"),
            "spec.http[0].match[1].withoutHeaders",
            "spec.http[0].match[1].port",
            "spec.http[0].match[1].sourceLabels",
            "spec.http[0].match[0].sourceNamespace",
            "spec.http[0].match[1].ignoreUriCase",
            "spec.http[0].match[1].statPrefix",
            Case("spec.http[0].route", [{"destination": {"host": "ratings"}}]),
            Case("spec.http[0].route[0].destination", {"host": "ratings"}),
            Case("spec.http[0].route[1].destination.host", "ratings"),
            "spec.http[0].route[0].destination.subset",
            "spec.http[0].route[0].destination.port",
            Case("spec.http[0].route[0].destination.port.number", 9080),
            Case("spec.http[0].route[0].weight", 70, {"spec.http[0].route[1].weight": 30}),
            "spec.http[0].route[0].headers",
            "spec.http[0].route[0].headers.request",
            "spec.http[0].route[0].headers.response",
            "spec.http[0].route[0].headers.request.set",
            "spec.http[0].route[0].headers.request.add",
            "spec.http[0].route[0].headers.request.remove",
            "spec.http[0].rewrite",
            "spec.http[0].rewrite.uri",
            "spec.http[0].rewrite.authority",
            "spec.http[0].timeout",
            "spec.http[0].retries",
            Case("spec.http[0].retries.attempts", 5),
            "spec.http[0].retries.perTryTimeout",
            "spec.http[0].retries.retryOn",
            "spec.http[0].retries.retryRemoteLocalities",
            "spec.http[0].retries.retryIgnorePreviousHosts",
            Case("spec.http[0].retries.retryIgnorePreviousHosts", True),
            "spec.http[0].retries.backoff",
            "spec.http[0].fault",
            "spec.http[0].fault.delay",
            Case("spec.http[0].fault.delay.fixedDelay", "2s"),
            "spec.http[0].fault.delay.percentage",
            Case("spec.http[0].fault.delay.percentage.value", 20),
            "spec.http[0].fault.abort",
            Case("spec.http[0].fault.abort.httpStatus", 500),
            "spec.http[0].fault.abort.percentage",
            "spec.http[0].mirror",
            "spec.http[0].mirrorPercentage",
            "spec.http[0].headers",
            "spec.http[0].corsPolicy",
            "spec.http[0].corsPolicy.allowOrigins",
            "spec.http[0].corsPolicy.allowMethods",
            "spec.http[0].corsPolicy.allowHeaders",
            "spec.http[0].corsPolicy.exposeHeaders",
            "spec.http[0].corsPolicy.maxAge",
            "spec.http[0].corsPolicy.allowCredentials",
            "spec.http[0].corsPolicy.unmatchedPreflights",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: regex, namespace: default}
spec:
  hosts: [ratings]
  http:
  - rewrite:
      authority: ratings.internal
      uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$$", rewrite: "\\\\2/instance/\\\\1"}
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}}
    route: [{destination: {host: reviews}}]
""",
        (
            "spec.http[0].rewrite.uriRegexRewrite",
            Case("spec.http[0].rewrite.uriRegexRewrite.match", "^/other/([^/]+)(/.*)$$"),
            Case("spec.http[0].rewrite.uriRegexRewrite.rewrite", "/x"),
            Case("spec.http[0].fault.abort.grpcStatus", "INTERNAL"),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: local, namespace: default}
spec:
  hosts: [ratings]
  exportTo: ["."]
  http: [{route: [{destination: {host: reviews}}]}]
""",
        ("spec.exportTo",),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bound, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  gateways: [mesh, gw]
  http:
  - match: [{gateways: [gw]}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: ratings}}]
"""
        + GATEWAY,
        (Case("spec.gateways", ["gw"]), "spec.http[0].match[0].gateways"),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: moved, namespace: default}
spec:
  hosts: [ratings]
  http:
  - redirect: {uri: /new, authority: new.example.com, redirectCode: 302, scheme: https, port: 8443}
""",
        (
            Case("spec.http[0].redirect", {"uri": "/other"}),
            "spec.http[0].redirect.uri",
            "spec.http[0].redirect.authority",
            "spec.http[0].redirect.redirectCode",
            "spec.http[0].redirect.scheme",
            "spec.http[0].redirect.port",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: moved, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /foo/}}]
    redirect: {authority: foo.example.com, prefixRewrite: /, derivePort: FROM_REQUEST_PORT}
""",
        (
            "spec.http[0].redirect.prefixRewrite",
            Case("spec.http[0].redirect.derivePort", "FROM_PROTOCOL_DEFAULT"),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct, namespace: default}
spec:
  hosts: [ratings]
  http:
  - directResponse: {status: 200, body: {string: hi}}
""",
        (
            Case("spec.http[0].directResponse", {"status": 404}),
            Case("spec.http[0].directResponse.status", 201),
            "spec.http[0].directResponse.body",
            Case("spec.http[0].directResponse.body.string", "ho"),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct, namespace: default}
spec:
  hosts: [ratings]
  http:
  - directResponse: {status: 200, body: {bytes: aGk=}}
""",
        (Case("spec.http[0].directResponse.body.bytes", "aG8="),),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mirrored, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
    mirrors:
    - destination: {host: reviews}
      percentage: {value: 25}
""",
        (
            "spec.http[0].mirrors",
            Case("spec.http[0].mirrors[0].destination", {"host": "productpage"}),
            "spec.http[0].mirrors[0].percentage",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: old-style, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
    mirror: {host: reviews}
    mirrorPercent: 50
    fault: {delay: {fixedDelay: 1s, percent: 10}}
""",
        ("spec.http[0].mirrorPercent", "spec.http[0].fault.delay.percent"),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo]
  gateways: [mesh, gw]
  tcp:
  - match: [{port: 9001}]
    route: [{destination: {host: tcp-echo, subset: v2}}]
  - match: [{sourceLabels: {app: ratings}}]
    route: [{destination: {host: tcp-echo, subset: v2}}]
  - match: [{sourceNamespace: other}]
    route: [{destination: {host: tcp-echo, subset: v2}}]
  - match: [{gateways: [gw]}]
    route: [{destination: {host: tcp-echo, subset: v2}}]
  - route:
    - {destination: {host: tcp-echo, subset: v1}, weight: 60}
    - {destination: {host: tcp-echo, subset: v2}, weight: 40}
"""
        + TCP_SUBSETS
        + GATEWAY,
        (
            Case("spec.tcp", [{"route": [{"destination": {"host": "tcp-echo"}}]}]),
            "spec.tcp[0].match",
            "spec.tcp[0].match[0].port",
            "spec.tcp[1].match[0].sourceLabels",
            "spec.tcp[2].match[0].sourceNamespace",
            "spec.tcp[3].match[0].gateways",
            Case("spec.tcp[4].route", [{"destination": {"host": "tcp-echo"}}]),
            Case("spec.tcp[4].route[0].destination", {"host": "tcp-echo"}),
            Case("spec.tcp[4].route[0].weight", 50, {"spec.tcp[4].route[1].weight": 50}),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /api}}]
    delegate: {name: api, namespace: team}
  - route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /api/v1}}]
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api2, namespace: team}
spec:
  http:
  - route: [{destination: {host: productpage.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  http:
  - route: [{destination: {host: productpage.default.svc.cluster.local}}]
""",
        (
            Case(
                "spec.http[0].delegate",
                REMOVE,
                {"spec.http[0].route": [{"destination": {"host": "ratings"}}]},
            ),
            Case("spec.http[0].delegate.name", "api2"),
            "spec.http[0].delegate.namespace",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls, namespace: default}
spec:
  hosts: ["*.tls.example.com"]
  gateways: [mesh, gw]
  tls:
  - match:
    - {sniHosts: [a.tls.example.com], port: 9443, sourceLabels: {app: productpage}}
    - {sniHosts: [b.tls.example.com], sourceNamespace: default}
    - {sniHosts: [c.tls.example.com], gateways: [gw]}
    route: [{destination: {host: api.tls.example.com}}]
  - match: [{sniHosts: [d.tls.example.com]}]
    route:
    - {destination: {host: api.tls.example.com}, weight: 70}
    - {destination: {host: backup.tls.example.com}, weight: 30}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls-services, namespace: default}
spec:
  hosts: [api.tls.example.com, backup.tls.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 9443, name: tls, protocol: TLS}]
  endpoints: [{address: 127.0.80.41}]
"""
        + GATEWAY,
        (
            Case(
                "spec.tls",
                REMOVE,
                {"spec.tcp": [{"route": [{"destination": {"host": "api.tls.example.com"}}]}]},
            ),
            Case("spec.tls[0].match", [{"sniHosts": ["e.tls.example.com"]}]),
            Case("spec.tls[0].match[0].sniHosts", ["e.tls.example.com"]),
            Case("spec.tls[0].match[0].port", 9444),
            "spec.tls[0].match[0].sourceLabels",
            "spec.tls[0].match[1].sourceNamespace",
            Case("spec.tls[0].match[2].gateways", ["mesh"]),
            Case("spec.tls[0].route", [{"destination": {"host": "backup.tls.example.com"}}]),
        ),
    ),
]

DESTINATION_RULE = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 2s}
      http:
        http1MaxPendingRequests: 5
        http2MaxRequests: 6
        maxRequestsPerConnection: 7
        maxRetries: 8
        idleTimeout: 30s
    outlierDetection:
      consecutive5xxErrors: 3
      consecutiveGatewayErrors: 4
      interval: 5s
      baseEjectionTime: 20s
      maxEjectionPercent: 50
      minHealthPercent: 30
    tls:
      mode: SIMPLE
      caCertificates: $DATA/ca.crt
      caCrl: $DATA/ca.crl
      subjectAltNames: [a.example.com]
      sni: a.example.com
    proxyProtocol: {version: V2}
    portLevelSettings:
    - port: {number: 9443}
      loadBalancer: {simple: RANDOM}
      connectionPool: {tcp: {maxConnections: 3}}
      outlierDetection: {consecutive5xxErrors: 9}
      tls: {mode: DISABLE}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
""",
        (
            Case("spec.host", "ratings"),
            "spec.trafficPolicy",
            "spec.trafficPolicy.loadBalancer",
            Case("spec.trafficPolicy.loadBalancer.simple", "RANDOM"),
            "spec.trafficPolicy.connectionPool",
            "spec.trafficPolicy.connectionPool.tcp",
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "spec.trafficPolicy.connectionPool.http",
            "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
            "spec.trafficPolicy.connectionPool.http.http2MaxRequests",
            "spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection",
            "spec.trafficPolicy.connectionPool.http.maxRetries",
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
            "spec.trafficPolicy.outlierDetection",
            "spec.trafficPolicy.outlierDetection.consecutive5xxErrors",
            "spec.trafficPolicy.outlierDetection.consecutiveGatewayErrors",
            "spec.trafficPolicy.outlierDetection.interval",
            "spec.trafficPolicy.outlierDetection.baseEjectionTime",
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "spec.trafficPolicy.outlierDetection.minHealthPercent",
            "spec.trafficPolicy.tls",
            "spec.trafficPolicy.tls.caCertificates",
            "spec.trafficPolicy.tls.caCrl",
            "spec.trafficPolicy.tls.subjectAltNames",
            "spec.trafficPolicy.tls.sni",
            "spec.trafficPolicy.proxyProtocol",
            Case("spec.trafficPolicy.proxyProtocol.version", "V1"),
            "spec.trafficPolicy.portLevelSettings",
            Case("spec.trafficPolicy.portLevelSettings[0].port", {"number": 9080}),
            Case("spec.trafficPolicy.portLevelSettings[0].port.number", 9080),
            "spec.trafficPolicy.portLevelSettings[0].loadBalancer",
            "spec.trafficPolicy.portLevelSettings[0].connectionPool",
            "spec.trafficPolicy.portLevelSettings[0].outlierDetection",
            "spec.trafficPolicy.portLevelSettings[0].tls",
            "spec.subsets",
            Case("spec.subsets[0].name", "v9"),
            Case("spec.subsets[0].labels", {"version": "v2"}),
            "spec.subsets[0].trafficPolicy",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, minimumRingSize: 2048}
    outlierDetection: {consecutiveErrors: 5}
""",
        (
            "spec.trafficPolicy.loadBalancer.consistentHash",
            Case("spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName", "x-other"),
            "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
            "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: c, path: /, ttl: 10s}}
""",
        (
            Case("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie", {"name": "d"}),
            Case("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "d"),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.path",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash: {useSourceIp: true}
""",
        (
            Case(
                "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp",
                REMOVE,
                {"spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName": "x-user"},
            ),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: default}
spec:
  host: secure.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: $DATA/client.crt
      privateKey: $DATA/client.key
""",
        (
            Case(
                "spec.trafficPolicy.tls.mode",
                "SIMPLE",
                {
                    "spec.trafficPolicy.tls.clientCertificate": REMOVE,
                    "spec.trafficPolicy.tls.privateKey": REMOVE,
                },
            ),
            Case("spec.trafficPolicy.tls.clientCertificate", "$ALT/client.crt"),
            Case("spec.trafficPolicy.tls.privateKey", "$ALT/client.key"),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: default}
spec:
  host: secure.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, credentialName: credential}
""",
        ("spec.trafficPolicy.tls.credentialName",),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: default}
spec:
  host: secure.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, insecureSkipVerify: true}
""",
        ("spec.trafficPolicy.tls.insecureSkipVerify",),
    ),
]

# A service with endpoints in five localities and a client in one of them (14c).
LOCAL_SERVICE = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: local, namespace: default}
spec:
  hosts: [local.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.81.1, locality: us/east/a, labels: {tier: gold}}
  - {address: 127.0.81.2, locality: us/east/b, labels: {tier: gold}}
  - {address: 127.0.81.3, locality: us/west, labels: {tier: silver}}
  - {address: 127.0.81.4, locality: eu/west, labels: {tier: gold}}
  - {address: 127.0.81.5, locality: ap/south, labels: {tier: silver}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: local-client, namespace: default}
spec: {address: 127.0.81.10, locality: us/east/a, labels: {app: local-client, tier: gold}}
"""

DESTINATION_RULE_14C = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: local, namespace: default}
spec:
  host: local.example.com
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 2
      outlierDetectionHttpErrorCodes: [418]
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover: [{from: us, to: ap}]
"""
        + LOCAL_SERVICE,
        (
            "spec.trafficPolicy.loadBalancer.localityLbSetting",
            Case("spec.trafficPolicy.loadBalancer.localityLbSetting.enabled", False),
            "spec.trafficPolicy.loadBalancer.localityLbSetting.failover",
            Case("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0].from", "eu"),
            Case("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0].to", "eu"),
            Case(
                "spec.trafficPolicy.outlierDetection.splitExternalLocalOriginErrors",
                REMOVE,
                {"spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures": REMOVE},
            ),
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            Case("spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes", [500]),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: local, namespace: default}
spec:
  host: local.example.com
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer:
      localityLbSetting:
        failoverPriority: [tier]
"""
        + LOCAL_SERVICE,
        (
            Case(
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority",
                ["topology.kubernetes.io/region"],
            ),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: local, namespace: default}
spec:
  host: local.example.com
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer:
      zoneAwareLbSetting:
        enabled: true
        failover: [{from: us, to: ap}]
        minClusterSize: 3
"""
        + LOCAL_SERVICE,
        (
            "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting",
            Case("spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.enabled", False),
            "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failover",
            "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.minClusterSize",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: local, namespace: default}
spec:
  host: local.example.com
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer:
      zoneAwareLbSetting: {failoverPriority: [tier]}
"""
        + LOCAL_SERVICE,
        ("spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failoverPriority",),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: local, namespace: default}
spec:
  host: local.example.com
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us/east/*
          to: {us/east/a: 80, eu/west: 20}
"""
        + LOCAL_SERVICE,
        (
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute",
            Case("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from", "us/west"),
            Case(
                "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                {"us/east/a": 50, "ap/south": 50},
            ),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      warmup: {duration: 60s, minimumPercent: 20, aggression: 2}
    connectionPool:
      tcp:
        tcpKeepalive: {probes: 3, time: 60s, interval: 10s}
        maxConnectionDuration: 1h
        idleTimeout: 5m
      http:
        h2UpgradePolicy: UPGRADE
        maxConcurrentStreams: 100
        http2KeepAlive: {interval: 30s, timeout: 5s}
""",
        (
            "spec.trafficPolicy.loadBalancer.warmup",
            Case("spec.trafficPolicy.loadBalancer.warmup.duration", "30s"),
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
            "spec.trafficPolicy.loadBalancer.warmup.aggression",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval",
            "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
            "spec.trafficPolicy.connectionPool.tcp.idleTimeout",
            Case("spec.trafficPolicy.connectionPool.http.h2UpgradePolicy", "DO_NOT_UPGRADE"),
            "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams",
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive",
            Case("spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval", "10s"),
            Case("spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout", "1s"),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    retryBudget: {percent: 25, minRetryConcurrency: 5}
    connectionPool: {tcp: {maxConnections: 50}}
""",
        (
            "spec.trafficPolicy.retryBudget",
            "spec.trafficPolicy.retryBudget.percent",
            "spec.trafficPolicy.retryBudget.minRetryConcurrency",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {warmupDurationSecs: 60s}
    connectionPool:
      http: {useClientProtocol: true}
""",
        (
            "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
            "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpQueryParameterName: user
        maglev: {tableSize: 65537}
""",
        (
            Case(
                "spec.trafficPolicy.loadBalancer.consistentHash.httpQueryParameterName",
                REMOVE,
                {"spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName": "x-user"},
            ),
            Case(
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev",
                REMOVE,
                {"spec.trafficPolicy.loadBalancer.consistentHash.ringHash": {}},
            ),
            Case("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", 131),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: session
          attributes: [{name: SameSite, value: Strict}]
        ringHash: {minimumRingSize: 4096}
""",
        (
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes",
            Case(
                "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[0].name",
                "Secure",
            ),
            Case(
                "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[0].value",
                "Lax",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash.ringHash",
            "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin.example.com
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.example.com]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
""",
        (Case("spec.trafficPolicy.loadBalancer.simple", "ROUND_ROBIN"),),
    ),
    # Rules that apply to some proxies only: exportTo and workloadSelector.
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-for-productpage, namespace: default}
spec:
  host: ratings
  workloadSelector: {matchLabels: {app: productpage}}
  exportTo: ["."]
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
""",
        (
            "spec.workloadSelector",
            Case("spec.workloadSelector.matchLabels", {"app": "reviews"}),
            Case("spec.exportTo", ["other"], {"spec.workloadSelector": REMOVE}),
        ),
    ),
]

# ServiceEntry, WorkloadEntry and Sidecar fields of issue 14c.
SERVICES_14C: list[Sample] = [
    # Egress listeners of their own (Istio's egress ports), and exclusions.
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
  - port: {number: 9080, protocol: HTTP, name: web}
    bind: 127.0.80.101
    hosts: ["./*", "~./ratings.default.svc.cluster.local"]
  - hosts: ["./*"]
""",
        (
            Case("spec.egress[0].port", {"number": 9081, "protocol": "HTTP"}),
            "spec.egress[0].bind",
        ),
    ),
    # Ports without a protocol: sniffed (listeners with the HTTP inspector).
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mixed, namespace: default}
spec:
  hosts: [mixed.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: mixed}]
  workloadSelector: {labels: {app: ratings}}
""",
        (Case("spec.ports[0].protocol", "TCP"),),
    ),
    # Resolution NONE: HTTP to the authority, TLS to the SNI, TCP to the one address.
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.external.example]
  addresses: [127.0.82.1]
  resolution: NONE
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 8443, name: tls, protocol: TLS}
  - {number: 8000, name: tcp, protocol: TCP}
""",
        (Case("spec.resolution", "DNS"),),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sleep, namespace: other}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: reviews.default.svc.cluster.local, port: {number: 9080}}
  inboundConnectionPool: {tcp: {connectTimeout: 3s}}
  ingress:
  - port: {number: 7000, name: any}
    defaultEndpoint: 127.0.0.1:7001
    connectionPool: {http: {idleTimeout: 7s}}
  - port: {number: 7002, protocol: HTTP}
    defaultEndpoint: unix:///run/app.sock
""",
        (
            Case("spec.ingress[0].port", {"number": 7000, "protocol": "TCP"}),
            "spec.outboundTrafficPolicy.egressProxy",
            "spec.inboundConnectionPool",
            "spec.ingress[0].connectionPool",
        ),
    ),
]

# A tunnel for the TCP connections to a host (through its forward proxy).
DESTINATION_RULE_TUNNEL = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo, namespace: default}
spec:
  host: tcp-echo.default.svc.cluster.local
  trafficPolicy:
    tunnel: {protocol: CONNECT, targetHost: a.example.com, targetPort: 443}
    connectionPool: {tcp: {maxConnections: 5}}
""",
        (
            "spec.trafficPolicy.tunnel",
            Case("spec.trafficPolicy.tunnel.targetHost", "b.example.com"),
            Case("spec.trafficPolicy.tunnel.targetPort", 8443),
        ),
    ),
]

# A Sidecar ending TLS on an ingress port (its mTLS mode DISABLE, as Istio requires).
SIDECAR_TLS_SAMPLES = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings-tls, namespace: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9443, protocol: HTTPS, name: https}
    defaultEndpoint: 127.0.0.1:9080
    tls:
      mode: MUTUAL
      serverCertificate: $DATA/server.crt
      privateKey: $DATA/server.key
      caCertificates: $DATA/ca.crt
      caCrl: $DATA/ca.crl
      verifyCertificateSpki: ["$SPKI"]
      verifyCertificateHash: ["$HASH"]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
      insecureSkipVerify: true
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings-tls, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  portLevelMtls: {9443: {mode: DISABLE}}
""",
        (
            "spec.ingress[0].tls",
            Case(
                "spec.ingress[0].tls.serverCertificate",
                "$DATA/two.crt",
                {"spec.ingress[0].tls.privateKey": "$DATA/two.key"},
            ),
            Case(
                "spec.ingress[0].tls.privateKey",
                "$DATA/two.key",
                {"spec.ingress[0].tls.serverCertificate": "$DATA/two.crt"},
            ),
            Case("spec.ingress[0].tls.caCertificates", "$DATA/other-ca.crt"),
            "spec.ingress[0].tls.caCrl",
            "spec.ingress[0].tls.verifyCertificateSpki",
            "spec.ingress[0].tls.verifyCertificateHash",
            "spec.ingress[0].tls.minProtocolVersion",
            "spec.ingress[0].tls.maxProtocolVersion",
            "spec.ingress[0].tls.cipherSuites",
            "spec.ingress[0].tls.insecureSkipVerify",
        ),
    ),
]

GATEWAY_SAMPLES = [
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    name: secure
    tls: {mode: SIMPLE, credentialName: credential, minProtocolVersion: TLSV1_2}
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: entry, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  gateways: [gw]
  http: [{route: [{destination: {host: ratings}}]}]
""",
        (
            Case("spec.selector", {"istio": "other"}),
            Case("spec.servers", [{"port": {"number": 8081, "protocol": "HTTP"}, "hosts": ["*"]}]),
            Case("spec.servers[0].port", {"number": 9443, "name": "https", "protocol": "HTTPS"}),
            Case("spec.servers[0].port.number", 9443),
            Case("spec.servers[0].port.protocol", "HTTP", {"spec.servers[0].tls": REMOVE}),
            Case("spec.servers[0].hosts", ["other.example.com"]),
            "spec.servers[1].tls",
            Case("spec.servers[0].tls.credentialName", "credential2"),
            "spec.servers[0].tls.minProtocolVersion",
            Case("spec.servers[0].port.name", "https2"),
            Case("spec.servers[0].name", "secure2"),
            Case("spec.servers[1].tls.httpsRedirect", REMOVE, {"spec.servers[1].tls": REMOVE}),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: MUTUAL
      serverCertificate: $DATA/server.crt
      privateKey: $DATA/server.key
      caCertificates: $DATA/ca.crt
      caCrl: $DATA/ca.crl
      subjectAltNames: [client.example.com]
      verifyCertificateSpki: ["$SPKI"]
      verifyCertificateHash: ["$HASH"]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
      insecureSkipVerify: true
""",
        (
            Case(
                "spec.servers[0].tls.serverCertificate",
                "$DATA/two.crt",
                {"spec.servers[0].tls.privateKey": "$DATA/two.key"},
            ),
            Case(
                "spec.servers[0].tls.privateKey",
                "$DATA/two.key",
                {"spec.servers[0].tls.serverCertificate": "$DATA/two.crt"},
            ),
            Case("spec.servers[0].tls.caCertificates", "$DATA/other-ca.crt"),
            "spec.servers[0].tls.caCrl",
            "spec.servers[0].tls.subjectAltNames",
            "spec.servers[0].tls.verifyCertificateSpki",
            "spec.servers[0].tls.verifyCertificateHash",
            "spec.servers[0].tls.maxProtocolVersion",
            "spec.servers[0].tls.cipherSuites",
            "spec.servers[0].tls.insecureSkipVerify",
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: SIMPLE
      tlsCertificates:
      - {serverCertificate: $DATA/server.crt, privateKey: $DATA/server.key}
""",
        (
            Case(
                "spec.servers[0].tls.tlsCertificates",
                [{"serverCertificate": "$DATA/two.crt", "privateKey": "$DATA/two.key"}],
            ),
            Case(
                "spec.servers[0].tls.tlsCertificates[0].serverCertificate",
                "$DATA/two.crt",
                {"spec.servers[0].tls.tlsCertificates[0].privateKey": "$DATA/two.key"},
            ),
            Case(
                "spec.servers[0].tls.tlsCertificates[0].privateKey",
                "$DATA/two.key",
                {"spec.servers[0].tls.tlsCertificates[0].serverCertificate": "$DATA/two.crt"},
            ),
        ),
    ),
    Sample(
        """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, credentialNames: [credential], caCertCredentialName: other-ca}
---
apiVersion: v1
kind: Secret
metadata: {name: other-ca, namespace: default}
stringData: {ca.crt: "$OTHER_CA_LINE"}
""",
        (
            Case("spec.servers[0].tls.credentialNames", ["credential2"]),
            "spec.servers[0].tls.caCertCredentialName",
        ),
    ),
]

SECRET = [
    Sample(
        """\
apiVersion: v1
kind: Secret
metadata: {name: gwcred, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: $CERT1_B64, tls.key: $KEY1_B64}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: gwcred}
""",
        (Case("data", {"tls.crt": "$CERT2_B64", "tls.key": "$KEY2_B64"}),),
    ),
    Sample(
        """\
apiVersion: v1
kind: Secret
metadata: {name: gwcred, namespace: default}
type: kubernetes.io/tls
stringData: {tls.crt: "$CERT1_LINE", tls.key: "$KEY1_LINE"}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: gwcred}
""",
        (Case("stringData", {"tls.crt": "$CERT2_PEM", "tls.key": "$KEY2_PEM"}),),
    ),
]

PEER_AUTHENTICATION = [
    Sample(
        """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls: {9443: {mode: DISABLE}}
""",
        (
            Case("spec.selector", REMOVE, {"spec.portLevelMtls": REMOVE}),
            Case("spec.selector.matchLabels", {"app": "ratings"}),
            "spec.mtls",
            Case("spec.mtls.mode", "PERMISSIVE"),
            "spec.portLevelMtls",
        ),
    ),
]

# The mesh settings: the ext_authz providers the CUSTOM policies below name. `data.mesh`
# is written here as a mapping and dumped as YAML text when loaded (`World.load`).
MESH_SETTINGS = """\
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh:
    extensionProviders:
    - name: authz-grpc
      envoyExtAuthzGrpc:
        service: default/authz.default.svc.cluster.local
        port: 9000
        timeout: 2s
        failOpen: true
        clearRouteCache: true
        statusOnError: "503"
        includeRequestBodyInCheck: {maxRequestBytes: 1024, allowPartialMessage: true,
                                    packAsBytes: true}
    - name: authz-http
      envoyExtAuthzHttp:
        service: authz.default.svc.cluster.local
        port: "8000"
        timeout: 3s
        pathPrefix: /check
        failOpen: true
        clearRouteCache: true
        statusOnError: "500"
        includeRequestHeadersInCheck: [x-ext-authz]
        includeAdditionalHeadersInCheck: {x-from: mesh}
        includeRequestBodyInCheck: {maxRequestBytes: 2048}
        headersToUpstreamOnAllow: [x-user*]
        headersToDownstreamOnDeny: [x-reason]
        headersToDownstreamOnAllow: ["*-result"]
    - name: authz-legacy
      envoyExtAuthzHttp:
        service: authz.default.svc.cluster.local
        port: 8000
        includeHeadersInCheck: [x-legacy]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: authz, namespace: default}
spec:
  hosts: [authz.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9000, name: grpc, protocol: GRPC}
  - {number: 9001, name: grpc-2, protocol: GRPC}
  - {number: 8000, name: http, protocol: HTTP}
  - {number: 8001, name: http-2, protocol: HTTP}
  endpoints: [{address: 127.0.80.50}]
"""
_AUTHZ = "authz.default.svc.cluster.local"
ALT_PROVIDERS = [
    {"name": "authz-grpc", "envoyExtAuthzGrpc": {"service": _AUTHZ, "port": 9001}},
    {"name": "authz-http", "envoyExtAuthzHttp": {"service": _AUTHZ, "port": 8001}},
    {"name": "authz-legacy", "envoyExtAuthzHttp": {"service": _AUTHZ, "port": 8001}},
]

AUTHORIZATION_POLICY = [
    Sample(
        """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/productpage]
        notPrincipals: [cluster.local/ns/default/sa/bad]
        namespaces: [default]
        notNamespaces: [evil]
        ipBlocks: [127.0.0.0/8]
        notIpBlocks: [10.0.0.0/8]
    - source:
        serviceAccounts: [default/productpage]
        notServiceAccounts: [bad]
        trustDomains: [cluster.local]
        notTrustDomains: [evil.org]
        requestPrincipals: [issuer.example/alice]
        notRequestPrincipals: [issuer.example/bob]
        remoteIpBlocks: [127.0.0.0/8]
        notRemoteIpBlocks: [10.9.0.0/16]
    to:
    - operation:
        hosts: [ratings]
        notHosts: [x]
        ports: ["9080"]
        notPorts: ["1"]
        methods: [GET]
        notMethods: [DELETE]
        paths: [/r]
        notPaths: [/admin]
    when:
    - key: request.headers[x-user]
      values: [a]
      notValues: [b]
""",
        (
            "spec.selector",
            Case("spec.action", "DENY"),
            "spec.rules",
            "spec.rules[0].from",
            Case("spec.rules[0].from[0].source", {"principals": ["x/ns/y/sa/z"]}),
            "spec.rules[0].from[0].source.principals",
            "spec.rules[0].from[0].source.notPrincipals",
            "spec.rules[0].from[0].source.namespaces",
            "spec.rules[0].from[0].source.notNamespaces",
            "spec.rules[0].from[0].source.ipBlocks",
            "spec.rules[0].from[0].source.notIpBlocks",
            "spec.rules[0].from[1].source.serviceAccounts",
            "spec.rules[0].from[1].source.notServiceAccounts",
            "spec.rules[0].from[1].source.trustDomains",
            "spec.rules[0].from[1].source.notTrustDomains",
            "spec.rules[0].from[1].source.requestPrincipals",
            "spec.rules[0].from[1].source.notRequestPrincipals",
            "spec.rules[0].from[1].source.remoteIpBlocks",
            "spec.rules[0].from[1].source.notRemoteIpBlocks",
            "spec.rules[0].to",
            Case("spec.rules[0].to[0].operation", {"methods": ["POST"]}),
            "spec.rules[0].to[0].operation.hosts",
            "spec.rules[0].to[0].operation.notHosts",
            "spec.rules[0].to[0].operation.ports",
            "spec.rules[0].to[0].operation.notPorts",
            "spec.rules[0].to[0].operation.methods",
            "spec.rules[0].to[0].operation.notMethods",
            "spec.rules[0].to[0].operation.paths",
            "spec.rules[0].to[0].operation.notPaths",
            "spec.rules[0].when",
            Case("spec.rules[0].when[0].key", "request.headers[x-other]"),
            "spec.rules[0].when[0].values",
            "spec.rules[0].when[0].notValues",
        ),
    ),
    Sample(
        """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-custom, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: CUSTOM
  provider: {name: authz-grpc}
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
"""
        + MESH_SETTINGS,
        (
            Case("spec.provider", REMOVE, {"spec.action": "DENY"}),
            Case("spec.provider.name", "authz-http"),
        ),
    ),
]

REQUEST_AUTHENTICATION = [
    Sample(
        """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: issuer.example
    audiences: [reviews]
    jwks: '$JWKS1'
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-jwt-sub, claim: sub}]
    forwardOriginalToken: true
    spaceDelimitedClaims: [roles]
  - issuer: other.example
    jwksUri: file://$DATA/jwks.json
    timeout: 2s
""",
        (
            "spec.selector",
            Case("spec.selector.matchLabels", {"app": "ratings"}),
            "spec.jwtRules",
            Case("spec.jwtRules[0].issuer", "issuer2.example"),
            "spec.jwtRules[0].audiences",
            Case("spec.jwtRules[0].jwks", "$JWKS2"),
            Case("spec.jwtRules[1].jwksUri", "file://$ALT/jwks.json"),
            "spec.jwtRules[0].fromHeaders",
            Case("spec.jwtRules[0].fromHeaders[0].name", "x-token"),
            "spec.jwtRules[0].fromHeaders[0].prefix",
            "spec.jwtRules[0].fromParams",
            "spec.jwtRules[0].fromCookies",
            "spec.jwtRules[0].outputPayloadToHeader",
            "spec.jwtRules[0].outputClaimToHeaders",
            Case("spec.jwtRules[0].outputClaimToHeaders[0].header", "x-other"),
            Case("spec.jwtRules[0].outputClaimToHeaders[0].claim", "iss"),
            "spec.jwtRules[0].forwardOriginalToken",
            "spec.jwtRules[0].spaceDelimitedClaims",
        ),
    ),
]

_CUSTOM = """\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: custom-{name}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: productpage}}}}
  action: CUSTOM
  provider: {{name: {name}}}
  rules: [{{}}]
"""
_GRPC = "data.mesh.extensionProviders[0]"
_HTTP = "data.mesh.extensionProviders[1]"
MESH_CONFIG = [
    Sample(
        MESH_SETTINGS.removeprefix("---\n")
        + "".join(_CUSTOM.format(name=n) for n in ("authz-grpc", "authz-http", "authz-legacy")),
        (
            Case("data", {"mesh": {"extensionProviders": ALT_PROVIDERS}}),
            Case("data.mesh", {"extensionProviders": ALT_PROVIDERS}),
            Case("data.mesh.extensionProviders", ALT_PROVIDERS),
            Case(f"{_GRPC}.name", "authz-http", {f"{_HTTP}.name": "authz-grpc"}),
            Case(
                f"{_GRPC}.envoyExtAuthzGrpc",
                REMOVE,
                {f"{_GRPC}.envoyExtAuthzHttp": {"service": _AUTHZ, "port": 8000}},
            ),
            Case(
                f"{_HTTP}.envoyExtAuthzHttp",
                REMOVE,
                {f"{_HTTP}.envoyExtAuthzGrpc": {"service": _AUTHZ, "port": 9000}},
            ),
            Case(
                f"{_GRPC}.envoyExtAuthzGrpc.service",
                "reviews.default.svc.cluster.local",
                {f"{_GRPC}.envoyExtAuthzGrpc.port": 9443},
            ),
            Case(f"{_GRPC}.envoyExtAuthzGrpc.port", 9001),
            f"{_GRPC}.envoyExtAuthzGrpc.timeout",
            f"{_GRPC}.envoyExtAuthzGrpc.failOpen",
            f"{_GRPC}.envoyExtAuthzGrpc.clearRouteCache",
            f"{_GRPC}.envoyExtAuthzGrpc.statusOnError",
            f"{_GRPC}.envoyExtAuthzGrpc.includeRequestBodyInCheck",
            f"{_GRPC}.envoyExtAuthzGrpc.includeRequestBodyInCheck.maxRequestBytes",
            f"{_GRPC}.envoyExtAuthzGrpc.includeRequestBodyInCheck.allowPartialMessage",
            f"{_GRPC}.envoyExtAuthzGrpc.includeRequestBodyInCheck.packAsBytes",
            Case(
                f"{_HTTP}.envoyExtAuthzHttp.service",
                "ratings.default.svc.cluster.local",
                {f"{_HTTP}.envoyExtAuthzHttp.port": 9080},
            ),
            Case(f"{_HTTP}.envoyExtAuthzHttp.port", "8001"),
            f"{_HTTP}.envoyExtAuthzHttp.timeout",
            f"{_HTTP}.envoyExtAuthzHttp.pathPrefix",
            f"{_HTTP}.envoyExtAuthzHttp.failOpen",
            f"{_HTTP}.envoyExtAuthzHttp.clearRouteCache",
            f"{_HTTP}.envoyExtAuthzHttp.statusOnError",
            f"{_HTTP}.envoyExtAuthzHttp.includeRequestHeadersInCheck",
            "data.mesh.extensionProviders[2].envoyExtAuthzHttp.includeHeadersInCheck",
            f"{_HTTP}.envoyExtAuthzHttp.includeAdditionalHeadersInCheck",
            f"{_HTTP}.envoyExtAuthzHttp.includeRequestBodyInCheck",
            f"{_HTTP}.envoyExtAuthzHttp.headersToUpstreamOnAllow",
            f"{_HTTP}.envoyExtAuthzHttp.headersToDownstreamOnDeny",
            f"{_HTTP}.envoyExtAuthzHttp.headersToDownstreamOnAllow",
        ),
    ),
    Sample(
        """\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh:
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    accessLogFormat: '{"code": "%RESPONSE_CODE%", "route": "%ROUTE_NAME%"}'
    outboundTrafficPolicy: {mode: ALLOW_ANY}
    defaultHttpRetryPolicy: {attempts: 2, retryOn: 5xx}
    connectTimeout: 3s
    tcpKeepalive: {time: 60s, interval: 10s, probes: 3}
    h2UpgradePolicy: UPGRADE
    defaultServiceExportTo: ["."]
    defaultVirtualServiceExportTo: ["."]
    defaultDestinationRuleExportTo: ["."]
    enableAutoMtls: false
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-everywhere, namespace: istio-system}
spec:
  hosts: [ratings.default.svc.cluster.local]
  http: [{route: [{destination: {host: ratings.default.svc.cluster.local}}], timeout: 3s}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-everywhere, namespace: istio-system}
spec:
  host: ratings.default.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
""",
        (
            Case("data.mesh.enableAutoMtls", True),
            "data.mesh.defaultServiceExportTo",
            "data.mesh.defaultVirtualServiceExportTo",
            "data.mesh.defaultDestinationRuleExportTo",
            "data.mesh.defaultHttpRetryPolicy",
            "data.mesh.connectTimeout",
            "data.mesh.tcpKeepalive",
            Case("data.mesh.h2UpgradePolicy", "DO_NOT_UPGRADE"),
            "data.mesh.outboundTrafficPolicy",
            Case("data.mesh.outboundTrafficPolicy.mode", "REGISTRY_ONLY"),
            Case("data.mesh.accessLogFile", "/tmp/access.log"),
            Case("data.mesh.accessLogEncoding", "TEXT"),
            "data.mesh.accessLogFormat",
        ),
    ),
]

SAMPLES = (
    SERVICE_ENTRY
    + WORKLOAD_ENTRY
    + SIDECAR
    + VIRTUAL_SERVICE
    + DESTINATION_RULE
    + DESTINATION_RULE_14C
    + SERVICES_14C
    + SIDECAR_TLS_SAMPLES
    + DESTINATION_RULE_TUNNEL
    + GATEWAY_SAMPLES
    + SECRET
    + PEER_AUTHENTICATION
    + AUTHORIZATION_POLICY
    + REQUEST_AUTHENTICATION
    + MESH_CONFIG
)

# Fields whose effect is in the control plane, not in Envoy's config: the test named
# proves each.
CONTROL_PLANE = {
    ("RequestAuthentication", "spec.jwtRules[].timeout"): (
        "tests/galley/test_galley_request_authentication.py::test_jwks_uri_fetch_timeout"
    ),
    ("ConfigMap", "data.mesh.trustDomain"): (
        "tests/generators/test_mesh_settings_defaults.py::test_trust_domain_must_be_the_cas"
    ),
}

# RESTRICTED fields: a value they refuse (and the ones they allow, in the note).
REFUSED = {
    ("ServiceEntry", "spec.endpoints[].network"): "net-b",
    ("WorkloadEntry", "spec.network"): "net-b",
    ("Sidecar", "spec.ingress[].captureMode"): "IPTABLES",
    ("Sidecar", "spec.egress[].captureMode"): "IPTABLES",
    ("Gateway", "spec.servers[].tls.mode"): "AUTO_PASSTHROUGH",
    ("Sidecar", "spec.ingress[].tls.mode"): "ISTIO_MUTUAL",
    ("DestinationRule", "spec.trafficPolicy.tunnel.protocol"): "POST",
    ("Secret", "type"): "kubernetes.io/dockerconfigjson",
}

# --- walking paths and the field tables ------------------------------------------------

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def segments(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _TOKEN.findall(path)]


def resolve(kind: Kind, path: str) -> tuple[str, tuple[int, str], Field]:
    """(schema path, proof key, field) of a concrete path: the key is the table the
    field sits in and its name, so a table used in several places is proven once."""
    table: Shape = kind.spec
    parts = segments(path)
    if not kind.document_level:
        assert parts[0] == "spec", path
        parts = parts[1:]
        shown = ["spec"]
    else:
        shown = []
    found: Field | None = None
    key: tuple[int, str] = (0, "")
    i = 0
    while i < len(parts):
        name = parts[i]
        assert isinstance(name, str) and name in table, f"{kind.kind}: {path}: no field {name}"
        found, key = table[name], (id(table), name)
        shown.append(name)
        i += 1
        if found.repeated and i < len(parts) and isinstance(parts[i], int):
            shown[-1] += "[]"
            i += 1
        elif found.keyed and i < len(parts):
            shown.append("<key>")
            i += 1
        if i < len(parts):
            assert found.fields is not None, f"{kind.kind}: {path}: {name} has no fields"
            table = found.fields
    assert found is not None
    return ".".join(shown), key, found


def schema_fields(kind: Kind) -> Iterator[tuple[str, tuple[int, str], Field, Shape]]:
    """Every (schema path, proof key, field, its table), each key once."""
    seen: set[tuple[int, str]] = set()

    def walk(table: Shape, prefix: str) -> Iterator[tuple[str, tuple[int, str], Field, Shape]]:
        for name, item in table.items():
            path = f"{prefix}.{name}" if prefix else name
            key = (id(table), name)
            if key not in seen:
                seen.add(key)
                yield path, key, item, table
            if item.fields is not None:
                inner = f"{path}[]" if item.repeated else f"{path}.<key>" if item.keyed else path
                yield from walk(item.fields, inner)

    yield from walk(kind.spec, "" if kind.document_level else "spec")


def edit(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = segments(path)
    target: Any = doc
    for part in parts[:-1]:
        target = target[part]
    if value is REMOVE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value


def concrete_parents(doc: Any, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every mapping in a document with its concrete path."""
    if isinstance(doc, dict):
        yield prefix, doc
        for key, value in doc.items():
            yield from concrete_parents(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from concrete_parents(value, f"{prefix}[{i}]")


# --- building and comparing ------------------------------------------------------------


@dataclass
class World:
    folder: Path
    values: dict[str, str]

    def text(self, template: str) -> str:
        return string.Template(template).substitute(self.values)

    def load(self, docs: list[dict[str, Any]]) -> LoadResult:
        docs = [_mesh_as_text(d) for d in docs]
        (self.folder / "sample.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return load_paths([self.folder])

    def output(self, result: LoadResult) -> dict[str, dict[str, dict[str, bytes]]]:
        assert result.config is not None, [str(e) for e in result.errors]
        mesh = dataclasses.replace(result.config, workload_identity=True)
        ctx = PushContext.build(mesh)
        return {
            proxy.node_id: {
                t: {n: m.SerializeToString(deterministic=True) for n, m in items.items()}
                for t, items in generate(ctx, proxy).items()
            }
            for proxy in ctx.proxies
        }

    def sample_docs(self, sample: Sample) -> list[dict[str, Any]]:
        return list(yaml.safe_load_all(self.text(sample.docs)))


def _mesh_as_text(doc: dict[str, Any]) -> dict[str, Any]:
    """The mesh settings' `data.mesh` as YAML text, as a ConfigMap holds it."""
    data = doc.get("data") if doc.get("kind") == "ConfigMap" else None
    if isinstance(data, dict) and isinstance(data.get("mesh"), dict | list):
        doc = copy.deepcopy(doc)
        doc["data"]["mesh"] = yaml.safe_dump(data["mesh"], sort_keys=False)
    return doc


def _jwks(seed: int) -> str:
    """A JSON Web Key Set of one EC public key."""
    key = ec.derive_private_key(seed, ec.SECP256R1()).public_key()
    return json.dumps({"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))]})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("coverage")
    pki = Pki(root / "pki", "coverage")
    cert1, key1 = pki.issue("one.example.com", dns=("one.example.com",))
    cert2, key2 = pki.issue("two.example.com", dns=("two.example.com",))
    client = pki.issue("client", client=True)
    other = Pki(root / "pki", "other")
    data, alt = root / "data", root / "alt"
    for seed, folder in enumerate((data, alt), start=7):
        folder.mkdir()
        (folder / "jwks.json").write_text(_jwks(seed))
        (folder / "client.crt").write_bytes(client[0].read_bytes())
        (folder / "client.key").write_bytes(client[1].read_bytes())
        (folder / "ca.crt").write_bytes(pki.ca_file.read_bytes())
    # A gateway server's files: two certificates, another CA, a CRL.
    for name, path in (("server.crt", cert1), ("server.key", key1), ("two.crt", cert2),
                       ("two.key", key2), ("other-ca.crt", other.ca_file)):  # fmt: skip
        (data / name).write_bytes(path.read_bytes())
    revoke(pki, cert2, data / "ca.crl")
    digest, spki = fingerprints(client[0])

    def block(path: Path) -> str:
        return "\n".join("    " + line for line in path.read_text().splitlines())

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    def line(path: Path) -> str:
        return path.read_text().replace("\n", "\\n")

    values = {
        "DATA": str(data),
        "ALT": str(alt),
        "CERT1": block(cert1),
        "KEY1": block(key1),
        "CERT2": block(cert2),
        "KEY2": block(key2),
        "CA": block(pki.ca_file),
        "CERT1_B64": b64(cert1),
        "KEY1_B64": b64(key1),
        "CERT2_B64": b64(cert2),
        "KEY2_B64": b64(key2),
        "CERT1_LINE": line(cert1),
        "KEY1_LINE": line(key1),
        "CERT2_LINE": line(cert2),
        "KEY2_LINE": line(key2),
        "JWKS1": _jwks(3),
        "JWKS2": _jwks(5),
        "CERT2_PEM": cert2.read_text(),  # for values set from Python, not YAML text
        "KEY2_PEM": key2.read_text(),
        "OTHER_CA_LINE": line(other.ca_file),
        "HASH": digest,
        "SPKI": spki,
    }
    folder = root / "config"
    folder.mkdir()
    (folder / "base.yaml").write_text(string.Template(BASE).substitute(values))
    return World(folder, values)


def _case(case: Case | str) -> Case:
    return Case(case) if isinstance(case, str) else case


def _value(world: World, value: Any) -> Any:
    if isinstance(value, str):
        return world.text(value)
    if isinstance(value, dict):
        return {k: _value(world, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(world, v) for v in value]
    return value


# --- the tests ---------------------------------------------------------------------------


def test_every_accepted_field_has_a_case() -> None:
    proven: set[tuple[int, str]] = set()  # tables shared between kinds are proven once
    for sample in SAMPLES:
        kind = sample.kind
        for case in map(_case, sample.cases):
            schema, key, found = resolve(kind, case.path)
            assert found.status in (Status.SUPPORTED, Status.DEPRECATED), (
                f"{kind.kind} {schema} is {found.status.value}: its case proves nothing"
            )
            proven.add(key)
    missing = [
        f"{kind.kind} {path} ({item.status.value})"
        for kind in KINDS
        for path, key, item, _ in schema_fields(kind)
        if item.status in (Status.SUPPORTED, Status.DEPRECATED)
        and key not in proven
        and (kind.kind, path) not in CONTROL_PLANE
    ]
    assert missing == [], "fields accepted with no proof that they change Envoy's config:\n" + (
        "\n".join(missing)
    )


def test_each_case_changes_the_output(world: World) -> None:
    failures: list[str] = []
    for sample in SAMPLES:
        kind = sample.kind
        docs = world.sample_docs(sample)
        full = world.load(docs)
        assert full.errors == (), [str(e) for e in full.errors]
        baseline = world.output(full)
        for case in map(_case, sample.cases):
            schema, _, found = resolve(kind, case.path)
            if found.status is Status.DEPRECATED and not any(
                w.field == case.path and "deprecated" in w.message for w in full.warnings
            ):
                failures.append(f"{kind.kind} {case.path}: deprecated, but no warning says so")
            variant = copy.deepcopy(docs)
            edit(variant[0], case.path, _value(world, case.alt))
            for path, value in case.also.items():
                edit(variant[0], path, _value(world, value))
            changed = world.load(variant)
            if changed.errors:
                failures.append(
                    f"{kind.kind} {case.path}: the variant is refused: {changed.errors[0]}"
                )
                continue
            if world.output(changed) == baseline:
                failures.append(f"{kind.kind} {schema} ({case.path}): changes nothing in Envoy")
    assert failures == [], "\n".join(failures)


def _hosts(kind: Kind, schema: str, world: World) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """(documents, concrete path of the object holding `schema`'s field), for each sample
    of the kind where that object appears."""
    parent_schema = schema.rpartition(".")[0]
    for sample in SAMPLES:
        if sample.kind is not kind:
            continue
        docs = world.sample_docs(sample)
        if parent_schema in ("", "spec"):
            yield docs, parent_schema
            continue
        for path, _ in concrete_parents(docs[0]):
            try:
                shown = resolve(kind, path)[0] if path else ""
            except AssertionError:
                continue  # metadata, or inside a value (labels, headers)
            if shown == parent_schema:
                yield docs, path


def _first_host(kind: Kind, schema: str, world: World) -> tuple[list[dict[str, Any]], str]:
    for found in _hosts(kind, schema, world):
        return found
    raise AssertionError(f"{kind.kind} {schema}: no sample has the object it sits in")


def _insert(
    docs: list[dict[str, Any]], parent: str, name: str, value: Any
) -> tuple[list[dict[str, Any]], str]:
    variant = copy.deepcopy(docs)
    target: Any = variant[0]
    for part in segments(parent):
        target = target[part]
    target[name] = value
    return variant, f"{parent}.{name}" if parent else name


def test_not_yet_fields_are_refused_where_they_are_written(world: World) -> None:
    failures: list[str] = []
    for kind in KINDS:
        for schema, _, item, _ in schema_fields(kind):
            if item.status is not Status.NOT_YET:
                continue
            docs, parent = _first_host(kind, schema, world)
            name = schema.rpartition(".")[2]
            variant, path = _insert(docs, parent, name, {})
            result = world.load(variant)
            messages = [(e.field, e.message) for e in result.errors]
            if not any(
                f == path and m.startswith("not supported by pocketmesh yet") for f, m in messages
            ):
                failures.append(f"{kind.kind} {path}: not refused as not supported yet: {messages}")
            elif not all(e.line > 0 and e.file.endswith("sample.yaml") for e in result.errors):
                failures.append(f"{kind.kind} {path}: error without file:line")
    assert failures == [], "\n".join(failures)


def test_no_effect_fields_warn_and_labels_change_nothing(world: World) -> None:
    failures: list[str] = []
    values = {"targetPort": 81, "immutable": True, "name": "renamed"}
    for kind in KINDS:
        for schema, _, item, _ in schema_fields(kind):
            if item.status not in (Status.NO_EFFECT, Status.LABEL):
                continue
            docs, parent = _first_host(kind, schema, world)
            name = schema.rpartition(".")[2]
            variant, path = _insert(docs, parent, name, values.get(name, "x"))
            before = world.load(docs)
            after = world.load(variant)
            if after.errors:
                failures.append(f"{kind.kind} {path}: refused: {after.errors[0]}")
                continue
            if world.output(before) != world.output(after):
                failures.append(f"{kind.kind} {path}: {item.status.value}, yet the output changed")
            warned = any(w.field == path and "no effect" in w.message for w in after.warnings)
            if item.status is Status.NO_EFFECT and not warned:
                failures.append(f"{kind.kind} {path}: no effect, but no warning says so")
    assert failures == [], "\n".join(failures)


def test_restricted_fields_refuse_other_values(world: World) -> None:
    failures: list[str] = []
    for kind in KINDS:
        for schema, _, item, _ in schema_fields(kind):
            if item.status is not Status.RESTRICTED:
                continue
            if (kind.kind, schema) not in REFUSED:
                failures.append(f"{kind.kind} {schema}: restricted, but no refused value to try")
                continue
            docs, parent = _first_host(kind, schema, world)
            name = schema.rpartition(".")[2]
            variant, path = _insert(docs, parent, name, REFUSED[(kind.kind, schema)])
            result = world.load(variant)
            if not any(
                e.field.startswith(path) and "not supported by pocketmesh yet" in e.message
                for e in result.errors
            ) and not any(e.field == path for e in result.errors):
                failures.append(
                    f"{kind.kind} {path}: {REFUSED[(kind.kind, schema)]!r} not refused: "
                    f"{[str(e) for e in result.errors]}"
                )
    assert failures == [], "\n".join(failures)
