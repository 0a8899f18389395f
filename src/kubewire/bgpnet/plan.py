"""One node's BGP plan: its AS, router ID, reflector role and neighbours, from the nodes, the
BGPConfiguration and the BGPPeers. Pure and deterministic; README.md has the rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from kubewire.bgpd.config import NeighborConfig
from kubewire.bgpnet.errors import DuplicateNode, UnknownNode
from kubewire.bgpnet.views import BgpNode, BgpSettings, PeerSpec, SecretKeyRef

__all__ = ["MESH", "NodePlan", "PeerPlan", "plan_node"]

MESH = "mesh"


@dataclass(frozen=True, slots=True)
class PeerPlan:
    """One neighbour of a node. ``origin`` says why, for ``kubewire bgp peers``: "mesh",
    "bgppeer/<name>", "rr-client" (we reflect to it) or "reflector" (it reflects to us).
    ``node`` is the peer's node name (None for a router outside the cluster); ``sources``
    every mesh/BGPPeer that asked for this neighbour, the one that won first."""

    address: IPv4Address
    asn: int
    port: int
    rr_client: bool
    ttl_security: int | None
    keep_next_hop: bool
    source_address: IPv4Address | None
    origin: str
    node: str | None = None
    sources: tuple[str, ...] = ()
    # The TCP MD5 password (RFC 2385), resolved from its Secret; kept out of repr.
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class NodePlan:
    node: str
    asn: int
    router_id: IPv4Address
    cluster_id: IPv4Address | None
    listen_port: int
    neighbors: tuple[PeerPlan, ...]

    def to_neighbor_configs(self) -> tuple[NeighborConfig, ...]:
        """The speaker's neighbours. Between two nodes the lower address waits (passive) and
        the higher connects, as Calico makes its mesh unidirectional: one connection instead
        of two racing ones. An unanswered connect is reported after
        ``CONNECT_RETRY_SECONDS``. A node that just joined connects before the others' plans know
        it, and is refused: it retries after ``NODE_IDLE_HOLD_SECONDS`` (doubling on each
        failure), not the speaker's default second."""
        return tuple(
            NeighborConfig(
                address=p.address,
                asn=p.asn,
                port=p.port,
                local_address=p.source_address,
                rr_client=p.rr_client,
                ttl_security=p.ttl_security,
                keep_next_hop=p.keep_next_hop,
                password=p.password,
                passive=p.node is not None and self.router_id < p.address,
                idle_hold_time=NODE_IDLE_HOLD_SECONDS if p.node is not None else 1.0,
                connect_retry_time=CONNECT_RETRY_SECONDS,
                description=p.origin,
            )
            for p in self.neighbors
        )


NODE_IDLE_HOLD_SECONDS = 0.1
# RFC 4271's ConnectRetryTimer: how long an unanswered connect waits before the session says
# so and tries again. Routers use 30-120 s; a lab shows a mistake (a TCP MD5 key the peer
# does not have looks like silence) within seconds.
CONNECT_RETRY_SECONDS = 5


def _index(nodes: Iterable[BgpNode]) -> dict[str, BgpNode]:
    by_name: dict[str, BgpNode] = {}
    by_address: dict[IPv4Address, str] = {}
    for node in nodes:
        if node.name in by_name:
            raise DuplicateNode("name", node.name, node.name)
        if node.address in by_address:
            raise DuplicateNode(f"InternalIP {node.address}", by_address[node.address], node.name)
        by_name[node.name] = node
        by_address[node.address] = node.name
    return dict(sorted(by_name.items()))


