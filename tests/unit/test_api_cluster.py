"""The Cluster object: defaults, parsing, and every rule it enforces."""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from typing import Any, cast

import pytest

from kubewire.api.cluster import (
    DEFAULT_LOAD_BALANCER_CIDR,
    DEFAULT_UNDERLAY_CIDR,
    ClusterSpec,
    ClusterSpecError,
    NetworkSpec,
    NodeSpec,
    default_load_balancer_cidr,
)
from kubewire.api.errors import ManifestErrors
from kubewire.api.loader import Manifest, load_text

HEADER = "apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n"


def cluster_from(spec_lines: str) -> ClusterSpec:
    (manifest,) = load_text(HEADER + spec_lines, "cluster.yaml")
    return ClusterSpec.from_manifest(manifest)


def test_defaults() -> None:
    spec = ClusterSpec.default()
    assert spec == ClusterSpec()
    assert spec.name == "kubewire"
    assert spec.node_names == ("node-1", "node-2", "node-3")
    assert spec.pod_cidr == IPv4Network("10.244.0.0/16")
    assert spec.node_cidr_mask_size == 24
    assert spec.service_cidr == IPv4Network("10.96.0.0/12")
    assert spec.underlay_cidr == IPv4Network("172.18.0.0/16")
    assert spec.load_balancer_cidr == IPv4Network("172.18.255.0/24")
    assert spec.reserved_underlay == (IPv4Network("172.18.255.0/24"),)
    assert spec.network == NetworkSpec("vxlan", 1500)
    assert (spec.cni, spec.dns_domain) == ("kubewire", "cluster.local")
    assert spec.node_range_count == 256


def test_empty_cluster_object_gives_defaults_with_its_name() -> None:
    (manifest,) = load_text(HEADER.replace("demo", "lab").removesuffix("spec:\n"))
    spec = ClusterSpec.from_manifest(manifest)
    assert spec.name == "lab"
    assert spec.nodes == ClusterSpec().nodes


def test_every_field_is_read() -> None:
    spec = cluster_from(
        "  nodes:\n"
        "  - name: cp\n"
        "    labels: {role: control-plane}\n"
        "  - name: worker-a\n"
        "  podCIDR: 10.200.0.0/16\n"
        "  nodeCIDRMaskSize: 20\n"
        "  serviceCIDR: 10.32.0.0/16\n"
        "  underlayCIDR: 192.168.50.0/24\n"
        "  loadBalancerCIDR: 192.168.50.128/25\n"
        "  network:\n"
        "    backend: host-gw\n"
        "    mtu: 9000\n"
        "  cni: reference\n"
        "  dnsDomain: lab.local\n"
    )
    assert spec.nodes == (NodeSpec("cp", {"role": "control-plane"}), NodeSpec("worker-a"))
    control_plane = spec.node("cp")
    assert control_plane is not None and control_plane.labels == {"role": "control-plane"}
    assert spec.node("nope") is None
    assert spec.pod_cidr == IPv4Network("10.200.0.0/16")
    assert spec.node_cidr_mask_size == 20
    assert spec.node_range_count == 16
    assert spec.service_cidr == IPv4Network("10.32.0.0/16")
    assert spec.underlay_cidr == IPv4Network("192.168.50.0/24")
    assert spec.load_balancer_cidr == IPv4Network("192.168.50.128/25")
    assert spec.network == NetworkSpec(backend="host-gw", mtu=9000)
    assert (spec.cni, spec.dns_domain) == ("reference", "lab.local")


def test_node_count_names_nodes() -> None:
    assert cluster_from("  nodes: 5\n").node_names == tuple(f"node-{i}" for i in range(1, 6))


def test_to_dict_round_trips_through_json() -> None:
    spec = cluster_from("  nodes: [{name: a, labels: {zone: x}}]\n  network: {backend: host-gw}\n")
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["spec"]["podCIDR"] == "10.244.0.0/16"
    assert data["spec"]["nodes"] == [{"name": "a", "labels": {"zone": "x"}}]
    assert ClusterSpec.from_manifest(Manifest(data)) == spec
    assert ClusterSpec.from_obj(data) == spec


def test_load_balancer_cidr_defaults_to_the_top_of_the_underlay() -> None:
    assert default_load_balancer_cidr(DEFAULT_UNDERLAY_CIDR) == DEFAULT_LOAD_BALANCER_CIDR
    assert cluster_from("  nodes: 2\n").load_balancer_cidr == IPv4Network("172.18.255.0/24")
    # A Cluster that only moves the underlay stays valid: the pool moves with it.
    for underlay, pool in [
        ("100.64.0.0/10", "100.127.255.0/24"),
        ("192.168.50.0/24", "192.168.50.192/26"),
        ("192.168.50.0/28", "192.168.50.12/30"),
        ("192.168.50.0/29", None),
    ]:
        spec = cluster_from(f"  nodes: 2\n  underlayCIDR: {underlay}\n")
        expected = None if pool is None else IPv4Network(pool)
        assert spec.load_balancer_cidr == expected, underlay
        assert default_load_balancer_cidr(IPv4Network(underlay)) == expected


