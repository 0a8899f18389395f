"""Every nftables name the proxy uses, built in one place.

Per-service objects are named ``{role}-{hash}-{ns}/{name}/{proto}/{port}`` (and, for
per-endpoint objects, ``...__{ip}/{port}``), as kube-proxy's nftables mode names them: the
readable part tells a human what the object is for; the hash (the first 8 base32
characters of the SHA-256 of the readable part) keeps names unique if the readable part
ever has to be cut to fit nft's 256-byte name limit.
"""

from __future__ import annotations

import functools
import hashlib

TABLE = "kubewire-proxy"
FAMILY = "ip"

#: The kernel's NFT_NAME_MAXLEN / NFT_CHAIN_MAXNAMELEN is 256 including the NUL.
MAX_NAME_LENGTH = 255
HASH_LENGTH = 8

# Fixed chains.
NAT_PREROUTING = "nat-prerouting"
NAT_OUTPUT = "nat-output"
NAT_POSTROUTING = "nat-postrouting"
FILTER_INPUT = "filter-input"
FILTER_FORWARD = "filter-forward"
FILTER_OUTPUT = "filter-output"
SERVICES = "services"
MASQUERADING = "masquerading"
MARK_FOR_MASQUERADE = "mark-for-masquerade"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
REJECT_CHAIN = "reject-chain"

# Fixed maps and sets.
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
NODEPORT_IPS = "nodeport-ips"
CLUSTER_IP_PORTS = "cluster-ip-ports"
HAIRPIN_ENDPOINTS = "hairpin-endpoints"
# frontend . choice -> endpoint (DNAT target), one map per L4 protocol: the value's type
# must be declared as `ip daddr . <proto> dport` (nft 1.0.6 cannot read back a rule using
# a map whose value is declared `th dport`, and refuses a udp rule with a `tcp dport` one).
SERVICE_ENDPOINTS = {p: f"service-endpoints-{p}" for p in ("tcp", "udp", "sctp")}

# Roles of per-service objects.
ROLE_SERVICE = "service"  # picks among all usable endpoints (cluster-wide)
ROLE_LOCAL = "local"  # picks among this node's usable endpoints
ROLE_EXTERNAL = "external"  # NodePort / LoadBalancer / externalIP entry point
ROLE_AFFINITY = "affinity"  # per-endpoint set of recent client addresses

#: Bit set on packets that must be masqueraded (kube-proxy uses the same bit).
MASQUERADE_MARK = 0x4000


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 base32 alphabet


def name_hash(readable: str) -> str:
    """First 8 base32 characters of SHA-256(readable): exactly the first 40 bits, so
    they are computed directly (base64.b32encode is pure Python and ~10x slower)."""
    bits = int.from_bytes(hashlib.sha256(readable.encode()).digest()[:5], "big")
    return "".join(_B32[(bits >> shift) & 31] for shift in range(35, -1, -5))


def object_name(role: str, readable: str) -> str:
    """``{role}-{hash}-{readable}``, cut to nft's name limit (the hash keeps it unique)."""
    return f"{role}-{_cached_hash(readable)}-{readable}"[:MAX_NAME_LENGTH]


# service, local and external chains of one Service port share their hash.
_cached_hash = functools.lru_cache(maxsize=4096)(name_hash)


def service_port_id(namespace: str, name: str, protocol: str, port: int) -> str:
    """``ns/name/proto/port``: one Service port, the unit kube-proxy programs."""
    return f"{namespace}/{name}/{protocol.lower()}/{port}"


def endpoint_id(service_port: str, ip: str, port: int) -> str:
    return f"{service_port}__{ip}/{port}"


def service_chain(service_port: str) -> str:
    return object_name(ROLE_SERVICE, service_port)


def local_chain(service_port: str) -> str:
    return object_name(ROLE_LOCAL, service_port)


def external_chain(service_port: str) -> str:
    return object_name(ROLE_EXTERNAL, service_port)


def choice_chain(protocol: str, endpoints: int, local: bool) -> str:
    """The chain shared by every service (or local) chain of one protocol choosing among
    ``endpoints`` endpoints through ``@service-endpoints-<protocol>``."""
    return f"endpoint-choice-{protocol}-{endpoints}" + ("-local" if local else "")


def affinity_set(service_port: str, ip: str, port: int) -> str:
    return object_name(ROLE_AFFINITY, endpoint_id(service_port, ip, port))
