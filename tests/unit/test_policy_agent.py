"""The node's policy agent and its applier, against the real store and a recording nft."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from kubewire.lab.policyagent import PolicyAgent
from kubewire.lab.policysync import PolicySyncer, PolicySyncError, plan_elements
from kubewire.policy import PolicyNode, compile_policy
from kubewire.policy.cases import load_cases
from kubewire.policy.fake import check_ruleset
from kubewire.policy.model import Ruleset
from kubewire.store.store import ObjectStore

NODE = "node-1"


class RecordingNft:
    """Keeps every transaction; refuses the next ``fail`` ones, as nft would."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.fail = 0

    def run(self, text: str) -> None:
        if self.fail:
            self.fail -= 1
            raise PolicySyncError("nft refused it (test)", stderr="Error: test")
        self.runs.append(text)


def pod(ns: str, name: str, ip: str, node: str = NODE, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": labels or {"pod": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": ip}}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {"ns": name}}}


def policy(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": ns, "name": name}, "spec": spec}


ALLOW_B = {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
           "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}


def store_with_pods() -> ObjectStore:
    store = ObjectStore()
    for ns in ("x", "y"):
        store.put(namespace(ns))
    store.put(pod("x", "a", "10.244.1.10"))
    store.put(pod("x", "b", "10.244.2.11", node="node-2"))
    store.put(pod("y", "c", "10.244.1.12"))
    return store


async def settle(agent: PolicyAgent, until: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 3
    while not until():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def drive(store: ObjectStore, nft: RecordingNft,
          scenario: Callable[[PolicyAgent], Awaitable[None]]) -> PolicyAgent:
    PolicyAgent.RETRY_SECONDS = 0.05

    async def main() -> None:
        agent = PolicyAgent(NODE, store, syncer=PolicySyncer(nft=nft))
        task = asyncio.create_task(agent.run())
        try:
            await asyncio.sleep(0.05)
            await scenario(agent)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        holder.append(agent)

    holder: list[PolicyAgent] = []
    asyncio.run(main())
    return holder[0]


def test_no_table_until_the_first_policy_then_full_then_element_changes() -> None:
    store, nft = store_with_pods(), RecordingNft()
    store.put(pod("x", "d", "10.244.2.13", node="node-2", pod="b"))

    async def scenario(agent: PolicyAgent) -> None:
        await asyncio.sleep(0.1)
        assert nft.runs == []  # pods and namespaces alone: no table, no nft run
        store.put(policy("x", "allow-b", ALLOW_B))
        await settle(agent, lambda: len(nft.runs) == 1, "the first sync")
        first = nft.runs[0]
        assert first.startswith("add table ip kubewire-policy\ndelete table")
        assert "10.244.1.10 : goto ingress-x" in first  # x/a is local and isolated
        assert "10.244.2.11" in first  # x/b (on node-2) is a peer
        assert "10.244.1.12" not in first  # y/c: neither target nor peer

        # A status change that changes no view (readiness) does not sync.
        status = {"phase": "Running", "podIP": "10.244.1.12",
                  "conditions": [{"type": "Ready", "status": "True"}]}
        store.update_status("Pod", "y", "c", status)
        await asyncio.sleep(0.1)
        assert len(nft.runs) == 1

        # y/c becomes pod=b, but in namespace y: the peer set (namespace x) is unchanged.
        store.put(pod("y", "c", "10.244.1.12", pod="b"))
        await asyncio.sleep(0.1)
        assert len(nft.runs) == 1
        # x/b's label changes: it leaves the peer set (x/d stays), element-only change.
        store.put(pod("x", "b", "10.244.2.11", node="node-2", pod="z"))
        await settle(agent, lambda: len(nft.runs) == 2, "the label change")
        second = nft.runs[1]
        assert "table" not in second.replace("ip kubewire-policy", "")
        assert second.startswith("delete element ip kubewire-policy peers-")
        peers = second.split()[4]
        assert second == f"delete element ip kubewire-policy {peers} {{ 10.244.2.11 }}\n"

        # Deleting the last policy removes the table.
        store.delete("NetworkPolicy", "x", "allow-b")
        await settle(agent, lambda: len(nft.runs) == 3, "the table removal")
        assert nft.runs[2] == ("add table ip kubewire-policy\n"
                               "delete table ip kubewire-policy\n")
        assert agent.syncer.applied is None

    drive(store, nft, scenario)


def test_a_burst_of_changes_is_one_transaction() -> None:
    store, nft = store_with_pods(), RecordingNft()

    async def scenario(agent: PolicyAgent) -> None:
        for i in range(30):  # one event-loop turn: the watch sees them all at once
            store.put(policy("x", f"p{i}", ALLOW_B))
        await settle(agent, lambda: len(nft.runs) >= 1, "the sync")
        await asyncio.sleep(0.1)
        assert len(nft.runs) == 1
        assert agent.syncs == 1

    drive(store, nft, scenario)


def test_a_refused_transaction_keeps_the_old_rules_and_is_retried_in_full() -> None:
    store, nft = store_with_pods(), RecordingNft()

    async def scenario(agent: PolicyAgent) -> None:
        store.put(policy("x", "allow-b", ALLOW_B))
        await settle(agent, lambda: len(nft.runs) == 1, "the first sync")
        applied = agent.syncer.applied
        nft.fail = 2  # the element-only change and its full fallback are both refused
        store.put(pod("x", "b", "10.244.2.11", node="node-2", pod="z"))
        await asyncio.sleep(0.02 + agent.COALESCE_SECONDS)
        await settle(agent, lambda: nft.fail == 0, "the refusals")
        assert agent.syncer.applied is applied  # what the kernel still holds
        await settle(agent, lambda: len(nft.runs) == 2, "the retry")
        assert nft.runs[1].startswith("add table ip kubewire-policy\ndelete table")
        assert "10.244.2.11" not in nft.runs[1]

    drive(store, nft, scenario)


def test_namespace_label_changes_move_pods_in_and_out() -> None:
    store, nft = store_with_pods(), RecordingNft()
    spec = {"podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t"}}}]}]}

    async def scenario(agent: PolicyAgent) -> None:
        store.put(policy("x", "from-team", spec))
        await settle(agent, lambda: len(nft.runs) == 1, "the first sync")
        # No namespace has team=t: the rule allows nothing and is left out.
        assert "10.244.1.12" not in nft.runs[0]
        store.put(namespace("y", ns="y", team="t"))
        await settle(agent, lambda: len(nft.runs) == 2, "the namespace label change")
        assert "10.244.1.12" in nft.runs[1]  # y/c is now a peer
        # The same labels again: no sync.
        store.put(namespace("y", ns="y", team="t"))
        await asyncio.sleep(0.1)
        assert len(nft.runs) == 2

    drive(store, nft, scenario)


