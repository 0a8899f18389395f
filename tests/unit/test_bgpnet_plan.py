"""Per-node BGP plans: full mesh, route reflectors, ToR peers, per-node AS, rack peers,
duplicate neighbours, and the hand-off to the speaker's configuration."""

from __future__ import annotations

import random
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from kubewire.bgpd.config import SpeakerConfig
from kubewire.bgpnet import (
    ANNOTATION_AS_NUMBER,
    ANNOTATION_RR_CLUSTER_ID,
    BgpNode,
    BgpSettings,
    DuplicateNode,
    InvalidObject,
    NodePlan,
    PeerSpec,
    UnknownNode,
    plan_node,
)
from kubewire.controllers.nodes import build_node

A = IPv4Address


def node_obj(index: int, labels: Mapping[str, str] | None = None,
             annotations: Mapping[str, str] | None = None, name: str = "") -> dict[str, Any]:
    obj: dict[str, Any] = build_node(name or f"node-{index}", labels or {},
                     IPv4Network(f"10.244.{index}.0/24"), A(f"172.18.0.{10 + index}"))
    if annotations:
        obj["metadata"]["annotations"] = dict(annotations)
    return obj


def nodes_of(*objs: dict[str, Any]) -> list[BgpNode]:
    return [BgpNode.from_node(o) for o in objs]


def peer(name: str, **spec: Any) -> PeerSpec:
    return PeerSpec.from_obj({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                              "metadata": {"name": name}, "spec": spec})


def config(**spec: Any) -> BgpSettings:
    return BgpSettings.from_obj({"apiVersion": "projectcalico.org/v3",
                                 "kind": "BGPConfiguration", "metadata": {"name": "default"},
                                 "spec": spec})


def table(plan: NodePlan) -> list[tuple[str, int, bool, str]]:
    return [(str(p.address), p.asn, p.rr_client, p.origin) for p in plan.neighbors]


def sessions(nodes: list[BgpNode], settings: BgpSettings, peers: list[PeerSpec]) -> set[
        tuple[str, str]]:
    """Every (local, remote) node pair with a configured session."""
    by_address = {n.address: n.name for n in nodes}
    out = set()
    for n in nodes:
        for p in plan_node(n.name, nodes, settings, peers).neighbors:
            if p.address in by_address:
                out.add((n.name, by_address[p.address]))
    return out


def assert_symmetric(pairs: set[tuple[str, str]]) -> None:
    one_sided = sorted(p for p in pairs if (p[1], p[0]) not in pairs)
    assert not one_sided, f"sessions configured on one end only: {one_sided}"


THREE = [node_obj(1), node_obj(2), node_obj(3)]


def test_three_node_full_mesh_with_defaults() -> None:
    nodes = nodes_of(*THREE)
    plan = plan_node("node-1", nodes, BgpSettings.from_obj(None), [])
    assert (plan.node, plan.asn, plan.router_id, plan.cluster_id, plan.listen_port) == (
        "node-1", 64512, A("172.18.0.11"), None, 179)
    assert table(plan) == [("172.18.0.12", 64512, False, "mesh"),
                           ("172.18.0.13", 64512, False, "mesh")]
    first = plan.neighbors[0]
    assert (first.port, first.source_address, first.ttl_security, first.keep_next_hop,
            first.node, first.sources) == (179, A("172.18.0.11"), None, False, "node-2",
                                           ("mesh",))
    assert sessions(nodes, BgpSettings(), []) == {
        (a, b) for a in ("node-1", "node-2", "node-3") for b in ("node-1", "node-2", "node-3")
        if a != b}


