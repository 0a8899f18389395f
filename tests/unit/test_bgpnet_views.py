"""The views bgpnet reads objects into: Nodes, the BGPConfiguration and BGPPeers, with their
defaults and the errors for objects validation would have refused."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from kubewire.api.calicoselectors import All, Has
from kubewire.bgpnet import (
    ANNOTATION_AS_NUMBER,
    ANNOTATION_RR_CLUSTER_ID,
    BgpNetError,
    BgpNode,
    BgpSettings,
    DuplicateBgpConfiguration,
    InvalidObject,
    NodeWithoutAddress,
    PeerSpec,
    SecretKeyRef,
)
from kubewire.controllers.nodes import build_node


def node(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = build_node("node-1", {"rack": "a"}, IPv4Network("10.244.1.0/24"),
                     IPv4Address("172.18.0.11"))
    if annotations is not None:
        obj["metadata"]["annotations"] = annotations
    return obj


def bgppeer(**spec: Any) -> dict[str, Any]:
    return {"kind": "BGPPeer", "metadata": {"name": "p"}, "spec": spec}


def test_node_view() -> None:
    view = BgpNode.from_node(node({ANNOTATION_AS_NUMBER: "64512.7",
                                   ANNOTATION_RR_CLUSTER_ID: "244.0.0.1"}))
    assert (view.name, view.address, view.asn, view.rr_cluster_id) == (
        "node-1", IPv4Address("172.18.0.11"), (64512 << 16) + 7, IPv4Address("244.0.0.1"))
    assert view.labels["rack"] == "a" and view.is_reflector
    plain = BgpNode.from_node(node())
    assert (plain.asn, plain.rr_cluster_id, plain.is_reflector) == (None, None, False)


def test_node_without_internal_ip() -> None:
    obj = node()
    obj["status"]["addresses"] = [{"type": "Hostname", "address": "node-1"},
                                  {"type": "InternalIP", "address": "fd00::1"}]
    with pytest.raises(NodeWithoutAddress, match='node "node-1" has no IPv4 InternalIP'):
        BgpNode.from_node(obj)


@pytest.mark.parametrize(("annotations", "message"), [
    ({ANNOTATION_AS_NUMBER: "0"}, "'0' is not an AS number"),
    ({ANNOTATION_RR_CLUSTER_ID: "rr-one"}, "write it as an IPv4 address"),
])
def test_bad_node_annotations(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidObject, match=message) as caught:
        BgpNode.from_node(node(annotations))
    assert caught.value.where.startswith("Node/node-1 projectcalico.org/")


def test_settings_defaults() -> None:
    for settings in (BgpSettings.from_obj(None), BgpSettings.from_objects([]),
                     BgpSettings.from_obj({"kind": "BGPConfiguration",
                                           "metadata": {"name": "default"}})):
        assert settings == BgpSettings(asn=64512, mesh=True, listen_port=179)


def test_settings_from_object() -> None:
    settings = BgpSettings.from_obj({"metadata": {"name": "default"}, "spec": {
        "asNumber": 65010, "nodeToNodeMeshEnabled": False, "listenPort": 1179,
        "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}, {"cidr": "10.96.0.0/12"}],
        "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}],
        "serviceLoadBalancerIPs": [{"cidr": "172.18.255.0/24"}],
        "logSeverityScreen": "Debug"}})
    assert (settings.asn, settings.mesh, settings.listen_port) == (65010, False, 1179)
    assert settings.service_cluster_ips == (IPv4Network("10.96.0.0/12"),)
    assert settings.service_load_balancer_ips == (IPv4Network("172.18.255.0/24"),)


def test_two_bgp_configurations() -> None:
    objs = [{"metadata": {"name": "default"}}, {"metadata": {"name": "node.node-1"}}]
    with pytest.raises(DuplicateBgpConfiguration, match=r"2 BGPConfigurations \(default, "
                                                         r"node.node-1\).*delete the others"):
        BgpSettings.from_objects(objs)


def test_passwords_are_secret_key_refs() -> None:
    settings = BgpSettings.from_obj({"metadata": {"name": "default"}, "spec": {
        "nodeMeshPassword": {"secretKeyRef": {"name": "s", "key": "k"}}}})
    assert settings.mesh_password == SecretKeyRef("s", "k")
    assert settings.mesh_password.resolve({"s": {"k": "pw"}}, "here") == "pw"
    with pytest.raises(InvalidObject, match='Secret kube-system/s has no key "k"'):
        settings.mesh_password.resolve({"s": {}}, "here")
    with pytest.raises(InvalidObject, match="Secret kube-system/s does not exist"):
        settings.mesh_password.resolve({}, "here")


def test_peer_views() -> None:
    tor = PeerSpec.from_obj(bgppeer(peerIP="10.0.0.1:1179", asNumber="65000",
                                    nodeSelector="has(rack)", ttlSecurity=0))
    assert (tor.peer_ip, tor.port, tor.asn, tor.node_selector, tor.ttl_security) == (
        IPv4Address("10.0.0.1"), 1179, 65000, Has("rack"), None)
    mesh = PeerSpec.from_obj(bgppeer(peerSelector="has(rack)", node="node-1"))
    assert (mesh.peer_ip, mesh.asn, mesh.node, mesh.node_selector) == (
        None, None, "node-1", All())
    local = BgpNode.from_node(node())
    assert tor.applies_to(local) and mesh.applies_to(local)
    assert not PeerSpec.from_obj(bgppeer(peerSelector="all()", node="node-2")).applies_to(local)


@pytest.mark.parametrize(("spec", "message"), [
    ({"peerIP": "10.0.0.1"}, "needs peerIP and asNumber, or peerSelector"),
    ({"peerIP": "10.0.0.300", "asNumber": 1}, "is not an IPv4 address"),
    ({"peerIP": "10.0.0.1", "asNumber": 0}, "is not an AS number"),
    ({"peerSelector": "all()", "asNumber": 1}, "must be empty with peerSelector"),
    ({"peerSelector": "all(", "asNumber": 1}, "invalid selector 'all\\('"),
    ({"peerSelector": "all()", "node": "a", "nodeSelector": "all()"}, "exclusive"),
    ({"peerSelector": "all()", "password": {"secretKeyRef": {"name": "s"}}},
     "secretKeyRef: {name: SECRET, key: KEY}"),
    ({"peerSelector": "all()", "filters": ["f"]}, "BGPFilter is not supported"),
])
def test_peer_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidObject, match=message) as caught:
        PeerSpec.from_obj(bgppeer(**spec))
    assert isinstance(caught.value, BgpNetError)
    assert caught.value.where.startswith("BGPPeer/p spec")
