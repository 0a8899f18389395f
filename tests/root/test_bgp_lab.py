"""BGP-routed labs (network.backend: bgp) end to end: each node's speaker, IPAM blocks,
the BIRD top-of-rack router, route reflectors, and `kubewire bgp peers|routes`."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Any

from labkit import (
    cluster_yaml,
    deployment_yaml,
    http_get_from,
    kw,
    lab,
    pods,
    wait_until,
)

from kubewire.lab import names

TOR_PEER = """apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 172.18.0.1, asNumber: 65000, keepOriginalNextHop: true}
"""

ADVERTISE_SERVICES = """apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceLoadBalancerIPs: [{cidr: 172.18.255.0/24}]
"""

# A peer nobody answers at, for node-1 only.
UNREACHABLE_PEER = """apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: nobody}
spec: {node: node-1, peerIP: 172.18.200.200, asNumber: 65010}
"""


def _docs(*docs: str) -> str:
    return "---\n".join(docs)


def _peers(name: str, node: str | None = None) -> list[dict[str, Any]]:
    args = ["bgp", "peers", "-o", "json", *(["--node", node] if node else [])]
    items: list[dict[str, Any]] = json.loads(kw(*args, lab=name).stdout)["items"]
    return items


def _routes(name: str, node: str, prefix: str | None = None) -> list[dict[str, Any]]:
    args = ["bgp", "routes", "--node", node, "-o", "json", *([prefix] if prefix else [])]
    items: list[dict[str, Any]] = json.loads(kw(*args, lab=name).stdout)["items"]
    return items


def _node_ips(name: str) -> dict[str, str]:
    nodes = json.loads(kw("get", "nodes", "-o", "json", lab=name).stdout)["items"]
    return {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"]
                                        if a["type"] == "InternalIP") for n in nodes}


def _blocks(name: str) -> dict[IPv4Network, str]:
    items = json.loads(kw("get", "blockaffinities", "-o", "json", lab=name).stdout)["items"]
    return {IPv4Network(a["spec"]["cidr"]): a["spec"]["node"] for a in items}


def _ip_routes(name: str, where: str, proto: str) -> str:
    return kw("exec", where, "--", "ip", "route", "show", "proto", proto, lab=name).stdout


def _all_established(name: str, per_node: dict[str, int]) -> bool:
    rows = _peers(name)
    for node, want in per_node.items():
        up = [r for r in rows if r["node"] == node and r["state"] == "Established"]
        if len(up) != want:
            return False
    return True


def test_bgp_lab_mesh_blocks_tor_and_bad_peers(tmp_path: Path) -> None:
    name = "t-bgp"
    manifests = _docs(cluster_yaml(name, nodes=3, backend="bgp"), deployment_yaml("echo", 6),
                      TOR_PEER, ADVERTISE_SERVICES)
    with lab(name, manifests, tmp_path):
        ips = _node_ips(name)
        # Full mesh (2 peers) plus the ToR on every node.
        wait_until(lambda: _all_established(name, {n: 3 for n in ips}), timeout=20,
                   what="every node's mesh and ToR sessions Established")
        origins = sorted(r["origin"] for r in _peers(name, "node-1"))
        assert origins == ["bgppeer/tor", "mesh", "mesh"]

        # Pods take their addresses from their own node's /26 blocks.
        blocks = _blocks(name)
        assert blocks and all(b.prefixlen == 26 for b in blocks)
        for pod in pods(name):
            ip = ip_address(pod["status"]["podIP"])
            owner = [node for block, node in blocks.items() if ip in block]
            assert owner == [pod["spec"]["nodeName"]], (pod["metadata"]["name"], ip)

        # Every other node's block is a proto-bgp kernel route via that node.
        for block, owner in blocks.items():
            for node in ips:
                if node == owner:
                    continue
                wait_until(lambda n=node, b=block, o=owner: f"{b} via {ips[o]} dev eth0" in
                           _ip_routes(name, f"node/{n}", "bgp"), timeout=10,
                           what=f"{node}'s route to {block} via {owner}")
        check = json.loads(kw("check", "-o", "json", lab=name).stdout)
        assert check["failed"] == 0 and check["probed"] > 0

        # The speaker explains its choice: one path from the mesh, decided as the only one.
        block2 = next(b for b, n in blocks.items() if n == "node-2")
        (route,) = _routes(name, "node-1", str(block2))
        best = [p for p in route["paths"] if p["best"]]
        assert [p["next_hop"] for p in best] == [ips["node-2"]]
        assert route["reason"]

        # The ToR (BIRD on host/external) learned each block with its own node as the only
        # next hop (keepOriginalNextHop: the other nodes pass it on unchanged), and the
        # Service ranges from all three nodes as one ECMP route.
        def tor_has_everything() -> bool:
            table = _ip_routes(name, "host/external", "bird")
            if not all(f"{b} via {ips[owner]} dev eth0" in table for b, owner in blocks.items()):
                return False
            for cidr in ("10.96.0.0/12", "172.18.255.0/24"):
                after = table.partition(cidr)[2].split("\n10.", 1)[0].split("\n172.", 1)[0]
                if sum(f"via {ip}" in after for ip in ips.values()) != 3:
                    return False
            return True
        wait_until(tor_has_everything, timeout=10, what="the ToR's BGP routes with ECMP")

        # The outside world reaches a pod over the BGP-learned route, without NAT.
        target = pods(name, "default")[0]
        reply = http_get_from(Path("/run/netns") / names.host_netns(name, "external"),
                              target["status"]["podIP"], 8080)
        assert reply["pod"] == target["metadata"]["name"]
        assert reply["remoteAddr"].split(":")[0] == "172.18.0.1"

        # Misconfigured peers: a clear state and last error, and nothing else disturbed.
        # The ToR declared with the wrong AS (it is 65000), and a peer nobody answers at.
        bad = tmp_path / "bad.yaml"
        bad.write_text(_docs(TOR_PEER.replace("asNumber: 65000", "asNumber: 65099"),
                             UNREACHABLE_PEER))
        kw("apply", "-f", str(bad), lab=name)

        def bad_peers_explained() -> bool:
            rows = _peers(name)
            tor = [r for r in rows if r["address"] == "172.18.0.1"]
            nobody = [r for r in rows if r["address"] == "172.18.200.200"]
            mesh_up = [r for r in rows if r["origin"] == "mesh" and r["state"] == "Established"]
            return (len(tor) == 3 and all(r["asn"] == 65099 and r["state"] != "Established"
                                          and "AS" in (r["last_error"] or "") for r in tor)
                    and len(nobody) == 1 and nobody[0]["node"] == "node-1"
                    and nobody[0]["state"] != "Established" and bool(nobody[0]["last_error"])
                    and len(mesh_up) == 6)
        wait_until(bad_peers_explained, timeout=15, what="last errors of the bad peers")
        table = kw("bgp", "peers", "--node", "node-1", lab=name).stdout
        assert "172.18.200.200" in table and "Established" in table
        # Fixed, the ToR sessions come back.
        good = tmp_path / "good.yaml"
        good.write_text(TOR_PEER)
        kw("apply", "-f", str(good), lab=name)
        kw("delete", "bgppeer", "nobody", lab=name)
        wait_until(lambda: _all_established(name, {n: 3 for n in ips}), timeout=20,
                   what="the ToR sessions after fixing the AS")

        # A BGPPeer that is wrong on its face is refused at apply, naming the field.
        broken = tmp_path / "broken.yaml"
        broken.write_text(TOR_PEER.replace("peerIP: 172.18.0.1", "peerIP: 172.18.0.300")
                          .replace("name: tor", "name: typo"))
        refused = kw("apply", "-f", str(broken), lab=name, check=False)
        assert refused.returncode == 2 and "spec.peerIP" in refused.stderr


RR_CLUSTER = """apiVersion: kubewire.dev/v1alpha1
kind: Cluster
metadata: {name: t-bgprr}
spec:
  network: {backend: bgp}
  nodes:
  - name: rr-1
    labels: {route-reflector: "true"}
    annotations: {projectcalico.org/RouteReflectorClusterID: 244.0.0.1}
  - {name: w-1}
  - {name: w-2}
  - {name: w-3}
