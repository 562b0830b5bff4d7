"""SPIFFE ID parsing and validation against the SPIFFE ID standard."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from spiffe import SpiffeId as ReferenceSpiffeId

from ca import CaError, InvalidSpiffeId, SpiffeId, validate_trust_domain

TD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.-_"
SEGMENT_ALPHABET = TD_ALPHABET + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

trust_domains = st.text(TD_ALPHABET, min_size=1, max_size=60)
segments = st.text(SEGMENT_ALPHABET, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
paths = st.lists(segments, max_size=6).map(lambda parts: "".join("/" + p for p in parts))


@pytest.mark.parametrize(
    ("value", "td", "path"),
    [
        ("spiffe://cluster.local", "cluster.local", ""),
        ("spiffe://cluster.local/ns/default/sa/web", "cluster.local", "/ns/default/sa/web"),
        ("spiffe://example.org/a.b/C_d/e-f/..x/.y", "example.org", "/a.b/C_d/e-f/..x/.y"),
        ("spiffe://a_b-c.1/x", "a_b-c.1", "/x"),
        ("spiffe://" + "a" * 255 + "/x", "a" * 255, "/x"),
    ],
)
def test_valid_ids(value: str, td: str, path: str) -> None:
    sid = SpiffeId.parse(value)
    assert (sid.trust_domain, sid.path, str(sid), sid.uri) == (td, path, value, value)
    assert SpiffeId(td, path) == sid


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("cluster.local/ns/a", "missing the 'spiffe://' scheme"),
        ("https://cluster.local/ns/a", "scheme must be 'spiffe'"),
        ("SPIFFE://cluster.local/ns/a", "lowercase 'spiffe://'"),
        ("spiffe:/cluster.local/x", "missing"),
        ("spiffe://", "trust domain is empty"),
        ("spiffe:///path", "trust domain is empty"),
        ("spiffe://Cluster.local/x", "must be lowercase"),
        ("spiffe://cluster.local:8080/x", "port"),
        ("spiffe://user@cluster.local/x", "userinfo"),
        ("spiffe://user:pw@cluster.local/x", "userinfo"),
        ("spiffe://clus%74er.local/x", "percent-encoding"),
        ("spiffe://cluster local/x", "trust domain may contain only"),
        ("spiffe://" + "a" * 256 + "/x", "more than 255"),
        ("spiffe://cluster.local/", "trailing '/'"),
        ("spiffe://cluster.local/ns/a/", "trailing '/'"),
        ("spiffe://cluster.local//a", "empty segment"),
        ("spiffe://cluster.local/a//b", "empty segment"),
        ("spiffe://cluster.local/./a", "'.'"),
        ("spiffe://cluster.local/a/..", "'..'"),
        ("spiffe://cluster.local/a?b=c", "query"),
        ("spiffe://cluster.local/a#frag", "fragment"),
        ("spiffe://cluster.local/a%20b", "percent-encoding"),
        ("spiffe://cluster.local/a b", "path segments may contain only"),
        ("spiffe://cluster.local/ä", "path segments may contain only"),
        ("spiffe://cluster.local/" + "a" * 2040, "longer than 2048"),
    ],
)
def test_invalid_ids(value: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(value)
    assert reason in str(info.value)
    assert info.value.value == value
    assert isinstance(info.value, CaError) and isinstance(info.value, ValueError)


def test_constructor_validates() -> None:
    with pytest.raises(InvalidSpiffeId):
        SpiffeId("Bad", "/x")
    with pytest.raises(InvalidSpiffeId):
        SpiffeId("td", "x")  # path must start with '/'
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(42)  # type: ignore[arg-type]


def test_istio_shape() -> None:
    sid = SpiffeId.for_workload("cluster.local", "default", "web")
    assert str(sid) == "spiffe://cluster.local/ns/default/sa/web"
    assert (sid.namespace, sid.service_account, sid.is_istio_workload) == ("default", "web", True)
    other = SpiffeId.parse("spiffe://cluster.local/ns/default/web")
    assert (other.namespace, other.service_account, other.is_istio_workload) == (None, None, False)
    assert SpiffeId.for_trust_domain("td").segments == ()
    assert sid.member_of("cluster.local") and not sid.member_of("other")
    for bad in [("cluster.local", "", "web"), ("cluster.local", "a/b", "web")]:
        with pytest.raises(InvalidSpiffeId):
            SpiffeId.for_workload(*bad)
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.for_workload("cluster.local", "default", "we b")


def test_validate_trust_domain() -> None:
    assert validate_trust_domain("cluster.local") == "cluster.local"
    with pytest.raises(InvalidSpiffeId, match="lowercase"):
        validate_trust_domain("Cluster.local")


@given(trust_domains, paths)
def test_valid_generated_ids_roundtrip_and_agree_with_reference(td: str, path: str) -> None:
    value = f"spiffe://{td}{path}"
    sid = SpiffeId.parse(value)
    assert str(sid) == value
    assert (sid.trust_domain, sid.path) == (td, path)
    reference = ReferenceSpiffeId(value)  # the independent `spiffe` package agrees
    assert str(reference) == value


BAD_TD_CHARS = st.sampled_from(list("ABZ:@%/?# !$&'()*+,;=~[]ä"))
BAD_SEGMENT_CHARS = st.sampled_from(list(":@%?# !$&'()*+,;=~[]ä\\"))


@given(trust_domains, paths, BAD_TD_CHARS, st.integers(min_value=0, max_value=60))
def test_bad_character_in_trust_domain_is_rejected(td: str, path: str, bad: str, at: int) -> None:
    at %= len(td) + 1
    broken = td[:at] + bad + td[at:]
    if bad == "/":
        # a '/' just moves the split: the trust domain is cut short; the rest is path
        head = broken.split("/", 1)[0]
        if head and all(c in TD_ALPHABET for c in head):
            return
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(f"spiffe://{broken}{path}")


@given(trust_domains, st.lists(segments, min_size=1, max_size=4), BAD_SEGMENT_CHARS, st.data())
def test_bad_character_in_path_is_rejected(
    td: str, parts: list[str], bad: str, data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(parts) - 1))
    at = data.draw(st.integers(0, len(parts[i])))
    parts[i] = parts[i][:at] + bad + parts[i][at:]
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(f"spiffe://{td}" + "".join("/" + p for p in parts))


@given(trust_domains, st.lists(segments, min_size=1, max_size=4), st.data())
def test_empty_and_dot_segments_are_rejected(
    td: str, parts: list[str], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(parts)))
    parts.insert(i, data.draw(st.sampled_from(["", ".", ".."])))
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(f"spiffe://{td}" + "".join("/" + p for p in parts))
