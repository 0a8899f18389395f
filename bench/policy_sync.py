"""Benchmark NetworkPolicy enforcement: compile + sync at scale, and the x/y/z matrix.

    sudo .venv/bin/python bench/policy_sync.py [--sizes 1000x5000] [--changes 10]
                                               [--matrix-repeats 10] [--no-matrix]

Sync (one JSON line per size, policies x pods, ``policy.scenarios.synthetic``: 100
namespaces, 10 nodes, the table of node-0): the compile time from Kubernetes JSON, the
table's size, a first full sync (``add table; delete table; table {...}``, one ``nft -f -``)
and a resync over it, then ``--changes`` single pod label changes on that node (an app
label to another app, and back) as the policy agent does them: a full compile of the
policy views it keeps plus the syncer's element-only transaction; medians. All in one
throwaway namespace, kwtest-pol-bench, removed at the end; no packet is sent.

Matrix (unless --no-matrix): a lab ``b-pol`` (3 nodes, vxlan) with upstream's model (x, y,
z; pods a, b, c serving TCP and UDP 80), one policy applied
(allow-from-namespace-by-label, or default-deny-all: every probe denied), and the full
81-pair matrix measured ``--matrix-repeats`` times with real connections
(``kubewire.check.policy``), TCP and UDP; plus the wall time of ``kubewire check --policy``
(a fresh CLI process). Conntrack is flushed on the lab's nodes before each case (UDP
flows admitted by the previous case would otherwise stay admitted). The lab is removed
at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from kubewire.check.policy import Endpoint, measure_matrix
from kubewire.kernel.netns import create_netns, delete_netns, list_netns
from kubewire.lab import names
from kubewire.lab.policysync import PolicySyncer
from kubewire.policy import PolicyNode, PolicyView, compile_policy
from kubewire.policy.cases import MATRIX_PODS, MODEL_NAMESPACES, MODEL_PODS_VIEWS, load_cases
from kubewire.policy.scenarios import synthetic

NETNS = "kwtest-pol-bench"
LAB = "b-pol"
KW = [sys.executable, "-m", "kubewire.cli.main"]


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def bench_sync(policies: int, pods: int, changes: int) -> dict[str, Any]:
    raw, pod_views, spaces = synthetic(policies, pods)
    node = PolicyNode("node-0")
    t0 = time.perf_counter()
    ruleset = compile_policy(raw, pod_views, spaces, node)
    compile_s = time.perf_counter() - t0
    syncer = PolicySyncer(f"/run/netns/{NETNS}")
    first = syncer.sync(ruleset)
    again = syncer.resync()
    local = [i for i, p in enumerate(pod_views) if p.node == node.name]
    compiles, syncs, kinds = [], [], set()
    # The agent converts each policy once, when its event arrives, and compiles views.
    policy_views = [PolicyView.from_k8s(p) for p in raw]
    for n in range(changes):
        i = local[(n * 37) % len(local)]
        pod = pod_views[i]
        app = int(pod.labels["app"].split("-")[1])
        moved = [*pod_views[:i], replace(pod, labels={"app": f"app-{(app + 1) % 50}"}),
                 *pod_views[i + 1:]]
        for state in (moved, pod_views):  # change, and back
            t0 = time.perf_counter()
            rs = compile_policy(policy_views, state, spaces, node)
            compiles.append(time.perf_counter() - t0)
            report = syncer.sync(rs)
            syncs.append(report.seconds)
            kinds.add(report.kind)
    return {
        "bench": "policy_sync", "policies": policies, "pods": pods, "node": node.name,
        "rules": sum(len(c.rules) for c in ruleset.chains),
        "sets": len(ruleset.sets), "elements": sum(len(s.elements) for s in ruleset.sets),
        "transaction_kib": round(len(ruleset.transaction()) / 1024),
        "compile_ms": ms(compile_s), "full_sync_ms": ms(first.seconds),
        "resync_ms": ms(again.seconds),
        "compile_plus_full_sync_ms": ms(compile_s + first.seconds),
        "label_change_compile_ms": ms(statistics.median(compiles)),
        "label_change_sync_ms": ms(statistics.median(syncs)),
        "label_change_end_to_end_ms": ms(statistics.median(
            c + s for c, s in zip(compiles, syncs, strict=True))),
        "label_change_sync_kinds": sorted(kinds),
    }


def kw(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*KW, "--lab", LAB, *args], capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise SystemExit(f"kubewire {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def model_manifests() -> str:
    cluster = {"apiVersion": "kubewire.dev/v1alpha1", "kind": "Cluster",
               "metadata": {"name": LAB}, "spec": {"nodes": 3, "network": {"backend": "vxlan"}}}
    objs: list[dict[str, Any]] = [cluster]
    objs += [{"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": ns, "labels": {"ns": ns}}} for ns in MODEL_NAMESPACES]
    for p in MODEL_PODS_VIEWS:
        if p.namespace not in MODEL_NAMESPACES:
            continue
        ports = [{"name": f"serve-80-{proto.lower()}", "containerPort": 80, "protocol": proto}
                 for proto in ("TCP", "UDP")]
        objs.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": p.name, "namespace": p.namespace,
                                  "labels": dict(p.labels)},
                     "spec": {"nodeName": p.node, "containers": [
                         {"name": "srv", "image": "agnhost", "ports": ports}]}})
    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objs)


def flush_conntrack() -> None:
    """UDP flows the previous case allowed stay admitted for 30 s (conntrack), and a new
    probe may reuse one's source port: start each case without them (lab nodes only)."""
    for node in ("node-1", "node-2", "node-3"):
        subprocess.run(["ip", "netns", "exec", names.node_netns(LAB, node), "conntrack", "-F"],
                       capture_output=True, check=False)


