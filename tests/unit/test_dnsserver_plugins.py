"""Each plugin over real sockets on 127.0.0.1: kubernetes, forward, cache, hosts, rewrite, log."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest

from kubewire.dnsserver.app import DnsApp

from .test_dnsserver_helpers import (
    HOST,
    Clock,
    FakeUpstream,
    S,
    answers,
    ask,
    run_app,
    streams,
)

K8S = """    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
"""


def core(body: str, key: str = ".:0") -> str:
    return f"{key} {{\n{body}}}\n"


# -- kubernetes ----------------------------------------------------------------------------


def test_kubernetes_answers_with_the_corefile_ttl() -> None:
    async def body(app: DnsApp) -> list[dns.message.Message]:
        return [await ask(app.port, f"web.{S}"), await ask(app.port, f"nope.{S}"),
                await ask(app.port, "10.0.96.10.in-addr.arpa", "PTR"),
                await ask(app.port, "10-244-9-9.team-a.pod.cluster.local", tcp=True)]
    a, nx, ptr, pod = run_app(core(K8S), body)
    assert answers(a) == ["10.96.0.10"] and a.answer[0].ttl == 30
    assert a.flags & dns.flags.AA
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].ttl == 30
    assert answers(ptr) == [f"web.{S}."]
    assert answers(pod) == ["10.244.9.9"]


def test_pods_disabled_by_default_and_not_ready_is_servfail() -> None:
    text = core("    kubernetes cluster.local\n")

    async def body(app: DnsApp) -> tuple[Any, ...]:
        before = await ask(app.port, f"web.{S}")
        ready_before = app.ready
        app.set_cluster(*_objects())
        return before, ready_before, app.ready, await ask(
            app.port, "10-244-9-9.team-a.pod.cluster.local"), await ask(app.port, f"web.{S}")
    before, r0, r1, pod, after = run_app(text, body, cluster=False)
    assert before.rcode() == dns.rcode.SERVFAIL and not r0 and r1
    assert pod.rcode() == dns.rcode.NXDOMAIN
    assert answers(after) == ["10.96.0.10"] and after.answer[0].ttl == 5


def _objects() -> tuple[Any, ...]:
    from .test_dns_answer import PODS, SERVICES, SLICES
    return SERVICES, SLICES, PODS


def test_reverse_names_without_fallthrough_are_nxdomain_with_it_forwarded() -> None:
    async def body(app: DnsApp, up: FakeUpstream) -> tuple[Any, Any]:
        return (await ask(app.port, "9.9.9.10.in-addr.arpa", "PTR"),
                await ask(app.port, "1.0.0.127.in-addr.arpa", "PTR"))

    no_fall = core("    kubernetes cluster.local in-addr.arpa\n    forward . 127.0.0.1:{UP}\n")
    fall = core(K8S + "    forward . 127.0.0.1:{UP}\n")
    nx, _ = with_upstream(no_fall, body)
    fwd, _ = with_upstream(fall, body)
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert answers(fwd) == ["host.example."]


def with_upstream(text: str, body: Any, **kw: Any) -> Any:
    """Run ``body(app, upstream)`` with ``{UP}`` in the Corefile replaced by its port."""
    async def main() -> Any:
        async with FakeUpstream() as up:
            app = DnsApp(text.replace("{UP}", str(up.port)), host=HOST, **kw)
            await app.start()
            try:
                app.set_cluster(*_objects())
                return await asyncio.wait_for(body(app, up), 30)
            finally:
                await app.stop()
    return asyncio.run(main())


# -- forward -------------------------------------------------------------------------------


def test_forward_keeps_the_id_and_uses_udp() -> None:
    text = core(K8S + "    forward . 127.0.0.1:{UP}\n")

    async def body(app: DnsApp, up: FakeUpstream) -> Any:
        r = await ask(app.port, "www.example.org", qid=4242)
        t = await ask(app.port, "tcp.example.org", tcp=True)
        return r, t, list(up.seen), app.server().counters.fallbacks
    r, t, seen, fallbacks = with_upstream(text, body)
    assert r.id == 4242 and answers(r) == ["192.0.2.1"] and answers(t) == ["192.0.2.1"]
    assert seen == [("udp", "www.example.org."), ("tcp", "tcp.example.org.")]
    assert fallbacks == 2


def test_forward_retries_over_tcp_on_tc() -> None:
    text = core(K8S + "    forward . 127.0.0.1:{UP}\n")

    async def body(app: DnsApp, up: FakeUpstream) -> Any:
        over_tcp = await ask(app.port, "big.example.org", tcp=True)
        big_edns = await ask(app.port, "big.example.org", use_edns=0, payload=4096)
        small = await ask(app.port, "big.example.org")
        return over_tcp, big_edns, small, list(up.seen)
    over_tcp, big_edns, small, seen = with_upstream(text, body)
    assert len(answers(over_tcp)) == 60 and len(answers(big_edns)) == 60
    # A 512-byte client cannot take the ~1 KB answer: TC, so it asks again over TCP.
    assert small.flags & dns.flags.TC and not small.answer
    assert seen == [("tcp", "big.example.org."),  # TCP client: TCP upstream
                    ("udp", "big.example.org."), ("tcp", "big.example.org."),  # TC -> TCP
                    ("udp", "big.example.org."), ("tcp", "big.example.org.")]


def _silent_port() -> tuple[socket.socket, int]:
    """A bound UDP socket nobody reads: an upstream that never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    return s, s.getsockname()[1]