@pytest.mark.parametrize("value", ["null", "''", '""', ""])
def test_null_or_empty_load_balancer_cidr_turns_the_pool_off(value: str) -> None:
    spec = cluster_from(f"  loadBalancerCIDR: {value}\n")
    assert spec.load_balancer_cidr is None
    assert spec.reserved_underlay == ()
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["spec"]["loadBalancerCIDR"] is None
    assert ClusterSpec.from_obj(data) == spec


@pytest.mark.parametrize(
    "spec_lines",
    ["", "  loadBalancerCIDR: 172.18.128.0/17\n", "  underlayCIDR: 192.168.9.0/24\n"],
)
def test_load_balancer_cidr_round_trips(spec_lines: str) -> None:
    spec = cluster_from(spec_lines)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["spec"]["loadBalancerCIDR"] == str(spec.load_balancer_cidr)
    assert ClusterSpec.from_obj(data) == spec


def test_from_obj_errors_name_the_source() -> None:
    obj = {"kind": "Cluster", "spec": {"network": {"backend": "ipip"}}}
    with pytest.raises(ManifestErrors) as caught:
        ClusterSpec.from_obj(obj)
    (error,) = caught.value.errors
    assert str(error) == (
        '<cluster>: spec.network.backend: unsupported value "ipip"; allowed: vxlan, host-gw, bgp'
    )


def test_node_labels_are_read_only() -> None:
    node = NodeSpec("a", {"k": "v"})
    with pytest.raises(TypeError):
        cast(Any, node.labels)["k"] = "w"
    assert hash(node) == hash(NodeSpec("a", {"other": "labels"}))


