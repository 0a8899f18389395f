"""Transactions: what a full and an incremental sync send to nft, checked as text and by
applying them to the validating fake."""

from __future__ import annotations

import random

from kubewire.proxy import names
from kubewire.proxy.compiler import compile_proxy
from kubewire.proxy.fake import FakeNft, FakeTable
from kubewire.proxy.model import Ruleset
from kubewire.proxy.plan import plan_full, plan_incremental
from kubewire.proxy.scenarios import (
    NODE,
    Scenario,
    endpoint,
    endpoint_slice,
    service,
    synthetic,
)

HTTP = [{"name": "http", "port": 80, "targetPort": 8080}]
HTTP_SLICE = [{"name": "http", "port": 8080}]
T = "ip kubewire-proxy"


def state(fake: FakeNft) -> dict[str, object]:
    """The fake's table in a comparable form."""
    t = fake.table()
    return {"chains": {n: (c.hook, c.rules) for n, c in t.chains.items()},
            "sets": {n: (s.spec, s.elements) for n, s in t.sets.items()}}


def expected(rs: Ruleset) -> dict[str, object]:
    t = FakeTable.from_ruleset(rs)
    return {"chains": {n: (c.hook, c.rules) for n, c in t.chains.items()},
            "sets": {n: (s.spec, s.elements) for n, s in t.sets.items()}}


def base() -> Scenario:
    return synthetic(5, 2)


def test_adding_one_service_touches_only_its_chain_and_elements() -> None:
    services, slices = base()
    before = compile_proxy(services, slices, NODE)
    services.append(service("new", "10.96.9.9", HTTP))
    slices.append(endpoint_slice("new", [endpoint("10.244.9.9")], HTTP_SLICE))
    after = compile_proxy(services, slices, NODE)
    tx = plan_incremental(before, after)
    assert tx is not None and not tx.full
    chain = "service-YGD5NO3G-default/new/tcp/80"
    assert names.service_chain("default/new/tcp/80") == chain
    assert tx.render().splitlines() == [
        f"add chain {T} {chain}",
        f"add rule {T} {chain} meta l4proto tcp dnat to 10.244.9.9:8080",
        f"add element {T} cluster-ip-ports {{ 10.96.9.9 . tcp . 80 }}",
        f"add element {T} hairpin-endpoints {{ 10.244.9.9 . 10.244.9.9 }}",
        f"add element {T} service-ips {{ 10.96.9.9 . tcp . 80 : goto {chain} }}",
    ]
    assert (tx.chains_added, tx.chains_changed, tx.chains_removed) == ((chain,), (), ())
    assert (tx.elements_added, tx.elements_removed) == (3, 0)


def test_removing_a_service_deletes_references_before_chains() -> None:
    services, slices = base()
    before = compile_proxy(services, slices, NODE)
    after = compile_proxy(services[1:], slices[1:], NODE)  # svc-0 is a NodePort
    tx = plan_incremental(before, after)
    assert tx is not None
    lines = tx.render().splitlines()
    verbs = [" ".join(line.split()[:2]) for line in lines]
    last_element = max(i for i, v in enumerate(verbs) if v == "delete element")
    first_chain = min(i for i, v in enumerate(verbs) if v in ("flush chain", "delete chain"))
    assert last_element < first_chain
    assert sorted(tx.chains_removed) == sorted([
        names.service_chain("ns-0/svc-0/tcp/80"), names.external_chain("ns-0/svc-0/tcp/80")])
    fake = FakeNft()
    fake.run(plan_full(before, None))
    fake.run(tx)
    assert state(fake) == expected(after)


def test_changed_endpoints_rewrite_one_chain() -> None:
    services, slices = base()
    before = compile_proxy(services, slices, NODE)
    # Keep the endpoint on node-2: the one on NODE (node-1) goes, and with it its
    # hairpin element (remote endpoints have none).
    slices[2] = dict(slices[2], endpoints=slices[2]["endpoints"][1:])
    after = compile_proxy(services, slices, NODE)
    tx = plan_incremental(before, after)
    assert tx is not None
    chain = names.service_chain("ns-2/svc-2/tcp/80")
    assert tx.chains_changed == (chain,) and not tx.chains_added and not tx.chains_removed
    text = tx.render()
    assert f"flush chain {T} {chain}\n" in text
    assert "delete element ip kubewire-proxy hairpin-endpoints { 10.128.0.2 . 10.128.0.2 }" in text
    assert "10.129.0.2 . 10.129.0.2" not in before.render()


