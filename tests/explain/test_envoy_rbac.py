"""Envoy's RBAC filters replayed (`xds_server.explain.envoy_rbac`): the order of filters,
ALLOW and DENY, what AUDIT and dry-run do not decide, and what cannot be known."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from xds_server.explain.envoy_rbac import Caller, decide, policy_name
from xds_server.explain.envoy_read import RbacFilter
from xds_server.explain.request import Request

REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"


def principal(exact: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(
            principal_name=string_pb2.StringMatcher(exact=exact)
        )
    )


def policy(who: rbac_pb2.Principal, what: rbac_pb2.Permission | None = None) -> rbac_pb2.Policy:
    return rbac_pb2.Policy(permissions=[what or rbac_pb2.Permission(any=True)], principals=[who])


ALLOW_REVIEWS = RbacFilter(
    "ALLOW", {"ns[default]-policy[ratings]-rule[0]": policy(principal(REVIEWS))}, False
)


def caller(who: str | None, path: str = "/") -> Caller:
    return Caller(principal=who, port=9080, request=Request("ratings", 9080, path))


def test_allow_admits_the_principal_it_names() -> None:
    assert decide([ALLOW_REVIEWS], caller(REVIEWS)).allowed is True
    denied = decide([ALLOW_REVIEWS], caller("spiffe://cluster.local/ns/default/sa/productpage"))
    assert denied.allowed is False and "default/ratings rules[0]" in denied.why
    assert decide([ALLOW_REVIEWS], caller(None)).allowed is False  # no certificate
    assert decide([], caller(None)).allowed is True
    assert decide([RbacFilter("ALLOW", {}, False)], caller(REVIEWS)).allowed is False


def test_deny_first_audit_and_dry_run_decide_nothing() -> None:
    admin = rbac_pb2.Permission(url_path=rbac_pb2.Permission().url_path)
    admin.url_path.path.prefix = "/admin"
    deny = RbacFilter("DENY", {"ns[default]-policy[no-admin]-rule[0]":
                               policy(rbac_pb2.Principal(any=True), admin)}, False)  # fmt: skip
    filters = [deny, ALLOW_REVIEWS]
    assert decide(filters, caller(REVIEWS, "/admin/x")).allowed is False
    assert decide(filters, caller(REVIEWS, "/ok?admin")).allowed is True
    dry = RbacFilter("DENY", deny.policies, True)
    log = RbacFilter("LOG", deny.policies, False)
    assert decide([dry, log], caller(REVIEWS, "/admin")).allowed is True


def test_what_is_not_known_stays_undecided() -> None:
    by_ip = rbac_pb2.Principal(
        remote_ip=address_pb2.CidrRange(
            address_prefix="10.0.0.0", prefix_len=wrappers_pb2.UInt32Value(value=8)
        )
    )
    only_ip = RbacFilter("ALLOW", {"x": policy(by_ip)}, False)
    assert decide([only_ip], caller(REVIEWS)).allowed is None
    known = Caller(principal=None, port=9080, request=None, remote_ip="10.1.2.3")
    assert decide([only_ip], known).allowed is True
    assert policy_name("ns[a]-policy[b]-rule[2]") == "a/b rules[2]"
    assert policy_name("custom") == "custom"
