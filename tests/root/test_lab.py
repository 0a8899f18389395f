"""The cluster lab end to end, through the real CLI, on real namespaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from labkit import (
    cluster_yaml,
    deployment_yaml,
    http_get_from,
    kw,
    lab,
    lab_namespaces,
    pod_netns,
    pods,
    udp_exchange_from,
    wait_until,
)

from kubewire.kernel.netns import list_netns
from kubewire.lab import names
from kubewire.lab.state import LabDirs
from kubewire.workload.runner import read_record

UDP_AND_TCP = "[{containerPort: 8080}, {containerPort: 5353, protocol: UDP}]"


@pytest.mark.parametrize("backend", ["vxlan", "host-gw"])
def test_pods_reach_each_other_across_nodes_without_nat(backend: str, tmp_path: Path) -> None:
    name = f"t-{backend.replace('-', '')}"
    manifests = cluster_yaml(name, nodes=3, backend=backend) + "---\n" + deployment_yaml(
        "echo", replicas=6, ports=UDP_AND_TCP)
    with lab(name, manifests, tmp_path):
        items = pods(name, "default")
        assert len(items) == 6
        assert len({p["spec"]["nodeName"] for p in items}) == 3, "pods spread over 3 nodes"
        for src in items:
            for dst in items:
                if src["spec"]["nodeName"] == dst["spec"]["nodeName"]:
                    continue
                reply = http_get_from(pod_netns(name, src), dst["status"]["podIP"], 8080)
                assert reply["pod"] == dst["metadata"]["name"]
                assert reply["node"] == dst["spec"]["nodeName"]
                # No NAT: the server saw the client pod's own address and port.
                assert reply["remoteAddr"] == reply["_client"]
                assert reply["remoteAddr"].split(":")[0] == src["status"]["podIP"]
                echoed = udp_exchange_from(pod_netns(name, src), dst["status"]["podIP"], 5353,
                                           b"ping " + src["metadata"]["name"].encode())
                assert echoed == b"ping " + src["metadata"]["name"].encode()
        check = json.loads(kw("check", "-o", "json", lab=name).stdout)
        assert check["failed"] == 0 and check["probed"] == 8 * 7  # 6 + 2 kube-dns pods
        node_routes = kw("exec", "node/node-1", "--", "ip", "route", lab=name).stdout
        assert "10.244." in node_routes
        if backend == "vxlan":
            assert "flannel.1" in node_routes
            link = kw("exec", "node/node-1", "--", "ip", "-d", "link", "show", "flannel.1",
                      lab=name).stdout
            assert "mtu 1450" in link and "vxlan id 1" in link and "dstport 8472" in link
        else:
            assert "via 172.18." in node_routes and "flannel.1" not in node_routes


def test_get_exec_logs_look_like_kubectl(tmp_path: Path) -> None:
    name = "t-cli"
    manifests = cluster_yaml(name, nodes=2) + "---\n" + deployment_yaml("web", 2) + """---
apiVersion: v1
kind: Pod
metadata: {name: shell, labels: {role: client}}
spec:
  containers:
  - name: sh
    image: busybox
    command: [sh, -c, 'echo started on $(hostname); exec sleep 600']
