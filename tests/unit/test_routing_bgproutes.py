"""The pure half of routing.bgproutes: Loc-RIB changes from a real `Rib` (multipath on)
turned into kernel routes. The kernel half is in tests/root/test_bgp_routes.py."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from kubewire.bgp.attributes import AsPath, MpReachNlri, NextHop, OriginAttr, WireContext
from kubewire.bgp.constants import Afi, Origin, Safi
from kubewire.bgp.decision import DecisionConfig
from kubewire.bgp.path import PathAttributes, Peer
from kubewire.bgp.rib import Rib, RibChange
from kubewire.bgp.update import Update, decode_update
from kubewire.routing.bgproutes import (
    BgpRoute,
    route_of,
    routes_from_changes,
    routes_from_loc_rib,
)

AS = 64512
ME = IPv4Address("172.30.0.1")
CFG = DecisionConfig(router_id=ME, local_as=AS, multipath=4)
H1, H2, H3 = IPv4Address("172.30.0.2"), IPv4Address("172.30.0.3"), IPv4Address("172.30.0.4")
N1, N2, N3 = (Peer(h, AS, h, AS) for h in (H1, H2, H3))
RR = Peer(IPv4Address("172.30.0.254"), AS, IPv4Address("172.30.0.254"), AS)
A = IPv4Network("10.244.1.0/26")
B = IPv4Network("10.244.2.0/26")


def announce(
    rib: Rib, peer: Peer, *prefixes: IPv4Network, next_hop: IPv4Address | None = None
) -> list[RibChange]:
    update = Update(
        attributes=(
            OriginAttr(Origin.IGP),
            AsPath.sequence(),
            NextHop(next_hop or IPv4Address(peer.address)),
        ),
        nlri=prefixes,
    )
    ctx = WireContext(ebgp=peer.ebgp)
    return rib.receive(peer, decode_update(update.body_to_wire(ctx), ctx))


def withdraw(rib: Rib, peer: Peer, *prefixes: IPv4Network) -> list[RibChange]:
    ctx = WireContext(ebgp=peer.ebgp)
    return rib.receive(peer, decode_update(Update(withdrawn=prefixes).body_to_wire(ctx), ctx))


def test_single_path_then_ecmp_then_back() -> None:
    rib = Rib(CFG)
    assert routes_from_changes(announce(rib, N2, A)) == {A: BgpRoute(A, (H2,))}
    # An equal path from another node: one route, both next hops, sorted.
    got = routes_from_changes(announce(rib, N1, A))
    assert got == {A: BgpRoute(A, (H1, H2))}
    route = got[A]
    assert route is not None and route.ecmp and route.nexthops[0] == H1
    assert routes_from_changes(withdraw(rib, N1, A)) == {A: BgpRoute(A, (H2,))}
    assert routes_from_changes(withdraw(rib, N2, A)) == {A: None}


def test_multipath_off_gives_the_best_path_only() -> None:
    rib = Rib(DecisionConfig(router_id=ME, local_as=AS))
    assert routes_from_changes(announce(rib, N2, A)) == {A: BgpRoute(A, (H2,))}
    # Equal paths: the lower neighbour address wins the last step; no ECMP without multipath.
    assert routes_from_changes(announce(rib, N1, A)) == {A: BgpRoute(A, (H1,))}


def test_locally_originated_routes_are_never_installed() -> None:
    rib = Rib(CFG)
    assert routes_from_changes(rib.originate(A, PathAttributes(next_hop=ME))) == {A: None}
    # A peer's path for the same prefix loses to ours (weight 32768): still nothing to install.
    assert routes_from_changes(announce(rib, N1, A)) == {A: None}
    # Stop originating it: the peer's path becomes best and is installed.
    assert routes_from_changes(rib.withdraw_local(A)) == {A: BgpRoute(A, (H1,))}


def test_own_next_hops_are_skipped() -> None:
    rib = Rib(CFG)
    announce(rib, N1, A)
    # A route reflector hands us a path whose next hop is this node itself.
    changes = announce(rib, RR, A, next_hop=ME)
    assert routes_from_changes(changes, own={ME}) == {A: BgpRoute(A, (H1,))}
    assert routes_from_changes(changes) == {A: BgpRoute(A, (H1, ME))}
    rib2 = Rib(CFG)
    assert routes_from_changes(announce(rib2, RR, B, next_hop=ME), own={ME}) == {B: None}


def test_many_prefixes_and_the_last_state_wins() -> None:
    rib = Rib(CFG)
    changes = announce(rib, N1, A, B) + announce(rib, N3, B) + withdraw(rib, N1, A)
    assert routes_from_changes(changes) == {
        A: None,
        B: BgpRoute(B, (H1, H3)),
    }


def test_ipv6_prefixes_are_left_out() -> None:
    rib = Rib(CFG)
    v6 = IPv6Network("2001:db8:1::/48")
    update = Update(
        attributes=(
            OriginAttr(Origin.IGP),
            AsPath.sequence(),
            MpReachNlri(Afi.IPV6, Safi.UNICAST, (IPv6Address("2001:db8::2"),), (v6,)),
        )
    )
    ctx = WireContext(ebgp=False)
    changes = rib.receive(N1, decode_update(update.body_to_wire(ctx), ctx))
    assert [c.prefix for c in changes] == [v6]
    assert routes_from_changes(changes) == {}


def test_route_of_a_path_without_next_hop_is_none() -> None:
    rib = Rib(CFG)
    announce(rib, N1, A)
    decision = rib.best(A)
    assert decision is not None
    assert route_of(A, decision) == BgpRoute(A, (H1,))
    assert route_of(A, decision, own={H1}) is None
    assert route_of(A, None) is None


def test_bgp_route_normalises_and_renders() -> None:
    r = BgpRoute(A, (H2, H1, H2))
    assert r.nexthops == (H1, H2) and r == BgpRoute(A, (H1, H2))
    assert r.to_command() == (
        "ip route replace 10.244.1.0/26 proto bgp metric 20 "
        "nexthop via 172.30.0.2 dev eth0 weight 1 nexthop via 172.30.0.3 dev eth0 weight 1"
    )
    assert BgpRoute(A, (H1,)).to_command("ens3", 30) == (
        "ip route replace 10.244.1.0/26 via 172.30.0.2 dev ens3 proto bgp metric 30"
    )
    with pytest.raises(ValueError, match="needs at least one next hop"):
        BgpRoute(A, ())


def test_the_whole_loc_rib_for_a_resync() -> None:
    rib = Rib(CFG)
    announce(rib, N1, A, B)
    announce(rib, N2, B)
    rib.originate(IPv4Network("10.244.9.0/26"), PathAttributes(next_hop=ME))
    announce(rib, RR, IPv4Network("10.244.8.0/26"), next_hop=ME)
    assert routes_from_loc_rib(rib.loc, own={ME}) == {
        A: BgpRoute(A, (H1,)),
        B: BgpRoute(B, (H1, H2)),
    }
