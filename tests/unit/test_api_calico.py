"""Calico's BGPConfiguration, BGPPeer and IPPool as loadable kinds: every validation rule,
each error asserted with its field path and message."""

from __future__ import annotations

import textwrap

import pytest

from kubewire.api.errors import ManifestError, ManifestErrors
from kubewire.api.kinds import KINDS, resolve_kind, resolve_resource_type
from kubewire.api.loader import load_text
from kubewire.api.validation import VALIDATORS, validate
from kubewire.api.validation.calico import parse_as_number, parse_peer_ip

CONFIG = """
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: 64512
  nodeToNodeMeshEnabled: false
  listenPort: 179
  logSeverityScreen: Info
  nodeMeshMaxRestartTime: 120s
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceExternalIPs: [{cidr: 192.0.2.0/24}]
  serviceLoadBalancerIPs: [{cidr: 172.18.255.0/24}]
"""

PEER = """
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor
spec:
  nodeSelector: rack == "a" && !has(edge)
  peerIP: 172.18.0.254:1179
  asNumber: 65000
  keepOriginalNextHop: true
  ttlSecurity: 1
  sourceAddress: UseNodeIP
  maxRestartTime: 2m30s
"""

MESH_PEER = """
apiVersion: crd.projectcalico.org/v1
kind: BGPPeer
metadata:
  name: peer-with-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
"""

POOL = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pods
spec:
  cidr: 10.244.0.0/16
  blockSize: 26
  nodeSelector: all()
  natOutgoing: true
  disabled: false
  ipipMode: Never
  vxlanMode: Never
  allowedUses: [Workload, Tunnel]
