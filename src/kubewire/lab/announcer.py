"""Routes from the lab's external network to LoadBalancer and external IPs.

In a real cluster something outside kube-proxy makes a Service's external address reach
the nodes: a cloud load balancer, MetalLB, or BGP (issue 6). In the lab, the external
client's network is told directly, as a router fed by BGP with multipath would be: each
address gets a /32 route with one next hop per node that should receive its traffic —
every node for externalTrafficPolicy Cluster, only nodes with a ready local endpoint for
Local (what MetalLB and cloud health checks arrange). No next hop, no route: the client
gets "network unreachable" at once instead of timing out against a node that would drop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubewire.kernel.netlink import ipr_in

RTPROT_ANNOUNCER = 76  # `ip route show proto 76` on the external host lists these routes
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def external_addresses(service: Mapping[str, Any]) -> list[str]:
    spec = service.get("spec", {})
    ips = list(spec.get("externalIPs", []) or [])
    if spec.get("type") == "LoadBalancer":
        ips += [i["ip"] for i in service.get("status", {}).get("loadBalancer", {})
                .get("ingress", []) or [] if i.get("ip")]
    return sorted(set(ips))


def desired_routes(
    services: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    node_ips: Mapping[str, str],
) -> dict[str, tuple[str, ...]]:
    """{address: next hops (node underlay IPs), sorted}; addresses with none are left out."""
    ready_nodes: dict[tuple[str, str], set[str]] = {}
    for sl in slices:
        key = (sl["metadata"]["namespace"], sl["metadata"].get("labels", {})
               .get(SERVICE_NAME_LABEL, ""))
        for ep in sl.get("endpoints", []) or []:
            if ep.get("conditions", {}).get("ready", True) and ep.get("nodeName"):
                ready_nodes.setdefault(key, set()).add(ep["nodeName"])
    routes: dict[str, tuple[str, ...]] = {}
    for svc in services:
        addresses = external_addresses(svc)
        if not addresses:
            continue
        if svc["spec"].get("externalTrafficPolicy") == "Local":
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            nodes = sorted(ready_nodes.get(key, set()) & set(node_ips))
        else:
            nodes = sorted(node_ips)
        hops = tuple(sorted(node_ips[n] for n in nodes))
        for ip in addresses:
            if hops:
                routes[ip] = hops
    return dict(sorted(routes.items()))


def sync_routes(netns: Path, desired: Mapping[str, tuple[str, ...]]) -> int:
    """Make the announcer's routes in `netns` equal `desired`; returns how many changed."""
    changes = 0
    with ipr_in(netns) as ipr:
        current: dict[str, tuple[str, ...]] = {}
        for r in ipr.get_routes(family=2, proto=RTPROT_ANNOUNCER):
            dst = f"{r.get_attr('RTA_DST')}"
            gateways = [r.get_attr("RTA_GATEWAY")] if r.get_attr("RTA_GATEWAY") else [
                nh.get_attr("RTA_GATEWAY") for nh in r.get_attr("RTA_MULTIPATH") or []]
            current[dst] = tuple(sorted(str(g) for g in gateways if g))
        for dst in sorted(set(current) - set(desired)):
            ipr.route("del", dst=f"{dst}/32", proto=RTPROT_ANNOUNCER)
            changes += 1
        for dst, next_hops in sorted(desired.items()):
            if current.get(dst) == next_hops:
                continue
            if len(next_hops) == 1:
                ipr.route("replace", dst=f"{dst}/32", gateway=next_hops[0],
                          proto=RTPROT_ANNOUNCER)
            else:
                ipr.route("replace", dst=f"{dst}/32", proto=RTPROT_ANNOUNCER,
                          multipath=[{"gateway": h} for h in next_hops])
            changes += 1
    return changes