# (spec lines, line, field, part of the message); the spec starts on line 6.
ERRORS = [
    ("  podCIDR: 10.244.1.0/16\n", 6, "spec.podCIDR",
     "10.244.1.0/16 has host bits set; did you mean 10.244.0.0/16?"),
    ("  podCIDR: 10.244.0.0\n", 6, "spec.podCIDR", "must be a CIDR like 10.244.0.0/16"),
    ("  serviceCIDR: banana/12\n", 6, "spec.serviceCIDR", 'got "banana/12"'),
    ("  underlayCIDR: 42\n", 6, "spec.underlayCIDR", "must be a CIDR"),
    ("  podCIDR: fd00::/48\n", 6, "spec.podCIDR", "IPv6 is not supported yet"),
    ("  serviceCIDR: 10.244.128.0/20\n", 6, "spec.serviceCIDR",
     "podCIDR 10.244.0.0/16 (the default) overlaps serviceCIDR 10.244.128.0/20"),
    ("  podCIDR: 10.96.0.0/16\n", 6, "spec.podCIDR",
     "podCIDR 10.96.0.0/16 overlaps serviceCIDR 10.96.0.0/12 (the default)"),
    ("  podCIDR: 172.16.0.0/12\n", 6, "spec.podCIDR",
     "podCIDR 172.16.0.0/12 overlaps underlayCIDR 172.18.0.0/16 (the default)"),
    ("  serviceCIDR: 10.0.0.0/8\n", 6, "spec.serviceCIDR", "too large"),
    ("  nodes: 300\n", 6, "spec.nodes",
     "podCIDR 10.244.0.0/16 with nodeCIDRMaskSize 24 holds 256 node ranges, but 300 nodes "
     "are declared"),
    ("  nodes: 3\n  podCIDR: 10.244.0.0/23\n", 6, "spec.nodes", "holds 2 node ranges, but 3"),
    ("  podCIDR: 10.244.0.0/23\n", 6, "spec.podCIDR", "holds 2 node ranges, but 3 nodes"),
    ("  nodes: 0\n", 6, "spec.nodes", "must be between 1 and 100000, got 0"),
    ("  nodes: true\n", 6, "spec.nodes", "must be a node count or a list"),
    ("  nodes: []\n", 6, "spec.nodes", "at least one node"),
    ("  underlayCIDR: 192.168.0.0/30\n", 6, "spec.underlayCIDR",
     "underlayCIDR 192.168.0.0/30 has room for 1 node addresses, but 3 nodes are declared"),
    ("  nodeCIDRMaskSize: 16\n", 6, "spec.nodeCIDRMaskSize",
     "must be longer than the podCIDR prefix (/16), got 16"),
    ("  nodeCIDRMaskSize: 31\n", 6, "spec.nodeCIDRMaskSize", "between 1 and 30, got 31"),
    ("  nodeCIDRMaskSize: '24'\n", 6, "spec.nodeCIDRMaskSize", 'must be an integer, got "24"'),
    ("  network:\n    backend: ipip\n", 7, "spec.network.backend",
     'unsupported value "ipip"; allowed: vxlan, host-gw, bgp'),
    ("  network: vxlan\n", 6, "spec.network", "must be a mapping with backend and mtu"),
    ("  network: {speed: 1}\n", 6, "spec.network.speed", "unknown field"),
    ("  cni: calico\n", 6, "spec.cni", "allowed: kubewire, reference"),
    ("  network:\n    mtu: 100\n", 7, "spec.network.mtu", "between 576 and 9000, got 100"),
    ("  network:\n    mtu: '1500'\n", 7, "spec.network.mtu", 'must be an integer, got "1500"'),
    ("  dnsDomain: Cluster.Local\n", 6, "spec.dnsDomain", "lower case"),
    ("  nodes:\n  - name: a\n  - name: a\n", 8, "spec.nodes[1].name",
     'duplicate node name "a" (also spec.nodes[0])'),
    ("  nodes:\n  - name: Node_1\n", 7, "spec.nodes[0].name", 'node name "Node_1"'),
    ("  nodes:\n  - labels: {a: b}\n", 7, "spec.nodes[0].name", "required"),
    ("  nodes:\n  - name: a\n    labels: {zone: 1}\n", 8, "spec.nodes[0].labels.zone",
     "label values must be strings"),
    ("  nodes:\n  - name: a\n    role: x\n", 8, "spec.nodes[0].role", "unknown field"),
    ("  nodess: 3\n", 6, "spec.nodess", "unknown field; a Cluster spec has: nodes, podCIDR"),
    # loadBalancerCIDR
    ("  loadBalancerCIDR: 172.18.255.1/24\n", 6, "spec.loadBalancerCIDR",
     "172.18.255.1/24 has host bits set; did you mean 172.18.255.0/24?"),
    ("  loadBalancerCIDR: fd00::/120\n", 6, "spec.loadBalancerCIDR",
     "IPv6 is not supported yet; use an IPv4 CIDR"),
    ("  loadBalancerCIDR: 42\n", 6, "spec.loadBalancerCIDR",
     "must be a CIDR like 10.244.0.0/16, got 42; or null for no LoadBalancer addresses"),
    ("  loadBalancerCIDR: 172.18.255.0\n", 6, "spec.loadBalancerCIDR", "must be a CIDR"),
    ("  loadBalancerCIDR: 192.168.1.0/24\n", 6, "spec.loadBalancerCIDR",
     "loadBalancerCIDR 192.168.1.0/24 is not inside underlayCIDR 172.18.0.0/16 (the default): "
     "the lab's external host reaches LoadBalancer addresses over the underlay; pick a range "
     "inside it (e.g. 172.18.255.0/24, or null"),
    ("  underlayCIDR: 192.168.0.0/24\n  loadBalancerCIDR: 192.168.0.128/24\n", 7,
     "spec.loadBalancerCIDR", "host bits set"),
    ("  underlayCIDR: 192.168.0.0/24\n  loadBalancerCIDR: 192.168.0.0/16\n", 7,
     "spec.loadBalancerCIDR",
     "192.168.0.0/16 is not inside underlayCIDR 192.168.0.0/24: the lab's external"),
    ("  loadBalancerCIDR: 10.244.0.0/24\n", 6, "spec.loadBalancerCIDR",
     "loadBalancerCIDR 10.244.0.0/24 overlaps podCIDR 10.244.0.0/16 (the default); "
     "the ranges must not overlap"),
    ("  loadBalancerCIDR: 10.96.0.0/24\n", 6, "spec.loadBalancerCIDR",
     "overlaps serviceCIDR 10.96.0.0/12 (the default)"),
    ("  loadBalancerCIDR: 172.18.0.0/24\n", 6, "spec.loadBalancerCIDR",
     "loadBalancerCIDR 172.18.0.0/24 includes 172.18.0.1, the lab's external host; "
     "move the pool away from it"),
    ("  loadBalancerCIDR: 172.18.0.0/32\n", 6, "spec.loadBalancerCIDR",
     "includes 172.18.0.0, the underlay's network address"),
    ("  loadBalancerCIDR: 172.18.255.254/31\n", 6, "spec.loadBalancerCIDR",
     "includes 172.18.255.255, the underlay's broadcast address"),
    ("  underlayCIDR: 192.168.0.0/28\n  nodes: 11\n", 7, "spec.nodes",
     "underlayCIDR 192.168.0.0/28 has room for 10 node addresses (3 are kept for "
     "loadBalancerCIDR 192.168.0.12/30), but 11 nodes are declared"),
    ("  underlayCIDR: 192.168.0.0/29\n  loadBalancerCIDR: 192.168.0.4/30\n", 7,
     "spec.loadBalancerCIDR",
     "underlayCIDR 192.168.0.0/29 has room for 2 node addresses (3 are kept for "
     "loadBalancerCIDR 192.168.0.4/30), but 3 nodes are declared"),
]