def test_forward_to_a_silent_upstream_is_servfail_within_the_timeout() -> None:
    sock, port = _silent_port()
    err = streams()[1]
    try:
        text = core(K8S + f"    errors\n    forward . 127.0.0.1:{port} {{\n"
                          "        timeout 300ms\n    }\n")

        async def body(app: DnsApp) -> tuple[Any, float]:
            t0 = time.monotonic()
            r = await ask(app.port, "www.example.org", timeout=5)
            return r, time.monotonic() - t0
        r, took = run_app(text, body, error_stream=err)
    finally:
        sock.close()
    assert r.rcode() == dns.rcode.SERVFAIL
    assert 0.25 <= took < 1.5
    assert "[ERROR] plugin/errors: 2 www.example.org. A: SERVFAIL" in err.getvalue()


def test_forward_skips_a_dead_upstream_and_refuses_over_max_concurrent() -> None:
    sock, dead = _silent_port()
    try:
        text = core(K8S + f"    forward . 127.0.0.1:{dead} 127.0.0.1:{{UP}} {{\n"
                          "        policy sequential\n        timeout 1s\n    }\n")

        async def body(app: DnsApp, up: FakeUpstream) -> Any:
            t0 = time.monotonic()
            r = await ask(app.port, "www.example.org")
            return r, time.monotonic() - t0
        r, took = with_upstream(text, body)
        assert answers(r) == ["192.0.2.1"] and took < 1.0  # half the budget went to the dead one

        limited = core(f"    forward . 127.0.0.1:{dead} {{\n        max_concurrent 1\n"
                       "        timeout 500ms\n    }\n")

        async def body2(app: DnsApp) -> Any:
            first = asyncio.ensure_future(ask(app.port, "a.example.org"))
            await asyncio.sleep(0)  # let the first query go out
            second = await ask(app.port, "b.example.org", tcp=True)
            return second, await first
        second, first = run_app(limited, body2)
        assert second.rcode() == dns.rcode.REFUSED and first.rcode() == dns.rcode.SERVFAIL
    finally:
        sock.close()


def test_forward_reads_resolv_conf(tmp_path: Path) -> None:
    from kubewire.dns.corefile import CorefileError
    from kubewire.dnsserver.forward import resolv_conf_nameservers

    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# test\nsearch example\nnameserver 127.0.0.1\nnameserver ::1\n")

    async def body(app: DnsApp) -> list[str]:
        return [u.label for f in app._gen.forwards for u in f.upstreams]  # type: ignore[union-attr]
    # No query is sent: port 53 on this machine is not ours to talk to.
    assert run_app(core(f"    forward . {resolv}\n"), body) == ["127.0.0.1:53", "[::1]:53"]
    assert resolv_conf_nameservers("nameserver fe80::1%eth0 # x\n;c\n") == ["fe80::1"]

    async def never(app: DnsApp) -> None:
        raise AssertionError("must not start")
    with pytest.raises(CorefileError, match=r"^Corefile:2:15: forward: cannot read"):
        run_app(core(f"    forward . {tmp_path}/missing.conf\n"), never)
    (tmp_path / "empty.conf").write_text("search x\n")
    with pytest.raises(CorefileError, match="no nameserver line"):
        run_app(core(f"    forward . {tmp_path}/empty.conf\n"), never)


# -- cache ---------------------------------------------------------------------------------


