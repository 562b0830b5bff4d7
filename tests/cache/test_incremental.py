"""Incremental rebuilds: a snapshot that carries views over equals a full rebuild.

`generators.dependencies` decides which proxies a change can reach; every other
view is carried over from the previous snapshot. These tests apply every single
edit of every object (and random chains of edits) to the demo, Istio's examples
and a bench mesh, with and without workload identity, and compare each proxy's
resources, by version, against a snapshot built from scratch.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xds_server import xds_types as T
from xds_server.bench import mesh as bench_mesh
from xds_server.cache.config_source import FLAVOURS
from xds_server.cache.snapshot import InconsistentSnapshot, MeshSnapshot
from xds_server.galley.loader import load_paths
from xds_server.galley.model import MeshConfig, ServicePort
from xds_server.galley.model_traffic import ClientTLS, Destination
from xds_server.generators import PushContext
from xds_server.generators.dependencies import affected_proxies

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"

Edit = tuple[str, Callable[[MeshConfig], MeshConfig]]


def _load(*dirs: Path) -> MeshConfig:
    return load_paths(list(dirs)).config_or_raise()


def _bench(tmp: Path) -> MeshConfig:
    spec = bench_mesh.MeshSpec(services=6, endpoints=2, namespaces=3, proxies=14, sidecars=True)
    bench_mesh.write(spec, tmp)
    return _load(tmp)


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MeshConfig]:
    bookinfo = EXAMPLES / "bookinfo"
    out = {
        "demo": _load(ROOT / "config" / "demo"),
        "routing": _load(bookinfo, EXAMPLES / "routing-features"),
        "gateway": _load(bookinfo, EXAMPLES / "ingress-gateway"),
        "tcp": _load(bookinfo, EXAMPLES / "tcp-traffic-shifting"),
        "mirror": _load(bookinfo, EXAMPLES / "mirroring"),
        "bench": _bench(tmp_path_factory.mktemp("bench")),
    }
    out["crossroute"] = _cross_namespace_route(out["bench"])
    out["tls"] = _load(bookinfo, _tls_rules(tmp_path_factory.mktemp("tls")))
    out["mutual"] = _load(bookinfo, EXAMPLES / "secure-ingress-mutual")
    out["sni"] = _load(bookinfo, EXAMPLES / "ingress-sni-passthrough")
    out["tcp-ingress"] = _load(bookinfo, EXAMPLES / "tcp-ingress")
    out["delegate"] = _load(bookinfo, _delegation(tmp_path_factory.mktemp("delegate")))
    out.update(
        {f"{k}+mtls": dataclasses.replace(v, workload_identity=True) for k, v in list(out.items())}
    )
    return out


TLS_DATA = ROOT / "tests" / "traffic" / "data"


def _tls_rules(folder: Path) -> Path:
    """DestinationRules that originate TLS: files (MUTUAL) and a Secret (SIMPLE)."""
    ca = (TLS_DATA / "ca.crt").read_text()
    (folder / "tls.yaml").write_text(
        f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: {TLS_DATA / "client.crt"}
      privateKey: {TLS_DATA / "client.key"}
      caCertificates: {TLS_DATA / "ca.crt"}
  subsets:
  - name: v1
    labels: {{version: v1}}
    trafficPolicy: {{tls: {{mode: SIMPLE, insecureSkipVerify: true}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings}}
spec:
  host: ratings
  trafficPolicy:
    tls: {{mode: SIMPLE, credentialName: ratings-ca, sni: ratings.example.com}}
---
apiVersion: v1
kind: Secret
metadata: {{name: ratings-ca}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{textwrap.indent((TLS_DATA / "client.crt").read_text(), "    ")}
  tls.key: |
{textwrap.indent((TLS_DATA / "client.key").read_text(), "    ")}
  ca.crt: |
{textwrap.indent(ca, "    ")}
"""
    )
    return folder


def _delegation(folder: Path) -> Path:
    """A root on the ingress gateway delegating /api, and tls[] routes on a TLS port."""
    (folder / "delegate.yaml").write_text(
        """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /api}}]
    delegate: {name: api}
  - route: [{destination: {host: productpage}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure}
spec:
  hosts: [secure.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 9443, name: tls, protocol: TLS}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure}
spec:
  hosts: [secure.example.com]
  tls:
  - match: [{sniHosts: [secure.example.com]}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
"""
    )
    return folder


def _cross_namespace_route(cfg: MeshConfig) -> MeshConfig:
    """svc-0's route sends to svc-1, which svc-0's namespace does not see (scoped)."""
    r = dataclasses.replace
    vs = cfg.virtual_services[0]
    other = next(se for se in cfg.service_entries if se.meta.namespace != vs.meta.namespace)
    http = vs.http[0]
    dest = r(http.route[0], destination=Destination(other.hosts[0]))
    routed = r(vs, http=(r(http, route=(dest,)),))
    return r(cfg, virtual_services=(routed, *cfg.virtual_services[1:]))


