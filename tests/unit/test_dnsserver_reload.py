"""Reloads: under continuous load nothing is lost; a broken Corefile keeps the old config."""

from __future__ import annotations

import asyncio
import io
import socket
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from kubewire.dns.corefile import CorefileError
from kubewire.dnsserver.app import DnsApp
from kubewire.dnsserver.errors import ListenError

from .test_dns_answer import PODS, SERVICES, SLICES
from .test_dns_server import _pipelined, _query, _tcp_frame
from .test_dnsserver_helpers import HOST, S, ask, run_app, wait_for


def conf(ttl: int, extra: str = "", key: str = ".:0") -> str:
    return (f"{key} {{\n    kubernetes cluster.local {{\n        ttl {ttl}\n    }}\n{extra}}}\n")


def test_reload_under_continuous_load_loses_no_query() -> None:
    n = 3000
    wires = [_query(f"web.{S}", i) for i in range(n)]
    texts = [conf(30), conf(10, "    cache 5\n    errors\n"), conf(20, "    log\n")]
    log = io.StringIO()

    async def body(app: DnsApp) -> tuple[list[bytes], int, int]:
        port = app.port
        reloads: list[asyncio.Task[None]] = []

        def between(done: int) -> None:
            if done % 200 == 0:  # a reload every 200 replies, while 64 stay in flight
                reloads.append(asyncio.ensure_future(app.reload(texts[(done // 200) % 3])))
        replies = await _pipelined(port, wires, between=between)
        await asyncio.gather(*reloads)
        return replies, app.port, port

    replies, port_after, port_before = run_app(texts[0], body, log_stream=log)
    msgs = [dns.message.from_wire(r) for r in replies]
    assert sorted(m.id for m in msgs) == list(range(n))  # every query answered, once
    assert all(m.rcode() == dns.rcode.NOERROR for m in msgs)
    assert {m.answer[0].ttl for m in msgs} == {30, 10, 20}  # all three configs served
    assert port_after == port_before  # the socket was kept


def test_tcp_connection_survives_a_reload() -> None:
    async def body(app: DnsApp) -> list[int]:
        reader, writer = await asyncio.open_connection(HOST, app.port)
        ttls = []
        try:
            for i, text in enumerate([conf(30), conf(7)]):
                if i:
                    await app.reload(text)
                writer.write(_tcp_frame(_query(f"web.{S}", i)))
                await writer.drain()
                size = int.from_bytes(await reader.readexactly(2), "big")
                ttls.append(dns.message.from_wire(await reader.readexactly(size)).answer[0].ttl)
        finally:
            writer.close()
        return ttls
    assert run_app(conf(30), body) == [30, 7]


def test_broken_reload_raises_with_position_and_keeps_serving() -> None:
    async def body(app: DnsApp) -> tuple[str, int, int]:
        with pytest.raises(CorefileError) as info:
            await app.reload(".:0 {\n    kubernetes cluster.local\n    forwardd . 1.2.3.4\n}\n")
        r = await ask(app.port, f"web.{S}")
        return str(info.value), r.answer[0].ttl, app.reloads
    err, ttl, reloads = run_app(conf(30), body)
    assert err.startswith('Corefile:3:5: unknown plugin "forwardd"')
    assert ttl == 30 and reloads == 0


def test_reload_that_cannot_bind_keeps_the_old_config() -> None:
    hold = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hold.bind((HOST, 0))
    busy = hold.getsockname()[1]
    try:
        async def body(app: DnsApp) -> tuple[int, dict[str, int]]:
            with pytest.raises(ListenError, match="previous config keeps serving"):
                await app.reload(conf(9, key=f".:{busy}"))
            r = await ask(app.port, f"web.{S}")
            return r.answer[0].ttl, app.ports
        ttl, ports = run_app(conf(30), body)
    finally:
        hold.close()
    assert ttl == 30 and list(ports) == [".:0"]


def test_reload_moves_to_a_new_port_and_closes_the_old() -> None:
    async def body(app: DnsApp) -> tuple[int, int, int]:
        old = app.port
        await app.reload(conf(12, key="cluster.local:0") + conf(13, key=".:0")
                         .replace(".:0", "example.org:0"))
        r = await ask(app.port, f"web.{S}")
        return old, app.port, r.answer[0].ttl
    old, new, ttl = run_app(conf(30), body)
    # Both new keys say port 0 like the old one: one listener, kept; routing changed.
    assert old == new and ttl == 12


def test_reload_plugin_polls_the_file(tmp_path: Path) -> None:
    path = tmp_path / "Corefile"
    path.write_text(conf(30, "    reload 2s 1s\n"))
    err = io.StringIO()

    async def main() -> tuple[int, int, int, int]:
        app = DnsApp(path.read_text(), path=str(path), host=HOST, error_stream=err)
        await app.start()
        try:
            app.set_cluster(SERVICES, SLICES, PODS)
            assert not await app.check_reload()  # unchanged: nothing to do
            path.write_text(conf(11, "    reload 2s 1s\n"))
            assert await app.check_reload()
            first = (await ask(app.port, f"web.{S}")).answer[0].ttl
            path.write_text(conf(11, "    reload 2s 1s\n    cache {\n        success x\n"
                                     "    }\n"))
            assert not await app.check_reload()
            kept = (await ask(app.port, f"web.{S}")).answer[0].ttl
            # Now the timer: a good file again, picked up by the watcher within 2-3 s.
            path.write_text(conf(22, "    reload 2s 1s\n"))
            await wait_for(lambda: app.reloads == 2, timeout=8)
            timed = (await ask(app.port, f"web.{S}")).answer[0].ttl
            return first, kept, timed, app.reload_failures
        finally:
            await app.stop()
    first, kept, timed, failures = asyncio.run(main())
    assert (first, kept, timed, failures) == (11, 11, 22, 1)
    assert "Corefile:7:17: cache success: capacity must be an integer" in err.getvalue()
    assert "the previous config keeps serving" in err.getvalue()


def test_set_cluster_swaps_zones_and_bad_objects_change_nothing() -> None:
    from kubewire.dns import DnsInputError

    from .test_dns_answer import _svc

    async def body(app: DnsApp) -> tuple[list[str], list[str]]:
        app.set_cluster([_svc("web", "10.96.0.77", [])], namespaces=["team-b"])
        moved = [rd.to_text() for rd in (await ask(app.port, f"web.{S}")).answer[0]]
        pod = await ask(app.port, "10-1-2-3.team-b.pod.cluster.local")
        assert [rd.to_text() for rd in pod.answer[0]] == ["10.1.2.3"]  # an extra namespace
        with pytest.raises(DnsInputError):
            app.set_cluster([{"metadata": {"name": "Bad_Name"}, "spec": {}}])
        kept = [rd.to_text() for rd in (await ask(app.port, f"web.{S}")).answer[0]]
        return moved, kept
    text = ".:0 {\n    kubernetes cluster.local {\n        pods insecure\n    }\n}\n"
    moved, kept = run_app(text, body)
    assert moved == kept == ["10.96.0.77"]