def test_cache_hits_decrement_ttl_rewrite_ids_and_cache_denials() -> None:
    clock = Clock()
    text = core(K8S + "    cache 30\n    prometheus 127.0.0.1:0\n    forward . 127.0.0.1:{UP}\n")

    async def body(app: DnsApp, up: FakeUpstream) -> Any:
        first = await ask(app.port, "www.example.org", qid=1)
        clock.now += 10
        second = await ask(app.port, "WWW.Example.ORG", qid=2)
        nx1 = await ask(app.port, "nx.example.org")
        nx2 = await ask(app.port, "nx.example.org")
        clock.now += 31  # past the 30 s cap: asked upstream again
        third = await ask(app.port, "www.example.org", qid=3)
        cluster = await ask(app.port, f"web.{S}")
        return first, second, nx1, nx2, third, cluster, list(up.seen)
    first, second, nx1, nx2, third, cluster, seen = with_upstream(text, body, clock=clock)
    assert first.answer[0].ttl == 60  # the upstream's own reply passes through
    assert second.id == 2 and answers(second) == ["192.0.2.1"]
    assert second.answer[0].ttl == 20  # cached for min(60, 30) s, 10 s gone
    assert str(second.question[0].name) == "WWW.Example.ORG."  # the asker's spelling
    assert nx1.rcode() == nx2.rcode() == dns.rcode.NXDOMAIN
    assert third.answer[0].ttl == 60
    assert answers(cluster) == ["10.96.0.10"]
    assert seen == [("udp", "www.example.org."), ("udp", "nx.example.org."),
                    ("udp", "www.example.org.")]


def test_cache_key_has_the_do_bit() -> None:
    text = core("    cache\n    forward . 127.0.0.1:{UP}\n")

    async def body(app: DnsApp, up: FakeUpstream) -> Any:
        await ask(app.port, "www.example.org", use_edns=0)
        await ask(app.port, "www.example.org", use_edns=0, want_dnssec=True)
        await ask(app.port, "www.example.org", use_edns=0, want_dnssec=True)
        return len(up.seen)
    assert with_upstream(text, body) == 2


# -- hosts ---------------------------------------------------------------------------------


def test_hosts_inline_and_file_with_fallthrough(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n10.1.1.1 files.example  alias.example\nfd00::7 six.example\n"
                     "not-an-ip bad.example\n")
    text = core(f"    hosts {hosts} {{\n        192.0.2.9 inline.example\n"
                "        ttl 77\n        fallthrough\n    }\n" + K8S)

    async def body(app: DnsApp) -> list[Any]:
        return [await ask(app.port, q, t) for q, t in [
            ("inline.example", "A"), ("ALIAS.example", "A"), ("six.example", "AAAA"),
            ("files.example", "MX"), ("1.1.1.10.in-addr.arpa", "PTR"), (f"web.{S}", "A"),
            ("bad.example", "A")]]
    inline, alias, six, mx, ptr, web, bad = run_app(text, body)
    assert answers(inline) == ["192.0.2.9"] and inline.answer[0].ttl == 77
    assert answers(alias) == ["10.1.1.1"] and answers(six) == ["fd00::7"]
    assert mx.rcode() == dns.rcode.NOERROR and not mx.answer  # the name exists: NODATA
    assert answers(ptr) == ["alias.example.", "files.example."]
    assert answers(web) == ["10.96.0.10"]  # fell through to kubernetes
    assert bad.rcode() == dns.rcode.SERVFAIL  # not in hosts, not ours: nobody answers

    no_fall = core("    hosts /nonexistent/hosts {\n        192.0.2.9 inline.example\n    }\n"
                   + K8S)
    err = streams()[1]

    async def body2(app: DnsApp) -> Any:
        return await ask(app.port, f"web.{S}"), await ask(app.port, "inline.example")
    web2, inline2 = run_app(no_fall, body2, error_stream=err)
    assert web2.rcode() == dns.rcode.NXDOMAIN  # hosts owns "." and does not fall through
    assert answers(inline2) == ["192.0.2.9"]
    assert "cannot read /nonexistent/hosts" in err.getvalue()


def test_hosts_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.1.1.1 moving.example\n")
    text = core(f"    hosts {hosts} {{\n        reload 20ms\n    }}\n")

    async def body(app: DnsApp) -> tuple[list[str], list[str]]:
        before = answers(await ask(app.port, "moving.example"))
        hosts.write_text("10.2.2.2 moving.example\n# a longer file: the size changes too\n")
        got: list[str] = []

        async def changed() -> bool:
            got[:] = answers(await ask(app.port, "moving.example"))
            return got == ["10.2.2.2"]
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while not await changed():
            assert loop.time() < end, "the hosts file was not re-read"
            await asyncio.sleep(0.02)
        return before, got
    before, after = run_app(text, body)
    assert before == ["10.1.1.1"] and after == ["10.2.2.2"]