def _replace_at(items: tuple, i: int, new: object | None) -> tuple:
    return items[:i] + (() if new is None else (new,)) + items[i + 1 :]


def edits(cfg: MeshConfig) -> Iterator[Edit]:
    """One edit of each kind to each object: what an operator changes in a file."""

    def on(field: str, i: int, new: Callable[[object], object | None]) -> Callable:
        def apply(c: MeshConfig) -> MeshConfig:
            items = getattr(c, field)
            if i >= len(items):
                return c
            return dataclasses.replace(c, **{field: _replace_at(items, i, new(items[i]))})

        return apply

    r = dataclasses.replace
    for i, se in enumerate(cfg.service_entries):
        key = se.meta.key
        extra = ServicePort(max(p.number for p in se.ports) + 1, "HTTP", "http-extra")
        yield f"remove SE {key}", on("service_entries", i, lambda _: None)
        yield (
            f"port on SE {key}",
            on("service_entries", i, lambda s, extra=extra: r(s, ports=(*s.ports, extra))),
        )
        yield f"SE {key} exportTo .", on("service_entries", i, lambda s: r(s, export_to=(".",)))
        yield (
            f"SE {key} renumbered",
            on(
                "service_entries",
                i,
                lambda s: r(s, ports=tuple(r(p, number=p.number + 1000) for p in s.ports)),
            ),
        )
        yield f"SE {key} DNS", on("service_entries", i, lambda s: r(s, resolution="DNS"))
        yield (
            f"SE {key} no selector",
            on("service_entries", i, lambda s: r(s, workload_selector=None)),
        )
    for i, we in enumerate(cfg.workload_entries):
        key = we.meta.key
        yield f"remove WE {key}", on("workload_entries", i, lambda _: None)
        yield f"move WE {key}", on("workload_entries", i, lambda w: r(w, address="127.0.99.9"))
        yield f"relabel WE {key}", on("workload_entries", i, lambda w: r(w, labels={"x": "y"}))
        yield (
            f"WE {key} account",
            on("workload_entries", i, lambda w: r(w, service_account="other")),
        )
        yield f"WE {key} port", on("workload_entries", i, lambda w: r(w, ports={"http": 7777}))
    for i, vs in enumerate(cfg.virtual_services):
        key = vs.meta.key
        yield f"remove VS {key}", on("virtual_services", i, lambda _: None)
        if vs.http:
            yield (
                f"VS {key} timeout",
                on(
                    "virtual_services",
                    i,
                    lambda v: r(v, http=(r(v.http[0], timeout_ms=1234), *v.http[1:])),
                ),
            )
            yield (
                f"VS {key} fewer routes",
                on("virtual_services", i, lambda v: r(v, http=v.http[-1:])),
            )
    for i, rule in enumerate(cfg.destination_rules):
        key = rule.meta.key
        yield f"remove DR {key}", on("destination_rules", i, lambda _: None)
        yield f"DR {key} no subsets", on("destination_rules", i, lambda d: r(d, subsets=()))
        yield f"DR {key} no policy", on("destination_rules", i, lambda d: r(d, traffic_policy=None))
        if rule.traffic_policy is not None and rule.traffic_policy.tls is not None:
            yield (
                f"DR {key} plaintext",
                on(
                    "destination_rules",
                    i,
                    lambda d: r(d, traffic_policy=r(d.traffic_policy, tls=ClientTLS("DISABLE"))),
                ),
            )
    for i, credential in enumerate(cfg.tls_credentials):
        yield (
            f"renew Secret {credential.meta.key}",
            on("tls_credentials", i, lambda c: r(c, ca_pem=c.ca_pem + "\n")),
        )
    for field in ("sidecars", "peer_authentications", "authorization_policies", "gateways"):
        for i, item in enumerate(getattr(cfg, field)):
            yield f"remove {field} {item.meta.key}", on(field, i, lambda _: None)
    if cfg.service_entries:
        first = cfg.service_entries[0]
        twin = r(
            first,
            meta=r(first.meta, name="twin"),
            hosts=tuple(f"twin-{h}" for h in first.hosts),
            ports=(ServicePort(7070, "HTTP", "http-twin"),),
            addresses=(),
        )
        yield "add SE twin", lambda c: r(c, service_entries=(*c.service_entries, twin))


def _resources(snapshot: MeshSnapshot, node_id: str, flavour: str) -> dict:
    view = snapshot.view(node_id, flavour)
    return {t: {n: res.version for n, res in view.resources(t).items()} for t in T.PUSH_ORDER}


def _build(cfg: MeshConfig, previous: MeshSnapshot | None) -> MeshSnapshot | str:
    try:
        return MeshSnapshot(cfg, (previous.generation + 1) if previous else 1, previous=previous)
    except InconsistentSnapshot as err:
        return str(err)


