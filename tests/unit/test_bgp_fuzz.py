"""Property tests: random UPDATEs round-trip; random and mutated bytes never raise anything
but the package's own errors and always get exactly one RFC 7606 action."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubewire.bgp.attributes import (
    Aggregator,
    AsPath,
    AsSegment,
    AtomicAggregate,
    Attribute,
    ClusterList,
    Communities,
    ExtendedCommunities,
    LargeCommunities,
    LargeCommunity,
    LocalPref,
    MpReachNlri,
    MpUnreachNlri,
    MultiExitDisc,
    NextHop,
    OriginatorId,
    OriginAttr,
    UnknownAttribute,
)
from kubewire.bgp.constants import Afi, Origin, Safi, SegmentType
from kubewire.bgp.errors import BgpError
from kubewire.bgp.messages import Framer, Open, decode_open
from kubewire.bgp.update import Action, Update, decode_update

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
u32 = st.integers(0, 2**32 - 1)
asn = st.integers(1, 2**32 - 1)
host = st.integers(0x01000000, 0xDFFFFFFF).map(IPv4Address)
v4net = st.builds(lambda a, n: IPv4Network((a, n), strict=False), u32, st.integers(0, 32))
v6net = st.builds(lambda a, n: IPv6Network((a, n), strict=False),
                  st.integers(0, 2**128 - 1), st.integers(0, 128))
segment = st.builds(AsSegment, st.sampled_from(list(SegmentType)),
                    st.lists(asn, min_size=1, max_size=8).map(tuple))

OPTIONAL: list[st.SearchStrategy[Attribute]] = [
    st.builds(MultiExitDisc, u32),
    st.builds(LocalPref, u32),
    st.just(AtomicAggregate()),
    st.builds(Aggregator, asn, host),
    st.builds(Communities, st.lists(u32, min_size=1, max_size=10).map(tuple)),
    st.builds(ExtendedCommunities, st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=4)
              .map(tuple)),
    st.builds(LargeCommunities, st.lists(st.builds(LargeCommunity, u32, u32, u32), min_size=1,
                                         max_size=4).map(tuple)),
    st.builds(OriginatorId, host),
    st.builds(ClusterList, st.lists(host, min_size=1, max_size=4).map(tuple)),
    st.builds(lambda hops, n: MpReachNlri(Afi.IPV6, Safi.UNICAST, hops, tuple(n)),
              st.sampled_from([(IPv6Address("2001:db8::1"),),
                               (IPv6Address("2001:db8::1"), IPv6Address("fe80::1"))]),
              st.lists(v6net, max_size=5)),
    st.builds(lambda n: MpUnreachNlri(Afi.IPV6, Safi.UNICAST, tuple(n)),
              st.lists(v6net, max_size=5)),
    st.builds(UnknownAttribute, st.integers(100, 255), st.sampled_from([0x80, 0xC0, 0xE0]),
              st.binary(max_size=300)),
]


@st.composite
def updates(draw: st.DrawFn) -> Update:
    attrs: list[Attribute] = [
        OriginAttr(draw(st.sampled_from(list(Origin)))),
        AsPath(tuple(draw(st.lists(segment, max_size=4)))),
        NextHop(draw(host)),
    ]
    for strat in OPTIONAL:
        if draw(st.booleans()):
            attrs.append(draw(strat))
    attrs = draw(st.permutations(attrs))
    codes = set()
    unique = []
    for a in attrs:  # one attribute per type code
        if a.type_code not in codes:
            codes.add(a.type_code)
            unique.append(a)
    return Update(tuple(draw(st.lists(v4net, max_size=5))), tuple(unique),
                  tuple(draw(st.lists(v4net, max_size=5))))


@SETTINGS
@given(updates())
def test_random_updates_round_trip(u: Update) -> None:
    wire = u.to_wire(max_len=65535)
    assert Update.from_wire(wire) == u if len(wire) <= 4096 else True
    frames = Framer(max_len=65535).feed(wire)
    assert len(frames) == 1
    res = decode_update(frames[0].body)
    assert res.action == Action.NONE and res.update == u


def _only_own_errors(data: bytes) -> None:
    r = decode_update(data)
    assert r.action in Action
    assert (r.action == Action.NONE) == (not r.problems)
    assert max((p.action for p in r.problems), default=Action.NONE) == r.action
    if r.action == Action.SESSION_RESET:
        assert r.notification() is not None
    r.announce(), r.withdraw()


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_classify(data: bytes) -> None:
    _only_own_errors(data)


@SETTINGS
@given(updates(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255),
                                     st.sampled_from(["flip", "cut", "insert", "delete"])),
                           min_size=1, max_size=4))
def test_mutated_updates_classify(u: Update, edits: list[tuple[int, int, str]]) -> None:
    b = bytearray(u.body_to_wire())
    for pos, val, kind in edits:
        p = pos % (len(b) + 1)
        if kind == "flip" and p < len(b):
            b[p] ^= val or 1
        elif kind == "cut":
            del b[p:]
        elif kind == "insert":
            b.insert(p, val)
        elif p < len(b):
            del b[p]
    _only_own_errors(bytes(b))


@SETTINGS
@given(st.binary(max_size=120), st.integers(1, 7))
def test_random_streams_raise_only_bgp_errors(data: bytes, chunk: int) -> None:
    stream = b"\xff" * 16 + data  # past the marker, so the fuzz reaches lengths and bodies
    f = Framer()
    try:
        for i in range(0, len(stream), chunk):
            for fr in f.feed(stream[i : i + chunk]):
                with contextlib.suppress(BgpError):
                    fr.decode()
    except BgpError:
        pass


@SETTINGS
@given(st.binary(max_size=60), st.integers(0, 60), st.integers(0, 255))
def test_mutated_opens_raise_only_bgp_errors(tail: bytes, pos: int, val: int) -> None:
    body = bytearray(Open.build(65001, 90, IPv4Address("10.0.0.1")).to_wire()[19:] + tail)
    if pos < len(body):
        body[pos] = val
    try:
        o = decode_open(bytes(body))
    except BgpError:
        return
    assert isinstance(o, Open)


# --- the FSM under random event sequences -------------------------------------------------

from kubewire.bgp import fsm as F  # noqa: E402
from kubewire.bgp.messages import (  # noqa: E402
    Keepalive,
    Multiprotocol,
    Notification,
    RouteRefresh,
    RouteRefreshCapability,
    UnknownCapability,
)

_CFG = F.FsmConfig(65001, IPv4Address("10.0.0.1"), 65002, hold_time=9)
_PEER_OPEN = Open.build(65002, 30, IPv4Address("10.0.0.2"), (RouteRefreshCapability(),))
_U = Update(attributes=(OriginAttr(Origin.IGP), AsPath.sequence(65002),
                        NextHop(IPv4Address("10.0.0.2"))), nlri=(IPv4Network("10.2.0.0/16"),))
_EVENTS: list[F.Event] = [
    F.ManualStart(), F.ManualStart(passive=True), F.AutomaticStart(), F.ManualStop("x"),
    F.ConnectRetryTimerExpires(), F.HoldTimerExpires(), F.KeepaliveTimerExpires(),
    F.TcpCrAcked(), F.TcpConnectionConfirmed(), F.TcpConnectionFails(), F.OpenCollisionDump(),
    F.DataReceived(_PEER_OPEN.to_wire()), F.DataReceived(Keepalive().to_wire()),
    F.DataReceived(_U.to_wire()), F.DataReceived(Notification(6, 2).to_wire()),
    F.DataReceived(RouteRefresh().to_wire()), F.DataReceived(b"\xff" * 16),
    F.DataReceived(b"\x00"), F.DataReceived(b"\xff" * 16 + b"\x00\x13\x04"),
]


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(_EVENTS), st.binary(max_size=40).map(F.DataReceived)),
                max_size=30))
def test_fsm_invariants_under_random_events(events: list[F.Event]) -> None:
    fsm = F.Fsm(_CFG)
    for ev in events:
        before = fsm.snapshot()
        actions = fsm.handle(ev)
        snap = fsm.snapshot()
        if snap.state == F.State.IDLE:
            assert snap.timers == frozenset() and snap.session is None
        if snap.state in (F.State.OPEN_CONFIRM, F.State.ESTABLISHED):
            assert snap.session is not None
        if snap.state in (F.State.CONNECT, F.State.ACTIVE):
            assert snap.timers == {F.Timer.CONNECT_RETRY}
        ups = [a for a in actions if isinstance(a, F.SessionUp)]
        downs = [a for a in actions if isinstance(a, F.SessionDown)]
        assert len(ups) == (before.state != F.State.ESTABLISHED == snap.state)
        assert len(downs) == (before.state == F.State.ESTABLISHED != snap.state)
        for a in actions:
            if isinstance(a, F.Send):  # everything we send parses back
                assert Framer().feed(a.data)[0].decode() == a.message


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(0, 65535), u32.map(IPv4Address),
       st.lists(st.one_of(
           st.builds(Multiprotocol, st.integers(0, 65535), st.integers(0, 255)),
           st.just(RouteRefreshCapability()),
           st.builds(UnknownCapability, st.integers(71, 255), st.binary(max_size=8)),
       ), max_size=6))
def test_random_opens_round_trip(asn: int, hold: int, bid: IPv4Address,
                                 caps: list[Multiprotocol]) -> None:
    o = Open.build(asn, hold, bid, tuple(caps))
    assert Open.from_wire(o.to_wire()) == o
