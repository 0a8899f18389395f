"""How long a BGP-routed lab takes to converge after a node joins (issue 6, deliverable 7).

Brings up an N-node lab with `network.backend: bgp` (full iBGP mesh, or with route
reflectors and the mesh off), waits until every node holds a route to every other node's
block, then applies the same Cluster with one node more. Convergence is the time from the
moment `kubewire apply` is started (so it includes the CLI's own start-up, ~0.3 s, and
building the new node's namespace) until every old node has a proto-bgp kernel route via
the new node's address, read with netlink dumps in each node namespace every 10 ms. The
time `kubewire apply` took is printed beside it.

    sudo .venv/bin/python bench/bgp_converge.py --nodes 50
    sudo .venv/bin/python bench/bgp_converge.py --nodes 50 --reflectors 2
    sudo .venv/bin/python bench/bgp_converge.py --nodes 4 --reflectors 1   # CI smoke size
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubewire.kernel.rtnl import Rtnl
from kubewire.lab import names

KW = [sys.executable, "-m", "kubewire.cli.main"]
RTPROT_BGP = 186


def cluster(name: str, nodes: int, reflectors: int) -> str:
    lines = [f"apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\n"
             "spec:\n  network: {backend: bgp}\n  nodes:"]
    for i in range(1, nodes + 1):
        if i <= reflectors:
            lines.append(f"  - name: node-{i}\n    labels: {{route-reflector: \"true\"}}\n"
                         "    annotations: {projectcalico.org/RouteReflectorClusterID: "
                         "244.0.0.1}")
        else:
            lines.append(f"  - name: node-{i}")
    text = "\n".join(lines) + "\n"
    if reflectors:
        text += ("---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\n"
                 "metadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false}\n"
                 "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\n"
                 "metadata: {name: to-reflectors}\n"
                 "spec: {nodeSelector: all(), peerSelector: route-reflector == 'true'}\n")
    return text


def kw(*args: str, lab: str | None = None) -> str:
    cmd = [*KW, *(["--lab", lab] if lab else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"kubewire {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def node_ips(lab: str) -> set[str]:
    nodes = json.loads(kw("get", "nodes", "-o", "json", lab=lab))["items"]
    return {a["address"] for n in nodes for a in n["status"]["addresses"]
            if a["type"] == "InternalIP"}


def bgp_routes(sock: Rtnl) -> dict[str, set[str]]:
    """Prefix -> next hops of the namespace's proto-bgp routes."""
    out: dict[str, set[str]] = {}
    for r in sock.routes(4):
        if r.proto == RTPROT_BGP:
            hops = {h.gateway for h in r.nexthops if h.gateway} or {r.gateway or ""}
            out[f"{r.dst}/{r.dst_len}"] = hops
    return out


def wait_until(what: str, done: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"not converged after {timeout:.0f}s: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def run(nodes: int, reflectors: int, timeout: float) -> dict[str, float]:
    lab = f"bgpconv{nodes}"
    tmp = Path(tempfile.mkdtemp(prefix="kw-bgpconv-"))
    socks: dict[str, Rtnl] = {}
    try:
        spec = tmp / "cluster.yaml"
        spec.write_text(cluster(lab, nodes, reflectors))
        t0 = time.monotonic()
        kw("up", "-f", str(spec))
        up = time.monotonic() - t0
        socks = {f"node-{i}": Rtnl.open(Path("/run/netns") / names.node_netns(lab, f"node-{i}"))
                 for i in range(1, nodes + 1)}
        old = node_ips(lab)

        def meshed() -> bool:  # every node routes to every other node's block
            return all(len({h for hs in bgp_routes(s).values() for h in hs}) == nodes - 1
                       for s in socks.values())
        initial = wait_until("initial routes", meshed, timeout)

        def joined() -> bool:  # every old node has a route via an address that is new
            return all(any(hs - old for hs in bgp_routes(s).values()) for s in socks.values())
        spec.write_text(cluster(lab, nodes + 1, reflectors))
        t1 = time.monotonic()
        kw("apply", "-f", str(spec), lab=lab)
        returned = time.monotonic() - t1
        wait_until(f"node-{nodes + 1}'s block on every node", joined, timeout)
        join = time.monotonic() - t1
        return {"up": up, "initial_routes": initial, "apply_returned": returned, "join": join}
    finally:
        for sock in socks.values():
            sock.close()
        subprocess.run([*KW, "down", lab], capture_output=True, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--reflectors", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    result = run(args.nodes, args.reflectors, args.timeout)
    plural = "s" if args.reflectors > 1 else ""
    mode = f"{args.reflectors} route reflector{plural}" if args.reflectors else "full mesh"
    print(json.dumps({"nodes": args.nodes, "mode": mode, **result}))
    print(f"| {args.nodes} + 1 | {mode} | {result['up']:.1f} s | "
          f"{result['join'] * 1000:.0f} ms | {result['apply_returned'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