def test_neighbor_configs_make_the_lower_address_passive() -> None:
    nodes = nodes_of(*THREE)
    configs = plan_node("node-2", nodes, BgpSettings(), []).to_neighbor_configs()
    assert [(str(c.address), c.asn, c.passive, c.local_address, c.description)
            for c in configs] == [
        ("172.18.0.11", 64512, False, A("172.18.0.12"), "mesh"),   # node-1 waits for us
        ("172.18.0.13", 64512, True, A("172.18.0.12"), "mesh"),    # node-3 connects to us
    ]
    # The speaker accepts the plan as it is.
    plan = plan_node("node-2", nodes, BgpSettings(), [])
    speaker = SpeakerConfig(plan.asn, plan.router_id, plan.to_neighbor_configs(),
                            port=plan.listen_port, cluster_id=plan.cluster_id)
    assert speaker.neighbor("172.18.0.13") is not None


def test_listen_port_and_as_come_from_the_bgp_configuration() -> None:
    plan = plan_node("node-1", nodes_of(*THREE), config(asNumber="1.10", listenPort=1179), [])
    assert plan.asn == 65546 and plan.listen_port == 1179
    assert {(p.asn, p.port) for p in plan.neighbors} == {(65546, 1179)}


REFLECTOR = {ANNOTATION_RR_CLUSTER_ID: "244.0.0.1"}
RR_NODES = [
    node_obj(1, {"route-reflector": "true"}, REFLECTOR, name="rr-1"),
    node_obj(2, {"route-reflector": "true"}, REFLECTOR, name="rr-2"),
    node_obj(3, name="c-1"), node_obj(4, name="c-2"), node_obj(5, name="c-3"),
]
PEER_WITH_RRS = peer("peer-with-rrs", nodeSelector="all()",
                     peerSelector="route-reflector == 'true'")


def test_route_reflectors_with_the_mesh_off() -> None:
    nodes = nodes_of(*RR_NODES)
    settings = config(nodeToNodeMeshEnabled=False)
    rr1 = plan_node("rr-1", nodes, settings, [PEER_WITH_RRS])
    assert rr1.cluster_id == A("244.0.0.1")
    assert table(rr1) == [
        ("172.18.0.12", 64512, False, "bgppeer/peer-with-rrs"),   # rr-2: plain iBGP
        ("172.18.0.13", 64512, True, "rr-client"),
        ("172.18.0.14", 64512, True, "rr-client"),
        ("172.18.0.15", 64512, True, "rr-client"),
    ]
    assert {p.sources for p in rr1.neighbors} == {("bgppeer/peer-with-rrs",)}
    client = plan_node("c-2", nodes, settings, [PEER_WITH_RRS])
    assert client.cluster_id is None
    assert table(client) == [("172.18.0.11", 64512, False, "reflector"),
                             ("172.18.0.12", 64512, False, "reflector")]
    pairs = sessions(nodes, settings, [PEER_WITH_RRS])
    assert_symmetric(pairs)
    assert len(pairs) == 2 * (1 + 2 * 3)   # rr-1<->rr-2 and each reflector with 3 clients
    assert rr1.to_neighbor_configs()[1].rr_client


def test_mesh_off_without_peers_has_no_neighbours() -> None:
    plan = plan_node("node-1", nodes_of(*THREE), config(nodeToNodeMeshEnabled=False), [])
    assert plan.neighbors == ()


def test_a_reflector_in_the_mesh_reflects_to_its_mesh_clients() -> None:
    nodes = nodes_of(*RR_NODES)
    rr1 = plan_node("rr-1", nodes, BgpSettings(), [])
    assert [p.origin for p in rr1.neighbors] == ["mesh", "rr-client", "rr-client", "rr-client"]
    assert table(plan_node("c-1", nodes, BgpSettings(), []))[:2] == [
        ("172.18.0.11", 64512, False, "reflector"), ("172.18.0.12", 64512, False, "reflector")]


def test_ebgp_tor_peer_for_all_nodes() -> None:
    nodes = nodes_of(*THREE)
    tor = peer("tor", peerIP="172.18.0.1", asNumber=65000, ttlSecurity=1,
               keepOriginalNextHop=True)
    for name in ("node-1", "node-2", "node-3"):
        plan = plan_node(name, nodes, BgpSettings(), [tor])
        assert table(plan)[0] == ("172.18.0.1", 65000, False, "bgppeer/tor")
        first = plan.neighbors[0]
        assert (first.ttl_security, first.keep_next_hop, first.node, first.port) == (
            1, True, None, 179)
        assert first.source_address == plan.router_id
        assert len(plan.neighbors) == 3   # the ToR and two mesh peers
        assert not plan.to_neighbor_configs()[0].passive   # a router is always dialled


