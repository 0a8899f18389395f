"""Shared helpers for the dnsserver tests: run a DnsApp on 127.0.0.1, ask it, fake upstreams."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from kubewire.dnsserver.app import DnsApp
from kubewire.dnsserver.chain import Request, Result
from kubewire.dnsserver.server import DnsServer

from .test_dns_answer import PODS, SERVICES, SLICES

HOST = "127.0.0.1"
S = "default.svc.cluster.local"


class Clock:
    """A settable monotonic clock, so cache expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_app(corefile: str, body: Callable[[DnsApp], Awaitable[Any]], *, cluster: bool = True,
            **kw: Any) -> Any:
    async def main() -> Any:
        app = DnsApp(corefile, host=HOST, **kw)
        await app.start()
        try:
            if cluster:
                app.set_cluster(SERVICES, SLICES, PODS)
            return await asyncio.wait_for(body(app), 30)
        finally:
            await app.stop()
    return asyncio.run(main())


async def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False,
              timeout: float = 3.0, qid: int | None = None, **kw: Any) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    if qid is not None:
        q.id = qid
    if tcp:
        r: dns.message.Message = await dns.asyncquery.tcp(q, HOST, port=port, timeout=timeout)
    else:
        r = await dns.asyncquery.udp(q, HOST, port=port, timeout=timeout)
    return r


def answers(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


class FakeUpstream:
    """A DnsServer answering every name itself (an upstream resolver on loopback).

    ``nx.*`` is NXDOMAIN with a SOA (minimum 30); ``big.*`` sets TC over UDP and answers in
    full over TCP; PTR answers host.example.; everything else is A 192.0.2.1, TTL 60.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.server = DnsServer(None, HOST, 0, dispatch=self.dispatch)

    @property
    def port(self) -> int:
        return self.server.port

    def dispatch(self, req: Request) -> Result:
        q = dns.message.from_wire(req.wire)
        name = q.question[0].name
        rdtype = q.question[0].rdtype
        self.seen.append((req.proto, name.to_text().lower()))
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        first = name.labels[0].lower()
        if first == b"nx":
            r.set_rcode(dns.rcode.NXDOMAIN)
            r.authority.append(dns.rrset.from_text(
                "example.", 60, "IN", "SOA", "ns.example. host.example. 1 2 3 4 30"))
        elif first == b"big" and req.proto == "udp":
            r.flags |= dns.flags.TC
        elif first == b"big":
            r.answer.append(dns.rrset.from_text_list(
                name, 60, "IN", "A", [f"192.0.2.{i}" for i in range(1, 61)]))
        elif rdtype == dns.rdatatype.PTR:
            r.answer.append(dns.rrset.from_text(name, 60, "IN", "PTR", "host.example."))
        else:
            r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1"))
        wire: bytes = r.to_wire()
        return wire

    async def __aenter__(self) -> FakeUpstream:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


def streams() -> tuple[io.StringIO, io.StringIO]:
    return io.StringIO(), io.StringIO()


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``cond`` until true; fail after ``timeout`` (a condition, not a sleep)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
