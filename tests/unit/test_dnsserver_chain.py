"""The chain's pieces without sockets, then DnsServer's handling of dispatch failures."""

from __future__ import annotations

import asyncio
import io
import random
import struct
from typing import Any

import dns.message
import dns.rcode
import dns.rrset

from kubewire.dns.corefile import CacheConfig
from kubewire.dnsserver.app import DnsApp, _observed, _router
from kubewire.dnsserver.chain import (
    Pending,
    Request,
    edns_of,
    name_text,
    name_wire,
    qtype_of,
    question,
)
from kubewire.dnsserver.plugins import Cache, ttl_layout
from kubewire.dnsserver.server import DnsServer

from .test_dnsserver_helpers import HOST, Clock, ask, run_app


def _q(name: str, rdtype: str = "A", **kw: Any) -> bytes:
    msg = dns.message.make_query(name, rdtype, **kw)
    msg.id = 99
    wire: bytes = msg.to_wire()
    return wire


def test_wire_helpers() -> None:
    w = _q("WWW.Example.org", "AAAA", use_edns=0, payload=1400, want_dnssec=True)
    lname, qtype, qclass, end = question(w) or (b"", 0, 0, 0)
    assert (lname, qtype, qclass) == (b"\x03www\x07example\x03org\x00", 28, 1)
    assert name_text(lname) == "www.example.org." and qtype_of(w) == 28
    assert edns_of(w, end) == (1400, True) and edns_of(_q("a.b"), len(_q("a.b"))) is None
    assert name_wire("a.b.") == b"\x01a\x01b\x00" and name_wire("x" * 64) is None
    assert question(b"\x00" * 12) is None and question(w[:20]) is None


def test_pending_transforms_run_in_order() -> None:
    p = Pending(b"q", lambda q: asyncio.sleep(0, q))
    p.then(lambda o: o + b"1").then(lambda o: o + b"2")
    assert p.finish(b"x") == b"x12"


def test_router_refuses_names_outside_every_block_and_observers_see_replies() -> None:
    seen: list[tuple[bytes, bytes | None]] = []
    serve = _observed(lambda req: b"answer", [lambda req, out: seen.append((req.wire, out))])
    route = _router([("cluster.local.", serve), ("example.org.", lambda req: b"other")])
    ask_ = _q("web.cluster.local")
    assert route(Request(ask_, None, "udp")) == b"answer" and seen == [(ask_, b"answer")]
    assert route(Request(_q("a.Example.ORG"), None, "udp")) == b"other"
    refused = route(Request(_q("else.test"), None, "udp"))
    assert isinstance(refused, bytes)
    assert dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED


def _reply(name: str, ttl: int, rcode: int = 0, soa_min: int = 30) -> bytes:
    q = dns.message.from_wire(_q(name))
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode(rcode))
    if rcode == 0:
        r.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", "192.0.2.1"))
    else:
        r.authority.append(dns.rrset.from_text("org.", ttl, "IN", "SOA",
                                               f"a.org. b.org. 1 2 3 4 {soa_min}"))
    wire: bytes = r.to_wire()
    return wire


def test_ttl_layout_finds_every_ttl_and_the_negative_ttl() -> None:
    offsets, min_an, _ = ttl_layout(_reply("a.org", 77)) or ([], 0, 0)
    assert min_an == 77 and len(offsets) == 1
    assert struct.unpack_from("!I", _reply("a.org", 77), offsets[0])[0] == 77
    assert ttl_layout(_reply("n.org", 600, 3, soa_min=40))[2] == 40  # type: ignore[index]
    cut = _reply("a.org", 77)
    assert all(ttl_layout(cut[:i]) is None for i in range(12, len(cut)))  # never raises


