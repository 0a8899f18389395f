"""forward: send queries the chain could not answer to upstream servers.

One connected UDP socket per upstream carries every query, told apart by a fresh 16-bit id
(the client's id is restored on the way back), so load costs no socket per query. A reply
with TC set is asked again over TCP; TCP clients are forwarded over TCP. Upstreams are tried
in ``policy`` order within one overall deadline (``timeout``): with more upstreams left, one
attempt gets half the remaining time, so a dead first upstream still leaves room for the
next. ``max_fails`` consecutive failures mark an upstream down; it is tried again (passively,
by a real query) once ``health_check`` has passed.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from kubewire.dns.corefile import ForwardConfig, in_zone
from kubewire.dnsserver.chain import (
    REFUSED,
    Handler,
    Pending,
    Request,
    Result,
    edns_of,
    end_of_chain,
    name_text,
    question,
    reply,
)
from kubewire.dnsserver.errors import DnsServerError
from kubewire.dnsserver.metrics import Family, rcode_label

_LEN = struct.Struct("!H")
_TC = 0x02  # in the third header byte


class UpstreamError(DnsServerError):
    """One upstream gave no usable reply (timeout, refused connection, mismatched reply)."""


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.upstream._received(data)

    def error_received(self, exc: Exception) -> None:
        self.upstream._error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.upstream._lost()


class Upstream:
    """One upstream server with its shared UDP socket and health."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.fails = 0
        self.last_fail = 0.0
        self.requests = 0
        self.rcodes: defaultdict[int, int] = defaultdict(int)
        self._transport: asyncio.DatagramTransport | None = None
        self._opening: asyncio.Future[None] | None = None
        self._waiting: dict[int, tuple[asyncio.Future[bytes], bytes]] = {}

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else \
            f"[{self.host}]:{self.port}"

    def healthy(self, max_fails: int, health_check: float, now: float) -> bool:
        return max_fails == 0 or self.fails < max_fails or now - self.last_fail >= health_check

    async def query(self, wire: bytes, deadline: float, tcp: bool) -> bytes:
        loop = asyncio.get_running_loop()
        self.requests += 1
        if not tcp:
            out = await self._udp(wire, deadline, loop)
            if not out[2] & _TC:
                return out
        return await self._tcp(wire, deadline, loop)

    async def _udp(self, wire: bytes, deadline: float,
                   loop: asyncio.AbstractEventLoop) -> bytes:
        if self._transport is None:
            await self._open(loop)
        assert self._transport is not None
        q = question(wire)
        check = wire[12:q[3]].lower() if q is not None else b""
        qid = random.getrandbits(16)
        while qid in self._waiting:
            qid = random.getrandbits(16)
        fut: asyncio.Future[bytes] = loop.create_future()
        self._waiting[qid] = (fut, check)
        try:
            self._transport.sendto(_LEN.pack(qid) + wire[2:])
            async with asyncio.timeout_at(deadline):
                out = await fut
        finally:
            self._waiting.pop(qid, None)
        return wire[:2] + out[2:]

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._opening is None:
            self._opening = loop.create_future()
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpClient(self), remote_addr=(self.host, self.port))
                self._transport = transport
                self._opening.set_result(None)
            except OSError as exc:
                self._opening.set_exception(exc)
                self._opening.exception()  # retrieved: waiters re-raise it below
                self._opening = None
                raise
        else:
            await asyncio.shield(self._opening)

    def _received(self, data: bytes) -> None:
        if len(data) < 12 or not data[2] & 0x80:
            return
        entry = self._waiting.get(_LEN.unpack_from(data)[0])
        if entry is None:
            return  # late (after a timeout) or unsolicited: ignore
        fut, check = entry
        # The question must match too: an id alone is a guess away from a spoofed reply.
        if check and data[12:12 + len(check)].lower() != check:
            return
        if not fut.done():
            fut.set_result(data)

    def _error(self, exc: Exception) -> None:
        # ICMP port unreachable on the connected socket: nobody listens upstream; fail fast.
        for fut, _ in list(self._waiting.values()):
            if not fut.done():
                fut.set_exception(UpstreamError(str(exc)))

    def _lost(self) -> None:
        self._transport = None
        self._opening = None

    async def _tcp(self, wire: bytes, deadline: float,
                   loop: asyncio.AbstractEventLoop) -> bytes:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(_LEN.pack(len(wire)) + wire)
                await writer.drain()
                (size,) = _LEN.unpack(await reader.readexactly(2))
                out = await reader.readexactly(size)
            finally:
                writer.close()
        if len(out) < 12 or out[:2] != wire[:2]:
            raise UpstreamError("TCP reply with another id")
        return out

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for fut, _ in list(self._waiting.values()):
            if not fut.done():
                fut.set_exception(UpstreamError("upstream closed"))