def test_the_agent_compiles_what_compile_policy_gives_for_its_node() -> None:
    store, nft = store_with_pods(), RecordingNft()
    store.put(policy("x", "allow-b", ALLOW_B))

    async def scenario(agent: PolicyAgent) -> None:
        await settle(agent, lambda: len(nft.runs) == 1, "the first sync")

    agent = drive(store, nft, scenario)
    want = compile_policy(store.list("NetworkPolicy"), store.list("Pod"),
                          store.list("Namespace"), PolicyNode(NODE))
    assert agent.syncer.applied == want
    assert nft.runs[0] == want.transaction()
    assert check_ruleset(want) == []


def test_a_bad_policy_is_left_out_and_the_rest_keep_working() -> None:
    store, nft = store_with_pods(), RecordingNft()
    bad = {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nonsense"}}]}]}

    async def scenario(agent: PolicyAgent) -> None:
        store.put(policy("x", "bad", bad))
        store.put(policy("x", "allow-b", ALLOW_B))
        await settle(agent, lambda: len(nft.runs) == 1, "the sync")
        assert any("x/bad" in w and "cidr" in w for w in agent.warnings), agent.warnings
        assert "10.244.1.10 : goto ingress-x" in nft.runs[0]

    drive(store, nft, scenario)


# ---------------------------------------------------------------- the element planner


def _apply_plan(old: Ruleset, text: str) -> dict[str, dict[str, str | None]]:
    sets = {s.name: dict(s.elements) for s in old.sets}
    for line in text.splitlines():
        m = re.fullmatch(r"(add|delete) element ip kubewire-policy (\S+) \{ (.*) \}", line)
        assert m, line
        verb, name, items = m.groups()
        for item in items.split(", "):
            key, _, value = item.partition(" : ")
            if verb == "delete":
                assert key in sets[name], (name, key)
                del sets[name][key]
            else:
                assert key not in sets[name], (name, key)
                sets[name][key] = value or None
    return sets


def test_element_plans_turn_every_case_step_into_the_next() -> None:
    """Between consecutive steps of every upstream case (and a label change of every pod),
    the element plan, applied to the old table, gives exactly the new one's elements."""
    planned = 0
    for case in load_cases():
        steps = list(case.steps)
        for before, after in itertools.pairwise(steps):
            old = compile_policy(before.policies, before.pods(), before.namespaces(),
                                 PolicyNode("node-1"))
            new = compile_policy(after.policies, after.pods(), after.namespaces(),
                                 PolicyNode("node-1"))
            plan = plan_elements(old, new)
            if plan is None:
                continue
            planned += 1
            assert _apply_plan(old, plan[0]) == {s.name: dict(s.elements) for s in new.sets}
        step = steps[0]
        pods = list(step.pods())
        old = compile_policy(step.policies, pods, step.namespaces(), PolicyNode("node-1"))
        moved = [replace(p, labels={"pod": "b"} if p.name == "a" else p.labels) for p in pods]
        new = compile_policy(step.policies, moved, step.namespaces(), PolicyNode("node-1"))
        plan = plan_elements(old, new)
        if plan is not None:
            planned += 1
            assert _apply_plan(old, plan[0]) == {s.name: dict(s.elements) for s in new.sets}
    assert planned >= 10


def test_an_unchanged_ruleset_runs_nothing_and_resync_replaces_the_table() -> None:
    nft = RecordingNft()
    syncer = PolicySyncer(nft=nft)
    step = load_cases()[0].steps[0]
    ruleset = compile_policy(step.policies, step.pods(), step.namespaces(), PolicyNode("node-1"))
    assert syncer.sync(ruleset).kind == "full"
    assert syncer.sync(ruleset).kind == "unchanged"
    report = syncer.resync()
    assert (report.kind, report.reason) == ("full", "periodic resync")
    assert nft.runs == [ruleset.transaction()] * 2
    with pytest.raises(PolicySyncError):
        PolicySyncer()  # never the machine's own namespace


def test_a_connection_the_proxy_translated_is_denied_by_icmp_not_a_reset() -> None:
    """A bridged reset escapes NAT (see policy/README.md): DNATed connections get ICMP."""
    from kubewire.policy.fake import Packet, evaluate, parse_rule

    step = next(c for c in load_cases() if c.name == "default-deny-ingress").steps[0]
    ruleset = compile_policy(step.policies, step.pods(), step.namespaces(),
                             PolicyNode("node-1"))
    assert check_ruleset(ruleset) == []
    first = parse_rule(ruleset.chain("policy-deny").rules[0])
    assert [type(s).__name__ for s in first.statements] == ["CtStatus", "Reject"]
    assert "icmp type admin-prohibited" in ruleset.chain("policy-deny").rules[0]
    x_a = next(p for p in step.pods() if p.key == "x/a")
    y_a = next(p for p in step.pods() if p.key == "y/a")
    assert x_a.ip and y_a.ip
    for dnat in (False, True):
        packet = Packet(y_a.ip, x_a.ip, "tcp", 80, dnat=dnat)
        assert evaluate(ruleset, packet).verdict == "reject"