def test_cache_caps_evict_the_oldest_and_expire() -> None:
    clock = Clock()
    cache = Cache(CacheConfig(success_capacity=2, denial_capacity=1, success_ttl=100),
                  clock=clock)
    cache.next = lambda req: Pending(req.wire, lambda q: asyncio.sleep(0, None))

    def put(name: str, reply: bytes) -> None:
        out = cache.handle(Request(_q(name), None, "udp"))
        assert isinstance(out, Pending)  # a miss
        assert out.finish(reply) == reply

    for n in ("a.org", "b.org", "c.org"):
        put(n, _reply(n, 60))
    put("n1.org", _reply("n1.org", 60, 3))
    put("n2.org", _reply("n2.org", 60, 3))
    assert len(cache.store.success) == 2 and len(cache.store.denial) == 1
    hit = cache.handle(Request(_q("c.org"), None, "udp"))
    assert isinstance(hit, bytes) and dns.message.from_wire(hit).id == 99
    assert isinstance(cache.handle(Request(_q("a.org"), None, "udp")), Pending)  # evicted
    clock.now += 60
    assert isinstance(cache.handle(Request(_q("c.org"), None, "udp")), Pending)  # expired
    assert cache.store.hits == {"success": 1, "denial": 0}


def test_server_answers_servfail_when_a_plugin_or_transform_raises() -> None:
    def broken(req: Request) -> Any:
        if b"boom" in req.wire:
            raise RuntimeError("plugin bug")
        return Pending(req.wire, lambda q: asyncio.sleep(0, q)).then(_raise)

    def _raise(out: bytes) -> bytes:
        raise RuntimeError("transform bug")

    async def main() -> tuple[int, int, int]:
        server = DnsServer(None, HOST, 0, dispatch=broken)
        await server.start()
        try:
            a = await ask(server.port, "boom.example")
            b = await ask(server.port, "fine.example", tcp=True)
            return a.rcode(), b.rcode(), server.counters.queries
        finally:
            await server.stop()
    assert asyncio.run(main()) == (dns.rcode.SERVFAIL, dns.rcode.SERVFAIL, 2)


def test_chain_never_raises_on_garbage_or_mutated_queries() -> None:
    text = (".:0 {\n    errors\n    log\n    cache 30\n    rewrite name suffix .corp "
            ".svc.cluster.local\n    hosts {\n        192.0.2.1 h.example\n        fallthrough\n"
            "    }\n    kubernetes cluster.local in-addr.arpa {\n        pods insecure\n"
            "        fallthrough in-addr.arpa\n    }\n    forward . 127.0.0.1:9\n}\n")
    seeds = [_q(n, t, **kw) for n, t, kw in [
        ("web.default.svc.cluster.local", "A", {}), ("x.corp", "A", {"use_edns": 0}),
        ("h.example", "AAAA", {}), ("1.0.0.10.in-addr.arpa", "PTR", {}),
        ("www.example.org", "MX", {"want_dnssec": True})]]
    rnd = random.Random(7)
    packets = [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 60)))
               for _ in range(300)]
    for seed in seeds:
        for _ in range(300):
            b = bytearray(seed)
            for _ in range(rnd.randrange(1, 4)):
                b[rnd.randrange(len(b))] = rnd.getrandbits(8)
            packets.append(bytes(b[:rnd.randrange(12, len(b) + 1)]))

    async def body(app: DnsApp) -> int:
        dispatch = app.server().dispatch
        kinds = 0
        for p in packets:
            out = dispatch(Request(p, ("127.0.0.1", 1), "udp"))
            assert out is None or isinstance(out, bytes | Pending)
            kinds += isinstance(out, bytes)
        return kinds
    assert run_app(text, body, log_stream=io.StringIO(), error_stream=io.StringIO()) > 500


def test_build_zone_ttl_parameter() -> None:
    import pytest

    from kubewire.dns import DnsInputError, build_zone

    from .test_dns_answer import SERVICES

    assert build_zone(SERVICES).lookup("web.default.svc.cluster.local", 1).answer[0].ttl == 5
    zone = build_zone(SERVICES, ttl=0)
    assert zone.lookup("web.default.svc.cluster.local", 1).answer[0].ttl == 0  # type: ignore
    assert zone.nxdomain.authority[0].ttl == 0
    with pytest.raises(DnsInputError, match="0-3600"):
        build_zone(SERVICES, ttl=3601)
