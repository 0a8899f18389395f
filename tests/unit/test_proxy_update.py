"""ProxyCompiler.update(): watch events applied one object at a time give, after every
step, the ruleset compile_proxy gives for the full state, the same delta as compile(),
a transaction from the delta equal to the one from comparing whole rulesets, and a fake
kernel in the same state as after one full sync."""

from __future__ import annotations

import dataclasses
import random
from itertools import count
from typing import Any

import pytest

from kubewire.proxy.compiler import ProxyCompiler, compile_proxy
from kubewire.proxy.errors import ProxyInputError
from kubewire.proxy.fake import FakeConntrack, FakeNft, FakeTable
from kubewire.proxy.model import Ruleset, RulesetDelta
from kubewire.proxy.plan import plan_full, plan_incremental
from kubewire.proxy.scenarios import NODE, endpoint, endpoint_slice, service
from kubewire.proxy.sync import ProxySyncer
from kubewire.proxy.views import ServiceView, SliceView

Obj = dict[str, Any]
Key = tuple[str, str]


def state(table: FakeTable) -> dict[str, object]:
    return {"chains": {n: (c.hook, tuple(c.rules)) for n, c in table.chains.items()},
            "sets": {n: (s.spec, dict(s.elements)) for n, s in table.sets.items()}}


def without_delta(rs: Ruleset) -> Ruleset:
    return Ruleset(chains=rs.chains, sets=rs.sets, udp_frontends=rs.udp_frontends,
                   warnings=rs.warnings)


def delta_fields(d: RulesetDelta | None) -> object:
    if d is None:
        return None
    return {f.name: getattr(d, f.name) for f in dataclasses.fields(d) if f.name != "base"}


def random_service(rng: random.Random, i: int) -> Obj:
    ns = f"ns{i % 2}"
    proto = rng.choice(["TCP", "UDP"])
    ports: list[Obj] = [{"name": "p", "port": 80 + rng.randrange(2), "protocol": proto}]
    if rng.random() < 0.3:
        ports.append({"name": "q", "port": 90, "protocol": "TCP"})
    spec: dict[str, Any] = {}
    kind = "ClusterIP"
    if rng.random() < 0.3:
        kind = "NodePort"
        ports[0]["nodePort"] = 30000 + rng.randrange(5)  # collisions on purpose
        if rng.random() < 0.5:
            spec["externalTrafficPolicy"] = "Local"
    if rng.random() < 0.2:
        spec["externalIPs"] = [f"203.0.113.{rng.randrange(3)}"]
    if rng.random() < 0.2:
        spec["internalTrafficPolicy"] = "Local"
    if rng.random() < 0.2:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": rng.choice([60, 90])}}
    if rng.random() < 0.05:
        return service(f"s{i}", "None", ports, ns)  # headless
    cip = f"10.96.0.{i if rng.random() < 0.9 else rng.randrange(8)}"
    return service(f"s{i}", cip, ports, ns, kind, **spec)


def random_slice(rng: random.Random, j: int) -> Obj:
    """Slice j: namespace fixed by j, its Service label random (so it moves between
    Services, and sometimes names one that does not exist)."""
    ns = f"ns{j % 2}"
    target = f"s{rng.randrange(10) * 2 + j % 2}"
    proto = rng.choice(["TCP", "UDP"])
    eps = [endpoint(f"10.244.{rng.randrange(3)}.{rng.randrange(6) + 2}",
                    f"node-{rng.randrange(3) + 1}",
                    ready=rng.random() < 0.8, serving=rng.choice([None, True, False]),
                    terminating=rng.choice([None, True]))
           for _ in range(rng.randrange(4))]
    ports = [{"name": "p", "port": 8080, "protocol": proto}]
    if rng.random() < 0.3:
        ports.append({"name": "q", "port": 9090, "protocol": "TCP"})
    sl = endpoint_slice(target, eps, ports, ns, f"sl{j}")
    if rng.random() < 0.05:
        sl["addressType"] = "IPv6"
    return sl


