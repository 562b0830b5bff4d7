"""Properties of Galley and the generators on traffic config (no Envoy needed).

Valid config loads without findings and translates; one corrupted value anywhere
in it is an error with a line, or harmless, and never an exception: the server
must survive whatever it reads and keep its last good config.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.traffic.mesh import REGISTRY
from tests.traffic.strategies import CREDENTIAL, mesh_config
from xds_server.cache.snapshot import MeshSnapshot
from xds_server.galley.loader import LoadResult, parse_documents

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = "---\n".join(p.read_text() for p in sorted(REGISTRY.glob("*.yaml"))) + "---\n" + CREDENTIAL

junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=True),
        st.text(max_size=10),
        st.sampled_from(["*", "mesh", "v1", "10s", "reviews", "/", "(", "HTTP", "host"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


def check(text: str) -> LoadResult:
    result = parse_documents(BASE + "---\n" + text, "p.yaml")
    assert (result.config is None) == bool(result.errors)
    assert all(f.file == "p.yaml" and f.line >= 1 for f in result.errors + result.warnings)
    if result.config is not None:
        MeshSnapshot(result.config, 1)  # translates, and passes the consistency check
    return result


@SETTINGS
@given(mesh_config())
def test_valid_config_has_no_errors_and_translates(text: str) -> None:
    result = check(text)
    assert [str(e) for e in result.errors] == []


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*path, i))
    return found


@SETTINGS
@given(mesh_config(), st.data())
def test_one_bad_value_is_an_error_or_harmless(text: str, data: st.DataObject) -> None:
    docs = list(yaml.safe_load_all(text))
    doc = data.draw(st.sampled_from(docs))
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = data.draw(junk)
    check("---\n".join(yaml.safe_dump(d) for d in docs))