"""
    with lab(name, manifests, tmp_path):
        doc = json.loads(kw("get", "pods", "-o", "json", lab=name).stdout)
        assert doc["kind"] == "List" and doc["apiVersion"] == "v1"
        for p in doc["items"]:
            assert p["status"]["phase"] == "Running"
            assert p["status"]["podIP"].startswith("10.244.")
            assert p["status"]["hostIP"].startswith("172.18.")
            assert p["spec"]["nodeName"] in ("node-1", "node-2")
        nodes = json.loads(kw("get", "nodes", "-o", "json", lab=name).stdout)["items"]
        assert [n["metadata"]["name"] for n in nodes] == ["node-1", "node-2"]
        for n in nodes:
            assert n["spec"]["podCIDR"].endswith("/24")
            assert {"type": "InternalIP", "address": n["status"]["addresses"][0]["address"]} \
                in n["status"]["addresses"]
        wide = kw("get", "pods", "-o", "wide", lab=name).stdout
        assert wide.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE",
                                                "IP", "NODE"]
        assert kw("get", "pods", "-l", "role=client", "-o", "name", lab=name).stdout.strip() \
            == "pod/shell"
        assert kw("exec", "shell", "--", "hostname", lab=name).stdout.strip() == "shell"
        addr = kw("exec", "deploy/web", "--", "ip", "-4", "-o", "addr", "show", "eth0",
                  lab=name).stdout
        assert "10.244." in addr
        wait_until(lambda: "started on shell" in kw("logs", "shell", lab=name).stdout,
                   what="the shell container's log line")
        web_pod = next(p for p in doc["items"] if p["metadata"]["name"].startswith("web-"))
        shell_pod = next(p for p in doc["items"] if p["metadata"]["name"] == "shell")
        http_get_from(pod_netns(name, shell_pod), web_pod["status"]["podIP"], 8080)
        access = kw("logs", web_pod["metadata"]["name"], lab=name).stdout
        assert "GET /t" in access
        missing = kw("get", "pods", "nope", lab=name, check=False)
        assert missing.returncode == 2 and 'pods "nope" not found' in missing.stderr
        # Pod specs are immutable, as the apiserver says; labels may change.
        changed = (tmp_path / "t-cli.yaml").read_text().split("---\n")[-1]
        r = kw("apply", "-f", "-", lab=name, stdin=changed.replace("sleep 600", "sleep 601"),
               check=False)
        assert r.returncode == 2 and "pod updates may not change fields" in r.stderr
        relabelled = changed.replace("role: client", "role: tester")
        assert "pod/shell configured" in kw("apply", "-f", "-", lab=name, stdin=relabelled).stdout
        assert kw("get", "pods", "-l", "role=tester", "-o", "name", lab=name).stdout.strip() \
            == "pod/shell"


def test_apply_and_delete_change_a_live_lab_without_leaks(tmp_path: Path) -> None:
    name = "t-live"
    with lab(name, cluster_yaml(name, nodes=2) + "---\n" + deployment_yaml("app", 2), tmp_path):
        before = set(lab_namespaces(name))
        scaled = tmp_path / "scaled.yaml"
        scaled.write_text(deployment_yaml("app", 4))
        assert "deployment/app configured" in kw("apply", "-f", str(scaled), lab=name).stdout
        wait_until(lambda: sum(1 for p in pods(name, "default")
                               if p.get("status", {}).get("podIP")) == 4, what="4 ready pods")
        items = pods(name, "default")
        a, b = items[0], items[-1]
        assert http_get_from(pod_netns(name, a), b["status"]["podIP"], 8080)["pod"] == \
            b["metadata"]["name"]
        assert len(set(lab_namespaces(name)) - before) == 2
        kw("delete", "deployment", "app", lab=name)
        # Cluster DNS too, so that no pod at all is left to hold a veth or an address.
        kw("delete", "deployment", "coredns", "-n", "kube-system", lab=name)
        wait_until(lambda: not pods(name), what="pods to go")
        wait_until(lambda: not [n for n in lab_namespaces(name) if "-pod-" in n],
                   what="pod namespaces to go")
        ipam_dirs = list((LabDirs.of(name).root / "nodes").glob("*/ipam/*"))
        allocated = [p for d in ipam_dirs if d.is_dir() for p in d.iterdir()
                     if p.name[0].isdigit()]
        assert allocated == [], f"IP allocations leaked: {allocated}"
        for node in ("node-1", "node-2"):
            links = kw("exec", f"node/{node}", "--", "ip", "-o", "link", lab=name).stdout
            assert "veth" not in links, f"veth leaked on {node}: {links}"
        # Deleting a namespace deletes everything in it, as the namespace controller does.
        team = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n" + \
            deployment_yaml("svc", 2, namespace="team")
        kw("apply", "-f", "-", lab=name, stdin=team)
        wait_until(lambda: len([p for p in pods(name, "team")
                                if p.get("status", {}).get("podIP")]) == 2, what="team pods")
        kw("delete", "namespace", "team", lab=name)
        wait_until(lambda: not [n for n in lab_namespaces(name) if "-pod-team_" in n],
                   what="team pod namespaces to go")
        assert not json.loads(kw("get", "deploy", "-A", "-o", "json", lab=name).stdout)["items"]


def test_bad_manifest_changes_nothing(tmp_path: Path) -> None:
    name = "t-bad"
    bad = tmp_path / "bad.yaml"
    bad.write_text(deployment_yaml("ok", 1) + "---\n" + deployment_yaml("ok2", 1).replace(
        "containerPort: 8080", "containerPort: 99999"))
    # `up` with a bad manifest creates nothing at all.
    up = kw("up", "-f", str(bad), lab=None, check=False)
    assert up.returncode == 2
    assert "bad.yaml:" in up.stderr and "containerPort" in up.stderr
    assert not list_netns(names.PREFIX + "kubewire-")
    # ... and neither does one the daemon refuses after starting (a missing namespace).
    ghost = deployment_yaml("x", 1, namespace="ghost")
    up = kw("up", "-f", "-", "--name", "t-ghost", stdin=ghost, check=False)
    assert up.returncode == 2 and 'namespaces "ghost" not found' in up.stderr
    assert not list_netns(names.lab_prefix("t-ghost"))
    assert not LabDirs.of("t-ghost").root.exists()
    small = cluster_yaml(name, nodes=1, extra="  nodeCIDRMaskSize: 28\n")  # 13 pods per node
    with lab(name, small + "---\n" + deployment_yaml("app", 1), tmp_path):
        before_pods = pods(name, "default")
        before_ns = lab_namespaces(name)
        r = kw("apply", "-f", str(bad), lab=name, check=False)
        assert r.returncode == 2 and "bad.yaml:27: spec.template.spec.containers[0].ports[0]" \
            ".containerPort: must be a port number (1-65535)" in r.stderr
        r = kw("apply", "-f", "-", lab=name, stdin="kind: Pod\napiVersion: v1\nmetadata: {}\n",
               check=False)
        assert r.returncode == 2 and "metadata.name" in r.stderr
        missing_ns = deployment_yaml("x", 1, namespace="nowhere")
        r = kw("apply", "-f", "-", lab=name, stdin=missing_ns, check=False)
        assert r.returncode == 2 and 'namespaces "nowhere" not found' in r.stderr
        r = kw("apply", "-f", "-", lab=name, stdin=deployment_yaml("app", 20), check=False)
        assert r.returncode == 2
        # 13 addresses: 2 kube-dns pods and 1 app pod hold 3, so 9 of 20 would get none.
        assert "deployment/app in namespace default: 9 pod(s) would get no IP address" in r.stderr
        assert "Too many pods" in r.stderr
        assert pods(name, "default") == before_pods
        assert lab_namespaces(name) == before_ns


def test_down_all_after_sigkill_leaves_nothing(tmp_path: Path) -> None:
    name = "t-kill"
    manifests = cluster_yaml(name, nodes=2) + "---\n" + deployment_yaml("app", 3) + """---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  containers:
  - {name: s, image: busybox, command: [sleep, "600"]}