"""

NO_MESH = """apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
"""


def test_route_reflectors_replace_the_mesh_and_back(tmp_path: Path) -> None:
    name = "t-bgprr"
    with lab(name, _docs(RR_CLUSTER, deployment_yaml("echo", 8), NO_MESH), tmp_path):
        ips = _node_ips(name)
        wait_until(lambda: _all_established(name, {"rr-1": 3, "w-1": 1, "w-2": 1, "w-3": 1}),
                   timeout=20, what="clients peering only with the reflector")
        assert {r["address"] for r in _peers(name, "w-1")} == {ips["rr-1"]}
        blocks = _blocks(name)
        block_w2 = next(b for b, n in blocks.items() if n == "w-2")
        # The reflected route keeps w-2 as next hop: traffic goes straight to w-2.
        wait_until(lambda: f"{block_w2} via {ips['w-2']} dev eth0" in
                   _ip_routes(name, "node/w-1", "bgp"), timeout=10,
                   what="w-1's reflected route to w-2's block")
        (route,) = _routes(name, "w-1", str(block_w2))
        (best,) = [p for p in route["paths"] if p["best"]]
        assert best["source"] == ips["rr-1"] and best["next_hop"] == ips["w-2"]
        check = json.loads(kw("check", "-o", "json", lab=name).stdout)
        assert check["failed"] == 0

        # Turning the mesh back on adds sessions live; the reflector session stays up.
        before = {r["address"]: r["established_transitions"] for r in _peers(name, "w-1")}
        mesh = tmp_path / "mesh.yaml"
        mesh.write_text("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\n"
                        "metadata: {name: default}\nspec: {nodeToNodeMeshEnabled: true}\n")
        kw("apply", "-f", str(mesh), lab=name)
        wait_until(lambda: _all_established(name, {n: 3 for n in ips}), timeout=20,
                   what="the full mesh after re-enabling it")
        after = {r["address"]: r["established_transitions"] for r in _peers(name, "w-1")}
        assert after[ips["rr-1"]] == before[ips["rr-1"]] == 1


def test_a_full_block_makes_the_node_claim_another(tmp_path: Path) -> None:
    name = "t-bgpblk"
    # 70 pods + 2 DNS pods on one node: more than one /26 block holds (61 usable each).
    manifests = _docs(cluster_yaml(name, nodes=1, backend="bgp"), deployment_yaml("many", 70))
    with lab(name, manifests, tmp_path):
        blocks = sorted(_blocks(name))
        assert len(blocks) == 2 and blocks[0].prefixlen == 26
        used = {ip_address(p["status"]["podIP"]) for p in pods(name)}
        assert len(used) == 72
        assert all(any(ip in b for b in blocks) for ip in used)
        assert all(any(ip in b for ip in used) for b in blocks)
        gateways = kw("exec", "node/node-1", "--", "ip", "-4", "addr", "show", "cni0",
                      lab=name).stdout
        for block in blocks:
            assert f"{IPv4Address(int(block.network_address) + 1)}/26" in gateways


PASSWORDS = """apiVersion: v1
kind: Secret
metadata: {name: bgp-passwords, namespace: kube-system}
stringData: {mesh: n0des-only, tor: not-what-bird-expects}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  nodeMeshPassword: {secretKeyRef: {name: bgp-passwords, key: mesh}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 172.18.0.1
  asNumber: 65000
  password: {secretKeyRef: {name: bgp-passwords, key: tor}}
"""


def test_passwords_from_secrets_sign_the_sessions(tmp_path: Path) -> None:
    """TCP MD5 (RFC 2385) keys from a kube-system Secret: the mesh, keyed on both ends, comes
    up; the ToR, whose BIRD has no key, never answers a signed SYN, and `bgp peers` says so."""
    name = "t-bgpmd5"
    manifests = _docs(cluster_yaml(name, nodes=2, backend="bgp"), PASSWORDS)
    with lab(name, manifests, tmp_path):
        def as_expected() -> bool:
            rows = _peers(name)
            mesh = [r for r in rows if r["origin"] == "mesh"]
            tor = [r for r in rows if r["address"] == "172.18.0.1"]
            return (len(mesh) == 2 and all(r["state"] == "Established" for r in mesh)
                    and len(tor) == 2 and all(r["state"] != "Established" and r["last_error"]
                                              for r in tor))
        wait_until(as_expected, timeout=20, what="signed mesh up, unsigned ToR refused")
        # The keys are really on the sockets: the kernel reports them per connection.
        sockets = kw("exec", "node/node-1", "--", "ss", "-tnie", "state", "established",
                     "( sport = :179 or dport = :179 )", lab=name).stdout
        assert "md5" in sockets, sockets
        # Without the key the ToR session comes up; the mesh keeps its key and its session.
        fixed = tmp_path / "fixed.yaml"
        fixed.write_text(TOR_PEER)
        kw("apply", "-f", str(fixed), lab=name)
        wait_until(lambda: _all_established(name, {"node-1": 2, "node-2": 2}), timeout=30,
                   what="the ToR sessions without a key")
        # A key that does not exist is reported, and the node keeps its sessions.
        broken = tmp_path / "broken.yaml"
        broken.write_text(TOR_PEER.replace("keepOriginalNextHop: true",
                                           "password: {secretKeyRef: {name: nope, key: x}}"))
        kw("apply", "-f", str(broken), lab=name)
        wait_until(lambda: "Secret kube-system/nope does not exist" in kw(
            "bgp", "peers", lab=name).stderr, timeout=10, what="the missing Secret reported")
        assert _all_established(name, {"node-1": 2, "node-2": 2})


def test_without_an_enabled_pool_pods_fail_saying_why(tmp_path: Path) -> None:
    name = "t-bgpnopool"
    manifests = tmp_path / "nopool.yaml"
    manifests.write_text(_docs(
        cluster_yaml(name, nodes=1, backend="bgp"),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: default-ipv4-ippool}\n"
        "spec: {cidr: 10.244.0.0/16, disabled: true}\n"))
    try:
        up = kw("up", "-f", str(manifests), "--timeout", "20", check=False)
        assert up.returncode == 1, up.stdout + up.stderr
        assert "no enabled IPPool inside the pod CIDR 10.244.0.0/16" in up.stderr
        assert {p["status"].get("reason") for p in pods(name)} == {"SandboxFailed"}
    finally:
        kw("down", name, check=False)