def key(obj: Obj) -> Key:
    return (obj["metadata"]["namespace"], obj["metadata"]["name"])


@pytest.mark.parametrize("seed", range(16))
def test_update_equals_full_compile(seed: int) -> None:
    rng = random.Random(seed)
    versions = count(1)
    services: dict[Key, Obj] = {}
    slices: dict[Key, Obj] = {}
    for i in range(10):
        svc = random_service(rng, i)
        services[key(svc)] = svc
    for j in range(12):
        sl = random_slice(rng, j)
        slices[key(sl)] = sl
    for obj in [*services.values(), *slices.values()]:
        obj["metadata"]["resourceVersion"] = str(next(versions))

    incremental = ProxyCompiler(NODE)   # update() after a first compile()
    reference = ProxyCompiler(NODE)     # compile() of the full lists every time
    if seed % 4 == 0:
        previous = incremental.update(changed_services=list(services.values()),
                                      changed_slices=list(slices.values()))
    else:
        previous = incremental.compile(list(services.values()), list(slices.values()))
    assert previous == reference.compile(list(services.values()), list(slices.values()))
    nft = FakeNft()
    syncer = ProxySyncer(nft=nft, conntrack=FakeConntrack())
    syncer.sync(previous)

    for step in range(40):
        changed_svcs: list[Obj | ServiceView] = []
        changed_slices: list[Obj | SliceView] = []
        gone_svcs: list[Key] = []
        gone_slices: list[Key] = []
        touched: set[tuple[str, Key]] = set()
        for _ in range(rng.randrange(1, 4)):
            roll = rng.random()
            if roll < 0.5:
                i = rng.randrange(20)
                k = (f"ns{i % 2}", f"s{i}")
                if ("svc", k) in touched:
                    continue
                touched.add(("svc", k))
                if rng.random() < 0.25:
                    services.pop(k, None)  # unknown keys too: ignored
                    gone_svcs.append(k)
                else:
                    svc = services[k] if k in services and rng.random() < 0.2 \
                        else random_service(rng, i)  # sometimes an unchanged resend
                    svc["metadata"]["resourceVersion"] = str(next(versions))
                    services[k] = svc
                    changed_svcs.append(ServiceView.from_k8s(svc) if rng.random() < 0.2
                                        else svc)
            else:
                j = rng.randrange(16)
                k = (f"ns{j % 2}", f"sl{j}")
                if ("slice", k) in touched:
                    continue
                touched.add(("slice", k))
                if rng.random() < 0.25:
                    slices.pop(k, None)
                    gone_slices.append(k)
                else:
                    sl = random_slice(rng, j)
                    sl["metadata"]["resourceVersion"] = str(next(versions))
                    slices[k] = sl
                    changed_slices.append(SliceView.from_k8s(sl) if rng.random() < 0.2
                                          else sl)
        all_svcs, all_slices = list(services.values()), list(slices.values())
        if step % 13 == 12:  # a periodic full resync in between
            rs = incremental.compile(all_svcs, all_slices)
        else:
            rs = incremental.update(changed_svcs, gone_svcs, changed_slices, gone_slices)
        expected = reference.compile(all_svcs, all_slices)
        assert rs == expected
        assert rs == compile_proxy(all_svcs, all_slices, NODE)
        assert delta_fields(rs.delta) == delta_fields(expected.delta)
        assert rs.delta is None or rs.delta.base is previous.token
        assert plan_incremental(previous, rs) == plan_incremental(previous, without_delta(rs))
        report = syncer.sync(rs)
        previous = rs
        full = FakeNft()
        full.run(plan_full(rs, None))
        assert state(nft.table()) == state(full.table()), report


def one(name: str, ip: str, ns: str = "default") -> Obj:
    return service(name, ip, [{"name": "p", "port": 80}], ns)


def slice_for(target: str, address: str, name: str) -> Obj:
    return endpoint_slice(target, [endpoint(address)], [{"name": "p", "port": 8080}],
                          name=name)