"""


def manifest(text: str, replace: str = "", by: str = "") -> str:
    out = textwrap.dedent(text).lstrip("\n")
    if replace:
        assert replace in out, replace
        out = out.replace(replace, by, 1)
    return out


def errors_of(text: str) -> list[ManifestError]:
    with pytest.raises(ManifestErrors) as caught:
        validate(load_text(text, "bgp.yaml"))
    return list(caught.value.errors)


@pytest.mark.parametrize(("kind", "plural", "short"), [
    ("BGPConfiguration", "bgpconfigurations", "bgpconfig"),
    ("BGPPeer", "bgppeers", "bgppeer"),
    ("IPPool", "ippools", "ippool"),
])
def test_kinds_are_registered(kind: str, plural: str, short: str) -> None:
    info = KINDS[kind]
    assert not info.namespaced and info.loadable
    assert info.api_version == "projectcalico.org/v3"
    assert resolve_kind(kind, "crd.projectcalico.org/v1") is info
    assert resolve_resource_type(plural) is info and resolve_resource_type(short) is info
    assert kind in VALIDATORS


def test_valid_objects_pass() -> None:
    text = "---\n".join(manifest(t) for t in (CONFIG, PEER, MESH_PEER, POOL))
    result = validate(load_text(text, "bgp.yaml"))
    assert [m.obj["kind"] for m in result.manifests] == [
        "BGPConfiguration", "BGPPeer", "BGPPeer", "IPPool"]
    assert result.warnings == ()
    assert "namespace" not in result.manifests[0].obj["metadata"]


def test_spec_may_be_left_out() -> None:
    text = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
    assert len(validate(load_text(text, "c.yaml")).manifests) == 1


def test_a_namespace_is_refused() -> None:
    errors = errors_of(manifest(POOL, "  name: pods\n", "  name: pods\n  namespace: x\n"))
    assert [e.field for e in errors] == ["metadata.namespace"]
    assert "cluster-scoped" in errors[0].message


def test_odd_config_name_warns() -> None:
    result = validate(load_text(manifest(CONFIG, "name: default", "name: main"), "c.yaml"))
    assert [w.field for w in result.warnings] == ["metadata.name"]
    assert 'named "default"' in result.warnings[0].message


def test_pool_outside_the_pod_cidr_warns() -> None:
    result = validate(load_text(manifest(POOL, "10.244.0.0/16", "192.168.0.0/16"), "p.yaml"))
    assert [w.field for w in result.warnings] == ["spec.cidr"]
    assert "outside the Cluster's podCIDR 10.244.0.0/16" in result.warnings[0].message


# (id, text, replace, by, line, field, part of the message)
CASES: list[tuple[str, str, str, str, int, str, str]] = [
    ("config asn range", CONFIG, "asNumber: 64512", "asNumber: 0", 6, "spec.asNumber",
     "must be an AS number 1-4294967295"),
    ("config asn too big", CONFIG, "asNumber: 64512", "asNumber: 4294967296", 6,
     "spec.asNumber", "got 4294967296"),
    ("unquoted asdot", CONFIG, "asNumber: 64512", "asNumber: 64512.100", 6, "spec.asNumber",
     'quote an asdot AS number ("64512.100")'),
    ("asdot part too big", CONFIG, "asNumber: 64512", "asNumber: '65536.1'", 6,
     "spec.asNumber", 'got "65536.1"'),
    ("mesh not bool", CONFIG, "nodeToNodeMeshEnabled: false", "nodeToNodeMeshEnabled: 'no'", 7,
     "spec.nodeToNodeMeshEnabled", "must be true or false"),
    ("listen port", CONFIG, "listenPort: 179", "listenPort: 70000", 8, "spec.listenPort",
     "must be a port number (1-65535), got 70000"),
    ("log severity", CONFIG, "logSeverityScreen: Info", "logSeverityScreen: Loud", 9,
     "spec.logSeverityScreen", 'unsupported value "Loud"'),
    ("restart time", CONFIG, "120s", "two minutes", 10, "spec.nodeMeshMaxRestartTime",
     'must be a duration such as "120s"'),
    ("cluster cidr", CONFIG, "{cidr: 10.96.0.0/12}", "{cidr: 10.96.0.0/33}", 11,
     "spec.serviceClusterIPs[0].cidr", '"10.96.0.0/33" is not a CIDR'),
    ("host bits", CONFIG, "{cidr: 192.0.2.0/24}", "{cidr: 192.0.2.1/24}", 12,
     "spec.serviceExternalIPs[0].cidr", "has host bits set; write 192.0.2.0/24"),
    ("ipv6 cidr", CONFIG, "{cidr: 172.18.255.0/24}", "{cidr: 'fd00::/64'}", 13,
     "spec.serviceLoadBalancerIPs[0].cidr", "IPv6 is not supported yet"),
    ("cidr missing", CONFIG, "{cidr: 10.96.0.0/12}", "{}", 11,
     "spec.serviceClusterIPs[0].cidr", "required field is missing"),
    ("cidr item field", CONFIG, "{cidr: 10.96.0.0/12}", "{cidr: 10.96.0.0/12, via: x}", 11,
     "spec.serviceClusterIPs[0].via", 'unknown field "via"'),
    ("mesh password extra field", CONFIG, "listenPort: 179",
     "nodeMeshPassword: {secretKeyRef: {name: bgp, key: pw}, value: x}", 8,
     "spec.nodeMeshPassword.value", 'unknown field "value"'),
    ("mesh password shape", CONFIG, "listenPort: 179", "nodeMeshPassword: {secretKeyRef: {}}",
     8, "spec.nodeMeshPassword.secretKeyRef.name", "required field is missing"),
    ("config unknown field", CONFIG, "listenPort: 179", "communities: []", 8,
     "spec.communities", 'unknown field "communities"'),
    ("peer ip", PEER, "172.18.0.254:1179", "10.0.0.300", 7, "spec.peerIP",
     '"10.0.0.300" is not an IPv4 address'),
    ("peer port", PEER, "172.18.0.254:1179", "172.18.0.254:0", 7, "spec.peerIP",
     "has a port that is not 1-65535"),
    ("peer ipv6", PEER, "172.18.0.254:1179", "'fd00::1'", 7, "spec.peerIP", "is IPv6"),
    ("peer without asn", PEER, "  asNumber: 65000\n", "", 5, "spec.asNumber",
     "peerIP needs the peer's AS number"),
    ("peer asn", PEER, "asNumber: 65000", "asNumber: -1", 8, "spec.asNumber",
     "must be an AS number"),
    ("peer nothing", PEER, "  peerIP: 172.18.0.254:1179\n  asNumber: 65000\n", "", 5, "spec",
     "a BGPPeer needs peerIP and asNumber (an external router) or peerSelector"),
    ("node and selector", PEER, "  nodeSelector:", "  node: node-1\n  nodeSelector:", 7,
     "spec.nodeSelector", "node and nodeSelector are exclusive"),
    ("bad node selector", PEER, 'rack == "a" && !has(edge)', "rack = a", 6,
     "spec.nodeSelector", 'invalid selector "rack = a": column 6: expected an operator'),
    ("selector with ip", MESH_PEER, "  peerSelector:", "  peerIP: 10.0.0.1\n  peerSelector:",
     7, "spec.peerIP", "must be empty when peerSelector is set"),
    ("selector with asn", MESH_PEER, "  peerSelector:", "  asNumber: 65001\n  peerSelector:",
     7, "spec.asNumber", "must be empty when peerSelector is set"),
    ("bad peer selector", MESH_PEER, "route-reflector == 'true'", "has(route-reflector", 7,
     "spec.peerSelector", "column 20: expected \")\" after has(route-reflector"),
    ("ttl", PEER, "ttlSecurity: 1", "ttlSecurity: 255", 10, "spec.ttlSecurity",
     "must be a hop count 0-254"),
    ("source address", PEER, "UseNodeIP", "UseHostIP", 11, "spec.sourceAddress",
     'supported values: "UseNodeIP", "None"'),
    ("keep next hop", PEER, "keepOriginalNextHop: true", "keepOriginalNextHop: 1", 9,
     "spec.keepOriginalNextHop", "must be true or false"),
    ("peer password without key", PEER, "  ttlSecurity: 1\n",
     "  password: {secretKeyRef: {name: s}}\n", 10, "spec.password.secretKeyRef.key",
     "required field is missing"),
    ("filters", PEER, "  ttlSecurity: 1\n", "  filters: [export-pods]\n", 10, "spec.filters",
     "BGPFilter is not supported"),
    ("reachableBy without peerIP", MESH_PEER, "  nodeSelector: all()\n",
     "  reachableBy: 10.0.0.1\n", 6, "spec.reachableBy", "only applies to a peerIP peer"),
    ("pool no cidr", POOL, "  cidr: 10.244.0.0/16\n", "", 5, "spec.cidr",
     "an IPPool needs a cidr"),
    ("pool bad cidr", POOL, "10.244.0.0/16", "ten", 6, "spec.cidr", '"ten" is not a CIDR'),
    ("block size", POOL, "blockSize: 26", "blockSize: 19", 7, "spec.blockSize",
     "must be a prefix length 20-32 for IPv4, got 19"),
    ("block larger than pool", POOL, "10.244.0.0/16", "10.244.0.0/28", 7, "spec.blockSize",
     "a /26 block does not fit in the pool 10.244.0.0/28"),
    ("ipip", POOL, "ipipMode: Never", "ipipMode: Always", 11, "spec.ipipMode",
     '"Always" is not supported: this kernel has no ipip support, and the lab routes pod '
     "traffic natively with BGP"),
    ("vxlan", POOL, "vxlanMode: Never", "vxlanMode: CrossSubnet", 12, "spec.vxlanMode",
     '"CrossSubnet" is not supported'),
    ("mode typo", POOL, "vxlanMode: Never", "vxlanMode: Sometimes", 12, "spec.vxlanMode",
     'unsupported value "Sometimes"; supported values: "Never"'),
    ("allowed uses", POOL, "[Workload, Tunnel]", "[Workload, Pets]", 13, "spec.allowedUses[1]",
     'unsupported value "Pets"'),
    ("duplicate use", POOL, "[Workload, Tunnel]", "[Workload, Workload]", 13,
     "spec.allowedUses[1]", 'duplicate use "Workload" (also spec.allowedUses[0])'),
    ("nat", POOL, "natOutgoing: true", "natOutgoing: yes please", 9, "spec.natOutgoing",
     "must be true or false"),
    ("pool selector", POOL, "nodeSelector: all()", "nodeSelector: all(", 8,
     "spec.nodeSelector", 'expected ")": all() takes no argument'),
]


@pytest.mark.parametrize(("text", "replace", "by", "line", "field", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_errors(text: str, replace: str, by: str, line: int, field: str,
                           message: str) -> None:
    errors = errors_of(manifest(text, replace, by))
    matching = [e for e in errors if e.field == field and message in e.message]
    assert matching, "\n".join(map(str, errors))
    assert matching[0].line == line, str(matching[0])


def test_error_names_the_field_path_in_full() -> None:
    errors = errors_of(manifest(PEER, "172.18.0.254:1179", "10.0.0.300"))
    assert [str(e) for e in errors] == [
        'bgp.yaml:7: spec.peerIP: "10.0.0.300" is not an IPv4 address (write ip or ip:port)']


def test_every_problem_is_reported_at_once() -> None:
    text = manifest(POOL, "blockSize: 26", "blockSize: 40").replace("ipipMode: Never",
                                                                    "ipipMode: Always")
    assert {e.field for e in errors_of(text)} == {"spec.blockSize", "spec.ipipMode"}


@pytest.mark.parametrize(("value", "number"), [
    (1, 1), (64512, 64512), ("64512", 64512), ("1.10", 65546), ("64512.100", 4227858532),
    (4294967295, 4294967295), ("65535.65535", 4294967295),
    (0, None), (4294967296, None), ("0.0", None), ("1.65536", None), ("x", None), (True, None),
    (64512.1, None), ("", None), ("1.2.3", None),
])
def test_parse_as_number(value: object, number: int | None) -> None:
    assert parse_as_number(value) == number


def test_parse_peer_ip() -> None:
    assert str(parse_peer_ip("10.0.0.1")[0]) == "10.0.0.1"
    assert parse_peer_ip("10.0.0.1")[1] is None
    assert parse_peer_ip("10.0.0.1:1179")[1] == 1179
    for bad in ("10.0.0.1:", "10.0.0.1:x", "host:179", "10.0.0.1:65536"):
        with pytest.raises(ValueError):
            parse_peer_ip(bad)


def test_get_tables() -> None:
    from kubewire.cli.printers import Ctx, table

    objs = [m.obj for m in validate(load_text(
        "---\n".join(manifest(t) for t in (CONFIG, PEER, MESH_PEER, POOL)), "bgp.yaml")).manifests]
    assert table("BGPConfiguration", objs[:1], False, False, Ctx()).splitlines()[1].split()[:4] \
        == ["default", "Info", "false", "64512"]
    peers = table("BGPPeer", objs[1:3], False, False, Ctx()).splitlines()
    assert peers[0].split() == ["NAME", "PEERIP", "NODE", "ASN", "AGE"]
    assert peers[1].startswith("tor") and "172.18.0.254:1179" in peers[1] and "65000" in peers[1]
    assert "route-reflector == 'true'" in peers[2] and "all()" in peers[2]
    pools = table("IPPool", objs[3:], True, False, Ctx()).splitlines()
    assert pools[0].split() == ["NAME", "CIDR", "SELECTOR", "AGE", "BLOCKSIZE", "NAT",
                                "DISABLED"]
    assert pools[1].split() == ["pods", "10.244.0.0/16", "all()", "<unknown>", "26", "true",
                                "false"]
