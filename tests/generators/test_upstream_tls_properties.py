"""Property: no accepted DestinationRule / PeerAuthentication combination ever yields a
plaintext upstream cluster where the user asked for TLS.

Hypothesis draws DestinationRules for two services of the examples' registry (HTTP
reviews with subsets, TCP tcp-echo) with `tls` at the top level, per subset and per
port, in every mode with any mix of its fields, plus PeerAuthentications at mesh,
namespace and workload level, with the control plane issuing identities or not.
Galley accepts some and refuses others; for every accepted one, every outbound
cluster of every proxy is inspected: the TLS the YAML asks for (worked out here,
independently of the generators) must be on the cluster's transport socket, or the
whole config must be refused (UnbuildableConfig); never plaintext.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from xds_server import xds_types
from xds_server.galley.loader import load_paths
from xds_server.galley.model import MeshConfig
from xds_server.generators import PushContext, UnbuildableConfig, generate

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "config" / "examples" / "bookinfo"
DATA = ROOT / "tests" / "traffic" / "data"
SERVICES = {"reviews": 9080, "tcp-echo": 9000}
SUBSETS = ("v1", "v2")
TLS_MODE = {"ISTIO_MUTUAL", "SIMPLE", "MUTUAL"}
PA_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")

any_tls = st.fixed_dictionaries(
    {"mode": st.sampled_from(["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"])},
    optional={
        "clientCertificate": st.just(str(DATA / "client.crt")),
        "privateKey": st.just(str(DATA / "client.key")),
        "caCertificates": st.just(str(DATA / "ca.crt")),
        "credentialName": st.just("client-credential"),
        "subjectAltNames": st.lists(st.sampled_from(["a.example.com", "spiffe://x/ns/a/sa/b"])),
        "sni": st.sampled_from(["a.example.com", "outbound_.9080_._.reviews"]),
        "insecureSkipVerify": st.booleans(),
    },
)


@st.composite
def valid_tls(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly what Galley accepts, so that many draws reach the generators."""
    mode = draw(st.sampled_from(["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]))
    tls: dict[str, Any] = {"mode": mode}
    if mode == "DISABLE":
        return tls
    if draw(st.booleans()):
        tls["sni"] = "a.example.com"
    insecure = mode != "ISTIO_MUTUAL" and draw(st.booleans())
    if insecure:
        tls["insecureSkipVerify"] = True
    elif draw(st.booleans()):
        tls["subjectAltNames"] = ["a.example.com"]
    if mode == "ISTIO_MUTUAL":
        return tls
    if draw(st.booleans()) and not (insecure and mode == "SIMPLE"):
        tls["credentialName"] = "client-credential"
        return tls
    if mode == "MUTUAL":
        tls["clientCertificate"] = str(DATA / "client.crt")
        tls["privateKey"] = str(DATA / "client.key")
    if not insecure and draw(st.booleans()):
        tls["caCertificates"] = str(DATA / "ca.crt")
    return tls


tls_settings = st.one_of(valid_tls(), valid_tls(), valid_tls(), any_tls)


def policy(port: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "tls": tls_settings,
            "portLevelSettings": st.lists(
                st.fixed_dictionaries({"port": st.just({"number": port}), "tls": tls_settings}),
                max_size=1,
            ),
        },
    )


@st.composite
def destination_rule(draw: st.DrawFn, name: str, port: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": name}
    if draw(st.booleans()):
        spec["trafficPolicy"] = draw(policy(port))
    subsets = []
    for version in SUBSETS:
        if draw(st.booleans()):
            subset: dict[str, Any] = {"name": version, "labels": {"version": version}}
            if draw(st.booleans()):
                subset["trafficPolicy"] = draw(policy(port))
            subsets.append(subset)
    if subsets:
        spec["subsets"] = subsets
    return _doc("networking.istio.io/v1", "DestinationRule", name, "default", spec)


@st.composite
def peer_authentication(draw: st.DrawFn, index: int) -> dict[str, Any]:
    level = draw(st.sampled_from(["mesh", "namespace", "workload"]))
    spec: dict[str, Any] = {"mtls": {"mode": draw(st.sampled_from(PA_MODES))}}
    namespace = "istio-system" if level == "mesh" else "default"
    if level == "workload":
        app, port = draw(st.sampled_from([("reviews", 9080), ("tcp-echo", 9000)]))
        spec["selector"] = {"matchLabels": {"app": app}}
        if draw(st.booleans()):
            spec["portLevelMtls"] = {port: {"mode": draw(st.sampled_from(PA_MODES))}}
    return _doc("security.istio.io/v1", "PeerAuthentication", f"pa-{index}", namespace, spec)


def _doc(api: str, kind: str, name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


CREDENTIAL = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "client-credential", "namespace": "default"},
    "type": "kubernetes.io/tls",
    "stringData": {
        "tls.crt": (DATA / "client.crt").read_text(),
        "tls.key": (DATA / "client.key").read_text(),
        "ca.crt": (DATA / "ca.crt").read_text(),
    },
}


@st.composite
def configs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool]:
    docs = [draw(destination_rule(name, port)) for name, port in SERVICES.items()]
    docs += [draw(peer_authentication(i)) for i in range(draw(st.integers(0, 3)))]
    return [*docs, CREDENTIAL], draw(st.booleans())


# --- the oracle: what the YAML asks for, worked out without the generators ----------


def asked_tls(rule: dict[str, Any], port: int, subset: str) -> dict[str, Any] | None:
    """The `tls` in force for (port, subset): a subset's (port level first) replaces the
    top level's (port level first), as Istio merges them."""

    def level(policy: dict[str, Any] | None) -> dict[str, Any] | None:
        if not policy:
            return None
        for entry in policy.get("portLevelSettings", ()):
            if entry["port"]["number"] == port and "tls" in entry:
                return dict(entry["tls"])
        return policy.get("tls")

    tls = level(rule["spec"].get("trafficPolicy"))
    for entry in rule["spec"].get("subsets", ()):
        if entry["name"] == subset and (over := level(entry.get("trafficPolicy"))) is not None:
            tls = over
    return tls


def peer_mode(docs: list[dict[str, Any]], app: str, port: int) -> str:
    """Istio's PeerAuthentication precedence for a workload of `app` (namespace default):
    mesh, then namespace, then workload selector, then its port level; UNSET inherits.
    Several at one level: the first by name."""
    pas = sorted(
        (d for d in docs if d["kind"] == "PeerAuthentication"), key=lambda d: d["metadata"]["name"]
    )

    def first(match: Any) -> dict[str, Any] | None:
        return next((d for d in pas if match(d)), None)

    mesh = first(
        lambda d: d["metadata"]["namespace"] == "istio-system" and "selector" not in d["spec"]
    )
    namespace = first(
        lambda d: d["metadata"]["namespace"] == "default" and "selector" not in d["spec"]
    )
    workload = first(
        lambda d: (
            d["metadata"]["namespace"] == "default"
            and d["spec"].get("selector", {}).get("matchLabels") == {"app": app}
        )
    )
    mode = "PERMISSIVE"
    for pa in (mesh, namespace, workload):
        if pa is not None and pa["spec"]["mtls"]["mode"] != "UNSET":
            mode = pa["spec"]["mtls"]["mode"]
    if workload is not None:
        port_mode = workload["spec"].get("portLevelMtls", {}).get(port, {}).get("mode", "UNSET")
        if port_mode != "UNSET":
            mode = port_mode
    return mode


def check_cluster(cluster: Any, tls: dict[str, Any] | None, auto_mtls: bool) -> None:
    mode = tls["mode"] if tls else ("ISTIO_MUTUAL" if auto_mtls else "DISABLE")
    socket = cluster.transport_socket
    if mode not in TLS_MODE:
        return  # plaintext was asked for (or nothing, where auto-mTLS cannot apply)
    assert socket.name == "envoy.transport_sockets.tls", (cluster.name, tls)
    context = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(context), (cluster.name, tls)
    common = context.common_tls_context
    certificates = [c.name for c in common.tls_certificate_sds_secret_configs]
    roots = common.combined_validation_context.validation_context_sds_secret_config.name
    if mode == "ISTIO_MUTUAL":
        assert (certificates, roots) == (["default"], "ROOTCA"), cluster.name
        return
    assert certificates if mode == "MUTUAL" else not certificates, (cluster.name, tls)
    if tls is not None and tls.get("insecureSkipVerify"):
        assert not roots, cluster.name
    else:
        assert roots, (cluster.name, tls)  # verified: never a TLS socket that trusts anyone


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=configs())
def test_asked_for_tls_is_never_built_as_plaintext(
    tmp_path_factory: Any, drawn: tuple[list[dict[str, Any]], bool]
) -> None:
    docs, identity = drawn
    folder = tmp_path_factory.mktemp("tls")
    (folder / "drawn.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    result = load_paths([REGISTRY, folder])
    if result.config is None:
        event("refused by Galley")
        return  # refused with located errors: fine
    mesh: MeshConfig = dataclasses.replace(result.config, workload_identity=identity)
    ctx = PushContext.build(mesh)
    try:
        generated = {p.node_id: generate(ctx, p) for p in ctx.proxies}
    except UnbuildableConfig:
        event("refused at build time")
        return  # ISTIO_MUTUAL without identities: fine
    rules = {d["spec"]["host"]: d for d in docs if d["kind"] == "DestinationRule"}
    for resources in generated.values():
        for name, cluster in resources[xds_types.CLUSTER].items():
            assert isinstance(cluster, cluster_pb2.Cluster)
            if not name.startswith("outbound|"):
                continue
            _, port, subset, host = name.split("|")
            app = host.split(".")[0]
            if app not in rules:
                continue
            tls = asked_tls(rules[app], int(port), subset)
            auto = identity and peer_mode(docs, app, int(port)) != "DISABLE"
            check_cluster(cluster, tls, auto)
            event(f"checked a {tls['mode'] if tls else 'auto' if auto else 'plain'} cluster")