class Forward:
    """The forward plugin: ``handle`` is sync and returns a ``Pending`` for its zone."""

    def __init__(self, cfg: ForwardConfig, upstreams: list[Upstream],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.upstreams = upstreams
        self.next: Handler = end_of_chain
        self.inflight = 0
        self.rejected = 0
        self._clock = clock
        self._rr = 0
        self._all = cfg.zone == "." and not cfg.except_zones
        self._resolve_udp = self._resolver(False)
        self._resolve_tcp = self._resolver(True)

    def handle(self, req: Request) -> Result:
        if not self._all:
            q = question(req.wire)
            name = name_text(q[0]) if q is not None else ""
            if not in_zone(name, self.cfg.zone) or any(
                    in_zone(name, z) for z in self.cfg.except_zones):
                return self.next(req)
        limit = self.cfg.max_concurrent
        if limit and self.inflight >= limit:
            self.rejected += 1
            return reply(req.wire, REFUSED)  # what CoreDNS answers over max_concurrent
        tcp = self.cfg.force_tcp or (req.proto == "tcp" and not self.cfg.prefer_udp)
        return Pending(req.wire, self._resolve_tcp if tcp else self._resolve_udp)

    def _order(self) -> list[Upstream]:
        ups = self.upstreams
        if self.cfg.policy == "random":
            ups = random.sample(ups, len(ups))
        elif self.cfg.policy == "round_robin":
            self._rr = (self._rr + 1) % len(ups)
            ups = ups[self._rr:] + ups[:self._rr]
        now = self._clock()
        good = [u for u in ups if u.healthy(self.cfg.max_fails, self.cfg.health_check, now)]
        # All down: try them anyway, as CoreDNS does, rather than fail without asking.
        return good + [u for u in ups if u not in good]

    def _resolver(self, tcp: bool) -> Callable[[bytes], Any]:
        async def resolve(query: bytes) -> bytes | None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.cfg.timeout
            self.inflight += 1
            try:
                order = self._order()
                for i, up in enumerate(order):
                    now = loop.time()
                    if now >= deadline:
                        break
                    last = i == len(order) - 1
                    attempt = deadline if last else now + (deadline - now) / 2
                    try:
                        out = await up.query(query, attempt, tcp)
                    except (TimeoutError, OSError, UpstreamError, asyncio.IncompleteReadError):
                        up.fails += 1
                        up.last_fail = self._clock()
                        continue
                    up.fails = 0
                    up.rcodes[out[3] & 0xF] += 1
                    if not tcp and len(out) > _udp_limit(query):
                        return _truncated(query, out)
                    return out
                return None
            finally:
                self.inflight -= 1
        return resolve

    def families(self) -> list[Family]:
        req = [("coredns_forward_requests_total", {"to": u.label}, float(u.requests))
               for u in self.upstreams]
        resp = [("coredns_forward_responses_total", {"to": u.label, "rcode": rcode_label(r)},
                 float(n)) for u in self.upstreams for r, n in sorted(u.rcodes.items())]
        return [
            ("coredns_forward_requests_total", "counter", "Counter of requests made per "
             "upstream.", req),
            ("coredns_forward_responses_total", "counter", "Counter of responses received "
             "per upstream.", resp),
            ("coredns_forward_max_concurrent_rejects_total", "counter", "Queries refused "
             "because max_concurrent was reached.",
             [("coredns_forward_max_concurrent_rejects_total", {}, float(self.rejected))]),
        ]

    def close(self) -> None:
        for u in self.upstreams:
            u.close()


def _udp_limit(query: bytes) -> int:
    q = question(query)
    edns = edns_of(query, q[3]) if q is not None else None
    return max(512, edns[0]) if edns is not None else 512


def _truncated(query: bytes, out: bytes) -> bytes:
    """Header and question with TC: a UDP client gets no more than it can take (RFC 2181 9)."""
    q = question(query)
    end = q[3] if q is not None else 12
    flags = ((out[2] | _TC) << 8) | out[3]
    return query[:2] + struct.pack("!HHHHH", flags, 1 if q else 0, 0, 0, 0) + query[12:end]


def resolv_conf_nameservers(text: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf, in order."""
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1].split("%", 1)[0])
    return out


__all__ = ["Forward", "Upstream", "UpstreamError", "resolv_conf_nameservers"]