def test_tor_peer_port_and_source_address_none() -> None:
    tor = peer("tor", peerIP="172.18.0.1:1179", asNumber="65000", sourceAddress="None")
    first = plan_node("node-1", nodes_of(*THREE), BgpSettings(), [tor]).neighbors[0]
    assert (first.port, first.source_address) == (1179, None)


def test_per_node_as_number_makes_ebgp() -> None:
    nodes = nodes_of(node_obj(1), node_obj(2), node_obj(3, annotations={
        ANNOTATION_AS_NUMBER: "65003", ANNOTATION_RR_CLUSTER_ID: "244.0.0.9"}))
    assert table(plan_node("node-1", nodes, BgpSettings(), [])) == [
        ("172.18.0.12", 64512, False, "mesh"), ("172.18.0.13", 65003, False, "mesh")]
    odd = plan_node("node-3", nodes, BgpSettings(), [])
    assert odd.asn == 65003
    # A reflector has no clients across an AS boundary: reflection is iBGP only.
    assert table(odd) == [("172.18.0.11", 64512, False, "mesh"),
                          ("172.18.0.12", 64512, False, "mesh")]


def test_as_number_comes_from_the_annotation_only() -> None:
    nodes = nodes_of(node_obj(1, {ANNOTATION_AS_NUMBER: "65001"}),
                     node_obj(2, {ANNOTATION_AS_NUMBER: "65001"},
                              {ANNOTATION_AS_NUMBER: "65002"}))
    assert [n.asn for n in nodes] == [None, 65002]   # a label of that key means nothing


def test_rack_style_peers() -> None:
    nodes = nodes_of(node_obj(1, {"rack": "a"}), node_obj(2, {"rack": "a"}),
                     node_obj(3, {"rack": "b"}), node_obj(4, {"rack": "b", "edge": "yes"}))
    settings = config(nodeToNodeMeshEnabled=False)
    peers = [
        peer("rack-a-tor", nodeSelector="rack == 'a'", peerIP="172.18.1.1", asNumber=65101),
        peer("rack-b-tor", nodeSelector="rack == 'b'", peerIP="172.18.2.1", asNumber=65102),
        peer("rack-b-mesh", nodeSelector="rack == 'b'", peerSelector="rack == 'b'"),
        peer("edge-only", node="node-4", peerIP="172.18.9.9", asNumber=65200),
    ]
    assert table(plan_node("node-1", nodes, settings, peers)) == [
        ("172.18.1.1", 65101, False, "bgppeer/rack-a-tor")]
    assert table(plan_node("node-3", nodes, settings, peers)) == [
        ("172.18.0.14", 64512, False, "bgppeer/rack-b-mesh"),
        ("172.18.2.1", 65102, False, "bgppeer/rack-b-tor")]
    assert table(plan_node("node-4", nodes, settings, peers)) == [
        ("172.18.0.13", 64512, False, "bgppeer/rack-b-mesh"),
        ("172.18.2.1", 65102, False, "bgppeer/rack-b-tor"),
        ("172.18.9.9", 65200, False, "bgppeer/edge-only")]
    assert_symmetric(sessions(nodes, settings, peers))


def test_one_way_selector_still_gives_both_ends() -> None:
    nodes = nodes_of(node_obj(1, {"rack": "a"}), node_obj(2, {"rack": "b"}))
    one_way = [peer("a-to-b", nodeSelector="rack == 'a'", peerSelector="rack == 'b'")]
    settings = config(nodeToNodeMeshEnabled=False)
    assert sessions(nodes, settings, one_way) == {("node-1", "node-2"), ("node-2", "node-1")}


