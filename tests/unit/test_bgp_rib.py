"""Adj-RIB-In -> Loc-RIB -> Adj-RIB-Out: routes in, best paths, export rules, UPDATEs out."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from kubewire.bgp.attributes import (
    AsPath,
    LocalPref,
    MpReachNlri,
    MultiExitDisc,
    NextHop,
    OriginAttr,
    UnknownAttribute,
    WireContext,
)
from kubewire.bgp.constants import Afi, AttrFlag, AttrType, Origin, Safi, WellKnownCommunity
from kubewire.bgp.decision import DecisionConfig, DecisionReason
from kubewire.bgp.nlri import IPAddress
from kubewire.bgp.path import Path, PathAttributes, Peer
from kubewire.bgp.rib import AdjRibOut, ExportContext, Rib, export_path
from kubewire.bgp.update import Action, Update, decode_update

AS = 65000
ME = IPv4Address("9.0.0.1")
CFG = DecisionConfig(router_id=ME, local_as=AS)
E1 = Peer(IPv4Address("10.0.0.1"), 65001, IPv4Address("1.1.1.1"), AS)
E2 = Peer(IPv4Address("10.0.0.2"), 65002, IPv4Address("2.2.2.2"), AS)
I1 = Peer(IPv4Address("10.0.1.1"), AS, IPv4Address("4.4.4.4"), AS)
I2 = Peer(IPv4Address("10.0.1.2"), AS, IPv4Address("5.5.5.5"), AS)
C1 = Peer(IPv4Address("10.0.2.1"), AS, IPv4Address("6.6.6.6"), AS, rr_client=True)
C2 = Peer(IPv4Address("10.0.2.2"), AS, IPv4Address("7.7.7.7"), AS, rr_client=True)
N = IPv4Network("10.9.0.0/16")
N6 = IPv6Network("2001:db8:9::/48")


def announce(peer: Peer, *prefixes: IPv4Network, path: tuple[int, ...] | None = None,
             extra: tuple[object, ...] = ()) -> Update:
    asns = path if path is not None else ((peer.asn,) if peer.ebgp else ())
    return Update(attributes=(OriginAttr(Origin.IGP), AsPath.sequence(*asns),
                              NextHop(IPv4Address(int(peer.address) + 100)), *extra),  # type: ignore[arg-type]
                  nlri=prefixes)


def feed(rib: Rib, peer: Peer, u: Update) -> None:
    ctx = WireContext(ebgp=peer.ebgp)
    rib.receive(peer, decode_update(u.body_to_wire(ctx), ctx))


def test_best_path_follows_announcements_and_withdrawals() -> None:
    rib = Rib(CFG)
    ch = rib.receive(E1, decode_update(announce(E1, N, path=(65001, 7)).body_to_wire()))
    assert [c.prefix for c in ch] == [N] and ch[0].old is None
    best = rib.best(N)
    assert best is not None and best.best.peer == E1 and best.reason == DecisionReason.ONLY_PATH
    feed(rib, E2, announce(E2, N))
    best = rib.best(N)
    assert best is not None and best.best.peer == E2
    assert best.reason == DecisionReason.AS_PATH_LENGTH
    feed(rib, E2, Update(withdrawn=(N,)))
    best = rib.best(N)
    assert best is not None and best.best.peer == E1
    ch = rib.peer_down(E1)
    assert ch[0].new is None and rib.best(N) is None


def test_treat_as_withdraw_removes_the_route() -> None:
    rib = Rib(CFG)
    feed(rib, E1, announce(E1, N))
    bad = announce(E1, N, extra=(MultiExitDisc(1),)).body_to_wire()
    bad = bad.replace(bytes([0x80, 4, 4, 0, 0, 0, 1]), bytes([0x80, 4, 3, 0, 0, 1, 0]))
    res = decode_update(bad)
    assert res.action == Action.TREAT_AS_WITHDRAW
    rib.receive(E1, res)
    assert rib.best(N) is None


def test_loops_are_rejected() -> None:
    rib = Rib(CFG, cluster_id=IPv4Address("9.9.9.9"))
    feed(rib, E1, announce(E1, N, path=(65001, AS)))
    assert rib.best(N) is None  # our AS in the path
    p = PathAttributes(as_path=AsPath.sequence(65001), next_hop=IPv4Address("10.0.1.101"))
    feed(rib, I1, p.with_(originator_id=ME).to_update((N,)))
    assert rib.best(N) is None  # our own route reflected back
    feed(rib, I2, p.with_(cluster_list=(IPv4Address("9.9.9.9"),)).to_update((N,)))
    assert rib.best(N) is None  # our cluster already on it
    feed(rib, I2, p.to_update((N,)))
    assert rib.best(N) is not None


def test_import_policy_and_local_origination() -> None:
    def pol(path: Path) -> Path | None:
        if path.peer == E2:
            return None
        return Path(path.prefix, path.attrs.with_(local_pref=300), path.peer, path.weight,
                    path.igp_cost, path.received)

    rib = Rib(CFG, import_policy=pol)
    feed(rib, E2, announce(E2, N))
    assert rib.best(N) is None
    feed(rib, E1, announce(E1, N))
    d = rib.best(N)
    assert d is not None and d.best.attrs.local_pref == 300
    rib.originate(N, PathAttributes(next_hop=ME))
    d = rib.best(N)
    assert d is not None and d.best.local and d.reason == DecisionReason.WEIGHT
    rib.withdraw_local(N)
    d = rib.best(N)
    assert d is not None and d.best.peer == E1
    assert rib.withdraw_local(N) == []


def test_unreachable_next_hop_after_igp_change() -> None:
    reachable: set[IPAddress] = {IPv4Address("10.0.1.101"), IPv4Address("10.0.1.102")}
    cost = {IPv4Address("10.0.1.101"): 10, IPv4Address("10.0.1.102"): 20}
    rib = Rib(CFG, igp_cost=lambda nh: cost.get(nh) if nh in reachable else None)  # type: ignore[arg-type]
    p = PathAttributes(as_path=AsPath.sequence(65009))
    feed(rib, I1, p.with_(next_hop=IPv4Address("10.0.1.101")).to_update((N,)))
    feed(rib, I2, p.with_(next_hop=IPv4Address("10.0.1.102")).to_update((N,)))
    d = rib.best(N)
    assert d is not None and d.best.peer == I1 and d.reason == DecisionReason.IGP_COST
    reachable.discard(IPv4Address("10.0.1.101"))
    ch = rib.reresolve()
    d = rib.best(N)
    assert [c.prefix for c in ch] == [N]
    assert d is not None and d.best.peer == I2 and d.reason == DecisionReason.NEXT_HOP_RESOLVABLE


def _path(peer: Peer | None, **kw: object) -> Path:
    attrs = PathAttributes(as_path=AsPath.sequence(65001), next_hop=IPv4Address("10.0.0.101"),
                           med=5, local_pref=150, **kw)  # type: ignore[arg-type]
    return Path(N, attrs, peer)


OUT = ExportContext(local_address=IPv4Address("10.0.0.254"))
RR = ExportContext(local_address=IPv4Address("10.0.1.254"), cluster_id=IPv4Address("9.9.9.9"))


def test_export_to_ebgp() -> None:
    got = export_path(_path(E1, originator_id=IPv4Address("1.2.3.4"),
                            cluster_list=(IPv4Address("9.9.9.9"),)), E2, CFG, OUT)
    assert got is not None
    assert got.as_path == AsPath.sequence(AS, 65001)
    assert got.next_hop == IPv4Address("10.0.0.254")
    assert got.med is None and got.local_pref is None
    assert got.originator_id is None and got.cluster_list == ()
    assert export_path(_path(E1), E1, CFG, OUT) is None  # not back to its source
    local = export_path(_path(None), E2, CFG, OUT)
    assert local is not None and local.med == 5  # our own MED does go out


def test_export_to_ebgp_keeping_the_next_hop() -> None:
    keep = ExportContext(local_address=IPv4Address("10.0.0.254"), keep_next_hop=True)
    learned = export_path(_path(I1), E2, CFG, keep)
    assert learned is not None and learned.next_hop == IPv4Address("10.0.0.101")
    assert learned.as_path == AsPath.sequence(AS, 65001)  # still prepended: it is eBGP
    own = export_path(_path(None), E2, CFG, keep)  # our own routes: we are the next hop
    assert own is not None and own.next_hop == IPv4Address("10.0.0.254")


def test_well_known_communities() -> None:
    no_export = _path(E1, communities=(WellKnownCommunity.NO_EXPORT,))
    assert export_path(no_export, E2, CFG, OUT) is None
    assert export_path(no_export, I1, CFG, OUT) is not None
    no_adv = _path(E1, communities=(WellKnownCommunity.NO_ADVERTISE,))
    assert export_path(no_adv, I1, CFG, OUT) is None
    sub = _path(E1, communities=(WellKnownCommunity.NO_EXPORT_SUBCONFED,))
    assert export_path(sub, E2, CFG, OUT) is None


def test_export_to_ibgp_and_next_hop_self() -> None:
    got = export_path(_path(E1), I1, CFG, OUT)
    assert got is not None and got.next_hop == IPv4Address("10.0.0.101")
    assert got.local_pref == 150 and got.as_path == AsPath.sequence(65001)
    nhs = export_path(_path(E1), I1, CFG, ExportContext(IPv4Address("10.0.1.254"), True))
    assert nhs is not None and nhs.next_hop == IPv4Address("10.0.1.254")
    default_lp = export_path(Path(N, PathAttributes(next_hop=IPv4Address("10.0.0.101")), E1),
                             I1, CFG, OUT)
    assert default_lp is not None and default_lp.local_pref == 100
    assert export_path(_path(I2), I1, CFG, OUT) is None  # iBGP to iBGP: no reflection


def test_route_reflection_rules() -> None:
    # RFC 4456 6: client routes go to everyone, non-client routes to clients only
    from_client = export_path(_path(C1), I1, CFG, RR)
    assert from_client is not None
    assert from_client.originator_id == C1.router_id
    assert from_client.cluster_list == (IPv4Address("9.9.9.9"),)
    assert from_client.next_hop == IPv4Address("10.0.0.101")  # reflection keeps the next hop
    assert export_path(_path(C1), C2, CFG, RR) is not None
    assert export_path(_path(I2), C1, CFG, RR) is not None
    assert export_path(_path(I2), I1, CFG, RR) is None
    # an existing ORIGINATOR_ID is kept, and the route never goes back to its originator
    again = export_path(_path(C1, originator_id=C2.router_id,
                              cluster_list=(IPv4Address("8.8.8.8"),)), I1, CFG, RR)
    assert again is not None and again.originator_id == C2.router_id
    assert again.cluster_list == (IPv4Address("9.9.9.9"), IPv4Address("8.8.8.8"))
    assert export_path(_path(C1, originator_id=C2.router_id), C2, CFG, RR) is None
    # next-hop-self still applies to eBGP routes on a reflector
    ebgp = export_path(_path(E1), C1, CFG, ExportContext(IPv4Address("10.0.1.254"), True,
                                                          IPv4Address("9.9.9.9")))
    assert ebgp is not None and ebgp.next_hop == IPv4Address("10.0.1.254")
    assert ebgp.originator_id is None and ebgp.cluster_list == ()


def test_unknown_attributes_on_export() -> None:
    t = UnknownAttribute(99, AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE, b"x")
    n = UnknownAttribute(98, AttrFlag.OPTIONAL, b"y")
    got = export_path(_path(E1, unknown=(t, n)), E2, CFG, OUT)
    assert got is not None
    assert got.unknown == (UnknownAttribute(99, 0xE0, b"x"),)


def test_adj_rib_out_sync_sends_only_differences() -> None:
    out = AdjRibOut()
    a = PathAttributes(as_path=AsPath.sequence(AS), next_hop=IPv4Address("10.0.0.254"))
    n2 = IPv4Network("10.10.0.0/16")
    v6 = a.with_(next_hop=IPv6Address("2001:db8::fe"), next_hop_link_local=IPv6Address("fe80::1"))
    ups = out.sync({N: a, n2: a, N6: v6})
    assert len(ups) == 2
    assert ups[0].nlri == (N, n2) and ups[0].get(AttrType.NEXT_HOP) == NextHop(
        IPv4Address("10.0.0.254"))
    mp = ups[1].get(AttrType.MP_REACH_NLRI)
    assert isinstance(mp, MpReachNlri) and mp.nlri == (N6,)
    assert mp.next_hops == (IPv6Address("2001:db8::fe"), IPv6Address("fe80::1"))
    for u in ups:  # what we send is clean by RFC 7606
        assert decode_update(u.body_to_wire()).action == Action.NONE
    assert out.sync({N: a, n2: a, N6: v6}) == []
    ups = out.sync({N: a.with_(med=7)})
    assert ups[0].withdrawn == (n2,)
    assert ups[1].get(AttrType.MP_UNREACH_NLRI) is not None
    assert ups[2].get(AttrType.MULTI_EXIT_DISC) == MultiExitDisc(7) and ups[2].nlri == (N,)
    assert [u.reachable() for u in out.sync({})] == [()]


def test_two_speakers_end_to_end() -> None:
    """E1 -> us (AS 65000) -> E2, through the codec both ways."""
    us = Rib(CFG)
    feed(us, E1, announce(E1, N, extra=(LocalPref(999),)))  # LOCAL_PREF from eBGP: dropped
    d = us.best(N)
    assert d is not None and d.best.attrs.local_pref is None
    out = AdjRibOut()
    ups = out.sync(us.export(E2, OUT))
    wire = [u.to_wire(WireContext(ebgp=True)) for u in ups]
    them_cfg = DecisionConfig(router_id=IPv4Address("2.2.2.2"), local_as=65002)
    them = Rib(them_cfg)
    me_there = Peer(IPv4Address("10.0.0.254"), AS, ME, 65002)
    for w in wire:
        res = decode_update(w[19:], WireContext(ebgp=True, peer_as=AS))
        assert res.action == Action.NONE
        them.receive(me_there, res)
    got = them.best(N)
    assert got is not None
    assert got.best.attrs.as_path == AsPath.sequence(AS, 65001)
    assert got.best.attrs.next_hop == IPv4Address("10.0.0.254")
    assert us.export(E1, OUT) == {}  # not echoed back


def test_ipv6_routes_through_the_rib() -> None:
    rib = Rib(CFG)
    mp = MpReachNlri(Afi.IPV6, Safi.UNICAST, (IPv6Address("2001:db8::1"), IPv6Address("fe80::1")),
                     (N6,))
    u = Update(attributes=(mp, OriginAttr(Origin.IGP), AsPath.sequence(65001)))
    feed(rib, E1, u)
    d = rib.best(N6)
    assert d is not None
    assert d.best.attrs.next_hop == IPv6Address("2001:db8::1")
    assert d.best.attrs.next_hop_link_local == IPv6Address("fe80::1")
