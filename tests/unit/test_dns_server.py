"""DnsServer on 127.0.0.1 with an ephemeral port: real dig, fallback, zone swap, garbage, speed."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest

from kubewire.dns import ClusterZone, build_zone
from kubewire.dnsserver.server import DnsServer, servfail

from .test_dns_answer import PODS, SERVICES, SLICES, D, _ep, _slice, _svc

S = f"default.svc.{D}"
HOST = "127.0.0.1"
BIG = [_ep(f"10.245.0.{i}") for i in range(1, 61)]  # 60 A records: ~1 KB, over 512 bytes
ZONE = build_zone([*SERVICES, _svc("big", "None", [])],
                  [*SLICES, _slice("big", BIG, [])], PODS, D, serial=7)

needs_dig = pytest.mark.skipif(shutil.which("dig") is None,
                               reason="dig (dnsutils) is not installed")


def run(body: Callable[[DnsServer], Awaitable[Any]], zone: ClusterZone = ZONE,
        **kw: Any) -> Any:
    async def main() -> Any:
        server = DnsServer(lambda: zone, HOST, 0, **kw)
        await server.start()
        try:
            return await asyncio.wait_for(body(server), 60)
        finally:
            await server.stop()
    return asyncio.run(main())


async def dig(server: DnsServer, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "dig", f"@{HOST}", "-p", str(server.port), "+time=2", "+tries=1", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return out.decode()


def digs(*args: str, **kw: Any) -> str:
    out: str = run(lambda s: dig(s, *args), **kw)
    return out


# -- dig against the real sockets ----------------------------------------------------------


@needs_dig
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_dig_a_srv_ptr(transport: str) -> None:
    async def body(s: DnsServer) -> list[str]:
        return [await dig(s, transport, "+short", *q) for q in
                ([f"web.{S}", "A"], [f"_pg._tcp.db.{S}", "SRV"], ["-x", "10.96.0.10"])]
    a, srv, ptr = run(body)
    assert a.split() == ["10.96.0.10"]
    assert sorted(srv.splitlines()) == [f"0 100 5433 10-244-2-5.db.{S}.",
                                        f"0 100 5433 db-0.db.{S}."]
    assert ptr.split() == [f"web.{S}."]


@needs_dig
def test_dig_nxdomain_and_case() -> None:
    out = digs("+notcp", f"nope.{S}", "A")
    assert "status: NXDOMAIN" in out and "flags: qr aa" in out
    assert f"ns.dns.{D}. hostmaster.{D}." in out  # SOA in authority
    assert digs("+short", f"WeB.{S.upper()}", "A").split() == ["10.96.0.10"]


@needs_dig
def test_dig_truncation_then_tcp_retry() -> None:
    name = f"big.{S}"
    cut = digs("+noedns", "+ignore", name, "A")  # UDP, 512 bytes, keep the TC reply
    assert "flags: qr aa tc" in cut and "ANSWER: 0" in cut
    retried = digs("+noedns", name, "A")  # dig's default: on TC, ask again over TCP
    assert "ANSWER: 60" in retried and "(TCP)" in retried
    edns = digs("+notcp", "+bufsize=1232", "+ignore", name, "A")  # EDNS0: fits over UDP
    assert "ANSWER: 60" in edns and "(UDP)" in edns and " tc" not in edns.split("flags:")[1][:20]
    tcp = digs("+tcp", "+noedns", name, "A")
    assert "ANSWER: 60" in tcp


def _canned(query: bytes) -> bytes:
    q = dns.message.from_wire(query)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.7"))
    return r.to_wire()


@needs_dig
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_dig_external_name_goes_to_fallback(transport: str) -> None:
    seen: list[bytes] = []

    async def fallback(query: bytes) -> bytes:
        seen.append(query)
        await asyncio.sleep(0.01)
        return _canned(query)

    async def body(s: DnsServer) -> tuple[str, int]:
        return await dig(s, transport, "+short", "www.example.com", "A"), s.counters.fallbacks
    out, fallbacks = run(body, fallback=fallback)
    assert out.split() == ["192.0.2.7"] and fallbacks == 1 and len(seen) == 1


@needs_dig
def test_dig_external_name_without_fallback_is_servfail() -> None:
    assert "status: SERVFAIL" in digs("+notcp", "www.example.com", "A")
    assert "status: SERVFAIL" in digs("+tcp", "www.example.com", "A")


@needs_dig
def test_dig_fallback_that_never_answers_is_servfail() -> None:
    async def silent(query: bytes) -> bytes | None:
        await asyncio.sleep(30)
        return None

    out = digs("+notcp", "www.example.com", "A", fallback=silent, fallback_timeout=0.2)
    assert "status: SERVFAIL" in out


# -- Python clients ------------------------------------------------------------------------


def _query(name: str, qid: int, rdtype: str = "A") -> bytes:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    return q.to_wire()


class _Client(asyncio.DatagramProtocol):
    """Keeps ``window`` queries in flight from one socket; replies queue by id."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait(data)


async def _client(port: int) -> tuple[asyncio.DatagramTransport, _Client]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Client, local_addr=(HOST, 0), remote_addr=(HOST, port))
    return transport, proto


async def _pipelined(port: int, wires: list[bytes], window: int = 64,
                     between: Callable[[int], None] | None = None) -> list[bytes]:
    """Send every wire keeping ``window`` outstanding; return the replies (bounded wait)."""
    transport, proto = await _client(port)
    out: list[bytes] = []
    try:
        sent = 0
        while sent < min(window, len(wires)):
            transport.sendto(wires[sent])
            sent += 1
        while len(out) < len(wires):
            out.append(await asyncio.wait_for(proto.replies.get(), 5))
            if between is not None:
                between(len(out))
            if sent < len(wires):
                transport.sendto(wires[sent])
                sent += 1
    finally:
        transport.close()
    return out


