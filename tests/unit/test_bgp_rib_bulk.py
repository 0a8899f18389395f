"""The compact RIB (prefix keys, shared per-UPDATE entries, bulk placement of prefixes with a
single candidate) against a from-scratch model: the same best paths, reasons and change
lists whatever the order of announcements, withdrawals, session losses and local routes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubewire.bgp.attributes import (
    AsPath,
    LocalPref,
    MpReachNlri,
    MultiExitDisc,
    NextHop,
    OriginAttr,
    WireContext,
)
from kubewire.bgp.constants import Afi, Origin, Safi
from kubewire.bgp.decision import Decision, DecisionConfig, decide
from kubewire.bgp.errors import BgpError
from kubewire.bgp.nlri import (
    decode_prefix_keys,
    decode_prefixes,
    encode_prefixes,
    key_prefix,
    prefix_key,
)
from kubewire.bgp.path import Path, PathAttributes, Peer
from kubewire.bgp.policy import Match, PrefixList, RoutePolicy, Term, Verdict
from kubewire.bgp.rib import Rib, RibChange
from kubewire.bgp.update import Update, UpdateResult, decode_update

AS = 65000
CFG = DecisionConfig(router_id=IPv4Address("9.0.0.1"), local_as=AS, multipath=2)
PEERS = (
    Peer(IPv4Address("10.0.0.1"), 65001, IPv4Address("1.1.1.1"), AS),
    Peer(IPv4Address("10.0.0.2"), 65002, IPv4Address("2.2.2.2"), AS),
    Peer(IPv4Address("10.0.1.1"), AS, IPv4Address("4.4.4.4"), AS),
)
UNIVERSE = [IPv4Network(f"10.{i}.0.0/16") for i in range(6)] + [IPv4Network("10.0.0.0/8")]
UNREACHABLE = IPv4Address("192.0.2.99")


# --- prefix keys --------------------------------------------------------------------------


def v4_prefixes() -> st.SearchStrategy[IPv4Network]:
    return st.integers(0, 32).flatmap(
        lambda n: st.integers(0, (1 << n) - 1).map(
            lambda v: IPv4Network(((v << (32 - n)) if n else 0, n))))


def v6_prefixes() -> st.SearchStrategy[IPv6Network]:
    return st.integers(0, 128).flatmap(
        lambda n: st.integers(0, (1 << n) - 1).map(
            lambda v: IPv6Network(((v << (128 - n)) if n else 0, n))))


@given(st.lists(v4_prefixes(), max_size=40), st.booleans())
def test_ipv4_keys_match_the_codec(prefixes: list[IPv4Network], uniform: bool) -> None:
    if uniform and prefixes:  # a run of one length: the struct fast path
        n = prefixes[0].prefixlen
        prefixes = [IPv4Network((int(p.network_address) >> (32 - n) << (32 - n) if n else 0, n))
                    for p in prefixes]
    data = encode_prefixes(prefixes)
    keys = decode_prefix_keys(data)
    assert keys == [prefix_key(p) for p in decode_prefixes(data)]
    assert [key_prefix(k) for k in keys] == prefixes
    assert len(set(keys)) == len(set(prefixes))  # distinct prefixes, distinct keys


@given(st.lists(v6_prefixes(), max_size=20))
def test_ipv6_keys_match_the_codec_and_never_meet_ipv4_keys(prefixes: list[IPv6Network]) -> None:
    data = encode_prefixes(prefixes, Afi.IPV6)
    keys = decode_prefix_keys(data, Afi.IPV6)
    assert keys == [prefix_key(p) for p in prefixes]
    assert [key_prefix(k) for k in keys] == prefixes
    v4 = {prefix_key(IPv4Network((int(p.network_address) >> 96, min(p.prefixlen, 32)),
                                 strict=False)) for p in prefixes}
    assert not v4 & set(keys)


@given(st.binary(max_size=40), st.sampled_from([Afi.IPV4, Afi.IPV6]))
def test_keys_reject_exactly_what_the_codec_rejects(data: bytes, afi: Afi) -> None:
    try:
        want: list[int] | None = [prefix_key(p) for p in decode_prefixes(data, afi)]
    except BgpError:
        want = None
    try:
        got: list[int] | None = decode_prefix_keys(data, afi)
    except BgpError:
        got = None
    assert got == want


def test_trailing_bits_are_ignored_in_a_uniform_run() -> None:
    # three /23s (3 octets each) with the bit past the prefix set
    data = bytes([23, 10, 0, 1, 23, 10, 2, 1, 23, 10, 4, 255])
    assert [key_prefix(k) for k in decode_prefix_keys(data)] == [
        IPv4Network("10.0.0.0/23"), IPv4Network("10.2.0.0/23"), IPv4Network("10.4.254.0/23")]


# --- the RIB against a model --------------------------------------------------------------

attr_sets = st.tuples(
    st.lists(st.sampled_from([65001, 65002, 65003, 7, AS]), max_size=3),  # AS in it: a loop
    st.sampled_from([None, 0, 10]),  # MED
    st.sampled_from([None, 100, 200]),  # LOCAL_PREF (iBGP only)
    st.booleans(),  # next hop reachable
)
ops = st.one_of(
    st.tuples(st.just("announce"), st.integers(0, 2), st.sets(st.sampled_from(UNIVERSE),
                                                               min_size=1), attr_sets),
    st.tuples(st.just("withdraw"), st.integers(0, 2), st.sets(st.sampled_from(UNIVERSE),
                                                              min_size=1)),
    st.tuples(st.just("down"), st.integers(0, 2)),
    st.tuples(st.just("originate"), st.sampled_from(UNIVERSE)),
    st.tuples(st.just("unoriginate"), st.sampled_from(UNIVERSE)),
    st.tuples(st.just("igp")),  # the "unreachable" next hop flips, then reresolve()
)


def _update(peer: Peer, prefixes: set[IPv4Network], spec: tuple[Any, ...]) -> Update:
    asns, med, lp, reachable = spec
    path: tuple[int, ...] = tuple(asns)
    if peer.ebgp:
        path = (peer.asn, *path)
    attrs: list[Any] = [OriginAttr(Origin.IGP), AsPath.sequence(*path),
                           NextHop(IPv4Address(int(peer.address) + 100) if reachable
                                   else UNREACHABLE)]
    if med is not None:
        attrs.append(MultiExitDisc(med))
    if lp is not None and not peer.ebgp:
        attrs.append(LocalPref(lp))
    return Update(attributes=tuple(attrs), nlri=tuple(sorted(prefixes)))


def _summary(d: Decision | None) -> object:
    if d is None:
        return None
    return (d.best.peer, d.best.attrs, d.reason, {(p.peer, p.attrs) for p in d.multipath},
            len(d.candidates))


def _check_model(script: list[tuple[Any, ...]], policy: RoutePolicy | None) -> None:
    igp = {"up": False}  # is UNREACHABLE reachable now?

    def _cost(nh: object) -> int | None:
        return 5 if nh == UNREACHABLE and igp["up"] else None if nh == UNREACHABLE else 1

    rib = Rib(CFG, igp_cost=_cost, import_policy=policy)
    model: dict[Peer, dict[IPv4Network, PathAttributes]] = {p: {} for p in PEERS}
    local: dict[IPv4Network, PathAttributes] = {}
    mirror: dict[IPv4Network, object] = {}  # the Loc-RIB as the change lists tell it
    for op in script:
        kind = op[0]
        changes: list[RibChange]
        if kind == "announce":
            peer = PEERS[op[1]]
            u = _update(peer, op[2], op[3])
            ctx = WireContext(ebgp=peer.ebgp, peer_as=peer.asn if peer.ebgp else None)
            res = decode_update(u.body_to_wire(ctx), ctx)
            changes = rib.receive(peer, res)
            for p in op[2]:
                model[peer][p] = PathAttributes.from_update(res.update)
        elif kind == "withdraw":
            peer = PEERS[op[1]]
            u = Update(withdrawn=tuple(sorted(op[2])))
            changes = rib.receive(peer, decode_update(u.body_to_wire()))
            for p in op[2]:
                model[peer].pop(p, None)
        elif kind == "down":
            peer = PEERS[op[1]]
            changes = rib.peer_down(peer)
            model[peer].clear()
        elif kind == "originate":
            attrs = PathAttributes(next_hop=IPv4Address("9.0.0.1"))
            changes = rib.originate(op[1], attrs)
            local[op[1]] = attrs
        elif kind == "igp":
            igp["up"] = not igp["up"]
            changes = rib.reresolve()
        else:
            changes = rib.withdraw_local(op[1])
            local.pop(op[1], None)
        for c in changes:
            assert _summary(c.old) == mirror.get(c.prefix)
            if c.new is None:
                del mirror[c.prefix]
            else:
                mirror[c.prefix] = _summary(c.new)
        for p in UNIVERSE:
            cands: list[Path] = []
            if p in local:
                cands.append(Path(p, local[p], None, 32768, 0))
            for peer in PEERS:
                a = model[peer].get(p)
                if a is None or AS in a.as_path.all_asns():
                    continue
                got: Path | None = Path(p, a, peer, 0, _cost(a.next_hop))
                if policy is not None and got is not None:
                    got = policy(got)
                if got is not None:
                    cands.append(got)
            want = _summary(decide(cands, CFG))
            assert _summary(rib.loc.get(p)) == want, (p, script)
            assert mirror.get(p) == want
        assert set(rib.loc) == set(mirror)
        assert len(rib.loc) == len(mirror)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=14))
def test_bulk_rib_agrees_with_the_decision_process_from_scratch(
        script: list[tuple[Any, ...]]) -> None:
    _check_model(script, None)


@settings(max_examples=100, deadline=None)
@given(st.lists(ops, max_size=10))
def test_rib_with_an_import_policy_agrees_too(script: list[tuple[Any, ...]]) -> None:
    no_8 = RoutePolicy((Term("no /8", Match(prefix_list=PrefixList.parse("10.0.0.0/8")),
                             verdict=Verdict.REJECT),), default=Verdict.ACCEPT)
    _check_model(script, no_8)


# --- views and lazy results ---------------------------------------------------------------


def test_loc_rib_and_adj_rib_in_views_behave_as_mappings() -> None:
    rib = Rib(CFG)
    peer = PEERS[0]
    u = _update(peer, set(UNIVERSE[:3]), ((), None, None, True))
    rib.receive(peer, decode_update(u.body_to_wire()))
    assert len(rib.loc) == 3 and set(rib.loc) == set(UNIVERSE[:3])
    assert UNIVERSE[0] in rib.loc and UNIVERSE[5] not in rib.loc and "x" not in rib.loc
    assert rib.loc.get(UNIVERSE[5]) is None
    d = rib.loc[UNIVERSE[1]]
    assert d.best.prefix == UNIVERSE[1] and d.best.peer == peer and d == rib.best(UNIVERSE[1])
    with pytest.raises(KeyError):
        rib.loc[UNIVERSE[5]]
    table = rib.adj_in[peer]
    assert len(table) == 3 and table[UNIVERSE[2]].prefix == UNIVERSE[2]
    assert rib.received(peer) == rib.accepted(peer) == 3
    assert [str(p) for p in rib.prefixes()] == [str(p) for p in UNIVERSE[:3]]


def test_update_results_build_prefixes_only_when_asked_and_compare_as_before() -> None:
    u = _update(PEERS[0], set(UNIVERSE[:2]), ((), 5, None, True))
    res = decode_update(u.body_to_wire())
    assert res._update is None  # the RIB never needed the IPv4Network tuples
    assert res.announce_keys() == [prefix_key(p) for p in u.nlri]
    assert res.update == u and res.announce() == u.nlri
    assert res == UpdateResult(u)
    with pytest.raises(AttributeError):
        res.action = res.action
    # an UPDATE with the same attribute octets shares the parsed attributes
    again = decode_update(_update(PEERS[0], set(UNIVERSE[3:5]), ((), 5, None, True)).body_to_wire())
    assert again.attributes is res.attributes


def test_ipv6_reachability_gets_its_own_attributes() -> None:
    rib = Rib(CFG)
    peer = PEERS[0]
    n6 = IPv6Network("2001:db8:1::/48")
    mp = MpReachNlri(Afi.IPV6, Safi.UNICAST, (IPv6Address("2001:db8::1"),), (n6,))
    u = Update(attributes=(mp, OriginAttr(Origin.IGP), AsPath.sequence(peer.asn),
                           NextHop(IPv4Address("10.0.0.101"))), nlri=(UNIVERSE[0],))
    rib.receive(peer, decode_update(u.body_to_wire()))
    assert rib.loc[n6].best.attrs.next_hop == IPv6Address("2001:db8::1")
    assert rib.loc[UNIVERSE[0]].best.attrs.next_hop == IPv4Address("10.0.0.101")
    assert [c.prefix for c in rib.peer_down(peer)] == [UNIVERSE[0], n6]