def check_chain(start: MeshConfig, steps: list[MeshConfig]) -> None:
    """Each step built from the last one equals the same config built from scratch."""
    previous = _build(start, None)
    assert isinstance(previous, MeshSnapshot)
    nodes = [w.proxy_id for w in start.workload_entries]
    for node in nodes[:2]:  # the per-type flavours are built lazily; carry them too
        for flavour in FLAVOURS:
            previous.view(node, flavour)
    for cfg in steps:
        incremental = _build(cfg, previous)
        full = _build(cfg, None)
        assert type(incremental) is type(full), (incremental, full)
        if isinstance(full, str):
            assert incremental == full
            continue
        assert isinstance(incremental, MeshSnapshot)
        everyone = {*nodes, *(w.proxy_id for w in cfg.workload_entries)}
        for node in sorted(everyone):
            for flavour in FLAVOURS:
                assert _resources(incremental, node, flavour) == _resources(full, node, flavour), (
                    node,
                    flavour,
                )
        previous = incremental


@pytest.mark.parametrize(
    "name",
    [
        "demo",
        "demo+mtls",
        "routing",
        "gateway+mtls",
        "tcp",
        "mirror",
        "bench+mtls",
        "crossroute",
        "tls",
        "tls+mtls",
        "mutual",
        "sni+mtls",
        "tcp-ingress",
        "delegate",
    ],
)
def test_every_single_edit_matches_a_full_rebuild(
    configs: dict[str, MeshConfig], name: str
) -> None:
    cfg = configs[name]
    for label, edit in edits(cfg):
        try:
            check_chain(cfg, [edit(cfg)])
        except AssertionError as err:
            raise AssertionError(f"{name}: {label}: {err}") from err


@pytest.mark.parametrize("name", ["bench", "demo+mtls"])
def test_edits_to_a_service_nobody_sees_still_reach_its_workloads(
    configs: dict[str, MeshConfig], name: str
) -> None:
    """exportTo `~`: no scope holds the service, yet its workloads serve its ports."""
    cfg = configs[name]
    r = dataclasses.replace
    for i, se in enumerate(cfg.service_entries):
        hidden = r(se, export_to=("~",))
        extra = ServicePort(max(p.number for p in se.ports) + 1, "HTTP", "http-extra")
        steps = [
            r(cfg, service_entries=_replace_at(cfg.service_entries, i, hidden)),
            r(
                cfg,
                service_entries=_replace_at(
                    cfg.service_entries, i, r(hidden, ports=(*se.ports, extra))
                ),
            ),
        ]
        try:
            check_chain(cfg, steps)
        except AssertionError as err:
            raise AssertionError(f"{name}: {se.meta.key}: {err}") from err


@settings(max_examples=40)
@given(data=st.data())
def test_chains_of_edits_match_a_full_rebuild(
    configs: dict[str, MeshConfig], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(configs)))
    cfg = configs[name]
    choices = list(edits(cfg))
    picked = data.draw(st.lists(st.sampled_from(choices), min_size=1, max_size=4))
    steps, current = [], cfg
    for _, edit in picked:
        current = edit(current)
        steps.append(current)
    check_chain(cfg, steps)


def test_a_route_edit_reaches_only_the_proxies_that_see_the_host(tmp_path: Path) -> None:
    spec = bench_mesh.MeshSpec(services=20, endpoints=2, namespaces=5, proxies=40, sidecars=True)
    bench_mesh.write(spec, tmp_path)
    before = PushContext.build(_load(tmp_path))
    bench_mesh.route_change(spec, tmp_path)
    after = PushContext.build(_load(tmp_path))
    assert affected_proxies(before, after) == set(bench_mesh.affected_proxies(spec))


def test_an_endpoint_move_reaches_its_own_proxy_and_the_service_s_clients(
    tmp_path: Path,
) -> None:
    spec = bench_mesh.MeshSpec(services=20, endpoints=2, namespaces=5, proxies=40, sidecars=True)
    bench_mesh.write(spec, tmp_path)
    previous = MeshSnapshot(_load(tmp_path), 1)
    bench_mesh.endpoint_change(spec, tmp_path)
    snapshot = MeshSnapshot(_load(tmp_path), 2, previous=previous)
    expected = set(bench_mesh.affected_proxies(spec))
    assert set(snapshot.proxy_ids) - snapshot.carried == expected
    untouched = next(iter(snapshot.carried))
    assert snapshot.view(untouched) is previous.view(untouched)


def test_a_broad_change_rebuilds_everyone(configs: dict[str, MeshConfig]) -> None:
    cfg = configs["demo+mtls"]
    assert cfg.peer_authentications
    changed = dataclasses.replace(cfg, peer_authentications=cfg.peer_authentications[1:])
    before, after = PushContext.build(cfg), PushContext.build(changed)
    assert affected_proxies(before, after) is None
    assert affected_proxies(before, PushContext.build(cfg)) == frozenset()
