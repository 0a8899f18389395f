"""How many pods a node can hold, and which workloads would not fit (exhausted pod ranges).

A real kubelet advertises `max-pods` (110 by default) as the node's allocatable pods, and
kube-scheduler's NodeResourcesFit filter refuses a node that is full with "Too many pods".
kubewire's nodes advertise the usable addresses of their pod range instead (a /24 holds
253 pods: network, gateway and broadcast addresses excluded), so a lab can pack pods as
densely as its addresses allow and no pod is ever bound to a node that has no IP for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Network
from typing import Any

REASON_TOO_MANY_PODS = "Too many pods"
RESERVED_PER_RANGE = 3  # network address, gateway (.1 on the node bridge), broadcast


def pods_per_range(pod_cidr: str | IPv4Network) -> int:
    return max(IPv4Network(pod_cidr).num_addresses - RESERVED_PER_RANGE, 0)


def max_pods(node: Mapping[str, Any]) -> int | None:
    """The node's allocatable pods: status.allocatable.pods, else derived from its podCIDR."""
    allocatable = node.get("status", {}).get("allocatable", {}).get("pods")
    if allocatable is not None:
        return int(allocatable)
    cidr = node.get("spec", {}).get("podCIDR")
    return pods_per_range(cidr) if cidr else None


def capacity_status(pod_cidr: str) -> dict[str, str]:
    """What a node reports as capacity and allocatable once it knows its pod range."""
    pods = str(pods_per_range(pod_cidr))
    return {"pods": pods}


def exhaustion_problems(
    unschedulable: Mapping[str, str],
    pods: Iterable[Mapping[str, Any]],
    replicasets: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
) -> list[str]:
    """One message per workload whose pods found no node with a free pod address."""
    owner_of_rs = {
        (rs["metadata"]["namespace"], rs["metadata"]["name"]): _controller(rs)
        for rs in replicasets
    }
    by_key = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods}
    counts: Counter[str] = Counter()
    for key, reason in unschedulable.items():
        if REASON_TOO_MANY_PODS not in reason or key not in by_key:
            continue
        pod = by_key[key]
        ns = pod["metadata"]["namespace"]
        owner = _controller(pod)
        if owner and owner[0] == "ReplicaSet":
            owner = owner_of_rs.get((ns, owner[1])) or owner
        label = f"{owner[0].lower()}/{owner[1]}" if owner else f"pod/{pod['metadata']['name']}"
        counts[f"{label} in namespace {ns}"] += 1
    if not counts:
        return []
    room = ", ".join(f"{n['metadata']['name']} {max_pods(n)}" for n in nodes)
    return [f"{what}: {n} pod(s) would get no IP address: 0/{len(nodes)} nodes are available: "
            f"{len(nodes)} {REASON_TOO_MANY_PODS} (pods per node: {room}); add nodes or use a "
            "shorter nodeCIDRMaskSize" for what, n in sorted(counts.items())]


def _controller(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in obj["metadata"].get("ownerReferences", []):
        if ref.get("controller"):
            return (str(ref["kind"]), str(ref["name"]))
    return None
