"""`kubewire check --policy` without a lab: endpoints, the oracle's matrix, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubewire.check.policy import (
    Endpoint,
    MatrixResult,
    Outcome,
    endpoints_from_pods,
    expected_matrix,
    render_text,
    to_json,
)


def pod(ns: str, name: str, ip: str | None, image: str = "agnhost",
        **labels: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": image}]},
            "status": {"phase": "Running", **({"podIP": ip} if ip else {})}}


PODS = [pod("x", "a", "10.244.1.10", pod="a"), pod("x", "b", "10.244.1.11", pod="b"),
        pod("y", "a", "10.244.2.10", pod="a"), pod("x", "pending", None),
        pod("kube-system", "coredns-1", "10.244.1.53",
            image="registry.k8s.io/coredns/coredns:v1.11.3")]
NAMESPACES = [{"kind": "Namespace", "metadata": {"name": n, "labels": {"ns": n}}}
              for n in ("x", "y", "kube-system")]
POLICY = {"kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": "only-b"},
          "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}}


def netns_of(ns: str, name: str) -> Path:
    return Path(f"/run/netns/kw-t-pod-{ns}_{name}")


def test_endpoints_are_running_pods_of_the_namespaces_asked_for() -> None:
    every = endpoints_from_pods(PODS, netns_of)
    assert [e.ref for e in every] == ["kube-system/coredns-1", "x/a", "x/b", "y/a"]
    assert [e.builtin for e in every] == [False, True, True, True]  # DNS: a real server
    assert every[1].netns == Path("/run/netns/kw-t-pod-x_a")
    assert [e.ref for e in endpoints_from_pods(PODS, netns_of, ["y"])] == ["y/a"]


def test_the_expected_matrix_is_the_oracles_and_bad_policies_are_named() -> None:
    endpoints = endpoints_from_pods(PODS, netns_of, ["x", "y"])
    bad = {"kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": "bad"},
           "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "x"}}]}]}}
    matrix, warnings = expected_matrix(endpoints, PODS, NAMESPACES, [POLICY, bad], "TCP", 80)
    assert {k for k, v in matrix.items() if not v} == {("y/a", "x/a"), ("x/a", "x/a")}
    assert len(matrix) == 9
    assert len(warnings) == 1 and "x/bad" in warnings[0]


def _result(observed_blocked: set[tuple[str, str]]) -> MatrixResult:
    refs = ("x/a", "x/b", "y/a")
    expected = {(a, b): (a, b) not in {("y/a", "x/a"), ("x/a", "x/a")}
                for a in refs for b in refs}
    observed = {(a, b): Outcome((a, b) not in observed_blocked,
                                "reset" if (a, b) in observed_blocked else "http ok", 2.0)
                for a in refs for b in refs}
    return MatrixResult("TCP", 80, refs, observed, expected, 0.01)


def test_the_report_shows_both_matrices_and_names_each_difference() -> None:
    same = _result({("y/a", "x/a")})  # x/a -> x/a is measured reachable: never compared
    assert same.differences() == []
    text = render_text([same])
    assert "expected TCP/80 (oracle)" in text and "measured TCP/80" in text
    assert "0 of 6 pairs differ from the oracle" in text
    wrong = _result({("x/b", "x/a")})
    assert wrong.differences() == [("x/b", "x/a", True, False), ("y/a", "x/a", False, True)]
    text = render_text([wrong])
    assert "DIFF x/b -> x/a TCP/80: expected reachable, measured blocked (reset, 2 ms)" in text
    assert "DIFF y/a -> x/a TCP/80: expected blocked, measured reachable (http ok" in text
    assert "2 of 6 pairs differ" in text
    narrow = render_text([wrong], width=40)  # stacked instead of side by side
    assert narrow.index("expected TCP/80") < narrow.index("measured TCP/80")
    assert narrow.count("\n") > text.count("\n")


def test_json_lists_every_probe_and_the_differences() -> None:
    doc = json.loads(to_json([_result({("x/b", "x/a")})], ["w"]))
    (m,) = doc["matrices"]
    assert doc["warnings"] == ["w"] and len(m["probes"]) == 9
    assert m["differences"][0] == {"from": "x/b", "to": "x/a", "expected": True,
                                   "measured": False}
    own = next(p for p in m["probes"] if p["from"] == p["to"] == "x/a")
    assert own["expected"] is None  # self pairs are never compared


def test_an_endpoint_names_itself() -> None:
    assert Endpoint("x", "a", "10.0.0.1", Path("/x")).ref == "x/a"


def test_get_networkpolicies_prints_kubectls_columns() -> None:
    from kubewire.api.kinds import resolve_resource_type
    from kubewire.cli.printers import Ctx, table

    assert {resolve_resource_type(t).kind for t in ("networkpolicies", "netpol",
                                                    "networkpolicy")} == {"NetworkPolicy"}
    every = {"kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": "deny-all"},
             "spec": {"podSelector": {}}}
    text = table("NetworkPolicy", [every, POLICY], False, True, Ctx())
    lines = [line.split() for line in text.splitlines()]
    assert lines[0] == ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"]
    assert lines[1][:3] == ["x", "deny-all", "<none>"]
    assert lines[2][:3] == ["x", "only-b", "pod=a"]
