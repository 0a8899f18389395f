"""The RFC 4271 section 8 finite-state machine, sans-I/O.

``Fsm.handle(event) -> list[Action]``: events are data (a timer firing is an event too), and
actions say what the driver must do (send these bytes, start/stop a timer, connect, drop
the connection, hand an UPDATE to the RIB). One ``Fsm`` is one BGP connection; the optional
session attributes DelayOpen, damping and IdleHoldTimer are not implemented (RFC 4271
8.1.1 lets them default to off). Collision detection (6.8) is the driver's: it runs one FSM
per connection, asks ``collision_loser`` which to close and gives that one
``OpenCollisionDump``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address

from kubewire.bgp.attributes import WireContext
from kubewire.bgp.constants import (
    AS_TRANS,
    BGP_VERSION,
    CapabilityCode,
    CeaseSubcode,
    ErrorCode,
    FsmSubcode,
    MessageType,
    OpenSubcode,
    UpdateSubcode,
)
from kubewire.bgp.errors import FsmError, MessageError
from kubewire.bgp.messages import (
    Capability,
    Frame,
    Framer,
    Keepalive,
    Message,
    Multiprotocol,
    Notification,
    Open,
    RouteRefresh,
    RouteRefreshCapability,
    decode_open,
    decode_route_refresh,
)
from kubewire.bgp.update import Action as UpdateAction
from kubewire.bgp.update import Update, UpdateResult, decode_update

LARGE_HOLD_TIME = 240  # RFC 4271 8.2.2: "a large value", 4 minutes suggested


class State(Enum):
    IDLE = "Idle"
    CONNECT = "Connect"
    ACTIVE = "Active"
    OPEN_SENT = "OpenSent"
    OPEN_CONFIRM = "OpenConfirm"
    ESTABLISHED = "Established"


class Timer(Enum):
    CONNECT_RETRY = "ConnectRetryTimer"
    HOLD = "HoldTimer"
    KEEPALIVE = "KeepaliveTimer"


# --- events (RFC 4271 8.1; names follow the RFC's) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ManualStart:
    """Events 1 and 4 (passive: ManualStart_with_PassiveTcpEstablishment)."""

    passive: bool = False


@dataclass(frozen=True, slots=True)
class AutomaticStart:
    """Events 3 and 5: what a driver sends to restart a session after an error."""

    passive: bool = False


@dataclass(frozen=True, slots=True)
class ManualStop:
    """Event 2; ``reason`` goes out in the Cease NOTIFICATION (RFC 9003) when ``subcode``
    is Administrative Shutdown or Reset (RFC 4486 lets only those carry one); Peer
    De-configured is what a neighbour removed from the configuration is told."""

    reason: str = ""
    subcode: CeaseSubcode = CeaseSubcode.ADMINISTRATIVE_SHUTDOWN


@dataclass(frozen=True, slots=True)
class ConnectRetryTimerExpires:
    pass


@dataclass(frozen=True, slots=True)
class HoldTimerExpires:
    pass


@dataclass(frozen=True, slots=True)
class KeepaliveTimerExpires:
    pass


@dataclass(frozen=True, slots=True)
class TcpCrAcked:
    """Event 16: our outgoing connection is up."""


@dataclass(frozen=True, slots=True)
class TcpConnectionConfirmed:
    """Event 17: the peer's connection to us is up."""


