"""The registry of kinds drives MeshConfig and the change analysis.

Every MeshConfig field is classified (a kind's, with how far its changes reach, or
a control-plane setting); a field nobody classified makes every proxy rebuild, as
Istio does with changes it cannot place.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xds_server.galley.loader import load_paths
from xds_server.galley.model import MeshConfig
from xds_server.galley.registry import BY_FIELD, KINDS, SETTINGS, Reach, mesh_fields, reach_of
from xds_server.generators import PushContext
from xds_server.generators.dependencies import affected_proxies

ROOT = Path(__file__).resolve().parents[2]


def test_every_mesh_config_field_is_classified() -> None:
    fields = {f.name for f in dataclasses.fields(MeshConfig)}
    unclassified = sorted(name for name in fields if reach_of(name) is None)
    assert unclassified == [], (
        f"MeshConfig fields {unclassified} are in no Kind of galley.registry.KINDS and not "
        "in SETTINGS: say how far a change to them reaches"
    )
    # And nothing classified is missing from MeshConfig, nor classified twice.
    assert {*BY_FIELD, *SETTINGS} == fields
    assert not set(BY_FIELD) & set(SETTINGS)
    assert len(BY_FIELD) == len(KINDS)


def test_each_kind_is_declared_whole() -> None:
    for kind in KINDS:
        assert kind.spec, kind.kind
        if kind.reach is Reach.HOSTS:
            assert kind.hosts is not None, f"{kind.kind} reaches hosts but does not say which"
    # The loader fills MeshConfig from the registry: every kind's field, nothing else.
    assert set(mesh_fields([])) == set(BY_FIELD)


def test_the_loader_files_each_kind_under_its_registered_field() -> None:
    config = load_paths([ROOT / "config" / "demo"]).config_or_raise()
    for kind in KINDS:
        for resource in getattr(config, kind.mesh_field):
            assert isinstance(resource, kind.model)


@dataclasses.dataclass(frozen=True, slots=True)
class _Tomorrow(MeshConfig):
    """MeshConfig as a later issue might grow it, before anyone classifies the field."""

    telemetry: tuple[str, ...] = ()


def test_an_unclassified_field_rebuilds_every_proxy() -> None:
    demo = load_paths([ROOT / "config" / "demo"]).config_or_raise()
    base = _Tomorrow(**{f.name: getattr(demo, f.name) for f in dataclasses.fields(MeshConfig)})
    assert reach_of("telemetry") is None
    before = PushContext.build(base)
    same = PushContext.build(dataclasses.replace(base))
    # Equal: only the gateways, which every change rebuilds (dependencies.py).
    assert affected_proxies(before, same) == {p.node_id for p in before.proxies if p.gateways}
    after = PushContext.build(dataclasses.replace(base, telemetry=("access-log",)))
    assert affected_proxies(before, after) is None  # None: every proxy


def test_a_classified_host_change_stays_partial() -> None:
    """The control: a DestinationRule edit (Reach.HOSTS) does not rebuild everyone."""
    demo = load_paths([ROOT / "config" / "demo"]).config_or_raise()
    assert demo.destination_rules
    rule = demo.destination_rules[0]
    changed = dataclasses.replace(demo, destination_rules=(dataclasses.replace(rule, subsets=()),))
    affected = affected_proxies(PushContext.build(demo), PushContext.build(changed))
    # The proxies that see reviews (in the demo: all of them), worked out, not "everyone".
    assert affected is not None and "productpage.default" in affected
