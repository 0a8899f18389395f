"""The compiler's shape: what goes where, what is shared, what scales, what is refused."""

from __future__ import annotations

import time
from typing import Any

from kubewire.policy import names
from kubewire.policy.compiler import PolicyNode, compile_policy, merge, render_ip_interval, subtract
from kubewire.policy.fake import Packet, check_ruleset, cluster_verdict, evaluate
from kubewire.policy.scenarios import synthetic
from kubewire.policy.views import ContainerPort, ExternalView, PodView

N1, N2 = PolicyNode("n1"), PolicyNode("n2")
CLIENT = PodView("a", "client", "10.244.1.5", "n1", {"app": "client"})
SERVER = PodView("a", "server", "10.244.2.5", "n2", {"app": "server"},
                 (ContainerPort("http", 8080),))
LOCAL_SERVER = PodView("a", "local", "10.244.1.6", "n1", {"app": "server"},
                       (ContainerPort("http", 9090),))
PODS = (CLIENT, SERVER, LOCAL_SERVER)


def policy(spec: dict[str, Any], name: str = "p", namespace: str = "a") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": {}, **spec}}


def both(policies: list[dict[str, Any]], pods: tuple[PodView, ...] = PODS) -> dict[str, Any]:
    return {n.name: compile_policy(policies, pods, [], n) for n in (N1, N2)}


def test_no_policies_is_the_fixed_table_only() -> None:
    ruleset = compile_policy([], PODS, [], N1)
    assert [c.name for c in ruleset.chains] == [names.DENY, names.FORWARD, names.INPUT]
    assert all(not s.elements for s in ruleset.sets)
    assert check_ruleset(ruleset) == []
    assert evaluate(ruleset, Packet("10.244.1.5", "10.244.2.5", "tcp", 80)).verdict == "accept"


def test_forward_chain_order_and_hooks() -> None:
    forward = compile_policy([], PODS, [], N1).chain(names.FORWARD)
    assert forward.hook is not None and (forward.hook.hook, forward.hook.priority) == (
        "forward", 10)
    assert forward.rules[0] == "ct state established,related accept"
    assert forward.rules[1] == "ct state invalid drop"
    replies = Packet("10.244.2.5", "10.244.1.5", "tcp", 40000, ct_state="established")
    deny = compile_policy([policy({"policyTypes": ["Ingress", "Egress"]})], PODS, [], N1)
    assert evaluate(deny, replies).verdict == "accept"
    assert evaluate(deny, Packet("10.244.2.5", "10.244.1.5", "tcp", 1,
                                 ct_state="invalid")).verdict == "drop"


def test_only_local_pods_are_isolated_on_a_node() -> None:
    rulesets = both([policy({})])
    isolated = {n: [k for k, _ in rs.set(names.INGRESS_ISOLATED).elements]
                for n, rs in rulesets.items()}
    assert isolated == {"n1": ["10.244.1.5", "10.244.1.6"], "n2": ["10.244.2.5"]}


def test_denied_traffic_is_rejected_with_reset_or_icmp() -> None:
    rulesets = both([policy({})])
    assert cluster_verdict(rulesets, CLIENT, SERVER, "TCP", 8080).verdict == "reject"
    deny = rulesets["n1"].chain(names.DENY).rules
    assert deny == ("ct status dnat reject with icmp type admin-prohibited",
                    "meta l4proto tcp reject with tcp reset",
                    "reject with icmp type admin-prohibited")


def test_egress_named_port_resolves_on_remote_destination() -> None:
    rulesets = both([policy({"policyTypes": ["Egress"],
                             "egress": [{"ports": [{"port": "http"}]}]})])
    assert cluster_verdict(rulesets, CLIENT, SERVER, "TCP", 8080).verdict == "accept"
    assert cluster_verdict(rulesets, CLIENT, SERVER, "TCP", 9090).verdict == "reject"
    assert cluster_verdict(rulesets, CLIENT, LOCAL_SERVER, "TCP", 9090).verdict == "accept"
    named = [s for s in rulesets["n1"].sets if s.name.startswith("named-out-")]
    assert [k for k, _ in named[0].elements] == ["10.244.1.6 . tcp . 9090",
                                                 "10.244.2.5 . tcp . 8080"]


def test_ingress_named_ports_hold_local_pods_only() -> None:
    ruleset = compile_policy([policy({"ingress": [{"ports": [{"port": "http"}]}]})], PODS, [],
                             N2)
    named = [s for s in ruleset.sets if s.name.startswith("named-in-")]
    assert [k for k, _ in named[0].elements] == ["10.244.2.5 . tcp . 8080"]