@dataclass(frozen=True, slots=True)
class TcpConnectionFails:
    """Event 18."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Bytes read from the connection; the FSM frames them into the message events below."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BGPOpen:
    open: Open


@dataclass(frozen=True, slots=True)
class KeepAliveMsg:
    pass


@dataclass(frozen=True, slots=True)
class UpdateMsg:
    """An UPDATE body (header stripped); the FSM applies RFC 7606 to it."""

    body: bytes


@dataclass(frozen=True, slots=True)
class NotifMsg:
    notification: Notification


@dataclass(frozen=True, slots=True)
class RouteRefreshMsg:
    request: RouteRefresh


@dataclass(frozen=True, slots=True)
class MessageErr:
    """Events 21/22/28 (BGPHeaderErr, BGPOpenMsgErr, UpdateMsgErr): a received message failed
    the checks; ``error`` is the NOTIFICATION to send."""

    error: MessageError


@dataclass(frozen=True, slots=True)
class OpenCollisionDump:
    """Event 23: this connection lost collision detection."""


Event = (
    ManualStart
    | AutomaticStart
    | ManualStop
    | ConnectRetryTimerExpires
    | HoldTimerExpires
    | KeepaliveTimerExpires
    | TcpCrAcked
    | TcpConnectionConfirmed
    | TcpConnectionFails
    | DataReceived
    | BGPOpen
    | KeepAliveMsg
    | UpdateMsg
    | NotifMsg
    | RouteRefreshMsg
    | MessageErr
    | OpenCollisionDump
)


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    message: Message
    data: bytes


@dataclass(frozen=True, slots=True)
class StartTimer:
    timer: Timer
    seconds: int


@dataclass(frozen=True, slots=True)
class StopTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class Connect:
    """Initiate the TCP connection to the peer (answer with TcpCrAcked or TcpConnectionFails)."""


@dataclass(frozen=True, slots=True)
class DropConnection:
    pass


@dataclass(frozen=True, slots=True)
class SessionUp:
    session: Session


@dataclass(frozen=True, slots=True)
class SessionDown:
    """Leaving Established: every route learned from this peer is gone (RFC 4271 8.2.2)."""

    reason: str


@dataclass(frozen=True, slots=True)
class DeliverUpdate:
    result: UpdateResult


@dataclass(frozen=True, slots=True)
class DeliverRouteRefresh:
    request: RouteRefresh


FsmAction = (
    Send
    | StartTimer
    | StopTimer
    | Connect
    | DropConnection
    | SessionUp
    | SessionDown
    | DeliverUpdate
    | DeliverRouteRefresh
)


# --- configuration and negotiated session ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class FsmConfig:
    local_as: int
    bgp_id: IPv4Address
    peer_as: int
    hold_time: int = 90
    connect_retry_time: int = 120
    capabilities: tuple[Capability, ...] = (RouteRefreshCapability(),)
    required_capabilities: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.hold_time in (1, 2) or not 0 <= self.hold_time <= 0xFFFF:
            raise FsmError(f"hold time {self.hold_time}: use 0 or 3..65535 (RFC 4271 4.2)")

    def open_message(self) -> Open:
        return Open.build(self.local_as, self.hold_time, self.bgp_id, self.capabilities)


@dataclass(frozen=True, slots=True)
class Session:
    """What both OPENs agreed (RFC 4271 4.2, RFC 5492, RFC 6793)."""

    peer_open: Open
    hold_time: int
    keepalive_time: int
    context: WireContext
    families: frozenset[tuple[int, int]]
    route_refresh: bool


@dataclass(frozen=True, slots=True)
class FsmSnapshot:
    """The whole observable state; tests compare it after every event."""

    state: State
    connect_retry_counter: int = 0
    timers: frozenset[Timer] = frozenset()
    session: Session | None = None
    last_error: str | None = None


def negotiate(config: FsmConfig, peer: Open) -> Session:
    """Validate the peer's OPEN (RFC 4271 6.2) and agree the session; raises MessageError."""
    if peer.version != BGP_VERSION:
        raise MessageError(
            ErrorCode.OPEN_MESSAGE_ERROR,
            OpenSubcode.UNSUPPORTED_VERSION_NUMBER,
            f"peer speaks BGP version {peer.version}, we speak 4",
            BGP_VERSION.to_bytes(2, "big"),
        )
    if peer.four_octet and (peer.asn > 0xFFFF) != (peer.my_as == AS_TRANS):
        raise MessageError(
            ErrorCode.OPEN_MESSAGE_ERROR,
            OpenSubcode.BAD_PEER_AS,
            f"My AS {peer.my_as} disagrees with the 4-octet AS {peer.asn}",
        )
    if peer.four_octet and peer.asn <= 0xFFFF and peer.my_as != peer.asn:
        raise MessageError(
            ErrorCode.OPEN_MESSAGE_ERROR,
            OpenSubcode.BAD_PEER_AS,
            f"My AS {peer.my_as} disagrees with the 4-octet AS {peer.asn}",
        )
    if peer.asn != config.peer_as:
        raise MessageError(
            ErrorCode.OPEN_MESSAGE_ERROR,
            OpenSubcode.BAD_PEER_AS,
            f"peer says AS {peer.asn}, configured AS {config.peer_as}",
        )
    if peer.hold_time in (1, 2):
        raise MessageError(
            ErrorCode.OPEN_MESSAGE_ERROR,
            OpenSubcode.UNACCEPTABLE_HOLD_TIME,
            f"hold time {peer.hold_time} (must be 0 or at least 3)",
        )
    ibgp = config.local_as == config.peer_as
    if int(peer.bgp_id) == 0 or (ibgp and peer.bgp_id == config.bgp_id):
        # RFC 6286 2.2: any non-zero value, unique within the AS
        raise MessageError(
            ErrorCode.OPEN_MESSAGE_ERROR,
            OpenSubcode.BAD_BGP_IDENTIFIER,
            f"BGP identifier {peer.bgp_id}",
        )
    codes = {c.code for c in peer.capabilities}
    missing = [c for c in config.required_capabilities if c not in codes]
    if missing:
        raise MessageError(
            ErrorCode.OPEN_MESSAGE_ERROR,
            OpenSubcode.UNSUPPORTED_CAPABILITY,
            f"peer lacks required capabilities {missing}",
            b"".join(bytes([c, 0]) for c in missing),
        )
    hold = min(config.hold_time, peer.hold_time)
    mine = config.open_message()
    if any(isinstance(c, Multiprotocol) for c in (*mine.capabilities, *peer.capabilities)):
        families = mine.families() & peer.families()
    else:
        families = mine.families()
    return Session(
        peer_open=peer,
        hold_time=hold,
        keepalive_time=hold // 3,
        context=WireContext(as4=peer.four_octet, ebgp=not ibgp, peer_as=config.peer_as),
        families=families,
        route_refresh=CapabilityCode.ROUTE_REFRESH in codes
        and any(isinstance(c, RouteRefreshCapability) for c in config.capabilities),
    )


