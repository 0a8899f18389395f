"""The RFC 4271 FSM: the whole snapshot and the action list after each event."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from kubewire.bgp.attributes import AsPath, NextHop, OriginAttr, WireContext
from kubewire.bgp.constants import (
    AS_TRANS,
    Afi,
    CapabilityCode,
    CeaseSubcode,
    ErrorCode,
    FsmSubcode,
    HeaderSubcode,
    OpenSubcode,
    Origin,
    Safi,
    UpdateSubcode,
)
from kubewire.bgp.errors import FsmError
from kubewire.bgp.fsm import (
    LARGE_HOLD_TIME,
    AutomaticStart,
    BGPOpen,
    Connect,
    ConnectRetryTimerExpires,
    DataReceived,
    DeliverRouteRefresh,
    DeliverUpdate,
    DropConnection,
    Event,
    Fsm,
    FsmAction,
    FsmConfig,
    FsmSnapshot,
    HoldTimerExpires,
    KeepAliveMsg,
    KeepaliveTimerExpires,
    ManualStart,
    ManualStop,
    NotifMsg,
    OpenCollisionDump,
    Send,
    Session,
    SessionDown,
    SessionUp,
    StartTimer,
    State,
    StopTimer,
    TcpConnectionConfirmed,
    TcpConnectionFails,
    TcpCrAcked,
    Timer,
    UpdateMsg,
    collision_loser,
    negotiate,
)
from kubewire.bgp.messages import (
    Capability,
    FourOctetAs,
    Keepalive,
    Multiprotocol,
    Notification,
    Open,
    RouteRefresh,
    RouteRefreshCapability,
)
from kubewire.bgp.update import Action, Update

ME, PEER = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
CFG = FsmConfig(local_as=65001, bgp_id=ME, peer_as=65002, hold_time=90)
CR, HOLD, KA = Timer.CONNECT_RETRY, Timer.HOLD, Timer.KEEPALIVE
KEEPALIVE = Keepalive().to_wire()


def peer_open(hold: int = 30, asn: int = 65002, bgp_id: IPv4Address = PEER,
              caps: tuple[Capability, ...] = (RouteRefreshCapability(),)) -> Open:
    return Open.build(asn, hold, bgp_id, caps)


def send(msg: Keepalive | Notification | Open | Update) -> Send:
    return Send(msg, msg.to_wire())


def notif(code: ErrorCode, sub: int, data: bytes = b"") -> Send:
    return send(Notification(code, sub, data))


UPDATE = Update(attributes=(OriginAttr(Origin.IGP), AsPath.sequence(65002), NextHop(PEER)),
                nlri=(IPv4Network("10.2.0.0/16"),))


def session(hold: int = 30) -> Session:
    return Session(peer_open(hold), hold, hold // 3, WireContext(True, True, 65002),
                   frozenset({(Afi.IPV4, Safi.UNICAST)}), True)


def run(fsm: Fsm, steps: list[tuple[Event, FsmSnapshot, list[FsmAction] | None]]) -> None:
    for i, (ev, snap, actions) in enumerate(steps):
        got = fsm.handle(ev)
        if actions is not None:
            assert got == actions, f"step {i} {ev}"
        assert fsm.snapshot() == snap, f"step {i} {ev}"


def established(cfg: FsmConfig = CFG, hold: int = 30) -> Fsm:
    fsm = Fsm(cfg)
    fsm.handle(ManualStart())
    fsm.handle(TcpCrAcked())
    fsm.handle(DataReceived(peer_open(hold).to_wire() + KEEPALIVE))
    assert fsm.state == State.ESTABLISHED
    return fsm


def test_active_open_to_established_and_hold_timer_expiry() -> None:
    s = session()
    run(Fsm(CFG), [
        (ManualStart(), FsmSnapshot(State.CONNECT, 0, frozenset({CR})),
         [StartTimer(CR, 120), Connect()]),
        (TcpCrAcked(), FsmSnapshot(State.OPEN_SENT, 0, frozenset({HOLD})),
         [StopTimer(CR), send(CFG.open_message()), StartTimer(HOLD, LARGE_HOLD_TIME)]),
        (DataReceived(peer_open().to_wire()), FsmSnapshot(State.OPEN_CONFIRM, 0,
                                                          frozenset({HOLD, KA}), s),
         [send(Keepalive()), StartTimer(KA, 10), StartTimer(HOLD, 30)]),
        (KeepaliveTimerExpires(), FsmSnapshot(State.OPEN_CONFIRM, 0, frozenset({HOLD, KA}), s),
         [send(Keepalive()), StartTimer(KA, 10)]),
        (DataReceived(KEEPALIVE), FsmSnapshot(State.ESTABLISHED, 0, frozenset({HOLD, KA}), s),
         [StartTimer(HOLD, 30), SessionUp(s)]),
        (DataReceived(KEEPALIVE), FsmSnapshot(State.ESTABLISHED, 0, frozenset({HOLD, KA}), s),
         [StartTimer(HOLD, 30)]),
        (KeepaliveTimerExpires(), FsmSnapshot(State.ESTABLISHED, 0, frozenset({HOLD, KA}), s),
         [send(Keepalive()), StartTimer(KA, 10)]),
        (HoldTimerExpires(), FsmSnapshot(State.IDLE, 1, frozenset(), None, "hold timer expired"),
         [notif(ErrorCode.HOLD_TIMER_EXPIRED, 0), StopTimer(HOLD), StopTimer(KA),
          DropConnection(), SessionDown("hold timer expired")]),
    ])


def test_update_is_delivered_and_restarts_the_hold_timer() -> None:
    fsm = established()
    acts = fsm.handle(DataReceived(UPDATE.to_wire()))
    assert acts[0] == StartTimer(HOLD, 30)
    assert isinstance(acts[1], DeliverUpdate) and acts[1].result.update == UPDATE
    assert acts[1].result.action == Action.NONE
    assert fsm.snapshot().state == State.ESTABLISHED


def test_passive_start_waits_in_active() -> None:
    run(Fsm(CFG), [
        (ManualStart(passive=True), FsmSnapshot(State.ACTIVE, 0, frozenset({CR})),
         [StartTimer(CR, 120)]),
        (TcpConnectionConfirmed(), FsmSnapshot(State.OPEN_SENT, 0, frozenset({HOLD})), None),
    ])


def test_connect_and_active_retry_and_failures() -> None:
    run(Fsm(CFG), [
        (ManualStart(), FsmSnapshot(State.CONNECT, 0, frozenset({CR})), None),
        (ConnectRetryTimerExpires(), FsmSnapshot(State.CONNECT, 0, frozenset({CR})),
         [DropConnection(), StartTimer(CR, 120), Connect()]),
        (TcpConnectionFails(), FsmSnapshot(State.IDLE, 0, frozenset(), None,
                                           "TCP connection failed"),
         [StopTimer(CR), DropConnection()]),
        (ManualStart(passive=True), FsmSnapshot(State.ACTIVE, 0, frozenset({CR})), None),
        (ConnectRetryTimerExpires(), FsmSnapshot(State.CONNECT, 0, frozenset({CR})),
         [StartTimer(CR, 120), Connect()]),
    ])
    fsm = Fsm(CFG)
    fsm.handle(ManualStart(passive=True))
    assert fsm.handle(TcpConnectionFails()) == [StopTimer(CR), DropConnection()]
    assert fsm.snapshot() == FsmSnapshot(State.IDLE, 1, frozenset(), None, "TCP connection failed")


def test_tcp_failure_in_open_sent_goes_back_to_active() -> None:
    fsm = Fsm(CFG)
    fsm.handle(ManualStart())
    fsm.handle(TcpCrAcked())
    assert fsm.handle(TcpConnectionFails()) == [StopTimer(HOLD), DropConnection(),
                                                StartTimer(CR, 120)]
    assert fsm.snapshot() == FsmSnapshot(State.ACTIVE, 0, frozenset({CR}))


ALL_EVENTS: list[Event] = [
    ManualStop(), ConnectRetryTimerExpires(), HoldTimerExpires(), KeepaliveTimerExpires(),
    TcpCrAcked(), TcpConnectionConfirmed(), TcpConnectionFails(), DataReceived(KEEPALIVE),
    BGPOpen(peer_open()), KeepAliveMsg(), UpdateMsg(b"\x00" * 4),
    NotifMsg(Notification(6, 2)), OpenCollisionDump(),
]


@pytest.mark.parametrize("ev", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_idle_ignores_everything_but_start(ev: Event) -> None:
    fsm = Fsm(CFG)
    assert fsm.handle(ev) == []
    assert fsm.snapshot() == FsmSnapshot(State.IDLE)


@pytest.mark.parametrize("ev", [HoldTimerExpires(), KeepaliveTimerExpires(), KeepAliveMsg(),
                                BGPOpen(peer_open()), UpdateMsg(b"")],
                         ids=lambda e: type(e).__name__)
def test_unexpected_event_in_connect_goes_idle(ev: Event) -> None:
    fsm = Fsm(CFG)
    fsm.handle(ManualStart())
    assert fsm.handle(ev) == [StopTimer(CR), DropConnection()]
    assert fsm.snapshot() == FsmSnapshot(State.IDLE, 1, frozenset(), None,
                                         f"unexpected {type(ev).__name__} in Connect")


def _to(state: State) -> Fsm:
    fsm = Fsm(CFG)
    fsm.handle(ManualStart())
    fsm.handle(TcpCrAcked())
    if state in (State.OPEN_CONFIRM, State.ESTABLISHED):
        fsm.handle(BGPOpen(peer_open()))
    if state == State.ESTABLISHED:
        fsm.handle(KeepAliveMsg())
    assert fsm.state == state
    return fsm


@pytest.mark.parametrize(("state", "ev", "sub"), [
    (State.OPEN_SENT, KeepAliveMsg(), FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT),
    (State.OPEN_SENT, UpdateMsg(b"\x00" * 4), FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT),
    (State.OPEN_SENT, KeepaliveTimerExpires(), FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT),
    (State.OPEN_SENT, NotifMsg(Notification(6, 2)),
     FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT),
    (State.OPEN_CONFIRM, BGPOpen(peer_open()),
     FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_OPENCONFIRM),
    (State.OPEN_CONFIRM, UpdateMsg(b"\x00" * 4),
     FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_OPENCONFIRM),
    (State.ESTABLISHED, BGPOpen(peer_open()),
     FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_ESTABLISHED),
    (State.ESTABLISHED, ConnectRetryTimerExpires(),
     FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_ESTABLISHED),
])
def test_illegal_events_send_fsm_error_and_go_idle(
    state: State, ev: Event, sub: FsmSubcode
) -> None:
    fsm = _to(state)
    timers = set(fsm.timers)
    acts = fsm.handle(ev)
    assert acts[0] == notif(ErrorCode.FINITE_STATE_MACHINE_ERROR, sub)
    assert {a.timer for a in acts if isinstance(a, StopTimer)} == timers
    assert DropConnection() in acts
    assert (SessionDown(f"unexpected {type(ev).__name__} in Established") in acts) == (
        state == State.ESTABLISHED)
    assert fsm.snapshot() == FsmSnapshot(State.IDLE, 1, frozenset(), None,
                                         f"unexpected {type(ev).__name__} in {state.value}")


def test_version_notification_in_open_sent_does_not_count() -> None:
    fsm = _to(State.OPEN_SENT)
    n = Notification(ErrorCode.OPEN_MESSAGE_ERROR, OpenSubcode.UNSUPPORTED_VERSION_NUMBER,
                     b"\x00\x03")
    assert fsm.handle(NotifMsg(n)) == [StopTimer(HOLD), DropConnection()]
    assert fsm.snapshot().connect_retry_counter == 0 and fsm.state == State.IDLE


def test_notification_in_established_tears_down() -> None:
    fsm = established()
    n = Notification(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, b"\x04bye!")
    acts = fsm.handle(DataReceived(n.to_wire()))
    reason = "peer sent CEASE/ADMINISTRATIVE_SHUTDOWN: bye!"
    assert acts == [StopTimer(HOLD), StopTimer(KA), DropConnection(), SessionDown(reason)]
    assert fsm.snapshot() == FsmSnapshot(State.IDLE, 1, frozenset(), None, reason)


def test_manual_stop_sends_cease_with_reason_and_resets_counter() -> None:
    fsm = established()
    fsm.connect_retry_counter = 3
    acts = fsm.handle(ManualStop("maintenance"))
    assert acts[0] == notif(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN,
                            b"\x0bmaintenance")
    assert fsm.snapshot() == FsmSnapshot(State.IDLE, 0, frozenset(), None,
                                         "administratively stopped")
    fsm2 = Fsm(CFG)
    fsm2.handle(ManualStart())
    assert fsm2.handle(ManualStop()) == [StopTimer(CR), DropConnection()]


@pytest.mark.parametrize(("op", "sub", "data"), [
    (Open(65002, 30, PEER, version=3), OpenSubcode.UNSUPPORTED_VERSION_NUMBER, b"\x00\x04"),
    (peer_open(asn=65003), OpenSubcode.BAD_PEER_AS, b""),
    (Open(AS_TRANS, 30, PEER), OpenSubcode.BAD_PEER_AS, b""),  # AS_TRANS, no capability
    (Open(65002, 30, PEER, (FourOctetAs(4200000000),)), OpenSubcode.BAD_PEER_AS, b""),
    (Open(65000, 30, PEER, (FourOctetAs(65002),)), OpenSubcode.BAD_PEER_AS, b""),
    (peer_open(hold=2), OpenSubcode.UNACCEPTABLE_HOLD_TIME, b""),
    (peer_open(hold=1), OpenSubcode.UNACCEPTABLE_HOLD_TIME, b""),
    (peer_open(bgp_id=IPv4Address("0.0.0.0")), OpenSubcode.BAD_BGP_IDENTIFIER, b""),
])
def test_open_validation(op: Open, sub: OpenSubcode, data: bytes) -> None:
    fsm = _to(State.OPEN_SENT)
    acts = fsm.handle(DataReceived(op.to_wire()))
    assert acts[0] == notif(ErrorCode.OPEN_MESSAGE_ERROR, sub, data)
    assert acts[1:] == [StopTimer(HOLD), DropConnection()]
    assert fsm.state == State.IDLE and fsm.connect_retry_counter == 1
    assert fsm.last_error is not None and fsm.last_error.startswith("bad OPEN")


def test_ibgp_peer_with_our_identifier_is_rejected_and_capabilities_required() -> None:
    ibgp = FsmConfig(65001, ME, 65001)
    with pytest.raises(Exception) as ei:
        negotiate(ibgp, Open.build(65001, 90, ME))
    assert getattr(ei.value, "subcode", None) == OpenSubcode.BAD_BGP_IDENTIFIER
    negotiate(FsmConfig(65001, ME, 65002), Open.build(65002, 90, ME))  # eBGP: allowed
    need = FsmConfig(65001, ME, 65002, required_capabilities=(CapabilityCode.FOUR_OCTET_AS,
                                                               CapabilityCode.ROUTE_REFRESH))
    with pytest.raises(Exception) as ei:
        negotiate(need, Open(65002, 90, PEER))
    assert getattr(ei.value, "subcode", None) == OpenSubcode.UNSUPPORTED_CAPABILITY
    assert getattr(ei.value, "data", None) == bytes([65, 0, 2, 0])


@pytest.mark.parametrize(("mine", "theirs", "hold", "ka"), [
    (90, 30, 30, 10), (90, 180, 90, 30), (3, 90, 3, 1), (0, 90, 0, 0), (90, 0, 0, 0),
])
def test_hold_time_negotiation(mine: int, theirs: int, hold: int, ka: int) -> None:
    s = negotiate(FsmConfig(65001, ME, 65002, hold_time=mine), peer_open(theirs))
    assert (s.hold_time, s.keepalive_time) == (hold, ka)


def test_zero_hold_time_runs_no_timers() -> None:
    fsm = established(FsmConfig(65001, ME, 65002, hold_time=0))
    assert fsm.snapshot().timers == frozenset()
    assert fsm.handle(DataReceived(KEEPALIVE)) == []
    assert fsm.send_update(UPDATE) == [send(UPDATE)]


def test_bad_config_hold_time() -> None:
    with pytest.raises(FsmError):
        FsmConfig(65001, ME, 65002, hold_time=2)


def test_negotiated_context_and_families() -> None:
    cfg = FsmConfig(65001, ME, 4200000000, capabilities=(
        Multiprotocol(Afi.IPV4, Safi.UNICAST), Multiprotocol(Afi.IPV6, Safi.UNICAST)))
    s = negotiate(cfg, Open.build(4200000000, 90, PEER, (Multiprotocol(Afi.IPV6, Safi.UNICAST),)))
    assert s.context == WireContext(as4=True, ebgp=True, peer_as=4200000000)
    assert s.families == {(Afi.IPV6, Safi.UNICAST)}
    assert not s.route_refresh
    old = negotiate(FsmConfig(65001, ME, 65002), Open(65002, 90, PEER, (RouteRefreshCapability(),)))
    assert old.context.as4 is False and old.route_refresh


def test_header_error_in_stream_sends_notification() -> None:
    fsm = established()
    acts = fsm.handle(DataReceived(b"\xff" * 16 + b"\x00\x05\x04"))
    assert acts[0] == notif(ErrorCode.MESSAGE_HEADER_ERROR, HeaderSubcode.BAD_MESSAGE_LENGTH,
                            b"\x00\x05")
    assert fsm.state == State.IDLE and isinstance(acts[-1], SessionDown)


def test_update_error_resets_but_treat_as_withdraw_does_not() -> None:
    fsm = established()
    taw = Update(attributes=(AsPath.sequence(65002), NextHop(PEER)),  # no ORIGIN
                 nlri=(IPv4Network("10.2.0.0/16"),))
    acts = fsm.handle(DataReceived(taw.to_wire()))
    assert isinstance(acts[-1], DeliverUpdate)
    assert acts[-1].result.action == Action.TREAT_AS_WITHDRAW
    assert acts[-1].result.withdraw() == (IPv4Network("10.2.0.0/16"),)
    assert fsm.state == State.ESTABLISHED
    bad = b"\xff" * 16 + b"\x00\x1c\x02" + bytes.fromhex("0000 0000 21 0a000000")  # /33
    acts = fsm.handle(DataReceived(bad))
    assert acts[0] == notif(ErrorCode.UPDATE_MESSAGE_ERROR, UpdateSubcode.INVALID_NETWORK_FIELD)
    assert fsm.snapshot().state == State.IDLE and fsm.connect_retry_counter == 1


def test_route_refresh_is_delivered_and_bad_length_resets() -> None:
    fsm = established()
    acts = fsm.handle(DataReceived(RouteRefresh().to_wire()))
    assert acts == [StartTimer(HOLD, 30), DeliverRouteRefresh(RouteRefresh())]
    bad = b"\xff" * 16 + b"\x00\x18\x05" + bytes(5)
    acts = fsm.handle(DataReceived(bad))
    assert acts[0] == notif(ErrorCode.ROUTE_REFRESH_MESSAGE_ERROR, 1, bad)


def test_byte_at_a_time_gives_the_same_actions() -> None:
    stream = peer_open().to_wire() + KEEPALIVE + UPDATE.to_wire() + KEEPALIVE
    whole, split = _to(State.OPEN_SENT), _to(State.OPEN_SENT)
    a = whole.handle(DataReceived(stream))
    b = [x for i in range(len(stream)) for x in split.handle(DataReceived(stream[i : i + 1]))]
    assert a == b and whole.snapshot() == split.snapshot()
    assert whole.state == State.ESTABLISHED


def test_messages_after_teardown_are_ignored() -> None:
    fsm = established()
    bad_then_good = b"\xff" * 16 + b"\x00\x13\x09" + KEEPALIVE
    acts = fsm.handle(DataReceived(bad_then_good))
    assert acts[0] == notif(ErrorCode.MESSAGE_HEADER_ERROR, HeaderSubcode.BAD_MESSAGE_TYPE, b"\x09")
    assert fsm.handle(DataReceived(KEEPALIVE)) == []
    two = established()
    acts = two.handle(DataReceived(Notification(6, 4).to_wire() + KEEPALIVE))
    assert isinstance(acts[-1], SessionDown) and two.state == State.IDLE


def test_send_update_only_in_established() -> None:
    fsm = _to(State.OPEN_CONFIRM)
    before = fsm.snapshot()
    with pytest.raises(FsmError):
        fsm.send_update(UPDATE)
    assert fsm.snapshot() == before


def test_a_non_event_raises_and_changes_nothing() -> None:
    fsm = established()
    before = fsm.snapshot()
    with pytest.raises(FsmError):
        fsm.handle("KEEPALIVE")  # type: ignore[arg-type]
    with pytest.raises(FsmError):
        fsm.handle(Keepalive())  # type: ignore[arg-type]
    assert fsm.snapshot() == before
    fsm = established()
    assert fsm.send_update(UPDATE) == [send(UPDATE), StartTimer(KA, 10)]


def test_collision() -> None:
    assert collision_loser(ME, PEER) == "outgoing"
    assert collision_loser(PEER, ME) == "incoming"
    fsm = _to(State.OPEN_CONFIRM)
    acts = fsm.handle(OpenCollisionDump())
    assert acts[0] == notif(ErrorCode.CEASE, CeaseSubcode.CONNECTION_COLLISION_RESOLUTION)
    assert fsm.state == State.IDLE


def test_second_connection_is_left_to_the_driver() -> None:
    fsm = _to(State.OPEN_CONFIRM)
    before = fsm.snapshot()
    assert fsm.handle(TcpConnectionConfirmed()) == []
    assert fsm.snapshot() == before


def test_automatic_restart_keeps_the_counter() -> None:
    fsm = established()
    fsm.handle(HoldTimerExpires())
    assert fsm.handle(AutomaticStart()) == [StartTimer(CR, 120), Connect()]
    assert fsm.snapshot() == FsmSnapshot(State.CONNECT, 1, frozenset({CR}))
    assert fsm.handle(ManualStart()) == []  # ignored outside Idle


def test_version_notification_counts_outside_open_sent() -> None:
    fsm = _to(State.OPEN_CONFIRM)
    n = Notification(ErrorCode.OPEN_MESSAGE_ERROR, OpenSubcode.UNSUPPORTED_VERSION_NUMBER)
    assert fsm.handle(NotifMsg(n)) == [StopTimer(HOLD), StopTimer(KA), DropConnection()]
    assert fsm.snapshot() == FsmSnapshot(
        State.IDLE, 1, frozenset(), None, "peer sent OPEN_MESSAGE_ERROR/UNSUPPORTED_VERSION_NUMBER"
    )