def test_zone_swap_during_burst_loses_no_query() -> None:
    other = build_zone([_svc("web", "10.96.0.99", [])], [], [], D, serial=8)
    n = 4000
    wires = [_query(f"web.{S}", i) for i in range(n)]

    async def body(s: DnsServer) -> list[bytes]:
        def swap(done: int) -> None:
            if done % 250 == 0:
                s.set_zone(other if (done // 250) % 2 else ZONE)
        return await _pipelined(s.port, wires, between=swap)

    replies = run(body)
    msgs = [dns.message.from_wire(r) for r in replies]
    assert sorted(m.id for m in msgs) == list(range(n))
    ips = {m.answer[0][0].address for m in msgs}
    assert ips == {"10.96.0.10", "10.96.0.99"}  # both zones served, no gap between them
    assert all(m.rcode() == dns.rcode.NOERROR for m in msgs)


def test_garbage_datagrams_do_not_stop_service() -> None:
    # (asyncio never sends an empty datagram, so b"" cannot be tried from here)
    junk = [b"\x00", b"\xff" * 11, b"\x12\x34" + b"\x80" * 10, b"\x00" * 12 + b"\xc0\x0c",
            bytes(range(256)), b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f"]

    async def body(s: DnsServer) -> tuple[bytes, int, int]:
        transport, proto = await _client(s.port)
        try:
            for j in junk * 20:
                transport.sendto(j)
            transport.sendto(_query(f"web.{S}", 4242))
            while True:  # FORMERR replies may come first; the real answer must arrive
                r = await asyncio.wait_for(proto.replies.get(), 5)
                if r[:2] == b"\x10\x92":
                    return r, s.counters.queries, s.counters.drops
        finally:
            transport.close()

    reply, queries, drops = run(body)
    assert dns.message.from_wire(reply).answer[0][0].address == "10.96.0.10"
    assert drops > 0 and queries >= len(junk) * 20 + 1


def _tcp_frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def test_tcp_pipelined_in_order_and_bad_framing_closes() -> None:
    async def body(s: DnsServer) -> tuple[list[int], bytes, bytes]:
        reader, writer = await asyncio.open_connection(HOST, s.port)
        try:
            names = [f"web.{S}", f"nope.{S}", f"big.{S}", f"db.{S}"] * 5
            writer.write(b"".join(_tcp_frame(_query(n, i)) for i, n in enumerate(names)))
            await writer.drain()
            ids = []
            for _ in names:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                ids.append(dns.message.from_wire(await reader.readexactly(size)).id)
            writer.write(b"\x00\x00")  # a zero-length message: the stream is unusable
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        r2, w2 = await asyncio.open_connection(HOST, s.port)
        try:  # a prefix longer than what follows, then EOF: closed without a reply
            w2.write(b"\x00\x40abc")
            w2.write_eof()
            closed2 = await asyncio.wait_for(r2.read(), 5)
        finally:
            w2.close()
        return ids, closed, closed2

    ids, closed, closed2 = run(body)
    assert ids == list(range(20)) and closed == b"" and closed2 == b""


def test_tcp_idle_timeout_closes() -> None:
    async def body(s: DnsServer) -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(HOST, s.port)
        try:
            t0 = time.monotonic()
            data = await asyncio.wait_for(reader.read(), 5)
            return data, time.monotonic() - t0
        finally:
            writer.close()

    data, waited = run(body, tcp_idle_timeout=0.2)
    assert data == b"" and waited < 3


def test_counters_and_servfail_helper() -> None:
    async def body(s: DnsServer) -> Any:
        await _pipelined(s.port, [_query(f"web.{S}", 1), _query(f"nope.{S}", 2),
                                  _query("www.example.com", 3)])
        return s.counters

    c = run(body)
    assert c.queries == 3 and c.responses == {0: 1, 3: 1, 2: 1} and c.fallbacks == 0
    q = _query("x.example", 77)
    r = dns.message.from_wire(servfail(q) or b"")
    assert r.id == 77 and r.rcode() == dns.rcode.SERVFAIL
    assert str(r.question[0].name) == "x.example."
    assert servfail(b"\x00\x07" + b"\xff" * 12)[:2] == b"\x00\x07"  # type: ignore[index]
    assert servfail(b"\x00") is None


def test_port_is_ephemeral_and_shared_by_udp_and_tcp() -> None:
    async def body(s: DnsServer) -> int:
        with socket.create_connection((HOST, s.port), timeout=2):
            pass
        return s.port

    assert run(body) > 0


def test_udp_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    n = 20_000
    names = [f"web.{S}", f"_pg._tcp.db.{S}", f"nope.{S}", "10.0.96.10.in-addr.arpa"]
    types = ["A", "SRV", "A", "PTR"]
    wires = [_query(names[i % 4], i % 65536, types[i % 4]) for i in range(n)]

    async def body(s: DnsServer) -> float:
        t0 = time.perf_counter()
        replies = await _pipelined(s.port, wires, window=128)
        elapsed = time.perf_counter() - t0
        assert len(replies) == n
        return n / elapsed

    rate = run(body)
    with capsys.disabled():
        print(f"\nDnsServer UDP, one client socket, 128 in flight: {rate:,.0f} queries/s")
    assert rate > 5000
