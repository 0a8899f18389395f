"""Every name in the policy table, made in one place.

Sets are named by *what they select*, never by what they contain, so the same policy
keeps the same set names while pods come and go (a later incremental sync changes
elements only): ``{role}-{hash}-{namespace}`` where the hash is of the canonical selector
text (``LabelSelector.__str__`` is canonical) and the namespace is there for people.
"""

from __future__ import annotations

import base64
import hashlib

FAMILY = "ip"
TABLE = "kubewire-policy"
MAX_NAME_LENGTH = 256  # NFT_NAME_MAXLEN: chain and set names
MAX_COMMENT_LENGTH = 128  # NFT_USERDATA_MAXLEN for a rule comment

FORWARD = "policy-forward"  # base chain: pod traffic, after the proxy's DNAT
INPUT = "policy-input"  # base chain: pods talking to their own node (egress only)
DENY = "policy-deny"  # reject: TCP reset, otherwise ICMP admin-prohibited
INGRESS_ISOLATED = "isolated-ingress"  # vmap: local pod IP -> jump ingress-<namespace>
EGRESS_ISOLATED = "isolated-egress"  # vmap: local pod IP -> jump egress-<namespace>


def short_hash(text: str) -> str:
    """8 characters of base32 SHA-256, as kube-proxy names its chains."""
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest)[:8].decode().lower()


def ingress_chain(namespace: str) -> str:
    return f"ingress-{namespace}"


def egress_chain(namespace: str) -> str:
    return f"egress-{namespace}"


def pods_set(namespace: str, selector: str) -> str:
    """The local pods a policy's podSelector picks."""
    return f"pods-{short_hash(f'{namespace}|{selector}')}-{namespace}"


def peers_set(namespace: str, peers: str) -> str:
    """Addresses of a rule's from/to list (pods selected, ipBlocks)."""
    return f"peers-{short_hash(f'{namespace}|{peers}')}-{namespace}"


def ports_set(ports: str) -> str:
    """``protocol . port`` ranges of a rule's numeric ports (shared by every rule that
    lists the same ones)."""
    return f"ports-{short_hash(ports)}"


def named_set(direction: str, ports: str) -> str:
    """``pod IP . protocol . port`` of a rule's named ports, resolved per destination pod:
    the local pods for ingress, every pod for egress."""
    return f"named-{'in' if direction == 'Ingress' else 'out'}-{short_hash(ports)}"


def comment(text: str) -> str:
    """A rule comment nft accepts: quoted, no quotes inside, at most 128 bytes."""
    text = text.replace('"', "'")
    if len(text.encode()) > MAX_COMMENT_LENGTH - 1:
        text = text.encode()[: MAX_COMMENT_LENGTH - 4].decode(errors="ignore") + "..."
    return f'comment "{text}"'
