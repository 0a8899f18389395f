"""DnsServer: the asyncio driver around ``respond`` (UDP and TCP on one address).

The core (or a plugin chain) decides every answer; this module only moves bytes. A query
that needs I/O (``NotMine`` handed to ``fallback``, or a chain's ``Pending``) is awaited in
its own task so one slow upstream never stalls the socket. The zone and the chain are plain
attributes read per query (or per batch of datagrams), so swapping them drops nothing.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import dns.message
import dns.rcode

from kubewire.dns.answer import MAX_TCP, NotMine, respond
from kubewire.dns.zone import ClusterZone
from kubewire.dnsserver.chain import Handler, Pending, Request, Result

SERVFAIL = 2
UDP_MAX_NO_EDNS = 512  # RFC 1035; the core raises it for EDNS0 clients
TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 6.2.3 suggests seconds, not minutes
FALLBACK_TIMEOUT = 5.0  # a backstop: the fallback is expected to enforce its own, shorter one
MAX_PENDING_FALLBACKS = 1024  # beyond this, answer SERVFAIL at once instead of queueing
UDP_BATCH = 64  # datagrams read per wake-up before yielding to other callbacks

Fallback = Callable[[bytes], Awaitable[bytes | None]]

_HEADER = struct.Struct("!HHHHHH")
_LEN = struct.Struct("!H")
_QR, _RD, _CD, _OPCODE = 0x8000, 0x0100, 0x0010, 0x7800


@dataclass(slots=True)
class DnsCounters:
    """What ``metrics`` will export; plain ints, bumped from the event loop thread only."""

    queries: int = 0  # every datagram and every TCP message received
    responses: Counter[int] = field(default_factory=Counter)  # by rcode (low 4 header bits)
    drops: int = 0  # the core said drop (not a query, unreadable header)
    fallbacks: int = 0  # queries handed to the fallback
    fallback_failures: int = 0  # fallback gave nothing in time, raised, or was over capacity
    tcp_connections: int = 0
    tcp_closed_malformed: int = 0  # zero length prefix or a message the core dropped
    send_failures: int = 0  # sendto() refused a reply (full buffer, unreachable client)


def servfail(query: bytes) -> bytes | None:
    """SERVFAIL for ``query``, echoing its id, question and EDNS; None if it has no header."""
    if len(query) < 12:
        return None
    try:
        msg = dns.message.from_wire(query)
        reply = dns.message.make_response(msg)
        reply.set_rcode(dns.rcode.SERVFAIL)
        out: bytes = reply.to_wire()
        return out
    except Exception:  # unparseable question: a bare header still tells the client to stop
        qid, flags = _HEADER.unpack_from(query)[:2]
        return _HEADER.pack(qid, _QR | (flags & (_OPCODE | _RD | _CD)) | SERVFAIL, 0, 0, 0, 0)


class DnsServer:
    """Serve ``zone_provider()`` (or a plugin chain, ``dispatch``) on ``host:port``, UDP+TCP.

    ``port`` 0 picks one; after ``start()`` it holds the bound port, shared by UDP and TCP.
    ``dispatch`` (a chain from ``kubewire.dnsserver.app``) replaces the zone: it returns the
    reply, None to drop, or a ``Pending`` the server resolves off the socket callback. Assign
    ``server.dispatch`` to swap chains between two queries (reloads drop nothing).
    """

    def __init__(self, zone_provider: Callable[[], ClusterZone] | None = None,
                 host: str = "127.0.0.1", port: int = 0, *, fallback: Fallback | None = None,
                 dispatch: Handler | None = None,
                 tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
                 fallback_timeout: float = FALLBACK_TIMEOUT) -> None:
        if zone_provider is None and dispatch is None:
            raise ValueError("DnsServer needs a zone_provider or a dispatch chain")
        self._zone_provider = zone_provider
        self.host = host
        self.port = port
        self._fallback = fallback
        self._tcp_idle_timeout = tcp_idle_timeout
        self._fallback_timeout = fallback_timeout
        self.dispatch: Handler = dispatch if dispatch is not None else self._zone_dispatch
        self.counters = DnsCounters()
        self._zone: ClusterZone | None = None
        self._sock: socket.socket | None = None
        self._family = 1
        self._tcp: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._pending = 0  # fallback calls in flight

    @property
    def zone(self) -> ClusterZone:
        if self._zone is None:
            assert self._zone_provider is not None, "this server runs a dispatch chain"
            self._zone = self._zone_provider()
        return self._zone

    def set_zone(self, zone: ClusterZone) -> None:
        """Swap in a rebuilt zone; queries already parsed finish against the old one."""
        self._zone = zone

    def reload(self) -> None:
        """Ask the provider again (after the cluster changed)."""
        if self._zone_provider is not None:
            self._zone = self._zone_provider()

    def _zone_dispatch(self, req: Request) -> Result:
        out = respond(self.zone, req.wire, req.max_udp,
                      "tcp" if req.proto == "tcp" else "udp")
        if isinstance(out, NotMine):
            if self._fallback is None:
                return servfail(req.wire)
            return Pending(req.wire, self._fallback)
        return out

    @property
    def pending(self) -> int:
        """Continuations (fallback, forward) in flight right now."""
        return self._pending

    async def start(self) -> None:
        self.reload()
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Bind UDP first so port 0 picks one number, then TCP on the same number. Another
        # process could hold that TCP port; then retry with a fresh pair (bounded).
        for attempt in range(8):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((self.host, self.port))
                port = sock.getsockname()[1]
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port,
                                                       reuse_address=True)
            except OSError:
                sock.close()
                if self.port or attempt == 7:
                    raise
                continue
            self._sock = sock
            self._family = 2 if family == socket.AF_INET6 else 1
            # A reader callback on the raw socket rather than a DatagramProtocol: it drains
            # every datagram already queued per wake-up (one select per batch, not per query)
            # and replies with one sendto() without transport bookkeeping.
            loop.add_reader(sock.fileno(), self._udp_readable)
            self.port = port
            return

    async def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
            self._tcp = None

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- UDP -------------------------------------------------------------------------------

    def _udp_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        c = self.counters
        dispatch = self.dispatch
        family = self._family
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an error queued by an earlier send (ICMP); the next read is fine
            c.queries += 1
            try:
                out = dispatch(Request(data, addr, "udp", UDP_MAX_NO_EDNS, family))
            except Exception:  # a plugin bug must cost one query, not the listener
                out = servfail(data)
            if out is None:
                c.drops += 1
            elif isinstance(out, Pending):
                self._spawn(self._udp_pending(out, addr))
            else:
                c.responses[out[3] & 0xF] += 1
                try:
                    sock.sendto(out, addr)
                except OSError:
                    c.send_failures += 1

    def _udp_send(self, out: bytes, addr: Any) -> None:
        if self._sock is not None:
            self.counters.responses[out[3] & 0xF] += 1
            try:
                self._sock.sendto(out, addr)
            except OSError:
                self.counters.send_failures += 1

    async def _udp_pending(self, pending: Pending, addr: Any) -> None:
        out = await self._resolve(pending)
        if out is None:
            self.counters.drops += 1
        else:
            self._udp_send(out, addr)

    # -- TCP -------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.counters.tcp_connections += 1
        sock = writer.get_extra_info("socket")
        family = 2 if sock is not None and sock.family == socket.AF_INET6 else 1
        peer = writer.get_extra_info("peername")
        try:
            # Pipelined queries are read and answered one after another, so replies keep the
            # query order (RFC 7766 allows reordering; keeping order is the simple choice).
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2),
                                                  self._tcp_idle_timeout)
                    (size,) = _LEN.unpack(head)
                    if size == 0:
                        self.counters.tcp_closed_malformed += 1
                        return
                    # A client that sends a prefix and stalls is as idle as a silent one.
                    data = await asyncio.wait_for(reader.readexactly(size),
                                                  self._tcp_idle_timeout)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                self.counters.queries += 1
                try:
                    out = self.dispatch(Request(data, peer, "tcp", MAX_TCP, family))
                except Exception:
                    out = servfail(data)
                if isinstance(out, Pending):
                    out = await self._resolve(out)
                if out is None or len(out) > MAX_TCP:
                    # No reply would leave the client waiting on a stream it cannot resync.
                    self.counters.drops += 1
                    self.counters.tcp_closed_malformed += 1
                    return
                self.counters.responses[out[3] & 0xF] += 1
                writer.write(_LEN.pack(len(out)) + out)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    # -- pending (fallback, forward) -------------------------------------------------------

    async def _resolve(self, pending: Pending) -> bytes | None:
        """The continuation's reply after its transforms; SERVFAIL if none came in time."""
        query = pending.query
        self.counters.fallbacks += 1
        out: bytes | None = None
        if self._pending >= MAX_PENDING_FALLBACKS:
            self.counters.fallback_failures += 1
        else:
            self._pending += 1
            try:
                async with asyncio.timeout(self._fallback_timeout):
                    out = await pending.resolve(query)
            except asyncio.CancelledError:
                raise
            except Exception:  # TimeoutError or anything raised: the client sees SERVFAIL
                out = None
            finally:
                self._pending -= 1
            if out is None or len(out) < 12 or out[:2] != query[:2]:
                self.counters.fallback_failures += 1
                out = None
        if out is None:
            out = servfail(query)
            if out is None:
                return None
        try:
            return pending.finish(out)
        except Exception:  # a transform's bug: still answer, and never with a wrong id
            return servfail(query)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["DnsCounters", "DnsServer", "Fallback", "servfail"]