@pytest.mark.parametrize(("spec_lines", "line", "field", "message"), ERRORS)
def test_cluster_errors(spec_lines: str, line: int, field: str, message: str) -> None:
    with pytest.raises(ManifestErrors) as caught:
        cluster_from(spec_lines)
    matching = [e for e in caught.value.errors if e.field == field and message in e.message]
    assert matching, str(caught.value)
    error = matching[0]
    assert (error.source, error.line) == ("cluster.yaml", line)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a-very-long-cluster", "at most 16 characters (it has 19)"),
        ("Lab", "lower case alphanumeric"),
        ("lab.x", "lower case alphanumeric characters or '-'"),
    ],
)
def test_cluster_name_rules(name: str, message: str) -> None:
    (manifest,) = load_text(f"kind: Cluster\nmetadata:\n  name: {name}\n", "c.yaml")
    with pytest.raises(ManifestErrors) as caught:
        ClusterSpec.from_manifest(manifest)
    (error,) = caught.value.errors
    assert (error.line, error.field) == (3, "metadata.name")
    assert message in error.message


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ManifestErrors) as caught:
        cluster_from("  network: {backend: ipip, mtu: 1}\n  podCIDR: fd00::/64\n")
    assert {e.field for e in caught.value.errors} == {
        "spec.network.backend",
        "spec.network.mtu",
        "spec.podCIDR",
    }


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ClusterSpecError, match="overlaps"):
        ClusterSpec(pod_cidr=IPv4Network("10.96.0.0/16"))
    with pytest.raises(ClusterSpecError, match="holds 2 node ranges"):
        ClusterSpec(pod_cidr=IPv4Network("10.244.0.0/23"))
    with pytest.raises(ClusterSpecError, match="allowed: vxlan, host-gw, bgp"):
        ClusterSpec(network=NetworkSpec(backend="ipip"))
    # In code the pool does not follow the underlay: pass it (or None) with a custom one.
    with pytest.raises(ClusterSpecError, match=r"is not inside underlayCIDR 192\.168\.50\.0/24"):
        ClusterSpec(underlay_cidr=IPv4Network("192.168.50.0/24"))
    spec = ClusterSpec(underlay_cidr=IPv4Network("192.168.50.0/24"), load_balancer_cidr=None)
    assert spec.reserved_underlay == ()
    with pytest.raises(ClusterSpecError, match=r"includes 172\.18\.0\.1, the lab's external host"):
        ClusterSpec(load_balancer_cidr=IPv4Network("172.18.0.0/30"))


def test_a_valid_pool_is_accepted_wherever_it_avoids_the_lab_addresses() -> None:
    # The pool's own network and broadcast addresses are never handed out, so a pool may
    # end at the underlay's broadcast address or start at its network address.
    assert cluster_from("  loadBalancerCIDR: 172.18.255.252/30\n").load_balancer_cidr == (
        IPv4Network("172.18.255.252/30")
    )
    assert cluster_from("  loadBalancerCIDR: 172.18.0.2/31\n").load_balancer_cidr == (
        IPv4Network("172.18.0.2/31")
    )


def test_node_annotations_are_read_checked_and_round_trip() -> None:
    spec = cluster_from(
        "  nodes:\n  - name: rr-1\n    labels: {route-reflector: 'true'}\n"
        "    annotations: {projectcalico.org/RouteReflectorClusterID: 244.0.0.1}\n"
        "  network: {backend: bgp}\n")
    (node,) = spec.nodes
    assert dict(node.annotations) == {"projectcalico.org/RouteReflectorClusterID": "244.0.0.1"}
    assert ClusterSpec.from_obj(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ManifestErrors) as caught:
        cluster_from("  nodes:\n  - name: a\n    annotations: {'bad key!': x, ok: 5}\n")
    assert sorted((e.field, e.message.split(":")[0]) for e in caught.value.errors) == [
        ("spec.nodes[0].annotations.ok", "annotation values must be strings, got 5; quote it"),
        ("spec.nodes[0].annotations[bad key!]", 'annotation key "bad key!"'),
    ]