# -- rewrite -------------------------------------------------------------------------------


def test_rewrite_round_trip_for_each_match_type() -> None:
    # Rules apply in order and the first match stops (CoreDNS's default "stop").
    text = core(K8S + "    rewrite name exact alias.corp. web.default.svc.cluster.local.\n"
                "    rewrite name regex (.*)\\.reg\\.corp {1}.default.svc.cluster.local\n"
                "    rewrite name suffix .corp .svc.cluster.local\n"
                "    rewrite name substring .ns. .default.\n"
                "    rewrite name prefix api. web.\n")

    async def body(app: DnsApp) -> list[Any]:
        return [await ask(app.port, n, tcp=tcp) for n, tcp in [
            ("Alias.Corp", False), ("web.default.corp", False), ("web.reg.corp", True),
            ("web.ns.svc.cluster.local", False), ("api.default.svc.cluster.local", False)]]
    for msg, asked in zip(run_app(text, body), ["Alias.Corp.", "web.default.corp.",
                                                "web.reg.corp.", "web.ns.svc.cluster.local.",
                                                "api.default.svc.cluster.local."],
                          strict=True):
        assert answers(msg) == ["10.96.0.10"], msg
        assert str(msg.question[0].name) == asked
        assert str(msg.answer[0].name) == asked  # the client sees its own name


# -- loadbalance ---------------------------------------------------------------------------


def test_loadbalance_rotates_address_records() -> None:
    text = core(K8S + "    loadbalance\n    forward . 127.0.0.1:{UP}\n")

    def order(msg: dns.message.Message) -> list[str]:
        return [rd.to_text() for rrset in msg.answer for rd in rrset]

    async def body(app: DnsApp, up: FakeUpstream) -> Any:
        heads = [await ask(app.port, f"db.{S}") for _ in range(2)]
        raw = []
        for _ in range(3):  # forwarded and cached replies rotate too
            r = await ask(app.port, "big.example.org", tcp=True)
            raw.append([rd.address for rd in r.answer[0]])
        alias = await ask(app.port, f"alias.{S}")
        return heads, raw, alias
    heads, raw, alias = with_upstream(text, body)
    assert [m.answer[0].name.to_text() for m in heads] == [f"db.{S}."] * 2
    assert sorted(order(heads[0])) == sorted(order(heads[1])) == ["10.244.1.5", "10.244.2.5"]
    assert order(heads[0]) != order(heads[1])  # a headless Service's pods take turns first
    assert len({tuple(x) for x in raw}) == 3 and all(len(x) == 60 for x in raw)
    assert [x[0] for x in raw] != [raw[0][0]] * 3  # a different first address each time
    assert order(alias) == [f"web.{S}.", "10.96.0.10"]  # CNAME first, then its one A


# -- log -----------------------------------------------------------------------------------


LOG_RE = re.compile(
    r'^\[INFO\] 127\.0\.0\.1:\d+ - 777 "A IN web\.default\.svc\.cluster\.local\. udp \d+ '
    r'(true|false) (512|1232)" NOERROR qr,aa,rd \d+ \d+\.\d+s$')


def test_log_lines_use_the_common_format() -> None:
    out, _ = streams()

    async def body(app: DnsApp) -> None:
        await ask(app.port, f"web.{S}", qid=777)
        await ask(app.port, f"nope.{S}", qid=778, use_edns=0, want_dnssec=True)
    run_app(core(K8S + "    log\n"), body, log_stream=out)
    first, second = out.getvalue().splitlines()
    assert LOG_RE.match(first), first
    assert '"A IN nope.default.svc.cluster.local. udp' in second
    assert ' true 1232" NXDOMAIN qr,aa,rd ' in second


def test_log_class_filter() -> None:
    out, _ = streams()

    async def body(app: DnsApp) -> None:
        await ask(app.port, f"web.{S}")
        await ask(app.port, f"nope.{S}")
    run_app(core(K8S + "    log {\n        class denial\n    }\n"), body, log_stream=out)
    (line,) = out.getvalue().splitlines()
    assert "NXDOMAIN" in line


# -- server blocks -------------------------------------------------------------------------