def collision_loser(local_id: IPv4Address, remote_id: IPv4Address) -> str:
    """RFC 4271 6.8: keep the connection opened by the higher BGP Identifier; returns which
    connection to close, "outgoing" (ours) or "incoming" (the peer's)."""
    return "outgoing" if int(local_id) < int(remote_id) else "incoming"


_EVENT_TYPES = (
    ManualStart,
    AutomaticStart,
    ManualStop,
    ConnectRetryTimerExpires,
    HoldTimerExpires,
    KeepaliveTimerExpires,
    TcpCrAcked,
    TcpConnectionConfirmed,
    TcpConnectionFails,
    DataReceived,
    BGPOpen,
    KeepAliveMsg,
    UpdateMsg,
    NotifMsg,
    RouteRefreshMsg,
    MessageErr,
    OpenCollisionDump,
)

_UNEXPECTED = {
    State.OPEN_SENT: FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT,
    State.OPEN_CONFIRM: FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_OPENCONFIRM,
    State.ESTABLISHED: FsmSubcode.RECEIVE_UNEXPECTED_MESSAGE_IN_ESTABLISHED,
}


_UPDATE = MessageType.UPDATE


@dataclass(slots=True)
class Fsm:
    config: FsmConfig
    state: State = State.IDLE
    connect_retry_counter: int = 0
    timers: set[Timer] = field(default_factory=set)
    session: Session | None = None
    last_error: str | None = None
    _framer: Framer = field(default_factory=Framer)
    _passive: bool = False

    def snapshot(self) -> FsmSnapshot:
        return FsmSnapshot(
            self.state,
            self.connect_retry_counter,
            frozenset(self.timers),
            self.session,
            self.last_error,
        )

    # -- helpers that also record the action --

    def _start(self, out: list[FsmAction], timer: Timer, seconds: int) -> None:
        self.timers.add(timer)
        out.append(StartTimer(timer, seconds))

    def _stop(self, out: list[FsmAction], timer: Timer) -> None:
        if timer in self.timers:
            self.timers.discard(timer)
            out.append(StopTimer(timer))

    def _send(self, out: list[FsmAction], msg: Message) -> None:
        ctx = self.session.context if self.session else WireContext()
        out.append(Send(msg, msg.to_wire(ctx)))

    def _to_idle(
        self,
        out: list[FsmAction],
        reason: str | None,
        *,
        count: bool,
        notify: Notification | None = None,
        reset_counter: bool = False,
    ) -> None:
        """The common exit: (NOTIFICATION,) stop timers, drop TCP, release resources."""
        if notify is not None:
            self._send(out, notify)
        for t in (Timer.CONNECT_RETRY, Timer.HOLD, Timer.KEEPALIVE):
            self._stop(out, t)
        out.append(DropConnection())
        if self.state == State.ESTABLISHED:
            out.append(SessionDown(reason or "stopped"))
        if reset_counter:
            self.connect_retry_counter = 0
        elif count:
            self.connect_retry_counter += 1
        self.session = None
        self.last_error = reason
        self.state = State.IDLE

    def _fsm_error(self, out: list[FsmAction], what: str) -> None:
        sub = _UNEXPECTED.get(self.state, FsmSubcode.UNSPECIFIED_ERROR)
        self._to_idle(
            out,
            f"unexpected {what} in {self.state.value}",
            count=True,
            notify=Notification(ErrorCode.FINITE_STATE_MACHINE_ERROR, sub),
        )

    def _connected(self, out: list[FsmAction]) -> None:
        self._stop(out, Timer.CONNECT_RETRY)
        self._framer = Framer()
        self._send(out, self.config.open_message())
        self._start(out, Timer.HOLD, LARGE_HOLD_TIME)
        self.state = State.OPEN_SENT

    # -- the machine --

    def handle(self, event: Event) -> list[FsmAction]:
        """Run one event; raises FsmError (changing nothing) for an object that is no event."""
        if not isinstance(event, _EVENT_TYPES):
            raise FsmError(f"{event!r} is not an FSM event")
        out: list[FsmAction] = []
        if isinstance(event, DataReceived):
            self._receive(out, event.data)
        else:
            self._dispatch(out, event)
        return out

    def _receive(self, out: list[FsmAction], data: bytes) -> None:
        if self.state not in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
            return  # no BGP connection to read from
        try:
            frames = self._framer.feed(data)
        except MessageError as e:
            self._dispatch(out, MessageErr(e))
            return
        established = State.ESTABLISHED
        for fr in frames:
            if self.state is established:
                if fr.type is _UPDATE:
                    # what _dispatch does with an UpdateMsg in Established, without building
                    # the event and walking the event checks once per UPDATE
                    self._update(out, fr.body)
                    continue
            elif self._closed():
                break  # the connection is gone; the rest of the stream is moot
            self._dispatch(out, self._event_for(fr))

    def _closed(self) -> bool:
        return self.state == State.IDLE

    @staticmethod
    def _event_for(fr: Frame) -> Event:
        try:
            if fr.type == MessageType.OPEN:
                return BGPOpen(decode_open(fr.body))
            if fr.type == MessageType.UPDATE:
                return UpdateMsg(fr.body)
            if fr.type == MessageType.KEEPALIVE:
                return KeepAliveMsg()
            if fr.type == MessageType.NOTIFICATION:
                return NotifMsg(Notification(fr.body[0], fr.body[1], fr.body[2:]))
            return RouteRefreshMsg(decode_route_refresh(fr.body, fr.data))
        except MessageError as e:
            return MessageErr(e)

    def _dispatch(self, out: list[FsmAction], ev: Event) -> None:
        s = self.state
        cfg = self.config
        if isinstance(ev, ManualStart | AutomaticStart):
            if s != State.IDLE:
                return  # ignored outside Idle
            self.last_error = None
            self._passive = ev.passive
            self._start(out, Timer.CONNECT_RETRY, cfg.connect_retry_time)
            if ev.passive:
                self.state = State.ACTIVE
            else:
                out.append(Connect())
                self.state = State.CONNECT
            if isinstance(ev, ManualStart):
                self.connect_retry_counter = 0
            return
        if s == State.IDLE:
            return  # RFC 4271 8.2.2: every other event leaves Idle alone
        if isinstance(ev, ManualStop):
            note = None
            if s in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
                data = b""
                if ev.subcode in (CeaseSubcode.ADMINISTRATIVE_SHUTDOWN,
                                  CeaseSubcode.ADMINISTRATIVE_RESET):
                    msg = ev.reason.encode()[:255]
                    data = bytes([len(msg)]) + msg if msg else b""
                note = Notification(ErrorCode.CEASE, ev.subcode, data)
            self._to_idle(
                out, "administratively stopped", count=False, notify=note, reset_counter=True
            )
            return

        if s in (State.CONNECT, State.ACTIVE):
            if isinstance(ev, ConnectRetryTimerExpires):
                if s == State.CONNECT:
                    out.append(DropConnection())
                self._start(out, Timer.CONNECT_RETRY, cfg.connect_retry_time)
                out.append(Connect())
                self.state = State.CONNECT
            elif isinstance(ev, TcpCrAcked | TcpConnectionConfirmed):
                self._connected(out)
            elif isinstance(ev, TcpConnectionFails):
                # Connect: go Idle. Active: the RFC also goes Idle, counting the failure.
                self._to_idle(out, "TCP connection failed", count=s == State.ACTIVE)
            else:
                self._to_idle(out, f"unexpected {type(ev).__name__} in {s.value}", count=True)
            return

        # OpenSent, OpenConfirm, Established: a BGP connection exists
        if isinstance(ev, HoldTimerExpires):
            self._to_idle(
                out,
                "hold timer expired",
                count=True,
                notify=Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0),
            )
        elif isinstance(ev, MessageErr):
            e = ev.error
            self._to_idle(
                out,
                f"{Notification(e.code, e.subcode).describe()}: {e}",
                count=True,
                notify=Notification.from_error(e),
            )
        elif isinstance(ev, OpenCollisionDump):
            self._to_idle(
                out,
                "connection collision",
                count=True,
                notify=Notification(ErrorCode.CEASE, CeaseSubcode.CONNECTION_COLLISION_RESOLUTION),
            )
        elif isinstance(ev, TcpConnectionFails):
            if s == State.OPEN_SENT:
                # RFC 4271: close, restart ConnectRetryTimer, keep listening in Active
                self._stop(out, Timer.HOLD)
                out.append(DropConnection())
                self._start(out, Timer.CONNECT_RETRY, cfg.connect_retry_time)
                self.state = State.ACTIVE
            else:
                self._to_idle(out, "TCP connection failed", count=True)
        elif isinstance(ev, NotifMsg):
            n = ev.notification
            version = (
                n.code == ErrorCode.OPEN_MESSAGE_ERROR
                and n.subcode == OpenSubcode.UNSUPPORTED_VERSION_NUMBER
            )
            if s != State.OPEN_SENT:
                self._to_idle(out, f"peer sent {n.describe()}", count=True)
            elif version:  # NotifMsgVerErr: the only NOTIFICATION OpenSent expects
                self._to_idle(out, f"peer sent {n.describe()}", count=False)
            else:
                self._fsm_error(out, "NotifMsg")
        elif isinstance(ev, TcpCrAcked | TcpConnectionConfirmed):
            pass  # a second connection: the driver's collision detection handles it
        elif s == State.OPEN_SENT:
            self._open_sent(out, ev)
        elif s == State.OPEN_CONFIRM:
            self._open_confirm(out, ev)
        else:
            self._established(out, ev)

    def _open_sent(self, out: list[FsmAction], ev: Event) -> None:
        if not isinstance(ev, BGPOpen):
            self._fsm_error(out, type(ev).__name__)
            return
        try:
            session = negotiate(self.config, ev.open)
        except MessageError as e:
            self._to_idle(out, f"bad OPEN: {e}", count=True, notify=Notification.from_error(e))
            return
        self.session = session
        self._stop(out, Timer.CONNECT_RETRY)
        self._send(out, Keepalive())
        if session.hold_time:
            self._start(out, Timer.KEEPALIVE, session.keepalive_time)
            self._start(out, Timer.HOLD, session.hold_time)
        else:
            self._stop(out, Timer.HOLD)
        self.state = State.OPEN_CONFIRM

    def _restart_hold(self, out: list[FsmAction]) -> None:
        if self.session and self.session.hold_time:
            self._start(out, Timer.HOLD, self.session.hold_time)

    def _keepalive(self, out: list[FsmAction]) -> None:
        self._send(out, Keepalive())
        if self.session and self.session.hold_time:
            self._start(out, Timer.KEEPALIVE, self.session.keepalive_time)

    def _open_confirm(self, out: list[FsmAction], ev: Event) -> None:
        if isinstance(ev, KeepaliveTimerExpires):
            self._keepalive(out)
        elif isinstance(ev, KeepAliveMsg):
            assert self.session is not None
            self._restart_hold(out)
            self.state = State.ESTABLISHED
            out.append(SessionUp(self.session))
        else:
            self._fsm_error(out, type(ev).__name__)

    def _established(self, out: list[FsmAction], ev: Event) -> None:
        assert self.session is not None
        if isinstance(ev, KeepaliveTimerExpires):
            self._keepalive(out)
        elif isinstance(ev, KeepAliveMsg):
            self._restart_hold(out)
        elif isinstance(ev, UpdateMsg):
            self._update(out, ev.body)
        elif isinstance(ev, RouteRefreshMsg):
            self._restart_hold(out)
            out.append(DeliverRouteRefresh(ev.request))
        else:
            self._fsm_error(out, type(ev).__name__)

    def _update(self, out: list[FsmAction], body: bytes) -> None:
        """UpdateMsg in Established."""
        session = self.session
        assert session is not None
        res = decode_update(body, session.context)
        if res.action == UpdateAction.SESSION_RESET:
            code, sub, data = res.notification() or (
                ErrorCode.UPDATE_MESSAGE_ERROR,
                UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
                b"",
            )
            self._to_idle(
                out,
                f"bad UPDATE: {res.problems[0].reason}",
                count=True,
                notify=Notification(code, sub, data),
            )
            return
        if session.hold_time:
            self._start(out, Timer.HOLD, session.hold_time)
        out.append(DeliverUpdate(res))

    def send_update(self, update: Update) -> list[FsmAction]:
        """Send an UPDATE in Established; like a KEEPALIVE it restarts the KeepaliveTimer."""
        if self.state != State.ESTABLISHED or self.session is None:
            raise FsmError(f"cannot send an UPDATE in {self.state.value}; wait for Established")
        out: list[FsmAction] = []
        self._send(out, update)
        if self.session.hold_time:
            self._start(out, Timer.KEEPALIVE, self.session.keepalive_time)
        return out