def test_no_change_is_an_empty_transaction() -> None:
    services, slices = base()
    rs = compile_proxy(services, slices, NODE)
    tx = plan_incremental(rs, compile_proxy(services, slices, NODE))
    assert tx is not None and tx.empty and tx.render() == "\n"


def test_a_verdict_change_deletes_then_adds_the_element() -> None:
    svc = service("web", "10.96.0.10", HTTP)
    with_ep = compile_proxy([svc], [endpoint_slice("web", [endpoint("10.244.0.2")],
                                                   HTTP_SLICE)], NODE)
    without = compile_proxy([svc], [], NODE)
    tx = plan_incremental(with_ep, without)
    assert tx is not None
    lines = tx.render().splitlines()
    assert f"delete element {T} service-ips {{ 10.96.0.10 . tcp . 80 }}" in lines
    assert f"add element {T} no-endpoint-services {{ 10.96.0.10 . tcp . 80 : goto " \
           "reject-chain }" in lines


def test_set_definition_change_needs_a_full_sync() -> None:
    def sticky(timeout: int) -> Ruleset:
        svc = service("s", "10.96.0.10", HTTP, sessionAffinity="ClientIP",
                      sessionAffinityConfig={"clientIP": {"timeoutSeconds": timeout}})
        return compile_proxy([svc], [endpoint_slice("s", [endpoint("10.244.0.2")],
                                                    HTTP_SLICE)], NODE)
    assert plan_incremental(sticky(60), sticky(120)) is None


def test_full_transactions() -> None:
    services, slices = base()
    old = compile_proxy(services, slices, NODE)
    new = compile_proxy(services[1:], slices[1:], NODE)
    first = plan_full(new, None).render().splitlines()
    assert first[:3] == [f"add table {T}", f"delete table {T}", f"table {T} {{"]
    full = plan_full(new, old)
    lines = full.render().splitlines()
    assert lines[:2] == [f"add table {T}", f"flush table {T}"]
    gone = names.external_chain("ns-0/svc-0/tcp/80")
    assert f"add chain {T} {gone}" in lines and f"delete chain {T} {gone}" in lines
    assert f"flush map {T} service-ips" in lines
    assert not any(line.startswith("flush set") and "affinity" in line for line in lines)
    # Applied over the old table, the result is exactly the new ruleset, and a chain
    # removed by hand meanwhile does not make the transaction fail.
    fake = FakeNft()
    fake.run(plan_full(old, None))
    del fake.table().chains[gone]
    fake.run(full)
    assert state(fake) == expected(new)


def test_random_changes_converge_incrementally() -> None:
    """Model check: any sequence of incremental transactions leaves the fake's table equal
    to the last compiled ruleset, and the fake accepts every one of them."""
    rng = random.Random(11)
    services, slices = synthetic(12, 3, node_port_every=3)
    for i in range(0, 12, 4):
        services[i]["spec"]["sessionAffinity"] = "ClientIP"
    for i in range(1, 12, 5):
        services[i]["spec"]["internalTrafficPolicy"] = "Local"
    fake = FakeNft()
    current = compile_proxy(services, slices, NODE)
    fake.run(plan_full(current, None))
    for step in range(60):
        i = rng.randrange(len(services))
        action = rng.randrange(5)
        if action == 0:
            slices[i] = dict(slices[i], endpoints=slices[i]["endpoints"][: rng.randrange(4)])
        elif action == 1:
            eps = [endpoint(f"10.200.{step}.{k}", f"node-{k % 3 + 1}")
                   for k in range(rng.randrange(1, 4))]
            slices[i] = dict(slices[i], endpoints=eps)
        elif action == 2:
            spec = services[i]["spec"]
            spec["externalTrafficPolicy"] = rng.choice(["Local", "Cluster"])
            spec["externalIPs"] = rng.choice([[], [f"192.0.2.{i}"]])
        elif action == 3:
            services[i] = service(services[i]["metadata"]["name"], f"10.97.{step}.{i}", HTTP,
                                  services[i]["metadata"]["namespace"])
        else:
            services.append(service(f"extra-{step}", f"10.98.0.{step}", HTTP))
            slices.append(endpoint_slice(f"extra-{step}", [endpoint(f"10.201.0.{step}")],
                                         HTTP_SLICE))
        desired = compile_proxy(services, slices, NODE)
        tx = plan_incremental(current, desired) or plan_full(desired, current)
        fake.run(tx)
        assert state(fake) == expected(desired), f"step {step}"
        current = desired
    assert len(fake.transactions) == 61 and not fake.refused