def test_two_server_blocks_share_a_port_and_route_by_zone() -> None:
    text = ("cluster.local:0 in-addr.arpa:0 {\n" + K8S + "}\n"
            "example.org:0 {\n    hosts {\n        192.0.2.44 www.example.org\n    }\n}\n")

    async def body(app: DnsApp) -> Any:
        assert len(set(app.ports.values())) == 1
        return (await ask(app.port, f"web.{S}"), await ask(app.port, "www.example.org"),
                await ask(app.port, "other.test"))
    web, www, other = run_app(text, body)
    assert answers(web) == ["10.96.0.10"] and answers(www) == ["192.0.2.44"]
    assert other.rcode() == dns.rcode.REFUSED


def test_a_plugin_order_other_than_the_corefiles() -> None:
    # hosts is listed after forward, yet runs before it (plugin.cfg order), as in CoreDNS.
    text = core("    forward . 127.0.0.1:{UP}\n    hosts {\n        192.0.2.5 www.example.org\n"
                "        fallthrough\n    }\n")

    async def body(app: DnsApp, up: FakeUpstream) -> Any:
        return await ask(app.port, "www.example.org"), len(up.seen)
    r, seen = with_upstream(text, body)
    assert answers(r) == ["192.0.2.5"] and seen == 0


@pytest.mark.parametrize("tcp", [False, True])
def test_default_corefile_runs(tcp: bool) -> None:
    from kubewire.dns.corefile import default_corefile

    text = (default_corefile(upstream="127.0.0.1:{UP}", port=0)
            .replace("health {", "health 127.0.0.1:0 {").replace("lameduck 5s", "lameduck 10ms")
            .replace("ready\n", "ready 127.0.0.1:0\n").replace(":9153", "127.0.0.1:0"))

    async def body(app: DnsApp, up: FakeUpstream) -> Any:
        return (await ask(app.port, f"web.{S}", tcp=tcp),
                await ask(app.port, "www.example.org", tcp=tcp), app.ready)
    web, www, ready = with_upstream(text, body)
    assert answers(web) == ["10.96.0.10"] and web.answer[0].ttl == 30
    assert answers(www) == ["192.0.2.1"] and ready


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
def test_dig_through_forward_cache_and_tc_retry() -> None:
    text = core(K8S + "    cache 30\n    forward . 127.0.0.1:{UP}\n")

    async def dig(port: int, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "dig", f"@{HOST}", "-p", str(port), "+time=2", "+tries=1", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        return out.decode()

    async def body(app: DnsApp, up: FakeUpstream) -> tuple[str, str, str, int]:
        big = await dig(app.port, "+noedns", "big.example.org")  # TC, then dig asks over TCP
        first = await dig(app.port, "+short", "www.example.org")
        again = await dig(app.port, "www.example.org")  # from the cache
        return big, first, again, len(up.seen)
    big, first, again, asked = with_upstream(text, body)
    assert "ANSWER: 60" in big and "(TCP)" in big and "Truncated, retrying in TCP mode" in big
    assert first.split() == ["192.0.2.1"]
    assert "status: NOERROR" in again and "192.0.2.1" in again
    # big: UDP (TC) + TCP upstream for dig's UDP try, TCP for dig's TCP retry; www: once
    assert asked == 2 + 1 + 1


def test_external_name_targets_are_resolved_through_the_chain() -> None:
    ext = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "ext", "namespace": "default"},
           "spec": {"type": "ExternalName", "externalName": "www.example.org"}}
    gone = {**ext, "metadata": {"name": "gone", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "nx.example.org"}}
    text = core(K8S + "    forward . 127.0.0.1:{UP}\n")

    async def body(app: DnsApp, up: FakeUpstream) -> Any:
        app.set_cluster([ext, gone])
        a = await ask(app.port, "Ext.default.svc.cluster.local", "A")
        cname = await ask(app.port, "ext.default.svc.cluster.local", "CNAME")
        nx = await ask(app.port, "gone.default.svc.cluster.local", "A")
        return a, cname, nx, list(up.seen)

    a, cname, nx, seen = with_upstream(text, body)
    # The CNAME first, then the target's records from upstream; the asker's case is kept.
    assert [r.to_text().split()[3:] for r in a.answer] == [
        ["CNAME", "www.example.org."], ["A", "192.0.2.1"]]
    assert a.answer[0].name.to_text() == "Ext.default.svc.cluster.local."
    assert a.rcode() == dns.rcode.NOERROR
    assert answers(cname) == ["www.example.org."]  # a CNAME query is not chased
    assert nx.rcode() == dns.rcode.NXDOMAIN and answers(nx) == ["nx.example.org."]
    assert seen == [("udp", "www.example.org."), ("udp", "nx.example.org.")]
