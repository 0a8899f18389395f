"""health, ready and prometheus over HTTP on 127.0.0.1, and the lameduck on stop."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.request
from typing import Any

import dns.rcode

from kubewire.dnsserver.app import DnsApp

from .test_dns_answer import PODS, SERVICES, SLICES
from .test_dnsserver_helpers import HOST, FakeUpstream, S, answers, ask, run_app

K8S = "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        pods insecure\n    }\n"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, port, path)


def test_health_and_ready_follow_the_cluster() -> None:
    text = (".:0 {\n    health 127.0.0.1:0\n    ready 127.0.0.1:0\n" + K8S + "}\n")

    async def body(app: DnsApp) -> list[tuple[int, str]]:
        hp, rp = app.http_ports["health"], app.http_ports["ready"]
        out = [await get(hp, "/health"), await get(rp, "/ready")]
        app.set_cluster(SERVICES, SLICES, PODS)
        out += [await get(rp, "/ready"), await get(hp, "/nope")]
        return out
    health, not_ready, ready, missing = run_app(text, body, cluster=False)
    assert health == (200, "OK")
    assert not_ready[0] == 503 and "kubernetes" in not_ready[1]
    assert ready == (200, "OK")
    assert missing[0] == 404


def _sample(text: str, metric: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {metric} {labels} in:\n{text}")


def test_metrics_use_coredns_names() -> None:
    text = (".:0 {\n    prometheus 127.0.0.1:0\n    cache 30\n" + K8S
            + "    forward . 127.0.0.1:{UP}\n}\n")

    async def main() -> tuple[str, str]:
        async with FakeUpstream() as up:
            app = DnsApp(text.replace("{UP}", str(up.port)), host=HOST)
            await app.start()
            try:
                app.set_cluster(SERVICES, SLICES, PODS)
                for _ in range(3):
                    await ask(app.port, f"web.{S}")
                await ask(app.port, f"nope.{S}", "AAAA", tcp=True)
                await ask(app.port, "www.example.org")
                await ask(app.port, "www.example.org")
                status, body = await get(app.http_ports["prometheus"], "/metrics")
                assert status == 200
                return body, f"127.0.0.1:{up.port}"
            finally:
                await app.stop()
    body, to = asyncio.run(main())
    base = {"server": "dns://:0", "zone": "."}
    assert _sample(body, "coredns_dns_requests_total", **base, proto="udp", family="1",
                   type="A") == 5
    assert _sample(body, "coredns_dns_requests_total", proto="tcp", type="AAAA") == 1
    assert _sample(body, "coredns_dns_responses_total", **base, rcode="NOERROR") == 5
    assert _sample(body, "coredns_dns_responses_total", rcode="NXDOMAIN") == 1
    assert _sample(body, "coredns_dns_request_duration_seconds_count", type="A") == 5
    assert _sample(body, "coredns_dns_request_duration_seconds_bucket", type="A",
                   le="+Inf") == 5
    assert _sample(body, "coredns_cache_hits_total", type="success") == 1
    assert _sample(body, "coredns_cache_misses_total") == 1
    assert _sample(body, "coredns_forward_requests_total", to=to) == 1
    assert _sample(body, "coredns_forward_responses_total", to=to, rcode="NOERROR") == 1
    assert _sample(body, "coredns_build_info") == 1
    assert _sample(body, "coredns_plugin_enabled", name="kubernetes") == 1
    assert "# TYPE coredns_dns_request_duration_seconds histogram" in body


def test_lameduck_keeps_answering_then_stops() -> None:
    text = ".:0 {\n    health 127.0.0.1:0 {\n        lameduck 300ms\n    }\n" + K8S + "}\n"

    async def main() -> tuple[Any, float, int]:
        app = DnsApp(text, host=HOST)
        await app.start()
        app.set_cluster(SERVICES, SLICES, PODS)
        port, hp = app.port, app.http_ports["health"]
        t0 = time.monotonic()
        stopping = asyncio.ensure_future(app.stop())
        during = await ask(port, f"web.{S}")
        health = (await get(hp, "/health"))[0]
        await stopping
        return during, time.monotonic() - t0, health
    during, took, health = asyncio.run(main())
    assert answers(during) == ["10.96.0.10"] and health == 200
    assert took >= 0.3


def test_dns_counters_still_count() -> None:
    async def body(app: DnsApp) -> Any:
        await ask(app.port, f"web.{S}")
        await ask(app.port, f"nope.{S}")
        return app.server().counters
    c = run_app(".:0 {\n" + K8S + "}\n", body)
    assert c.queries == 2 and c.responses[0] == 1 and c.responses[dns.rcode.NXDOMAIN] == 1
