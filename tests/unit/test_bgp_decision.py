"""The decision process: one scenario per step (as data), determinism, ECMP, explain()."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from kubewire.bgp.attributes import AsPath, AsSegment
from kubewire.bgp.constants import Origin, SegmentType
from kubewire.bgp.decision import DecisionConfig, DecisionReason, decide
from kubewire.bgp.path import Path, PathAttributes, Peer

R = DecisionReason
PFX = IPv4Network("10.9.0.0/16")
LOCAL_AS = 65000
CFG = DecisionConfig(router_id=IPv4Address("9.0.0.1"), local_as=LOCAL_AS)


def peer(addr: str, asn: int, rid: str) -> Peer:
    return Peer(IPv4Address(addr), asn, IPv4Address(rid), LOCAL_AS)


E1 = peer("10.0.0.1", 65001, "1.1.1.1")
E2 = peer("10.0.0.2", 65002, "2.2.2.2")
E3 = peer("10.0.0.3", 65001, "3.3.3.3")  # same neighbour AS as E1
I1 = peer("10.0.1.1", LOCAL_AS, "4.4.4.4")
I2 = peer("10.0.1.2", LOCAL_AS, "5.5.5.5")


def seq(*asns: int) -> AsPath:
    return AsPath.sequence(*asns)


@dataclass(frozen=True)
class P:
    """A path in a scenario: its source plus only the fields that matter."""

    src: Peer | None
    as_path: AsPath | None = None
    kw: dict[str, Any] = field(default_factory=dict)
    weight: int = 0
    igp: int | None = 0
    received: int = 0

    def build(self) -> Path:
        default = seq() if self.src is None or not self.src.ebgp else seq(self.src.asn)
        attrs = PathAttributes(as_path=self.as_path or default, next_hop=IPv4Address("192.0.2.1"),
                               **self.kw)
        return Path(PFX, attrs, self.src, self.weight, self.igp, self.received)


ORIG = IPv4Address("7.7.7.7")
SCENARIOS: list[tuple[str, list[P], dict[str, Any], int, DecisionReason]] = [
    ("only-path", [P(E1)], {}, 0, R.ONLY_PATH),
    ("unresolvable-next-hop", [P(E1, igp=None), P(E2, seq(65002, 1, 2))], {}, 1,
     R.NEXT_HOP_RESOLVABLE),
    ("weight", [P(I1, kw={"local_pref": 200}), P(E2, weight=100)], {}, 1, R.WEIGHT),
    ("local-pref", [P(I1, kw={"local_pref": 100}), P(I2, kw={"local_pref": 200})], {}, 1,
     R.LOCAL_PREF),
    ("local-pref-default-100", [P(I1), P(I2, kw={"local_pref": 90})], {}, 0, R.LOCAL_PREF),
    ("local-pref-default-configurable", [P(I1), P(I2, kw={"local_pref": 90})],
     {"default_local_pref": 80}, 1, R.LOCAL_PREF),
    ("locally-originated", [P(E1, seq()), P(None)], {}, 1, R.LOCALLY_ORIGINATED),
    ("as-path-length", [P(E1, seq(65001, 1)), P(E2, seq(65002))], {}, 1, R.AS_PATH_LENGTH),
    ("as-set-counts-one",
     [P(E1, AsPath((AsSegment(SegmentType.AS_SEQUENCE, (65001,)),
                    AsSegment(SegmentType.AS_SET, (1, 2, 3))))),
      P(E2, seq(65002, 7, 8))], {}, 0, R.AS_PATH_LENGTH),
    ("confed-segments-not-counted",
     [P(I1, AsPath((AsSegment(SegmentType.AS_CONFED_SEQUENCE, (64512, 64513)),
                    AsSegment(SegmentType.AS_SEQUENCE, (65001,))))),
      P(I2, seq(65002, 9))], {}, 0, R.AS_PATH_LENGTH),
    ("origin-igp", [P(E1, kw={"origin": Origin.INCOMPLETE}), P(E2, kw={"origin": Origin.IGP})],
     {}, 1, R.ORIGIN),
    ("origin-egp-over-incomplete", [P(E1, kw={"origin": Origin.INCOMPLETE}),
                                    P(E2, kw={"origin": Origin.EGP})], {}, 1, R.ORIGIN),
    ("med-same-neighbour-as", [P(E1, kw={"med": 50}), P(E3, kw={"med": 10})], {}, 1, R.MED),
    ("med-other-as-not-compared", [P(E1, kw={"med": 50}), P(E2, kw={"med": 10})], {}, 0,
     R.ROUTER_ID),
    ("always-compare-med", [P(E1, kw={"med": 50}), P(E2, kw={"med": 10})],
     {"always_compare_med": True}, 1, R.MED),
    ("missing-med-is-zero", [P(E1), P(E3, kw={"med": 5})], {}, 0, R.MED),
    ("missing-med-as-worst", [P(E1), P(E3, kw={"med": 5})], {"med_missing_as_worst": True}, 1,
     R.MED),
    ("ebgp-over-ibgp", [P(I1, seq(65002)), P(E2)], {}, 1, R.EBGP_OVER_IBGP),
    ("igp-cost", [P(I1, seq(65002), igp=10), P(I2, seq(65003), igp=5)], {}, 1, R.IGP_COST),
    ("oldest-ebgp", [P(E1, received=2), P(E2, received=1)], {"prefer_oldest_ebgp": True}, 1,
     R.OLDEST_EBGP),
    ("oldest-ebgp-off", [P(E1, received=2), P(E2, received=1)], {}, 0, R.ROUTER_ID),
    ("oldest-ebgp-needs-all-ebgp", [P(I1, seq(65002), received=2), P(I2, seq(65002),
                                                                     received=1)],
     {"prefer_oldest_ebgp": True}, 0, R.ROUTER_ID),
    ("router-id", [P(I2, seq(65002)), P(I1, seq(65002))], {}, 1, R.ROUTER_ID),
    ("originator-id-replaces-router-id",
     [P(I1, seq(65002), kw={"originator_id": IPv4Address("9.9.9.9")}), P(I2, seq(65002))], {},
     1, R.ROUTER_ID),
    ("cluster-list-length",
     [P(I1, seq(65002), kw={"originator_id": ORIG,
                            "cluster_list": (IPv4Address("1.0.0.1"), IPv4Address("1.0.0.2"))}),
      P(I2, seq(65002), kw={"originator_id": ORIG, "cluster_list": (IPv4Address("1.0.0.3"),)})],
     {}, 1, R.CLUSTER_LIST_LENGTH),
    ("neighbor-address",
     [P(I2, seq(65002), kw={"originator_id": ORIG}), P(I1, seq(65002),
                                                       kw={"originator_id": ORIG})],
     {}, 1, R.NEIGHBOR_ADDRESS),
    ("weight-beats-local-pref", [P(I1, kw={"local_pref": 500}), P(I2, weight=1)], {}, 1,
     R.WEIGHT),
    ("local-pref-beats-as-path", [P(E1, seq(65001, 1, 2, 3), kw={"local_pref": 200}),
                                  P(E2)], {}, 0, R.LOCAL_PREF),
    ("as-path-beats-origin", [P(E1, seq(65001), kw={"origin": Origin.INCOMPLETE}),
                              P(E2, seq(65002, 1))], {}, 0, R.AS_PATH_LENGTH),
    ("origin-beats-med", [P(E1, kw={"med": 0, "origin": Origin.EGP}),
                          P(E3, kw={"med": 100})], {}, 1, R.ORIGIN),
    ("med-beats-ebgp", [P(I1, seq(65001), kw={"med": 1}), P(E1, kw={"med": 2})], {}, 0, R.MED),
    ("ebgp-beats-igp-cost", [P(I1, seq(65002), igp=0), P(E2, igp=50)], {}, 1, R.EBGP_OVER_IBGP),
]


@pytest.mark.parametrize(("name", "paths", "cfg", "winner", "reason"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_scenario(name: str, paths: list[P], cfg: dict[str, Any], winner: int,
                  reason: DecisionReason) -> None:
    built = [p.build() for p in paths]
    config = replace(CFG, **cfg)
    for perm in itertools.permutations(built):  # the input order never matters
        d = decide(perm, config)
        assert d is not None
        assert d.best == built[winner], d.explain()
        assert d.reason == reason, d.explain()


def test_scenarios_cover_every_step() -> None:
    assert {s[4] for s in SCENARIOS} == set(DecisionReason)
    assert len(SCENARIOS) >= 20


def test_med_is_deterministic_across_neighbour_groups() -> None:
    # The classic non-transitive trio: pairwise comparison would depend on order.
    a = P(E1, kw={"med": 10}).build()  # AS 65001
    b = P(E3, kw={"med": 0}).build()  # AS 65001, beats a on MED
    c = P(E2, kw={"med": 5}).build()  # AS 65002, not comparable by MED with a or b
    results = {(d.best, d.reason) for perm in itertools.permutations([a, b, c])
               if (d := decide(perm, CFG)) is not None}
    assert len(results) == 1
    best, reason = results.pop()
    assert best == c and reason == R.ROUTER_ID  # b and c survive MED; 2.2.2.2 < 3.3.3.3


def test_no_usable_path() -> None:
    assert decide([], CFG) is None
    assert decide([P(E1, igp=None).build()], CFG) is None
    assert decide([P(E1, igp=None).build(), P(E2, igp=None).build()], CFG) is None


def test_multipath_needs_identical_as_path_unless_relaxed() -> None:
    a, b = P(E1).build(), P(E3).build()  # both AS_PATH [65001]
    c = P(E2).build()  # [65002]: same length, different path
    d = decide([a, b, c], replace(CFG, multipath=4))
    assert d is not None and d.best == a and d.reason == R.ROUTER_ID
    assert d.multipath == (a, b)
    relaxed = decide([a, b, c], replace(CFG, multipath=4, as_path_relax=True))
    assert relaxed is not None and set(relaxed.multipath) == {a, b, c}
    assert relaxed.multipath[0] == a
    capped = decide([a, b, c], replace(CFG, multipath=2, as_path_relax=True))
    assert capped is not None and len(capped.multipath) == 2
    off = decide([a, b, c], CFG)
    assert off is not None and off.multipath == (a,)


def test_multipath_stops_at_igp_cost() -> None:
    a = P(I1, seq(65002), igp=5).build()
    b = P(I2, seq(65002), igp=10).build()
    d = decide([a, b], replace(CFG, multipath=4))
    assert d is not None and d.multipath == (a,) and d.reason == R.IGP_COST
    b2 = P(I2, seq(65002), igp=5).build()
    d2 = decide([a, b2], replace(CFG, multipath=4))
    assert d2 is not None and d2.multipath == (a, b2)


def test_explain_shows_every_step() -> None:
    d = decide([P(E1, kw={"med": 50}).build(), P(E3, kw={"med": 10}).build()], CFG)
    assert d is not None
    text = d.explain()
    assert text.splitlines()[0] == "best: 10.9.0.0/16 via 192.0.2.1 from 10.0.0.3 (AS 65001) (med)"
    assert "  local-pref: [0]=100 (default), [1]=100 (default) -> keep 0,1" in text
    assert "  med: [0]=50 (AS 65001), [1]=10 (AS 65001) -> keep 1" in text
    assert [s.reason for s in d.steps] == [R.WEIGHT, R.LOCAL_PREF, R.LOCALLY_ORIGINATED,
                                            R.AS_PATH_LENGTH, R.ORIGIN, R.MED]
