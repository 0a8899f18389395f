"""Policies: prefix lists with ge/le, community match/set, local-pref/MED, prepend, verdicts."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_network

import pytest

from kubewire.bgp.attributes import AsPath, LargeCommunity, NextHop, OriginAttr, community
from kubewire.bgp.constants import Origin, WellKnownCommunity
from kubewire.bgp.decision import DecisionConfig
from kubewire.bgp.errors import BgpError
from kubewire.bgp.path import Path, PathAttributes, Peer
from kubewire.bgp.policy import (
    ACCEPT_ALL,
    REJECT_ALL,
    Match,
    PolicyError,
    PrefixEntry,
    PrefixList,
    RoutePolicy,
    SetActions,
    Term,
    Verdict,
)
from kubewire.bgp.rib import Rib
from kubewire.bgp.update import Update, decode_update

E1 = Peer(IPv4Address("10.0.0.1"), 65001, IPv4Address("1.1.1.1"), 65000)


@pytest.mark.parametrize(("entry", "prefix", "hit"), [
    ("10.0.0.0/8", "10.0.0.0/8", True),
    ("10.0.0.0/8", "10.1.0.0/16", False),  # no ge/le: exact length only
    ("10.0.0.0/8 le 24", "10.1.0.0/16", True),
    ("10.0.0.0/8 le 24", "10.0.0.0/8", True),
    ("10.0.0.0/8 le 24", "10.1.1.0/25", False),
    ("10.0.0.0/8 ge 16", "10.1.1.1/32", True),
    ("10.0.0.0/8 ge 16", "10.0.0.0/15", False),
    ("10.0.0.0/8 ge 16 le 24", "10.9.9.0/24", True),
    ("10.0.0.0/8 ge 16 le 24", "10.9.9.0/25", False),
    ("10.0.0.0/8 ge 16 le 24", "11.9.0.0/16", False),  # outside the prefix
    ("0.0.0.0/0 le 32", "192.0.2.1/32", True),
    ("0.0.0.0/0", "192.0.2.0/24", False),  # only the default route
    ("2001:db8::/32 ge 48 le 64", "2001:db8:1::/48", True),
    ("2001:db8::/32 ge 48 le 64", "10.0.0.0/8", False),  # other family
])
def test_prefix_entry(entry: str, prefix: str, hit: bool) -> None:
    assert PrefixEntry.parse(entry).matches(ip_network(prefix)) is hit


def test_prefix_list_first_match_and_implicit_deny() -> None:
    pl = PrefixList.parse("deny 10.66.0.0/16 le 32", "permit 10.0.0.0/8 le 24")
    assert pl.permits(IPv4Network("10.1.0.0/16"))
    assert not pl.permits(IPv4Network("10.66.1.0/24"))
    assert not pl.permits(IPv4Network("192.0.2.0/24"))
    assert not PrefixList(()).permits(IPv4Network("10.0.0.0/8"))


@pytest.mark.parametrize("bad", ["", "permit", "10.0.0.0/8 ge 4", "10.0.0.0/8 le 33",
                                 "10.0.0.0/8 ge 24 le 16", "10.0.0.0/8 xx 9", "10.0.0.0/8 ge",
                                 "10.0.0.1/8", "2001:db8::/32 le 129", "10.0.0.0/8 ge 9 ge 10"])
def test_bad_prefix_entries(bad: str) -> None:
    with pytest.raises(PolicyError) as ei:
        PrefixEntry.parse(bad)
    assert isinstance(ei.value, BgpError)


def path(prefix: str = "10.1.0.0/16", **kw: object) -> Path:
    attrs = PathAttributes(as_path=AsPath.sequence(65001, 7), next_hop=IPv4Address("10.0.0.101"),
                           **kw)  # type: ignore[arg-type]
    return Path(ip_network(prefix), attrs, E1)


NO_EXPORT = int(WellKnownCommunity.NO_EXPORT)
C100 = community(65000, 100)


def test_match_conditions() -> None:
    p = path(communities=(C100,), large_communities=(LargeCommunity(65000, 1, 2),))
    assert Match()(p)
    assert Match(community_any=(NO_EXPORT, C100))(p)
    assert not Match(community_any=(NO_EXPORT,))(p)
    assert Match(large_community_any=(LargeCommunity(65000, 1, 2),))(p)
    assert not Match(large_community_any=(LargeCommunity(65000, 1, 3),))(p)
    assert Match(as_path_contains=7)(p) and not Match(as_path_contains=8)(p)
    assert Match(neighbor_as=65001)(p) and not Match(neighbor_as=7)(p)
    assert Match(peer_address=E1.address)(p)
    assert not Match(peer_address=IPv4Address("10.0.0.2"))(p)
    assert Match(local=False)(p) and not Match(local=True)(p)
    assert Match(prefix_list=PrefixList.parse("10.0.0.0/8 le 16"))(p)
    assert not Match(prefix_list=PrefixList.parse("10.0.0.0/8 le 16"), neighbor_as=7)(p)


def test_set_actions() -> None:
    p = path(communities=(C100, NO_EXPORT), med=5)
    got = SetActions(local_pref=200, med=10, weight=50, prepend_as=65000, prepend_times=3,
                     add_communities=(community(65000, 200), C100),
                     remove_communities=(NO_EXPORT,),
                     add_large_communities=(LargeCommunity(65000, 9, 9),),
                     next_hop=IPv4Address("10.0.0.9"))(p)
    a = got.attrs
    assert (a.local_pref, a.med, got.weight) == (200, 10, 50)
    assert a.as_path == AsPath.sequence(65000, 65000, 65000, 65001, 7)
    assert a.communities == (C100, community(65000, 200))
    assert a.large_communities == (LargeCommunity(65000, 9, 9),)
    assert a.next_hop == IPv4Address("10.0.0.9")
    assert got.prefix == p.prefix and got.peer == p.peer
    assert SetActions(communities=())(p).attrs.communities == ()
    assert SetActions()(p) == p


def test_policy_terms_in_order() -> None:
    pol = RoutePolicy((
        Term("bogons", Match(prefix_list=PrefixList.parse("10.66.0.0/16 le 32")),
             verdict=Verdict.REJECT),
        Term("tag", set=SetActions(add_communities=(C100,)), verdict=Verdict.NEXT),
        Term("customers", Match(neighbor_as=65001), SetActions(local_pref=200)),
    ))
    r = pol.evaluate(path())
    assert r.term == "customers" and r.path is not None
    assert r.path.attrs.local_pref == 200 and r.path.attrs.communities == (C100,)
    assert pol.evaluate(path("10.66.1.0/24")) == type(r)(None, "bogons")
    other = Path(IPv4Network("10.2.0.0/16"), PathAttributes(as_path=AsPath.sequence(65009)), E1)
    assert pol(other) is None  # tagged, then nobody accepts: default reject
    assert ACCEPT_ALL(other) == other and REJECT_ALL(other) is None
    with pytest.raises(PolicyError):
        RoutePolicy(default=Verdict.NEXT)


def test_policy_as_rib_import() -> None:
    pol = RoutePolicy((Term("low", Match(prefix_list=PrefixList.parse("10.0.0.0/8 le 24")),
                            SetActions(local_pref=50)),), default=Verdict.REJECT)
    rib = Rib(DecisionConfig(IPv4Address("9.0.0.1"), 65000), import_policy=pol)
    u = Update(attributes=(OriginAttr(Origin.IGP), AsPath.sequence(65001),
                           NextHop(IPv4Address("10.0.0.101"))),
               nlri=(IPv4Network("10.1.0.0/16"), IPv4Network("192.0.2.0/24")))
    rib.receive(E1, decode_update(u.body_to_wire()))
    d = rib.best(IPv4Network("10.1.0.0/16"))
    assert d is not None and d.best.attrs.local_pref == 50
    assert rib.best(IPv4Network("192.0.2.0/24")) is None