"""
    path = tmp_path / "m.yaml"
    path.write_text(manifests)
    kw("up", "-f", str(path))
    dirs = LabDirs.of(name)
    try:
        records = [read_record(p) for p in dirs.pids.glob("*.json")]
        assert {"daemon.json", "podserver.json"} <= {p.name for p in dirs.pids.glob("*.json")}
        assert len(records) >= 3
        for r in records:
            os.kill(r.pid, signal.SIGKILL)
    finally:
        down = kw("down", "--all", check=False)
    assert down.returncode == 0, down.stderr
    assert not lab_namespaces(name)
    assert not dirs.root.exists()
    for r in records:
        assert not Path(f"/proc/{r.pid}").exists() or _zombie(r.pid)
    leftover = subprocess.run(["pgrep", "-f", f"kubewire.lab.daemon --lab {name}"],
                              capture_output=True, text=True).stdout
    assert not leftover.strip()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_reference_cni_plugins_build_the_same_network(tmp_path: Path) -> None:
    name = "t-ref"
    manifests = cluster_yaml(name, nodes=2, cni="reference") + "---\n" + deployment_yaml("e", 4)
    with lab(name, manifests, tmp_path):
        check = json.loads(kw("check", "-o", "json", lab=name).stdout)
        assert check["failed"] == 0 and check["probed"] == 6 * 5  # 4 + 2 kube-dns pods
        conf = json.loads((LabDirs.of(name).node("node-1") / "net.d" /
                           "10-kubewire.conflist").read_text())
        assert conf["plugins"][0]["type"] == "bridge"
        assert conf["plugins"][0]["ipam"]["type"] == "host-local"


def test_nodes_join_and_leave_a_running_lab(tmp_path: Path) -> None:
    name = "t-nodes"
    with lab(name, cluster_yaml(name, nodes=2) + "---\n" + deployment_yaml("d", 4), tmp_path):
        grow = tmp_path / "grow.yaml"
        grow.write_text(cluster_yaml(name, nodes=3))
        kw("apply", "-f", str(grow), lab=name)
        wait_until(lambda: "10.244.2.0/24" in kw("exec", "node/node-1", "--", "ip", "route",
                                                  lab=name).stdout, what="route to node-3")
        assert len(json.loads(kw("get", "nodes", "-o", "json", lab=name).stdout)["items"]) == 3
        shrink = tmp_path / "shrink.yaml"
        shrink.write_text(cluster_yaml(name, nodes=2))
        kw("apply", "-f", str(shrink), lab=name)
        wait_until(lambda: "10.244.2.0/24" not in kw("exec", "node/node-1", "--", "ip",
                                                      "route", lab=name).stdout,
                   what="route to node-3 removed")
        assert not [n for n in lab_namespaces(name) if n.endswith("-node-node-3")]
        wait_until(lambda: len([p for p in pods(name, "default")
                                if p.get("status", {}).get("podIP")]) == 4,
                   what="pods rescheduled onto the remaining nodes")
        check = json.loads(kw("check", "-o", "json", lab=name).stdout)
        assert check["failed"] == 0


def test_real_processes_restart_per_policy_and_show_it(tmp_path: Path) -> None:
    name = "t-restart"
    manifests = cluster_yaml(name, nodes=1) + """---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - {name: c, image: busybox, command: [sh, -c, 'echo attempt; exit 3']}
