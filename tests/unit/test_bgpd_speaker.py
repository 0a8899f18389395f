"""Two kubewire speakers over loopback TCP: session, routes both ways, export rules,
withdrawals, reconnect after a restart, status data and bad configuration."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from kubewire.bgp.path import PathAttributes
from kubewire.bgp.policy import Match, PrefixList, RoutePolicy, Term, Verdict
from kubewire.bgpd import (
    ConfigError,
    NeighborConfig,
    Speaker,
    SpeakerConfig,
    originations,
)

A_ADDR = IPv4Address("127.0.0.2")  # the active side binds here
B_ADDR = IPv4Address("127.0.0.1")  # the passive side listens here


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def state(sp: Speaker) -> str:
    return sp.peers()[0].state


def b_config(port: int = 0) -> SpeakerConfig:
    return SpeakerConfig(
        asn=65002,
        router_id=IPv4Address("2.2.2.2"),
        neighbors=(NeighborConfig(A_ADDR, 65001, passive=True, hold_time=9),),
        listen=(B_ADDR,),
        port=port,
        originate=originations("10.2.0.0/16", "10.22.0.0/24"),
    )


def a_config(port: int, **kw: object) -> SpeakerConfig:
    n = NeighborConfig(B_ADDR, 65002, port=port, local_address=A_ADDR, hold_time=9,
                       connect_retry_time=2, idle_hold_time=0.1, **kw)  # type: ignore[arg-type]
    return SpeakerConfig(asn=65001, router_id=IPv4Address("1.1.1.1"), neighbors=(n,),
                         listen=(), originate=originations("10.1.0.0/16"))


def test_routes_flow_both_ways_and_withdrawals_propagate() -> None:
    async def run() -> None:
        b = Speaker(b_config())
        await b.start()
        a = Speaker(a_config(b.listen_ports[0]))
        await a.start()
        try:
            await until(lambda: state(a) == state(b) == "Established", "Established")
            await until(lambda: len(a.routes()) == 3 and len(b.routes()) == 3, "routes")
            r = a.routes("10.2.0.0/16")[0]
            best = r.best
            assert best is not None and best.as_path == "65002" and best.next_hop == str(B_ADDR)
            assert best.source == str(B_ADDR) and best.source_as == 65002
            r = b.routes("10.1.0.0/16")[0]
            assert r.best is not None and r.best.as_path == "65001"
            assert r.best.next_hop == str(A_ADDR) and r.reason == "only-path"
            pa = a.peers()[0]
            assert (pa.prefixes_received, pa.prefixes_accepted, pa.prefixes_advertised) == (2, 2, 1)
            assert pa.router_id == "2.2.2.2" and pa.hold_time == 9 and pa.keepalive_time == 3
            assert pa.uptime is not None and pa.last_error is None
            # withdrawal from B reaches A
            b.withdraw("10.22.0.0/24")
            await until(lambda: not a.routes("10.22.0.0/24"), "withdrawal")
            # and a new announcement with a MED
            b.announce("10.23.0.0/24", PathAttributes(med=50))
            await until(lambda: bool(a.routes("10.23.0.0/24")), "announcement")
            got = a.routes("10.23.0.0/24")[0].best
            assert got is not None and got.med == 50
            assert a.peers()[0].established_transitions == 1
        finally:
            await a.stop()
            await b.stop()
        assert not a.routes("10.2.0.0/16")  # a stopped speaker forgets what it learned

    asyncio.run(run())


def test_session_comes_back_after_the_peer_restarts() -> None:
    async def run() -> None:
        b = Speaker(b_config())
        await b.start()
        port = b.listen_ports[0]
        a = Speaker(a_config(port))
        await a.start()
        try:
            await until(lambda: state(a) == "Established", "first session")
            await until(lambda: bool(a.routes("10.2.0.0/16")), "routes")
            await b.stop()
            await until(lambda: state(a) != "Established", "session down")
            assert not a.routes("10.2.0.0/16")  # the peer's routes went with it
            assert "CEASE" in (a.peers()[0].last_error or "")
            b = Speaker(b_config(port=port))
            await b.start()
            await until(lambda: state(a) == state(b) == "Established", "reconnect", 10)
            await until(lambda: bool(a.routes("10.2.0.0/16")), "routes again")
            assert a.peers()[0].established_transitions == 2
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_import_policy_rejects_and_routes_show_it() -> None:
    only_16 = RoutePolicy((Term("16s", Match(prefix_list=PrefixList.parse("10.0.0.0/8 le 16"))),),
                          default=Verdict.REJECT)

    async def run() -> None:
        b = Speaker(b_config())
        await b.start()
        a = Speaker(a_config(b.listen_ports[0], import_policy=only_16))
        await a.start()
        try:
            await until(lambda: a.peers()[0].prefixes_received == 2, "routes")
            p = a.peers()[0]
            assert p.prefixes_accepted == 1
            r = a.routes(IPv4Network("10.22.0.0/24"))[0]
            assert r.reason is None and r.best is None
            assert [x.accepted for x in r.paths] == [False]
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_wrong_peer_as_shows_as_last_error_and_never_establishes() -> None:
    async def run() -> None:
        b = Speaker(b_config())
        await b.start()
        cfg = a_config(b.listen_ports[0])
        wrong = SpeakerConfig(asn=cfg.asn, router_id=cfg.router_id, listen=(),
                              neighbors=(NeighborConfig(B_ADDR, 65099, port=b.listen_ports[0],
                                                        local_address=A_ADDR,
                                                        idle_hold_time=0.1),))
        a = Speaker(wrong)
        await a.start()
        try:
            await until(lambda: "AS" in (a.peers()[0].last_error or ""), "an error")
            assert "65002" in (a.peers()[0].last_error or "")
            assert state(a) != "Established"
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_unreachable_peer_reports_the_connect_error() -> None:
    async def run() -> None:
        # nothing listens on this port: connection refused, retried with backoff
        a = Speaker(a_config(1))
        await a.start()
        try:
            await until(lambda: "refused" in (a.peers()[0].last_error or ""), "refusal")
        finally:
            await a.stop()

    asyncio.run(run())


def test_bad_configuration_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match="hold time"):
        NeighborConfig(A_ADDR, 65001, hold_time=2)
    with pytest.raises(ConfigError, match="twice"):
        SpeakerConfig(asn=1, router_id=IPv4Address("1.1.1.1"),
                      neighbors=(NeighborConfig(A_ADDR, 2), NeighborConfig(A_ADDR, 3)))
    with pytest.raises(ConfigError, match="80 octets"):
        NeighborConfig(A_ADDR, 65001, password="x" * 81)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_connection_collision_leaves_one_session() -> None:
    """Both sides connect and listen at once (RFC 4271 6.8): one connection survives."""

    async def run() -> None:
        port = _free_port()
        def cfg(me: IPv4Address, rid: str, asn: int, peer: IPv4Address, peer_as: int,
                prefix: str) -> SpeakerConfig:
            n = NeighborConfig(peer, peer_as, port=port, local_address=me, hold_time=9,
                               connect_retry_time=2, idle_hold_time=0.05)
            return SpeakerConfig(asn=asn, router_id=IPv4Address(rid), neighbors=(n,),
                                 listen=(me,), port=port, originate=originations(prefix))

        a = Speaker(cfg(A_ADDR, "1.1.1.1", 65001, B_ADDR, 65002, "10.1.0.0/16"))
        b = Speaker(cfg(B_ADDR, "2.2.2.2", 65002, A_ADDR, 65001, "10.2.0.0/16"))
        await a.start()
        await b.start()
        try:
            await until(lambda: state(a) == state(b) == "Established", "Established")
            await until(lambda: len(a._conns) == len(b._conns) == 1, "one connection each")
            await until(lambda: bool(a.routes("10.2.0.0/16")) and bool(b.routes("10.1.0.0/16")),
                        "routes")
            assert a.peers()[0].established_transitions == 1
            assert b.peers()[0].established_transitions == 1
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_a_big_table_is_split_into_messages_that_fit() -> None:
    many = tuple(f"10.{i // 256}.{i % 256}.0/24" for i in range(3000))  # ~12 kB of NLRI

    async def run() -> None:
        cfg = b_config()
        b = Speaker(SpeakerConfig(asn=cfg.asn, router_id=cfg.router_id, neighbors=cfg.neighbors,
                                  listen=cfg.listen, port=0, originate=originations(*many)))
        await b.start()
        a = Speaker(a_config(b.listen_ports[0]))
        await a.start()
        try:
            await until(lambda: a.peers()[0].prefixes_received == len(many), "the whole table")
            assert a.peers()[0].updates_received >= 4  # 3+ UPDATEs and End-of-RIB
            for p in many[::500]:
                b.withdraw(p)
            await until(lambda: a.peers()[0].prefixes_received == len(many) - 6, "withdrawals")
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_tcp_md5_and_gtsm_on_loopback_and_a_wrong_key_times_out() -> None:
    async def run() -> None:
        cfg = b_config()
        secured = (replace(cfg.neighbors[0], password="s3cret", ttl_security=1),)
        b = Speaker(replace(cfg, neighbors=secured))
        await b.start()
        port = b.listen_ports[0]
        a = Speaker(a_config(port, password="s3cret", ttl_security=1))
        bad = Speaker(SpeakerConfig(asn=65001, router_id=IPv4Address("1.1.1.9"), listen=(),
                                    neighbors=(NeighborConfig(B_ADDR, 65002, port=port,
                                                              local_address=IPv4Address(
                                                                  "127.0.0.3"),
                                                              password="wrong",
                                                              connect_retry_time=1),)))
        await a.start()
        await bad.start()
        try:
            await until(lambda: state(a) == state(b) == "Established", "Established")
            json.dumps([p.to_dict() for p in a.peers()] + [r.to_dict() for r in a.routes()])
            # B has no key for 127.0.0.3, so its kernel drops the signed SYNs
            await until(lambda: "timed out" in (bad.peers()[0].last_error or ""), "timeout")
            assert state(bad) != "Established"
        finally:
            await bad.stop()
            await a.stop()
            await b.stop()

    asyncio.run(run())


C_ADDR = IPv4Address("127.0.0.3")  # a third speaker, added to B's configuration live


def c_config(port: int) -> SpeakerConfig:
    n = NeighborConfig(B_ADDR, 65002, port=port, local_address=C_ADDR, hold_time=9,
                       connect_retry_time=2, idle_hold_time=0.1, password="k3y")
    return SpeakerConfig(asn=65003, router_id=IPv4Address("3.3.3.3"), neighbors=(n,),
                         listen=(), originate=originations("10.3.0.0/16"))


def test_set_neighbors_adds_a_peer_and_leaves_the_unchanged_session_up() -> None:
    async def run() -> None:
        b = Speaker(b_config())
        await b.start()
        a = Speaker(a_config(b.listen_ports[0]))
        await a.start()
        c = Speaker(c_config(b.listen_ports[0]))
        await c.start()
        try:
            await until(lambda: state(a) == state(b) == "Established", "A-B Established")
            up_since = b.peers()[0].uptime
            await asyncio.sleep(0.3)
            assert state(c) != "Established"  # B has no key for C yet: its SYNs are dropped
            b.set_neighbors([*b.config.neighbors,
                             NeighborConfig(C_ADDR, 65003, passive=True, hold_time=9,
                                            password="k3y")])  # a new key on the listener
            assert b.config.neighbor(C_ADDR) is not None  # incoming connections are matched here
            await until(lambda: state(c) == "Established", "C-B Established", 10)
            await until(lambda: bool(a.routes("10.3.0.0/16")), "C's route reaches A through B")
            pa, pc = b.peers()
            assert (pa.address, pc.address) == (str(A_ADDR), str(C_ADDR))
            assert pa.state == "Established" and pa.established_transitions == 1
            assert pa.uptime is not None and up_since is not None and pa.uptime > up_since
            assert a.peers()[0].established_transitions == 1
            assert a.peers()[0].last_error is None
        finally:
            await c.stop()
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_set_neighbors_removes_a_peer_with_cease_peer_deconfigured() -> None:
    async def run() -> None:
        b = Speaker(b_config())
        await b.start()
        a = Speaker(a_config(b.listen_ports[0]))
        await a.start()
        try:
            await until(lambda: state(a) == state(b) == "Established", "Established")
            await until(lambda: bool(b.routes("10.1.0.0/16")), "A's route at B")
            b.set_neighbors([])
            # withdrawn at once, as for a session that went down
            assert not b.routes("10.1.0.0/16") and b.rib.loc.get(IPv4Network("10.1.0.0/16")) is None
            assert b.peers() == [] and b.config.neighbors == ()
            await until(lambda: "PEER_DECONFIGURED" in (a.peers()[0].last_error or ""), "Cease/3")
            await until(lambda: not a.routes("10.2.0.0/16"), "B's routes gone at A")
            await until(lambda: not b._conns, "B's connection to A closed")
            await asyncio.sleep(0.5)  # A retries (idle hold 0.1 s); B refuses a stranger
            assert state(a) != "Established" and not b._neighbors
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_set_neighbors_restarts_a_changed_peer() -> None:
    async def run() -> None:
        b = Speaker(b_config())
        await b.start()
        a = Speaker(a_config(b.listen_ports[0]))
        await a.start()
        try:
            await until(lambda: state(a) == state(b) == "Established", "Established")
            changed = replace(b.config.neighbors[0], description="rack 7", hold_time=6)
            b.set_neighbors([changed])
            # A rests 0.1 s in Idle before it reconnects: long enough to see why it went down
            await until(lambda: "PEER_DECONFIGURED" in (a.peers()[0].last_error or ""), "Cease/3")
            await until(lambda: a.peers()[0].established_transitions == 2
                        and state(a) == state(b) == "Established", "re-established", 10)
            p = b.peers()[0]
            assert p.description == "rack 7" and p.hold_time == 6
            assert p.established_transitions == 1  # a new neighbour, counted afresh
            await until(lambda: bool(b.routes("10.1.0.0/16")), "A's route back at B")
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())