def _node_peer(
    local: BgpNode, other: BgpNode, settings: BgpSettings, source: str, peer: PeerSpec | None,
    password: str | None,
) -> PeerPlan:
    local_asn = local.asn or settings.asn
    asn = other.asn or settings.asn
    ibgp = asn == local_asn
    # Reflection is an iBGP notion (RFC 4456): across ASes both ends are plain eBGP peers.
    rr_client = ibgp and local.is_reflector and not other.is_reflector
    if rr_client:
        origin = "rr-client"
    elif ibgp and other.is_reflector and not local.is_reflector:
        origin = "reflector"
    else:
        origin = source
    use_node_ip = peer.use_node_ip if peer is not None else True
    return PeerPlan(
        address=other.address,
        asn=asn,
        port=settings.listen_port,
        rr_client=rr_client,
        ttl_security=peer.ttl_security if peer is not None else None,
        keep_next_hop=peer.keep_next_hop if peer is not None else False,
        source_address=local.address if use_node_ip else None,
        origin=origin,
        node=other.name,
        sources=(source,),
        password=password,
    )


def plan_node(
    node_name: str, nodes: Iterable[BgpNode], settings: BgpSettings, peers: Iterable[PeerSpec],
    secrets: Mapping[str, Mapping[str, str]] | None = None,
) -> NodePlan:
    """The plan of ``node_name``: neighbours sorted by address.

    When several sources ask for the same neighbour address, the BGPPeer whose name sorts
    first wins over later ones and every BGPPeer wins over the mesh (an explicit peering
    is more specific); the losers are listed after the winner in ``sources``.
    ``secrets`` (Secret name -> decoded data, of ``SECRETS_NAMESPACE``) gives passwords.
    Raises UnknownNode, DuplicateNode, and InvalidObject for a password whose Secret or key
    is missing (the node then keeps its previous plan: nothing is half-applied).
    """
    found = secrets or {}

    def password(ref: SecretKeyRef | None, where: str) -> str | None:
        return None if ref is None else ref.resolve(found, where)

    mesh_password = password(settings.mesh_password, "BGPConfiguration spec.nodeMeshPassword")
    by_name = _index(nodes)
    local = by_name.get(node_name)
    if local is None:
        raise UnknownNode(node_name, list(by_name))
    # Candidates in priority order per address: BGPPeers by name, then the mesh.
    candidates: dict[IPv4Address, list[PeerPlan]] = {}
    for peer in sorted(peers, key=lambda p: p.name):
        source = f"bgppeer/{peer.name}"
        if peer.peer_selector is not None:
            for other in by_name.values():
                if other is local:
                    continue
                # A session has two ends: the node on the other end configures it because
                # it is selected the other way round (so route reflectors learn their
                # clients from the one "everyone peers with the reflectors" BGPPeer).
                forward = peer.applies_to(local) and peer.peer_selector.matches(other.labels)
                reverse = peer.applies_to(other) and peer.peer_selector.matches(local.labels)
                if forward or reverse:
                    plan = _node_peer(local, other, settings, source, peer,
                                      password(peer.password, f"BGPPeer/{peer.name} spec.password"))
                    candidates.setdefault(other.address, []).append(plan)
        elif peer.peer_ip is not None and peer.asn is not None and peer.applies_to(local):
            if peer.peer_ip == local.address:
                continue  # a node never peers with itself
            candidates.setdefault(peer.peer_ip, []).append(PeerPlan(
                address=peer.peer_ip,
                asn=peer.asn,
                port=peer.port,
                rr_client=False,
                ttl_security=peer.ttl_security,
                keep_next_hop=peer.keep_next_hop,
                source_address=local.address if peer.use_node_ip else None,
                origin=source,
                sources=(source,),
                password=password(peer.password, f"BGPPeer/{peer.name} spec.password"),
            ))
    if settings.mesh:
        for other in by_name.values():
            if other is not local:
                candidates.setdefault(other.address, []).append(
                    _node_peer(local, other, settings, MESH, None, mesh_password))
    neighbors = []
    for address in sorted(candidates):
        first, *rest = candidates[address]
        sources = first.sources + tuple(s for p in rest for s in p.sources)
        neighbors.append(dataclasses.replace(first, sources=sources))
    return NodePlan(
        node=local.name,
        asn=local.asn or settings.asn,
        router_id=local.address,
        cluster_id=local.rr_cluster_id,
        listen_port=settings.listen_port,
        neighbors=tuple(neighbors),
    )
