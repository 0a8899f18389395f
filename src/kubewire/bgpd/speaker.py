"""Speaker: the asyncio driver around the sans-I/O BGP core.

Each neighbour has one ``Fsm`` (and, for the moment of a connection collision, a second
one for the other connection). Socket bytes, connection results and timer expiries
(``loop.call_later``) go in as FSM events; the returned actions are carried out here:
write bytes, arm timers, connect, close, and hand UPDATEs to the ``Rib``. Loc-RIB changes
are collected and flushed once per loop iteration, incrementally, into every established
neighbour's Adj-RIB-Out. Nothing here decides anything about BGP itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address, ip_address, ip_network

from kubewire.bgp.attributes import MpReachNlri, MpUnreachNlri
from kubewire.bgp.constants import Afi, CeaseSubcode, Safi
from kubewire.bgp.errors import EncodeError
from kubewire.bgp.fsm import (
    AutomaticStart,
    ConnectRetryTimerExpires,
    DataReceived,
    DeliverRouteRefresh,
    DeliverUpdate,
    DropConnection,
    Event,
    Fsm,
    FsmAction,
    FsmConfig,
    HoldTimerExpires,
    KeepaliveTimerExpires,
    ManualStart,
    ManualStop,
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
    collision_loser,
)
from kubewire.bgp.messages import Multiprotocol, RouteRefreshCapability
from kubewire.bgp.nlri import IPAddress, Prefix, key_prefix, prefix_key
from kubewire.bgp.path import Path, PathAttributes, Peer
from kubewire.bgp.rib import (
    AdjRibOut,
    ChangeBatch,
    ChangePart,
    ExportContext,
    Rib,
    RibChange,
    export_path,
)
from kubewire.bgp.update import Update, downgrade_as4
from kubewire.bgpd.config import NeighborConfig, SpeakerConfig
from kubewire.bgpd.errors import BgpdError
from kubewire.bgpd.sockets import (
    SocketFactory,
    default_socket,
    family_of,
    set_gtsm,
    set_md5,
    set_ttl_255,
)
from kubewire.bgpd.status import PeerStatus, RouteStatus, path_status

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096
STOP_GRACE = 2.0  # seconds stop() waits for NOTIFICATIONs to drain
_TIMER_EVENTS: dict[Timer, Callable[[], Event]] = {
    Timer.CONNECT_RETRY: ConnectRetryTimerExpires,
    Timer.HOLD: HoldTimerExpires,
    Timer.KEEPALIVE: KeepaliveTimerExpires,
}

ChangeListener = Callable[[list[RibChange]], None]
_NOBODY = object()  # matches no peer


def _version(sock: socket.socket) -> int:
    return 4 if sock.family == socket.AF_INET else 6


def _plain(address: str) -> IPAddress:
    addr = ip_address(address.split("%", 1)[0])
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class _Conn(asyncio.Protocol):
    """One TCP connection; it only forwards to the speaker."""

    def __init__(self, speaker: Speaker, nb: _Neighbor | None, sess: _Session | None) -> None:
        self.speaker = speaker
        self.nb = nb
        self.sess = sess
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.speaker._conns.add(self)
        if self.sess is None:
            self.speaker._accepted(self)
        else:
            self.speaker._connected_out(self)

    def data_received(self, data: bytes) -> None:
        if self.nb is not None and self.sess is not None and self.sess.conn is self:
            self.speaker._event(self.nb, self.sess, DataReceived(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.speaker._conns.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        if self.nb is not None and self.sess is not None and self.sess.conn is self:
            self.sess.conn = None
            self.nb.conn_error = str(exc) if exc else "connection closed by the peer"
            self.speaker._event(self.nb, self.sess, TcpConnectionFails())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # flushes what was written (a NOTIFICATION) first


@dataclass(eq=False)
class _Session:
    """One FSM with its connection and timers."""

    fsm: Fsm
    conn: _Conn | None = None
    outgoing: bool = False
    timers: dict[Timer, asyncio.TimerHandle] = field(default_factory=dict)
    connecting: asyncio.Task[None] | None = None

    def cancel_connect(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None

    def dispose(self) -> None:
        for h in self.timers.values():
            h.cancel()
        self.timers.clear()
        self.cancel_connect()
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()


@dataclass(eq=False)
class _Neighbor:
    config: NeighborConfig
    main: _Session
    extra: _Session | None = None
    peer: Peer | None = None  # the RIB's view, while Established
    session: Session | None = None
    ctx: ExportContext | None = None
    adj_out: AdjRibOut = field(default_factory=AdjRibOut)
    out_keys: set[int] = field(default_factory=set)  # adj_out's prefixes, as prefix keys
    established_at: float | None = None
    established_transitions: int = 0
    updates_received: int = 0
    updates_sent: int = 0
    failures: int = 0
    last_error: str | None = None
    conn_error: str | None = None
    restart: asyncio.TimerHandle | None = None
    stopped: bool = False

    def sessions(self) -> list[_Session]:
        return [self.main] if self.extra is None else [self.main, self.extra]

    def established(self) -> _Session | None:
        for s in self.sessions():
            if s.fsm.state == State.ESTABLISHED:
                return s
        return None


class Speaker:
    """A BGP speaker: ``await start()``, ``await stop()``; ``peers()`` and ``routes()`` for
    status; ``announce``/``withdraw`` change what we originate.

    ``socket_factory(family)`` makes every socket (listener and outgoing); pass one that
    creates sockets inside a network namespace to run the speaker there. ``on_change`` is
    called with every batch of Loc-RIB changes (a kernel route programmer hooks in here).
    """

    def __init__(
        self,
        config: SpeakerConfig,
        *,
        socket_factory: SocketFactory = default_socket,
        on_change: ChangeListener | None = None,
    ) -> None:
        self.config = config
        self._factory = socket_factory
        self._on_change = on_change
        # No import policy at all spares the RIB a call per received route.
        importing = any(n.import_policy is not None for n in config.neighbors)
        self.rib = Rib(config.decision(), import_policy=self._import if importing else None,
                       cluster_id=config.cluster_id)
        self._neighbors: dict[IPAddress, _Neighbor] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._listeners: list[socket.socket] = []  # to add/remove MD5 keys on reconfiguration
        self._conns: set[_Conn] = set()
        self._dirty: list[ChangePart] = []
        self._flush_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listen_ports: list[int] = []

    # -- lifecycle ----------------------------------------------------------------------

    def _fsm_config(self, n: NeighborConfig) -> FsmConfig:
        return FsmConfig(
            local_as=self.config.asn,
            bgp_id=self.config.router_id,
            peer_as=n.asn,
            hold_time=n.hold_time,
            connect_retry_time=n.connect_retry_time,
            capabilities=(
                Multiprotocol(Afi.IPV4, Safi.UNICAST)
                if n.address.version == 4
                else Multiprotocol(Afi.IPV6, Safi.UNICAST),
                RouteRefreshCapability(),
            ),
        )

    async def start(self) -> None:
        if self._loop is not None:
            raise BgpdError("the speaker is already running")
        self._loop = asyncio.get_running_loop()
        for o in self.config.originate:
            self._changed(self.rib.originate_batch(o.prefix, o.attrs))
        try:
            for addr in self.config.listen:
                await self._listen(addr)
        except BaseException:
            await self.stop()
            raise
        for n in self.config.neighbors:
            self._add_neighbor(n)

    def _add_neighbor(self, n: NeighborConfig) -> None:
        nb = _Neighbor(n, _Session(Fsm(self._fsm_config(n))))
        self._neighbors[n.address] = nb
        self._event(nb, nb.main, ManualStart(passive=n.passive))

    def set_neighbors(self, neighbors: Sequence[NeighborConfig]) -> None:
        """Live reconfiguration (call on the speaker's loop): new addresses are added and
        started, neighbours no longer listed are told Cease/Peer De-configured (RFC 4486)
        and their routes leave the Loc-RIB at once, changed ones (any field) are removed
        and added again; unchanged ones are not touched, their sessions stay up. Raises
        ``ConfigError`` (and changes nothing) if the new list is invalid."""
        new = tuple(neighbors)
        self.config = replace(self.config, neighbors=new)  # validates first
        if any(n.import_policy is not None for n in new):
            self.rib.import_policy = self._import
        if self._loop is None:
            return  # not running: start() builds the neighbours from the config
        wanted = {n.address: n for n in new}
        for addr, nb in list(self._neighbors.items()):
            if wanted.get(addr) != nb.config:
                self._remove_neighbor(nb)
        for sock in self._listeners:
            self._secure_listener(sock, new)
        for n in new:
            if n.address not in self._neighbors:
                self._add_neighbor(n)
        if not any(n.import_policy is not None for n in new):
            self.rib.import_policy = None

    def _remove_neighbor(self, nb: _Neighbor) -> None:
        nb.stopped = True  # no restart once Idle
        if nb.restart is not None:
            nb.restart.cancel()
            nb.restart = None
        for s in nb.sessions():
            # Established: NOTIFICATION, SessionDown (routes withdrawn), connection closed
            self._event(nb, s, ManualStop("neighbour removed from the configuration",
                                          CeaseSubcode.PEER_DECONFIGURED))
            s.dispose()
        nb.extra = None
        del self._neighbors[nb.config.address]
        for sock in self._listeners:
            if nb.config.password is not None and nb.config.address.version == _version(sock):
                with contextlib.suppress(BgpdError, OSError):
                    set_md5(sock, nb.config.address, None)

    def _secure_listener(self, sock: socket.socket, neighbors: Sequence[NeighborConfig]) -> None:
        for n in neighbors:
            if n.password is not None and n.address.version == _version(sock):
                set_md5(sock, n.address, n.password)
        if any(n.ttl_security is not None for n in neighbors):
            # The SYN-ACK leaves with the listener's TTL: a GTSM peer drops it below 255.
            # MINTTL is per peer, set on each accepted socket.
            set_ttl_255(sock)

    async def _listen(self, addr: IPAddress) -> None:
        assert self._loop is not None
        sock = self._factory(family_of(addr))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._secure_listener(sock, self.config.neighbors)
            sock.bind((str(addr), self.config.port))
            sock.listen(32)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise BgpdError(
                f"cannot listen on {addr} port {self.config.port}: {e.strerror}; is another"
                " BGP daemon running in this namespace?"
            ) from None
        except BaseException:
            sock.close()
            raise
        self.listen_ports.append(sock.getsockname()[1])
        server = await self._loop.create_server(lambda: _Conn(self, None, None), sock=sock)
        self._servers.append(server)
        self._listeners.append(sock)

    async def stop(self, reason: str = "speaker shutting down") -> None:
        """Send Cease to every peer, close every socket, cancel every timer."""
        connecting = [s.connecting for nb in self._neighbors.values() for s in nb.sessions()
                      if s.connecting is not None]
        for nb in self._neighbors.values():
            nb.stopped = True
            if nb.restart is not None:
                nb.restart.cancel()
                nb.restart = None
            for s in nb.sessions():
                self._event(nb, s, ManualStop(reason))
                s.dispose()
        for server in self._servers:
            server.close()
        if connecting:
            await asyncio.gather(*connecting, return_exceptions=True)
        waits = [c.closed for c in self._conns]
        for c in list(self._conns):
            c.close()
        if waits:
            await asyncio.wait(waits, timeout=STOP_GRACE)
        for c in list(self._conns):
            if c.transport is not None:
                c.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), STOP_GRACE)
        self._servers.clear()
        self._listeners.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._loop = None

    async def __aenter__(self) -> Speaker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- originated routes ----------------------------------------------------------------

    def announce(self, prefix: Prefix | str, attrs: PathAttributes | None = None) -> None:
        net = ip_network(prefix) if isinstance(prefix, str) else prefix
        self._changed(self.rib.originate_batch(net, attrs or PathAttributes()))

    def withdraw(self, prefix: Prefix | str) -> None:
        net = ip_network(prefix) if isinstance(prefix, str) else prefix
        self._changed(self.rib.withdraw_local_batch(net))

    # -- FSM plumbing -----------------------------------------------------------------------

    def _event(self, nb: _Neighbor, sess: _Session, ev: Event) -> None:
        was = sess.fsm.state
        actions = sess.fsm.handle(ev)
        if sess.fsm.state != was:
            log.debug("%s %s(%s): %s -> %s on %s%s", self.config.router_id, nb.config.address,
                      "main" if sess is nb.main else "extra", was.value, sess.fsm.state.value,
                      type(ev).__name__,
                      f" ({sess.fsm.last_error})" if sess.fsm.state == State.IDLE else "")
        for action in actions:
            self._act(nb, sess, action)
        if sess.fsm.state == State.IDLE and was != State.IDLE:
            self._went_idle(nb, sess)
        elif nb.extra is not None and sess.conn is None and sess.connecting is None:
            self._drop_dead(nb, sess)  # lost its connection (OpenSent -> Active)
        self._resolve_collision(nb)

    def _drop_dead(self, nb: _Neighbor, sess: _Session) -> None:
        """Of two sessions, one lost its connection without going Idle: the other carries on."""
        if sess.fsm.state not in (State.ACTIVE, State.CONNECT):
            return
        sess.dispose()
        if sess is nb.extra:
            nb.extra = None
        elif nb.extra is not None:
            nb.main, nb.extra = nb.extra, None

    def _act(self, nb: _Neighbor, sess: _Session, action: FsmAction) -> None:
        if isinstance(action, DeliverUpdate):  # by far the most frequent action: test it first
            nb.updates_received += 1
            if nb.peer is not None:
                self._changed(self.rib.receive_batch(nb.peer, action.result))
            return
        loop = self._loop
        if isinstance(action, Send):
            if sess.conn is not None and sess.conn.transport is not None:
                sess.conn.transport.write(action.data)
        elif isinstance(action, StartTimer):
            old = sess.timers.pop(action.timer, None)
            if old is not None:
                old.cancel()
            if loop is not None:
                sess.timers[action.timer] = loop.call_later(
                    action.seconds, self._timer, nb, sess, action.timer
                )
        elif isinstance(action, StopTimer):
            h = sess.timers.pop(action.timer, None)
            if h is not None:
                h.cancel()
        elif isinstance(action, DropConnection):
            sess.cancel_connect()
            if sess.conn is not None:
                conn, sess.conn = sess.conn, None
                conn.close()
        elif isinstance(action, SessionUp):
            self._session_up(nb, sess, action.session)
        elif isinstance(action, SessionDown):
            self._session_down(nb, action.reason)
        elif isinstance(action, DeliverRouteRefresh):
            if nb.peer is not None:
                nb.adj_out = AdjRibOut()
                nb.out_keys = set()
                self._full_export(nb, sess)
        elif not nb.config.passive and loop is not None:  # Connect
            sess.cancel_connect()
            sess.connecting = loop.create_task(self._connect(nb, sess))

    def _timer(self, nb: _Neighbor, sess: _Session, timer: Timer) -> None:
        sess.timers.pop(timer, None)
        if timer == Timer.CONNECT_RETRY and sess.connecting is not None:
            # the FSM abandons this attempt and starts another: say why in the status
            cfg = nb.config
            nb.last_error = (
                f"connect to {cfg.address} port {cfg.port}: timed out after"
                f" {cfg.connect_retry_time}s (peer down, filtered, or a TCP MD5 key mismatch)"
            )
        self._event(nb, sess, _TIMER_EVENTS[timer]())

    def _went_idle(self, nb: _Neighbor, sess: _Session) -> None:
        err = sess.fsm.last_error
        if err == "TCP connection failed" and nb.conn_error:
            err = f"{err}: {nb.conn_error}"
        nb.conn_error = None
        if err is not None:
            nb.last_error = err
        if sess is nb.extra:
            nb.extra = None
            sess.dispose()
            return
        if nb.extra is not None:  # the other connection carries on as the session
            sess.dispose()
            nb.main, nb.extra = nb.extra, None
            return
        for h in sess.timers.values():
            h.cancel()
        sess.timers.clear()
        if nb.stopped or self._loop is None:
            return
        delay = min(nb.config.idle_hold_time * 2 ** min(nb.failures, 10),
                    float(nb.config.connect_retry_time))
        nb.failures += 1
        if nb.restart is not None:
            nb.restart.cancel()
        nb.restart = self._loop.call_later(delay, self._restart, nb)

    def _restart(self, nb: _Neighbor) -> None:
        nb.restart = None
        if not nb.stopped and nb.main.fsm.state == State.IDLE:
            self._event(nb, nb.main, AutomaticStart(passive=nb.config.passive))

    def _resolve_collision(self, nb: _Neighbor) -> None:
        """RFC 4271 6.8, run whenever either connection moved."""
        a, b = nb.main, nb.extra
        if b is None:
            return
        opening = (State.OPEN_SENT, State.OPEN_CONFIRM)
        sa, sb = a.fsm.state, b.fsm.state
        loser: _Session | None = None
        if sa == State.ESTABLISHED and sb in opening:
            loser = b
        elif sb == State.ESTABLISHED and sa in opening:
            loser = a
        elif sa == sb == State.OPEN_CONFIRM:
            # Only once both OPENs are in: deciding earlier, on one OPEN, can dump the
            # connection the peer (which has not seen ours yet) is about to establish.
            known = a.fsm.session or b.fsm.session
            assert known is not None
            if a.outgoing == b.outgoing:
                loser = a  # two connections the same way (the peer restarted): keep the newer
            else:
                side = collision_loser(self.config.router_id, known.peer_open.bgp_id)
                loser = a if a.outgoing == (side == "outgoing") else b
        if loser is not None:
            self._event(nb, loser, OpenCollisionDump())

    # -- connections ----------------------------------------------------------------------

    async def _connect(self, nb: _Neighbor, sess: _Session) -> None:
        assert self._loop is not None
        cfg = nb.config
        sock = self._factory(family_of(cfg.address))
        try:
            sock.setblocking(False)
            if cfg.password is not None:
                set_md5(sock, cfg.address, cfg.password)
            if cfg.ttl_security is not None:
                set_gtsm(sock, cfg.ttl_security)
            if cfg.local_address is not None:
                sock.bind((str(cfg.local_address), 0))
            await asyncio.wait_for(
                self._loop.sock_connect(sock, (str(cfg.address), cfg.port)),
                timeout=cfg.connect_retry_time,
            )
            await self._loop.create_connection(lambda: _Conn(self, nb, sess), sock=sock)
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, TimeoutError, BgpdError) as e:
            sock.close()
            if sess.connecting is asyncio.current_task():
                sess.connecting = None
                why = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else str(e)
                nb.conn_error = f"connect to {cfg.address} port {cfg.port}: {why or 'timed out'}"
                self._event(nb, sess, TcpConnectionFails())

    def _connected_out(self, conn: _Conn) -> None:
        nb, sess = conn.nb, conn.sess
        assert nb is not None and sess is not None
        sess.connecting = None  # finished (or a newer attempt, which will find itself beaten)
        if sess.fsm.state != State.CONNECT or sess.conn is not None or nb.stopped:
            conn.nb = conn.sess = None
            conn.close()  # superseded (an incoming connection got there first)
            return
        sess.conn, sess.outgoing = conn, True
        self._event(nb, sess, TcpCrAcked())

    def _accepted(self, conn: _Conn) -> None:
        assert conn.transport is not None
        peer = _plain(conn.transport.get_extra_info("peername")[0])
        nb = self._neighbors.get(peer)
        if nb is None or nb.stopped:
            conn.close()  # not a configured neighbour
            return
        if nb.config.ttl_security is not None:
            sock = conn.transport.get_extra_info("socket")
            try:
                set_gtsm(sock, nb.config.ttl_security)
            except OSError:
                conn.close()
                return
        main = nb.main
        state = main.fsm.state
        log.debug("%s %s: incoming connection, main session %s%s", self.config.router_id,
                  peer, state.value, " (connecting)" if main.connecting else "")
        if state == State.IDLE:
            if nb.restart is not None:
                nb.restart.cancel()
                nb.restart = None
            self._event(nb, main, AutomaticStart(passive=True))
            state = main.fsm.state
        if state in (State.CONNECT, State.ACTIVE) and main.connecting is None:
            conn.nb, conn.sess = nb, main
            main.conn, main.outgoing = conn, False
            self._event(nb, main, TcpConnectionConfirmed())
        elif nb.extra is None and (
            state in (State.OPEN_SENT, State.OPEN_CONFIRM) or main.connecting is not None
        ):
            # Both connections go on until OPENs name the BGP Identifiers (RFC 4271 6.8).
            # Dropping our own attempt here instead livelocks when both sides do it at once.
            extra = _Session(Fsm(self._fsm_config(nb.config)))
            nb.extra = extra
            conn.nb, conn.sess = nb, extra
            extra.conn, extra.outgoing = conn, False
            self._event(nb, extra, ManualStart(passive=True))
            self._event(nb, extra, TcpConnectionConfirmed())
        else:
            conn.close()  # RFC 4271 6.8: an Established session keeps its connection

    # -- sessions and routes -----------------------------------------------------------------

    def _session_up(self, nb: _Neighbor, sess: _Session, session: Session) -> None:
        assert sess.conn is not None and sess.conn.transport is not None
        local = _plain(sess.conn.transport.get_extra_info("sockname")[0])
        nb.session = session
        nb.peer = Peer(
            nb.config.address,
            session.peer_open.asn,
            session.peer_open.bgp_id,
            self.config.asn,
            nb.config.rr_client,
        )
        nb.ctx = ExportContext(local, nb.config.next_hop_self, self.config.cluster_id,
                               nb.config.keep_next_hop)
        nb.established_at = time.monotonic()
        nb.established_transitions += 1
        nb.failures = 0
        nb.last_error = None
        nb.adj_out = AdjRibOut()
        nb.out_keys = set()
        self._full_export(nb, sess)

    def _session_down(self, nb: _Neighbor, reason: str) -> None:
        peer = nb.peer
        nb.peer = nb.session = nb.ctx = None
        nb.established_at = None
        nb.adj_out = AdjRibOut()
        nb.out_keys = set()
        nb.last_error = reason
        if peer is not None:
            self._changed(self.rib.peer_down_batch(peer))

    def _import(self, path: Path) -> Path | None:
        if path.peer is None:
            return path
        nb = self._neighbors.get(path.peer.address)
        if nb is None or nb.config.import_policy is None:
            return path
        return nb.config.import_policy(path)

    def _export_one(self, nb: _Neighbor, prefix: Prefix) -> PathAttributes | None:
        d = self.rib.loc.get(prefix)
        if d is None or nb.peer is None or nb.ctx is None:
            return None
        path = d.best
        if path.peer is nb.peer and nb.config.export_policy is None:
            return None  # never echoed to where it came from (export_path's first rule)
        if nb.config.export_policy is not None:
            got = nb.config.export_policy(path)
            if got is None:
                return None
            path = got
        if nb.peer.address.version != prefix.version and path.peer is None:
            return None  # no next hop of that family on this session
        return export_path(path, nb.peer, self.rib.config, nb.ctx)

    def _full_export(self, nb: _Neighbor, sess: _Session) -> None:
        desired: dict[Prefix, PathAttributes] = {}
        for prefix in self.rib.loc:
            attrs = self._export_one(nb, prefix)
            if attrs is not None:
                desired[prefix] = attrs
        self._send_updates(nb, sess, nb.adj_out.sync(desired))
        nb.out_keys = {prefix_key(p) for p in nb.adj_out.table}
        self._send_updates(nb, sess, [Update()])  # End-of-RIB (RFC 4724 2)

    def _changed(self, batch: ChangeBatch) -> None:
        if not batch:
            return
        self._dirty.extend(batch.parts)
        if self._on_change is not None:
            self._on_change(self.rib.changes(batch))
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Bring every established neighbour's Adj-RIB-Out up to date for the prefixes
        whose best path changed since the last flush (all of a burst of UPDATEs at once)."""
        self._flush_handle = None
        parts, self._dirty = self._dirty, []
        for nb in self._neighbors.values():
            sess = nb.established()
            if sess is None or nb.peer is None:
                continue
            # A bulk change whose best paths all came from this very neighbour (never
            # echoed back) or that withdrew prefixes it was never sent is nothing to it:
            # a full table from one peer is skipped an UPDATE at a time, not per prefix.
            source = nb.peer if nb.config.export_policy is None else _NOBODY
            todo: dict[int, None] = {}
            for part in parts:
                if part.news is None and (part.new is None or part.best_peer() is source) \
                        and nb.out_keys.isdisjoint(part.keys):
                    continue
                todo.update(dict.fromkeys(part.keys))
            if not todo:
                continue
            keys = list(todo)
            dirty = [key_prefix(k) for k in keys]
            desired: dict[Prefix, PathAttributes] = {}
            for p in dirty:
                attrs = self._export_one(nb, p)
                if attrs is not None:
                    desired[p] = attrs
            table = nb.adj_out.table
            held = {p: table[p] for p in dirty if p in table}
            if not desired and not held:
                continue
            part_out = AdjRibOut(held)
            updates = part_out.sync(desired)
            for p in dirty:
                table.pop(p, None)
            table.update(part_out.table)
            for k, p in zip(keys, dirty, strict=True):
                if p in table:
                    nb.out_keys.add(k)
                else:
                    nb.out_keys.discard(k)
            self._send_updates(nb, sess, updates)

    def _send_updates(self, nb: _Neighbor, sess: _Session, updates: Iterable[Update]) -> None:
        session = sess.fsm.session
        if sess.fsm.state != State.ESTABLISHED or session is None:
            return
        for u in updates:
            if not session.context.as4:
                u = downgrade_as4(u)
            for piece in _split(u, session):
                for action in sess.fsm.send_update(piece):
                    self._act(nb, sess, action)
                nb.updates_sent += 1

    # -- status ---------------------------------------------------------------------------

    def peers(self) -> list[PeerStatus]:
        out = []
        now = time.monotonic()
        for addr in sorted(self._neighbors, key=lambda a: (a.version, a)):
            nb = self._neighbors[addr]
            sess = nb.established() or nb.main
            received = accepted = 0
            if nb.peer is not None:
                received = self.rib.received(nb.peer)
                accepted = self.rib.accepted(nb.peer)
            session = nb.session
            out.append(
                PeerStatus(
                    address=str(addr),
                    asn=nb.config.asn,
                    state=sess.fsm.state.value,
                    description=nb.config.description,
                    router_id=None if nb.peer is None else str(nb.peer.router_id),
                    uptime=None if nb.established_at is None else now - nb.established_at,
                    prefixes_received=received,
                    prefixes_accepted=accepted,
                    prefixes_advertised=len(nb.adj_out.table),
                    updates_received=nb.updates_received,
                    updates_sent=nb.updates_sent,
                    established_transitions=nb.established_transitions,
                    hold_time=None if session is None else session.hold_time,
                    keepalive_time=None if session is None else session.keepalive_time,
                    last_error=nb.last_error,
                )
            )
        return out

    def routes(self, prefix: Prefix | str | None = None) -> list[RouteStatus]:
        """Every path we hold (locally originated, received), per prefix, the best marked."""
        if prefix is None:
            prefixes = set(self.rib.prefixes())
        else:
            prefixes = {ip_network(prefix) if isinstance(prefix, str) else prefix}
        out = []
        for p in sorted(prefixes, key=lambda x: (x.version, x)):
            d = self.rib.loc.get(p)
            cands = d.candidates if d is not None else tuple(self.rib.candidates(p))
            used = {(c.peer, c.received) for c in cands}
            rows = []
            every: list[Path] = self.rib.paths(p)
            for c in cands:
                best = d is not None and c is d.best
                multi = d is not None and len(d.multipath) > 1 and any(c is m for m in d.multipath)
                rows.append(path_status(c, accepted=True, best=best, multipath=multi))
            for raw in every:
                if (raw.peer, raw.received) not in used:
                    rows.append(path_status(raw, accepted=False, best=False, multipath=False))
            if not rows:
                continue
            out.append(
                RouteStatus(
                    prefix=str(p),
                    paths=tuple(rows),
                    reason=None if d is None else d.reason.value,
                    explanation="" if d is None else d.explain(),
                )
            )
        return out


def _split(update: Update, session: Session) -> list[Update]:
    """``update`` as UPDATEs that each fit in one message (halving the prefix lists)."""
    try:
        if len(update.to_wire(session.context)) <= MAX_MESSAGE:
            return [update]
    except EncodeError:
        pass
    reach = update.nlri or update.withdrawn
    mp = next(
        (a for a in update.attributes if isinstance(a, MpReachNlri | MpUnreachNlri)), None
    )
    if len(reach) > 1:
        half = len(reach) // 2
        if update.nlri:
            a, b = replace(update, nlri=reach[:half]), replace(update, nlri=reach[half:])
        else:
            a = replace(update, withdrawn=reach[:half])
            b = replace(update, withdrawn=reach[half:])
        return _split(a, session) + _split(b, session)
    if isinstance(mp, MpReachNlri) and len(mp.nlri) > 1:
        half = len(mp.nlri) // 2
        return [
            *_split(_with_mp(update, mp, replace(mp, nlri=mp.nlri[:half])), session),
            *_split(_with_mp(update, mp, replace(mp, nlri=mp.nlri[half:])), session),
        ]
    if isinstance(mp, MpUnreachNlri) and len(mp.withdrawn) > 1:
        half = len(mp.withdrawn) // 2
        return [
            *_split(_with_mp(update, mp, replace(mp, withdrawn=mp.withdrawn[:half])), session),
            *_split(_with_mp(update, mp, replace(mp, withdrawn=mp.withdrawn[half:])), session),
        ]
    raise BgpdError(f"an UPDATE for one prefix does not fit in {MAX_MESSAGE} octets")


def _with_mp(update: Update, old: object, new: object) -> Update:
    return replace(
        update, attributes=tuple(new if a is old else a for a in update.attributes)  # type: ignore[misc]
    )