def bench_matrix(repeats: int, tmp: Path) -> list[dict[str, Any]]:
    (tmp / "model.yaml").write_text(model_manifests())
    rows = []
    # `up` may exit 1 for add-on pods that are not ready (e.g. cluster DNS): the model's
    # pods are checked below.
    up = kw("up", "-f", str(tmp / "model.yaml"), check=False)
    try:
        got = kw("get", "pods", "-A", "-o", "json", check=False)
        if got.returncode != 0:
            raise SystemExit(f"kubewire up failed:\n{up.stdout}\n{up.stderr}")
        pods = json.loads(got.stdout)["items"]
        by_ref = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods}
        endpoints = [Endpoint(*ref.split("/"), by_ref[ref]["status"]["podIP"],
                              Path("/run/netns") / names.pod_netns(LAB, *ref.split("/")),
                              by_ref[ref]["spec"]["nodeName"]) for ref in MATRIX_PODS]
        cases = {c.name: c for c in load_cases()}
        for case in ("allow-from-namespace-by-label", "default-deny-all"):
            step = cases[case].steps[0]
            (tmp / "policy.yaml").write_text("".join(
                "---\n" + yaml.safe_dump(dict(p)) for p in step.policies))
            kw("apply", "-f", str(tmp / "policy.yaml"))
            flush_conntrack()
            for protocol in ("TCP", "UDP"):
                expected = next(c for c in step.checks if c.protocol == "TCP").matrix()
                times, worst_probe, differences = [], 0.0, 0
                for _ in range(repeats):
                    result = measure_matrix(endpoints, protocol, 80, 1.0, expected)
                    times.append(result.seconds)
                    worst_probe = max(worst_probe, *(o.ms for o in result.observed.values()))
                    differences += len(result.differences())
                blocked = sum(1 for (a, b), o in result.observed.items()
                              if a != b and not o.reachable)
                rows.append({"bench": "policy_matrix", "case": case, "protocol": protocol,
                             "pairs": len(result.observed), "blocked": blocked,
                             "repeats": repeats, "median_ms": ms(statistics.median(times)),
                             "max_ms": ms(max(times)), "slowest_probe_ms": round(worst_probe, 1),
                             "differences": differences})
            t0 = time.perf_counter()
            proc = kw("check", "--policy", "--protocol", "TCP", "--protocol", "UDP",
                      check=False)
            rows.append({"bench": "policy_check_cli", "case": case,
                         "wall_ms": ms(time.perf_counter() - t0), "exit": proc.returncode})
            kw("delete", "-f", str(tmp / "policy.yaml"))
    finally:
        kw("down", LAB, check=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000x5000", help="policies x pods, comma-separated")
    parser.add_argument("--changes", type=int, default=10, help="pod label changes (median)")
    parser.add_argument("--matrix-repeats", type=int, default=10)
    parser.add_argument("--no-matrix", action="store_true", help="skip the lab part")
    args = parser.parse_args()
    if NETNS in list_netns(NETNS):
        delete_netns(NETNS)
    create_netns(NETNS)
    try:
        for item in args.sizes.split(","):
            policies, _, pods = item.partition("x")
            emit(bench_sync(int(policies), int(pods), args.changes))
    finally:
        delete_netns(NETNS)
    if not args.no_matrix:
        with tempfile.TemporaryDirectory(prefix="kw-policy-bench-") as tmp:
            for row in bench_matrix(args.matrix_repeats, Path(tmp)):
                emit(row)


if __name__ == "__main__":
    main()
