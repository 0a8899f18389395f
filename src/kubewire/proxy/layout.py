"""The fixed parts of the proxy table: set keys, base-chain hooks, and the chains every
node has whatever its Services.
"""

from __future__ import annotations

import functools

from kubewire.proxy import names
from kubewire.proxy.model import (
    Chain,
    Hook,
)
from kubewire.proxy.views import (
    NodeContext,
)

DISPATCH_KEY = "ipv4_addr . inet_proto . inet_service"
NODEPORT_KEY = "inet_proto . inet_service"
MARK = f"{names.MASQUERADE_MARK:#x}"
#: Key of ``@service-endpoints-<proto>``: the frontend as the packet carries it (address
#: and port; the protocol is the map's), then a choice.
CHOICE_KEY = "ip daddr . th dport"
#: Local chains choose from [LOCAL_OFFSET, LOCAL_OFFSET + N): a frontend can reach both
#: the service and the local chain of one Service port (externalTrafficPolicy Local).
LOCAL_OFFSET = 1 << 20

# Base chains. DNAT at priority dstnat on prerouting (traffic from pods and other hosts) and
# output (host processes); masquerade at srcnat on postrouting, after the routing decision
# picked the outgoing interface. Rejects/drops for Services without usable endpoints run in
# filter chains at priority filter on input, forward and output (the hooks kube-proxy uses):
# `reject` is not allowed in prerouting before Linux 5.9, and a packet whose Service has
# endpoints was already DNATed at dstnat (-100), so by priority filter (0) only traffic
# for Services without endpoints still carries a service address.
HOOKS: dict[str, Hook] = {
    names.NAT_PREROUTING: Hook("nat", "prerouting", "dstnat"),
    # -100 is dstnat; nft 1.0.6 takes that keyword for prerouting only.
    names.NAT_OUTPUT: Hook("nat", "output", "-100"),
    names.NAT_POSTROUTING: Hook("nat", "postrouting", "srcnat"),
    names.FILTER_INPUT: Hook("filter", "input", "filter"),
    names.FILTER_FORWARD: Hook("filter", "forward", "filter"),
    names.FILTER_OUTPUT: Hook("filter", "output", "filter"),
}


def _fixed_chains(node: NodeContext) -> dict[str, tuple[str, ...]]:
    svc_check = f"ct state new jump {names.SERVICE_ENDPOINTS_CHECK}"
    # After DNAT, a new connection still addressed into the Service range asked for a port
    # its Service does not define (or an address no Service holds): refuse it at once, as
    # kube-proxy's nftables mode does, instead of letting it be routed nowhere and time out.
    range_check = (() if node.service_cidr is None else
                   (f"ct state new ip daddr {node.service_cidr} goto {names.REJECT_CHAIN}",))
    # ClusterIP traffic from outside the pod network (host processes, other hosts) is
    # masqueraded so that replies come back through this node: one set lookup here
    # rather than one rule per Service (elements are far cheaper to load than rules).
    outside = "" if node.masquerade_all else f"ip saddr != {node.cluster_cidr} "
    return {
        names.NAT_PREROUTING: (f"jump {names.SERVICES}",),
        names.NAT_OUTPUT: (f"jump {names.SERVICES}",),
        names.NAT_POSTROUTING: (f"jump {names.MASQUERADING}",),
        names.FILTER_INPUT: (f"ct state new jump {names.NODEPORT_ENDPOINTS_CHECK}", svc_check),
        names.FILTER_FORWARD: (svc_check, *range_check),
        names.FILTER_OUTPUT: (svc_check, *range_check),
        names.SERVICES: (
            f"{outside}ip daddr . meta l4proto . th dport @{names.CLUSTER_IP_PORTS} "
            f"jump {names.MARK_FOR_MASQUERADE}",
            f"ip daddr . meta l4proto . th dport vmap @{names.SERVICE_IPS}",
            f"ip daddr @{names.NODEPORT_IPS} meta l4proto . th dport "
            f"vmap @{names.SERVICE_NODEPORTS}",
        ),
        names.SERVICE_ENDPOINTS_CHECK: (
            f"ip daddr . meta l4proto . th dport vmap @{names.NO_ENDPOINT_SERVICES}",
        ),
        names.NODEPORT_ENDPOINTS_CHECK: (
            f"ip daddr @{names.NODEPORT_IPS} meta l4proto . th dport "
            f"vmap @{names.NO_ENDPOINT_NODEPORTS}",
        ),
        names.MARK_FOR_MASQUERADE: (f"meta mark set meta mark or {MARK}",),
        names.MASQUERADING: (
            f"ct status dnat ip saddr . ip daddr @{names.HAIRPIN_ENDPOINTS} "
            f"jump {names.MARK_FOR_MASQUERADE}",
            f"meta mark & {MARK} == 0 return",
            f"meta mark set meta mark xor {MARK}",
            "masquerade fully-random",
        ),
        # TCP clients get a reset, everything else ICMP port unreachable: both make
        # connect() fail at once with ECONNREFUSED (Linux maps either to it; some stacks
        # retry a SYN that drew only an ICMP error).
        names.REJECT_CHAIN: (
            "meta l4proto tcp reject with tcp reset",
            "reject with icmp type port-unreachable",
        ),
    }


@functools.lru_cache(maxsize=16)
def fixed_chains(node: NodeContext) -> tuple[Chain, ...]:
    """The chains every node has (cached: the same objects each compile, which lets the
    incremental planner skip them by identity)."""
    return tuple(Chain(name, rules, HOOKS.get(name))
                 for name, rules in _fixed_chains(node).items())
