"""The ported upstream truth tables: the oracle and the compiled rulesets (through the
validating fake) must both reproduce every expected matrix and probe."""

from __future__ import annotations

import json

import pytest

from kubewire.api.loader import load_text
from kubewire.api.validation import validate
from kubewire.policy.cases import (
    DNS,
    MATRIX_PODS,
    MODEL_NODES,
    MODEL_PODS_VIEWS,
    Check,
    Step,
    load_cases,
)
from kubewire.policy.compiler import PolicyNode, compile_policy
from kubewire.policy.evaluate import allowed
from kubewire.policy.fake import check_ruleset, cluster_verdict
from kubewire.policy.matrix import (
    compiled_matrix,
    differences,
    oracle_matrix,
    render,
    render_comparison,
)
from kubewire.policy.views import PodView, PolicyView

CASES = {case.name: case for case in load_cases()}


def _mismatches(step: Step) -> list[str]:
    pods: dict[str, PodView] = {p.key: p for p in step.pods()}
    namespaces = step.namespaces()
    policies = [PolicyView.from_k8s(m) for m in step.policies]
    rulesets = {node: compile_policy(step.policies, pods.values(), namespaces,
                                     PolicyNode(node)) for node in MODEL_NODES}
    problems = [f"{node}: {p}" for node, rs in rulesets.items() for p in check_ruleset(rs)]
    probes = [(c.protocol, c.port, a, b, want) for c in step.checks
              for (a, b), want in c.matrix().items() if a != b]  # upstream ignores loopback
    probes += [(p.protocol, p.port, p.src, p.dst, p.reachable) for p in step.probes]
    for protocol, port, a, b, want in probes:
        oracle = allowed(pods[a], pods[b], protocol, port, policies, namespaces)
        compiled = cluster_verdict(rulesets, pods[a], pods[b], protocol, port)
        if oracle.allowed != want:
            problems.append(f"oracle {protocol}/{port} {a} -> {b}: want {want}, {oracle}")
        # Denied connections are rejected (fail at once), never silently dropped.
        if compiled.verdict != ("accept" if want else "reject"):
            problems.append(f"compiled {protocol}/{port} {a} -> {b}: want {want}, "
                            f"{compiled.verdict} via {compiled.trace}")
    return problems


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_matrices(name: str) -> None:
    for index, step in enumerate(CASES[name].steps):
        problems = _mismatches(step)
        assert not problems, f"step {index}:\n" + "\n".join(problems[:20])


def test_enough_cases_cover_the_issue() -> None:
    upstream = [c for c in CASES.values() if not c.upstream.startswith("(kubewire)")]
    assert len(upstream) >= 30
    for needed in ("default-deny-ingress", "deny-egress-namespace", "allow-all",
                   "allow-from-same-namespace-pod", "allow-from-namespace-by-label",
                   "pod-selector-and-namespace-selector", "pod-selector-or-namespace-selector",
                   "named-port-ingress", "named-port-egress", "end-port-ingress",
                   "egress-cidr-except", "egress-to-cluster-dns", "stacked-policies",
                   "updated-policy", "updated-pod-labels", "updated-namespace-labels"):
        assert needed in CASES
    assert sum(len(c.steps) > 1 for c in CASES.values()) >= 5


def test_every_case_policy_is_a_valid_manifest() -> None:
    for case in CASES.values():
        for step in case.steps:
            if not step.policies:
                continue
            text = "\n---\n".join(json.dumps(p) for p in step.policies)
            result = validate(load_text(text, f"{case.name}.yaml"))
            assert len(result.manifests) == len(step.policies)


def test_expected_matrix_is_built_like_upstream() -> None:
    check = Check("TCP", 80, True, (("*", "x/a", False), ("x/b", "x/a", True),
                                    ("*/c", "y/*", False)))
    matrix = check.matrix()
    assert len(matrix) == 81 and len(MATRIX_PODS) == 9
    assert not matrix["z/b", "x/a"] and matrix["x/b", "x/a"]
    assert not matrix["x/c", "y/b"] and matrix["x/b", "y/b"]
    assert sum(not v for v in matrix.values()) == 8 + 9


def test_lab_addresses_replace_placeholders() -> None:
    ips = {p.key: f"192.168.9.{i}" for i, p in enumerate(MODEL_PODS_VIEWS) if p.key != DNS}
    case = next(c for c in load_cases(ips) if c.name == "egress-cidr-except")
    block = case.steps[0].policies[0]["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert block == {"cidr": f"{ips['x/a']}/4", "except": [f"{ips['x/b']}/32"]}


def test_matrices_render_like_upstream_and_compare() -> None:
    step = CASES["allow-from-same-namespace-pod"].steps[0]
    pods = [p for p in step.pods() if p.key in MATRIX_PODS]
    views = [PolicyView.from_k8s(m) for m in step.policies]
    rulesets = {n: compile_policy(step.policies, pods, step.namespaces(), PolicyNode(n))
                for n in MODEL_NODES}
    expected = step.checks[0].matrix()
    oracle = oracle_matrix(pods, "TCP", 80, views, step.namespaces())
    compiled = compiled_matrix(pods, "TCP", 80, rulesets)
    assert differences(expected, oracle) == [] and differences(expected, compiled) == []
    table = render(expected, MATRIX_PODS).splitlines()
    assert table[0] == "-\t" + "\t".join(MATRIX_PODS)
    assert table[1] == "x/a\tX\t.\t.\t.\t.\t.\t.\t.\t."  # x/a -> x/a blocked (loopback)
    assert table[2] == "x/b\t.\t.\t.\t.\t.\t.\t.\t.\t."
    wrong = dict(compiled)
    wrong["z/c", "x/a"] = True
    assert differences(expected, wrong) == [("z/c", "x/a", False, True)]
    assert render_comparison(expected, wrong, MATRIX_PODS).splitlines()[-1].startswith(
        "z/c\tX\t.")