---
apiVersion: v1
kind: Pod
metadata: {name: job}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: busybox, command: [sh, -c, 'echo done']}
"""
    path = tmp_path / "m.yaml"
    path.write_text(manifests)
    try:
        # With no readiness probe a running container counts as ready at once (as in
        # Kubernetes), so `up` may return before the first exit; what follows must not.
        kw("up", "-f", str(path), check=False)

        def crasher() -> dict[str, object]:
            return next(p for p in pods(name, "default") if p["metadata"]["name"] == "crasher")

        wait_until(lambda: crasher()["status"]["containerStatuses"][0]["restartCount"] >= 2,
                   what="two restarts")
        assert kw("logs", "crasher", lab=name).stdout.count("attempt") >= 2

        def crash_loop_shown() -> bool:
            table = kw("get", "pods", lab=name).stdout
            row = next(line for line in table.splitlines() if line.startswith("crasher"))
            return row.split()[2] == "CrashLoopBackOff" and int(row.split()[3]) >= 2

        wait_until(crash_loop_shown, what="CrashLoopBackOff in kubewire get pods")
        status = json.loads(kw("status", "-o", "json").stdout)
        mine = next(s for s in status if s["lab"] == name)
        assert mine["failed"].get("default/crasher", "").startswith(
            "container c is in CrashLoopBackOff (last exit code 3)")
        table = kw("get", "pods", lab=name).stdout
        job = next(p for p in pods(name, "default") if p["metadata"]["name"] == "job")
        assert job["status"]["phase"] == "Succeeded"
        assert "Completed" in next(line for line in table.splitlines()
                                   if line.startswith("job"))
    finally:
        kw("down", name, check=False)
