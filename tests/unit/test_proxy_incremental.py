"""ProxyCompiler's incremental path: after random sequences of Service/EndpointSlice
changes its ruleset equals a fresh compile, the transaction planned from its delta equals
the one planned by comparing whole rulesets, and the fake kernel ends up in the same state
after the incremental syncs as after one full sync."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kubewire.proxy.compiler import ProxyCompiler, compile_proxy
from kubewire.proxy.fake import FakeConntrack, FakeNft, FakeTable
from kubewire.proxy.model import Ruleset
from kubewire.proxy.plan import plan_full, plan_incremental
from kubewire.proxy.scenarios import NODE, endpoint, endpoint_slice, service
from kubewire.proxy.sync import ProxySyncer

Obj = dict[str, Any]


def state(table: FakeTable) -> dict[str, object]:
    return {"chains": {n: (c.hook, tuple(c.rules)) for n, c in table.chains.items()},
            "sets": {n: (s.spec, dict(s.elements)) for n, s in table.sets.items()}}


def without_delta(rs: Ruleset) -> Ruleset:
    return Ruleset(chains=rs.chains, sets=rs.sets, udp_frontends=rs.udp_frontends,
                   warnings=rs.warnings)


def random_service(rng: random.Random, i: int) -> tuple[Obj, Obj]:
    """Service i (name and namespace fixed by i) with random shape: protocols, NodePorts,
    external IPs (sometimes shared, to make claims conflict), policies, affinity."""
    name, ns = f"s{i}", f"ns{i % 3}"
    proto = rng.choice(["TCP", "UDP"])
    ports: list[Obj] = [{"name": "p", "port": 80 + rng.randrange(2), "protocol": proto}]
    spec: dict[str, Any] = {}
    kind = "ClusterIP"
    if rng.random() < 0.3:
        kind = "NodePort"
        ports[0]["nodePort"] = 30000 + rng.randrange(6)  # collisions on purpose
        if rng.random() < 0.5:
            spec["externalTrafficPolicy"] = "Local"
    if rng.random() < 0.2:
        spec["externalIPs"] = [f"203.0.113.{rng.randrange(4)}"]
    if rng.random() < 0.2:
        spec["internalTrafficPolicy"] = "Local"
    if rng.random() < 0.2:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": rng.choice([60, 90])}}
    # Mostly distinct cluster IPs; sometimes one another Service already has.
    cip = f"10.96.0.{i if rng.random() < 0.9 else rng.randrange(8)}"
    svc = service(name, cip, ports, ns, kind, **spec)
    eps = [endpoint(f"10.244.{rng.randrange(3)}.{rng.randrange(6) + 2}",
                    f"node-{rng.randrange(3) + 1}",
                    ready=rng.random() < 0.8, serving=rng.choice([None, True, False]),
                    terminating=rng.choice([None, True]))
           for _ in range(rng.randrange(4))]
    sl = endpoint_slice(name, eps, [{"name": "p", "port": 8080, "protocol": proto}], ns)
    return svc, sl


@pytest.mark.parametrize("seed", range(12))
def test_incremental_equals_full(seed: int) -> None:
    rng = random.Random(seed)
    current: dict[int, tuple[Obj, Obj | None]] = {}
    for i in range(12):
        current[i] = random_service(rng, i)
    compiler = ProxyCompiler(NODE)
    nft, ct = FakeNft(), FakeConntrack()
    syncer = ProxySyncer(nft=nft, conntrack=ct)
    previous: Ruleset | None = None
    for version in range(1, 31):
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(20)
            roll = rng.random()
            if roll < 0.2 and i in current:
                del current[i]
            elif roll < 0.35 and i in current:
                current[i] = (current[i][0], None)  # the slice goes, the Service stays
            else:
                current[i] = random_service(rng, i)
        services = [svc for svc, _ in current.values()]
        slices = [sl for _, sl in current.values() if sl is not None]
        rng.shuffle(services)
        for obj in services + slices:  # unchanged objects keep their resourceVersion
            obj["metadata"].setdefault("resourceVersion", str(version))

        rs = compiler.compile(services, slices)
        assert rs == compile_proxy(services, slices, NODE)
        if previous is not None:
            assert rs.delta is None or rs.delta.base is previous.token
            from_delta = plan_incremental(previous, rs)
            by_diff = plan_incremental(previous, without_delta(rs))
            assert from_delta == by_diff
        report = syncer.sync(rs)
        previous = rs

        full = FakeNft()
        full.run(plan_full(rs, None))
        assert state(nft.table()) == state(full.table()), report


def test_delta_is_used_only_against_its_base() -> None:
    svcs = [service(f"s{i}", f"10.96.0.{i}", [{"name": "p", "port": 80}]) for i in range(3)]
    slices = [endpoint_slice(f"s{i}", [endpoint(f"10.244.0.{i + 2}")], [{"name": "p", "port": 80}])
              for i in range(3)]
    compiler = ProxyCompiler(NODE)
    first = compiler.compile(svcs, slices)
    assert first.delta is None
    second = compiler.compile(svcs[:2], slices)
    assert second.delta is not None and second.delta.base is first.token
    third = compiler.compile(svcs, slices)
    # Planned against ``first`` (not its base): compared in full, and nothing changed.
    tx = plan_incremental(first, third)
    assert tx is not None and tx.empty