def test_relabelled_slice_leaves_its_old_service() -> None:
    svcs = [one("a", "10.96.0.1"), one("b", "10.96.0.2")]
    compiler = ProxyCompiler(NODE)
    first = compiler.compile(svcs, [slice_for("a", "10.244.0.5", "x")])
    moved = compiler.update(changed_slices=[slice_for("b", "10.244.0.5", "x")])
    assert moved == compile_proxy(svcs, [slice_for("b", "10.244.0.5", "x")], NODE)
    assert moved != first
    assert moved.delta is not None and moved.delta.chains_removed \
        and moved.delta.chains_added
    gone = compiler.update(removed_slices=[("default", "x")])
    assert gone == compile_proxy(svcs, [], NODE)
    assert compiler.update(removed_slices=[("default", "x")]) == gone  # unknown: ignored


def test_slice_before_its_service() -> None:
    compiler = ProxyCompiler(NODE)
    compiler.update(changed_slices=[slice_for("a", "10.244.0.5", "x")])
    rs = compiler.update(changed_services=[one("a", "10.96.0.1")])
    assert rs == compile_proxy([one("a", "10.96.0.1")], [slice_for("a", "10.244.0.5", "x")],
                               NODE)
    assert any(c.name.startswith("service-") for c in rs.chains)


def test_changed_and_removed_in_one_call_is_refused() -> None:
    compiler = ProxyCompiler(NODE)
    before = compiler.compile([one("a", "10.96.0.1")], [])
    with pytest.raises(ProxyInputError, match="both changed and removed"):
        compiler.update(changed_services=[one("a", "10.96.0.2")],
                        removed_services=[("default", "a")])
    # Nothing changed: the next update's delta is still against ``before``.
    rs = compiler.update(changed_services=[one("b", "10.96.0.3")])
    assert rs.delta is not None and rs.delta.base is before.token
    assert rs == compile_proxy([one("a", "10.96.0.1"), one("b", "10.96.0.3")], [], NODE)


def test_duplicate_slice_names_need_compile() -> None:
    compiler = ProxyCompiler(NODE)
    twice = [SliceView("default", "a", name="x"), SliceView("default", "b", name="x")]
    compiler.compile([one("a", "10.96.0.1")], twice)
    with pytest.raises(ProxyInputError, match="call compile"):
        compiler.update(changed_services=[one("b", "10.96.0.2")])
    compiler.compile([one("a", "10.96.0.1")], twice[:1])
    rs = compiler.update(changed_services=[one("b", "10.96.0.2")])
    assert rs == compile_proxy([one("a", "10.96.0.1"), one("b", "10.96.0.2")], twice[:1],
                               NODE)


def test_an_external_ip_on_a_node_address_and_port_shares_no_endpoint_choice() -> None:
    """A NodePort and another Service's externalIP . port on a node address would own the
    same @service-endpoints-tcp elements: the first by name keeps them, in compile() and
    update() alike, and removing either leaves the other's elements intact."""
    http = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]
    np = service("a-np", "10.96.0.70", http, type="NodePort")
    ext = service("b-ext", "10.96.0.71", [{"name": "http", "port": 30080, "protocol": "TCP"}],
                  externalIPs=[NODE.node_ips[0]])
    sl_np = endpoint_slice("a-np", [endpoint("10.244.0.71"), endpoint("10.244.0.72")],
                           [{"name": "http", "port": 8080, "protocol": "TCP"}])
    sl_ext = endpoint_slice("b-ext", [endpoint("10.244.0.73"), endpoint("10.244.0.74")],
                            [{"name": "http", "port": 8080, "protocol": "TCP"}])
    full = compile_proxy([np, ext], [sl_np, sl_ext], NODE)
    assert full.warnings
    pc = ProxyCompiler(NODE)
    pc.compile([np], [sl_np])
    both = pc.update(changed_services=[ext], changed_slices=[sl_ext])
    assert both.render() == full.render()
    alone = pc.update(removed_services=[("default", "a-np")], removed_slices=[
        ("default", sl_np["metadata"]["name"])])
    assert alone.render() == compile_proxy([ext], [sl_ext], NODE).render()