def test_sets_are_shared_and_named_by_selector() -> None:
    pols = [policy({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                 "ports": [{"port": 80}]}]}, name=f"p{i}") for i in range(5)]
    ruleset = compile_policy(pols, PODS, [], N1)
    assert len(ruleset.sets) == 2 + 3  # the two maps, one pods, one peers, one ports set
    assert len(ruleset.chain("ingress-a").rules) == 5 + 1
    assert check_ruleset(ruleset) == []
    moved = PodView("a", "client", "10.244.1.99", "n1", {"app": "client"})
    again = compile_policy(pols, (moved, SERVER, LOCAL_SERVER), [], N1)
    assert [s.name for s in again.sets] == [s.name for s in ruleset.sets]
    assert again.chains == ruleset.chains  # pods moving changes elements, not rules


def test_peers_that_match_nothing_allow_nothing() -> None:
    pols = [policy({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "none"}}}]}]})]
    ruleset = compile_policy(pols, PODS, [], N2)
    assert ruleset.chain("ingress-a").rules == (f"goto {names.DENY}",)


def test_outside_sources_and_ip_blocks() -> None:
    pols = [policy({"ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24",
                                                       "except": ["192.0.2.128/25"]}}]}]})]
    rulesets = both(pols)
    assert cluster_verdict(rulesets, ExternalView("192.0.2.1"), SERVER, "UDP", 5).verdict == \
        "accept"
    assert cluster_verdict(rulesets, ExternalView("192.0.2.200"), SERVER, "UDP", 5).verdict == \
        "reject"
    peers = next(s for s in rulesets["n2"].sets if s.name.startswith("peers-"))
    assert peers.elements == (("192.0.2.0/25", None),)


def test_pods_reaching_their_own_node_pass_the_input_hook() -> None:
    ruleset = compile_policy([policy({"policyTypes": ["Egress"]})], PODS, [], N1)
    outcome = evaluate(ruleset, Packet("10.244.1.5", "192.168.77.1", "tcp", 10250), "input")
    assert outcome.verdict == "reject"
    assert evaluate(ruleset, Packet("192.168.77.2", "192.168.77.1", "tcp", 22),
                    "input").verdict == "accept"


def test_bad_policies_are_left_out_and_named() -> None:
    bad = policy({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                     "except": ["11.0.0.0/8"]}}]}]}, "bad")
    ruleset = compile_policy([bad, policy({}, "good")], PODS, [], N1)
    assert len(ruleset.warnings) == 1 and "a/bad" in ruleset.warnings[0]
    assert "is not inside cidr" in ruleset.warnings[0]
    assert "ingress-a" in [c.name for c in ruleset.chains]  # the good one still applies


def test_long_names_fit_in_a_comment() -> None:
    ns = "n" * 63
    pods = (PodView(ns, "p", "10.244.1.7", "n1", {}),)
    ruleset = compile_policy([policy({"ingress": [{}]}, "x" * 253, ns)], pods, [], N1)
    assert check_ruleset(ruleset) == []


def test_interval_helpers() -> None:
    assert merge([(5, 9), (1, 3), (4, 4), (20, 30), (25, 26)]) == [(1, 9), (20, 30)]
    assert subtract((0, 99), [(10, 19), (15, 29), (99, 99)]) == [(0, 9), (30, 98)]
    assert render_ip_interval(0, (1 << 32) - 1) == "0.0.0.0/0"
    assert render_ip_interval(167772160, 167772165) == "10.0.0.0-10.0.0.5"


def test_scale_1k_policies_over_5k_pods() -> None:
    """The rule count follows the policies with local targets, not the pods; sets carry
    the pods and are shared by selector. (Timing bound generous: shared CI machines.)"""
    pols, pods, namespaces = synthetic(1000, 5000)
    start = time.perf_counter()
    ruleset = compile_policy(pols, pods, namespaces, PolicyNode("node-1"))
    elapsed = time.perf_counter() - start
    rules = sum(len(c.rules) for c in ruleset.chains)
    assert elapsed < 5
    assert 1000 < rules <= 4 * 1000 + 2 * 100 + 10
    assert len([c for c in ruleset.chains if c.name.startswith("ingress-")]) <= 100
    assert len(ruleset.sets) < 1000
    assert check_ruleset(ruleset) == []
