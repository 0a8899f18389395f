"""Zones built in a forked child: same answers, the loop keeps serving, errors surface."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubewire.dns.errors import DnsInputError
from kubewire.dnsserver.app import DnsApp, cluster_objects

from .test_dnsserver_helpers import answers, ask, run_app

COREFILE = """.:0 {
    kubernetes cluster.local {
        pods insecure
    }
}
"""


def svc(name: str, ip: str, ns: str = "default") -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}


def test_update_cluster_answers_like_set_cluster_and_keeps_serving() -> None:
    big = [svc(f"s{i}", f"10.96.{i // 250}.{i % 250 + 1}") for i in range(3000)]

    async def body(app: DnsApp) -> Any:
        app.set_cluster([svc("old", "10.96.100.1")])
        # While the child builds, the old zone keeps answering.
        update = asyncio.create_task(app.update_cluster(big, namespaces=["extra"]))
        during = await ask(app.port, "old.default.svc.cluster.local")
        await update
        after_old = await ask(app.port, "old.default.svc.cluster.local")
        new = await ask(app.port, "s2999.default.svc.cluster.local")
        pod = await ask(app.port, "10-244-0-5.extra.pod.cluster.local")
        return during, after_old, new, pod

    during, after_old, new, pod = run_app(COREFILE, body, cluster=False)
    assert answers(during) == ["10.96.100.1"]
    assert after_old.rcode() == 3  # NXDOMAIN: the new zone replaced the old one
    assert answers(new) == ["10.96.11.250"]
    assert answers(pod) == ["10.244.0.5"]  # namespaces given alone answer pod names


def test_a_producer_that_fails_raises_here_and_changes_nothing() -> None:
    def broken() -> Any:
        return cluster_objects([{"kind": "Service", "metadata": {"name": "Bad_Name"},
                                 "spec": {}}])

    async def body(app: DnsApp) -> Any:
        app.set_cluster([svc("keep", "10.96.0.7")])
        with pytest.raises(DnsInputError):
            await app.update_cluster_from(broken)
        return await ask(app.port, "keep.default.svc.cluster.local")

    assert answers(run_app(COREFILE, body, cluster=False)) == ["10.96.0.7"]