def test_a_node_never_peers_with_itself() -> None:
    nodes = nodes_of(*THREE)
    self_ip = peer("self", node="node-1", peerIP="172.18.0.11", asNumber=65000)
    everyone = peer("all", peerSelector="all()")
    plan = plan_node("node-1", nodes, config(nodeToNodeMeshEnabled=False), [self_ip, everyone])
    assert [str(p.address) for p in plan.neighbors] == ["172.18.0.12", "172.18.0.13"]


def test_duplicate_neighbours_are_merged() -> None:
    nodes = nodes_of(*THREE)
    peers = [
        peer("z-tor", peerIP="172.18.0.1", asNumber=65009),
        peer("a-tor", peerIP="172.18.0.1", asNumber=65000, ttlSecurity=2),
        peer("everyone", peerSelector="all()", ttlSecurity=1),
    ]
    plan = plan_node("node-1", nodes, BgpSettings(), peers)
    tor = plan.neighbors[0]
    # The BGPPeer whose name sorts first wins; every source is listed, winner first.
    assert (tor.asn, tor.ttl_security, tor.origin, tor.sources) == (
        65000, 2, "bgppeer/a-tor", ("bgppeer/a-tor", "bgppeer/z-tor"))
    node2 = plan.neighbors[1]
    # An explicit BGPPeer beats the mesh.
    assert (node2.ttl_security, node2.origin, node2.sources) == (
        1, "bgppeer/everyone", ("bgppeer/everyone", "mesh"))
    assert len(plan.neighbors) == 3
    SpeakerConfig(plan.asn, plan.router_id, plan.to_neighbor_configs())   # no duplicates


def test_plans_do_not_depend_on_input_order() -> None:
    peers = [PEER_WITH_RRS, peer("tor", peerIP="172.18.0.1", asNumber=65000),
             peer("clients", peerSelector="!has(route-reflector)")]
    nodes = nodes_of(*RR_NODES)
    expected = plan_node("c-1", nodes, BgpSettings(), peers)
    shuffler = random.Random(6)
    for _ in range(5):
        shuffler.shuffle(nodes)
        shuffler.shuffle(peers)
        assert plan_node("c-1", nodes, BgpSettings(), peers) == expected


def test_unknown_node() -> None:
    with pytest.raises(UnknownNode, match=r'no node named "node-9" .*known: node-1, node-2'):
        plan_node("node-9", nodes_of(*THREE[:2]), BgpSettings(), [])


def test_two_nodes_with_one_address() -> None:
    twin = node_obj(1, name="twin")
    with pytest.raises(DuplicateNode, match="'node-1' and 'twin' have the same InternalIP"):
        plan_node("node-1", nodes_of(THREE[0], twin), BgpSettings(), [])


def test_passwords_come_from_secrets_and_reach_the_neighbour_configs() -> None:
    nodes = nodes_of(*THREE)
    settings = BgpSettings.from_obj({"metadata": {"name": "default"}, "spec": {
        "nodeMeshPassword": {"secretKeyRef": {"name": "bgp", "key": "mesh"}}}})
    tor = PeerSpec.from_obj({"metadata": {"name": "tor"}, "spec": {
        "peerIP": "172.18.0.1", "asNumber": 65000,
        "password": {"secretKeyRef": {"name": "bgp", "key": "tor"}}}})
    secrets = {"bgp": {"mesh": "m3sh", "tor": "t0r"}}
    plan = plan_node("node-1", nodes, settings, [tor], secrets)
    by_address = {str(n.address): n.password for n in plan.to_neighbor_configs()}
    assert by_address == {"172.18.0.1": "t0r", "172.18.0.12": "m3sh", "172.18.0.13": "m3sh"}
    assert "m3sh" not in repr(plan)  # a password never reaches a log line through repr
    with pytest.raises(InvalidObject, match=r'BGPPeer/tor spec\.password: .*no key "tor"'):
        plan_node("node-1", nodes, settings, [tor], {"bgp": {"mesh": "m3sh"}})
