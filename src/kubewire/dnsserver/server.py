"""DnsServer: the asyncio driver around ``respond`` (UDP and TCP on one address).

The core decides every answer; this module only moves bytes. A query the zone does not own
goes to ``fallback`` (the future ``forward`` plugin), awaited in its own task so one slow
upstream never stalls the socket. The zone is a plain attribute read once per query, so
``set_zone`` swaps a rebuilt zone in between two queries without dropping any.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import dns.message
import dns.rcode

from kubewire.dns.answer import MAX_TCP, NotMine, respond
from kubewire.dns.zone import ClusterZone

SERVFAIL = 2
UDP_MAX_NO_EDNS = 512  # RFC 1035; the core raises it for EDNS0 clients
TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 6.2.3 suggests seconds, not minutes
FALLBACK_TIMEOUT = 5.0  # a backstop: the fallback is expected to enforce its own, shorter one
MAX_PENDING_FALLBACKS = 1024  # beyond this, answer SERVFAIL at once instead of queueing

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
    """Serve ``zone_provider()`` on ``host:port`` over UDP and TCP (port 0: pick one).

    ``port`` holds the bound port after ``start()``; UDP and TCP share it.
    """

    def __init__(self, zone_provider: Callable[[], ClusterZone], host: str = "127.0.0.1",
                 port: int = 0, *, fallback: Fallback | None = None,
                 tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
                 fallback_timeout: float = FALLBACK_TIMEOUT) -> None:
        self._zone_provider = zone_provider
        self.host = host
        self.port = port
        self._fallback = fallback
        self._tcp_idle_timeout = tcp_idle_timeout
        self._fallback_timeout = fallback_timeout
        self.counters = DnsCounters()
        self._zone: ClusterZone | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._pending = 0  # fallback calls in flight

    @property
    def zone(self) -> ClusterZone:
        if self._zone is None:
            self._zone = self._zone_provider()
        return self._zone

    def set_zone(self, zone: ClusterZone) -> None:
        """Swap in a rebuilt zone; queries already parsed finish against the old one."""
        self._zone = zone

    def reload(self) -> None:
        """Ask the provider again (after the cluster changed)."""
        self._zone = self._zone_provider()

    async def start(self) -> None:
        self.reload()
        loop = asyncio.get_running_loop()
        # Bind UDP first so port 0 picks one number, then TCP on the same number. Another
        # process could hold that TCP port; then retry with a fresh pair (bounded).
        for attempt in range(8):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port))
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port,
                                                       reuse_address=True)
            except OSError:
                transport.close()
                if self.port or attempt == 7:
                    raise
                continue
            self._udp = transport
            self.port = port
            return

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
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

    def _udp_query(self, data: bytes, addr: Any) -> None:
        c = self.counters
        c.queries += 1
        out = respond(self.zone, data, UDP_MAX_NO_EDNS, "udp")
        if out is None:
            c.drops += 1
        elif isinstance(out, NotMine):
            self._spawn(self._udp_fallback(data, addr))
        else:
            self._udp_send(out, addr)

    def _udp_send(self, out: bytes, addr: Any) -> None:
        if self._udp is not None:
            self.counters.responses[out[3] & 0xF] += 1
            self._udp.sendto(out, addr)

    async def _udp_fallback(self, query: bytes, addr: Any) -> None:
        out = await self._forward(query)
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
                out = respond(self.zone, data, MAX_TCP, "tcp")
                if isinstance(out, NotMine):
                    out = await self._forward(data)
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

    # -- fallback --------------------------------------------------------------------------

    async def _forward(self, query: bytes) -> bytes | None:
        """The fallback's reply, or SERVFAIL when there is none (or none in time)."""
        if self._fallback is None:
            return servfail(query)
        self.counters.fallbacks += 1
        if self._pending >= MAX_PENDING_FALLBACKS:
            self.counters.fallback_failures += 1
            return servfail(query)
        self._pending += 1
        try:
            out = await asyncio.wait_for(self._fallback(query), self._fallback_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # TimeoutError or anything the fallback raised: the client sees SERVFAIL
            out = None
        finally:
            self._pending -= 1
        if out is None or len(out) < 12 or out[:2] != query[:2]:
            self.counters.fallback_failures += 1
            return servfail(query)
        return out

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._server._udp_query(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a client that went away: nothing to do


__all__ = ["DnsCounters", "DnsServer", "Fallback", "servfail"]
