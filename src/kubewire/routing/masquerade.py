"""Pod egress masquerade: pods reaching beyond the pod network leave with the node's address.

What flannel's `ipMasq: true` and kind's kindnet do. Nothing outside the cluster routes
the pod CIDR (the lab's external host has no route to it, like the network beyond a real
node), so a packet from a pod to an outside address must carry the node's own address or
its reply would have nowhere to go. One rule, in its own table so that no other component's
sync touches it:

    table ip kubewire-egress
        chain nat-postrouting  (nat, postrouting, priority srcnat)
            ip saddr <cluster cidr> ip daddr != <cluster cidr> masquerade fully-random

Why this rule leaves the other traffic alone:

- Pod to pod (same node or another): the destination is inside the cluster CIDR, so the
  packet keeps the pod's address, as the Kubernetes network model demands.
- Pod to a Service (ClusterIP, an externalIP or a LoadBalancer address, also one "owned" by
  another node, and a NodePort on this node's address): kube-proxy's table DNATs it at
  prerouting, before postrouting, to an endpoint pod's address, so by the time this chain
  sees it the destination is in the cluster CIDR and nothing happens here. Masquerading
  such traffic, where the proxy wants it (hairpin, externalTrafficPolicy Cluster), stays
  the proxy's own rule in `ip kubewire-proxy`.
- Pod to a NodePort on *another* node's address: this node's proxy does not translate it
  (NodePorts answer on the node's own addresses only), so the destination is outside the
  cluster CIDR and the packet leaves with this node's address. The other node then sees a
  client at a node address: with externalTrafficPolicy Cluster it masquerades again as
  usual; with Local the endpoint sees this node's address, not the pod's. That is what
  happens with flannel's ipMasq too.
- Service addresses the proxy has not programmed yet (or with no endpoints, rejected in the
  proxy's filter chains before postrouting ever sees them) follow the node's routes like
  any outside address.

Both this chain and the proxy's masquerading chain sit at srcnat. The kernel runs NAT base
chains of one hook in priority order only until one of them sets up a mapping for the
connection, and both masquerade to the outgoing interface's address, so whichever runs
first the result is the same. `fully-random`, as flannel and kube-proxy use, picks source
ports at random: pods sharing one node address and racing to open UDP flows (DNS) to one
upstream otherwise collide in conntrack and lose packets.
"""

from __future__ import annotations

import os
import subprocess
from ipaddress import IPv4Network
from pathlib import Path

from kubewire.kernel.netns import entered
from kubewire.routing.model import SyncError

__all__ = [
    "CHAIN",
    "TABLE",
    "EgressMasqueradeError",
    "egress_ruleset",
    "remove_egress_masquerade",
    "sync_egress_masquerade",
]

FAMILY = "ip"
TABLE = "kubewire-egress"
CHAIN = "nat-postrouting"
_TIMEOUT = 30.0


class EgressMasqueradeError(SyncError):
    """nft is missing, refused the egress table, or was pointed at the wrong namespace."""


def egress_ruleset(cluster_cidr: IPv4Network) -> str:
    """The `nft -f` transaction that (re)creates the egress table for `cluster_cidr`.

    `add table` then `delete table` makes it idempotent: the table is replaced as a whole,
    whatever was in it, in the same atomic batch.
    """
    cidr = IPv4Network(cluster_cidr)
    t = f"{FAMILY} {TABLE}"
    return (
        f"add table {t}\n"
        f"delete table {t}\n"
        f"table {t} {{\n"
        f"\tchain {CHAIN} {{\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        f"\t\tip saddr {cidr} ip daddr != {cidr} masquerade fully-random\n"
        "\t}\n"
        "}\n"
    )


def _removal() -> str:
    t = f"{FAMILY} {TABLE}"
    return f"add table {t}\ndelete table {t}\n"


def sync_egress_masquerade(netns_path: Path | str, cluster_cidr: IPv4Network) -> None:
    """Apply `egress_ruleset(cluster_cidr)` inside the node namespace (one transaction)."""
    _run_nft(netns_path, egress_ruleset(cluster_cidr), "apply the egress masquerade table")


def remove_egress_masquerade(netns_path: Path | str) -> None:
    """Delete the egress table from the node namespace; absent is fine."""
    _run_nft(netns_path, _removal(), "remove the egress masquerade table")


def _same_file(a: os.stat_result, path: str) -> bool:
    try:
        b = os.stat(path)
    except OSError:  # /proc/1/ns/net may be closed to us even as root (a sandbox)
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _run_nft(netns_path: Path | str, text: str, what: str, nft: str = "nft") -> None:
    try:
        target = os.stat(netns_path)
    except FileNotFoundError:
        raise EgressMasqueradeError(f"no network namespace at {netns_path}") from None
    # Node namespaces only: the machine's own nftables (where init and this process
    # live; the lab enters node namespaces per thread) must never be touched.
    if _same_file(target, "/proc/1/ns/net") or _same_file(target, "/proc/self/ns/net"):
        raise EgressMasqueradeError(
            f"{netns_path} is the machine's own network namespace; egress masquerade "
            "belongs in a node namespace (e.g. /run/netns/kw-lab-node-1)")
    try:
        with entered(netns_path):
            proc = subprocess.run([nft, "-f", "-"], input=text, capture_output=True,
                                  text=True, timeout=_TIMEOUT, check=False)
    except FileNotFoundError:
        raise EgressMasqueradeError(
            f"{nft} not found: install nftables (apt-get install nftables)") from None
    except subprocess.TimeoutExpired:
        raise EgressMasqueradeError(
            f"nft did not {what} in {netns_path} within {_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        first = "\n".join(proc.stderr.strip().splitlines()[:6])
        raise EgressMasqueradeError(
            f"nft refused to {what} in {netns_path}; the previous table stays in force:\n"
            f"{first}")
