"""Compiler semantics, checked by running packets through the validating fake's evaluator
rather than by reading rule text."""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

import pytest

from kubewire.proxy import names
from kubewire.proxy.compiler import ProxyCompiler, compile_proxy
from kubewire.proxy.errors import ProxyInputError
from kubewire.proxy.fake import Packet, check_ruleset, evaluate, verdicts
from kubewire.proxy.model import Ruleset, StaleFlow
from kubewire.proxy.scenarios import (
    NODE,
    SCENARIOS,
    endpoint,
    endpoint_slice,
    service,
    synthetic,
)
from kubewire.proxy.stale import stale_udp_flows
from kubewire.proxy.views import NodeContext, ServiceView, SliceView

LOCAL = ("192.168.77.1", "10.244.0.1")  # the node's underlay address and bridge address
POD = "10.244.0.5"
OUTSIDE = "192.168.77.2"
HTTP = [{"name": "http", "port": 80, "targetPort": 8080}]
HTTP_SLICE = [{"name": "http", "port": 8080}]


def scenario(name: str, node: NodeContext = NODE) -> Ruleset:
    services, slices = SCENARIOS[name]()
    rs = compile_proxy(services, slices, node)
    assert check_ruleset(rs) == []
    return rs


def send(rs: Ruleset, src: str, dst: str, port: int, proto: str = "tcp",
         path: str = "prerouting", **kw: object) -> dict[str, float]:
    return verdicts(evaluate(rs, Packet(src, dst, proto, port), path, LOCAL, **kw))  # type: ignore[arg-type]


def masqueraded(rs: Ruleset, src: str, dst: str, port: int, path: str = "prerouting") -> set[bool]:
    return {o.masquerade for o in evaluate(rs, Packet(src, dst, "tcp", port), path, LOCAL)
            if o.verdict == "accept"}


def test_clusterip_spreads_over_ready_endpoints_without_masquerading_pods() -> None:
    rs = scenario("clusterip_two_endpoints")
    assert send(rs, POD, "10.96.0.10", 80) == {"10.244.0.11:8080": 0.5, "10.244.1.12:8080": 0.5}
    assert masqueraded(rs, POD, "10.96.0.10", 80) == {False}
    # From the node itself (not the pod network): masqueraded so replies come back here.
    assert masqueraded(rs, "192.168.77.1", "10.96.0.10", 80, "output") == {True}
    # Another port of the same address is not a Service: refused at once (kube-proxy's
    # nftables mode does the same), as is an address in the range that no Service holds.
    assert send(rs, POD, "10.96.0.10", 81) == {"REJECT": 1.0}
    assert send(rs, POD, "10.96.0.99", 80) == {"REJECT": 1.0}
    assert send(rs, POD, "10.97.0.1", 80, path="output") == {"REJECT": 1.0}
    assert send(rs, POD, "10.244.1.12", 8080) == {"ACCEPT": 1.0}  # pod IPs are untouched


def test_endpoint_choice_is_exactly_uniform() -> None:
    eps = [endpoint(f"10.244.0.{i}") for i in range(10, 17)]
    rs = compile_proxy([service("web", "10.96.0.10", HTTP)],
                       [endpoint_slice("web", eps, HTTP_SLICE)], NODE)
    result = send(rs, POD, "10.96.0.10", 80)
    assert sorted(result) == [f"10.244.0.{i}:8080" for i in range(10, 17)]
    assert all(p == pytest.approx(1 / 7) for p in result.values())


def test_terminating_endpoints_are_used_only_when_none_is_ready() -> None:
    rs = scenario("terminating_fallback")
    # 61 serves while terminating; 62 terminates without serving; 63 is just unready.
    assert send(rs, POD, "10.96.0.60", 80) == {"10.244.0.61:8080": 1.0}
    services, slices = SCENARIOS["terminating_fallback"]()
    slices[0]["endpoints"].append(endpoint("10.244.0.64"))
    rs = compile_proxy(services, slices, NODE)
    assert send(rs, POD, "10.96.0.60", 80) == {"10.244.0.64:8080": 1.0}


def test_services_without_endpoints_are_rejected_at_once() -> None:
    rs = scenario("no_endpoints")
    assert send(rs, POD, "10.96.0.40", 80) == {"REJECT": 1.0}
    assert send(rs, POD, "10.96.0.41", 53, "udp") == {"REJECT": 1.0}  # only unready ones
    assert send(rs, "192.168.77.1", "10.96.0.40", 80, path="output") == {"REJECT": 1.0}
    assert send(rs, OUTSIDE, "192.168.77.1", 30042) == {"REJECT": 1.0}
    reject = rs.chain(names.REJECT_CHAIN).rules
    assert reject == ("meta l4proto tcp reject with tcp reset",
                      "reject with icmp type port-unreachable")


def test_nodeport_cluster_policy_masquerades_external_clients() -> None:
    rs = scenario("nodeport_cluster")
    assert send(rs, OUTSIDE, "192.168.77.1", 30080) == {"10.244.0.11:8080": 0.5,
                                                        "10.244.1.12:8080": 0.5}
    assert masqueraded(rs, OUTSIDE, "192.168.77.1", 30080) == {True}
    # Only the node's own addresses answer on the NodePort.
    assert send(rs, OUTSIDE, "192.168.77.9", 30080) == {"ACCEPT": 1.0}


def test_nodeport_local_policy_keeps_client_address_and_drops_without_local_endpoint() -> None:
    rs = scenario("nodeport_local")
    assert send(rs, OUTSIDE, "192.168.77.1", 30080) == {"10.244.0.11:8080": 1.0}
    assert masqueraded(rs, OUTSIDE, "192.168.77.1", 30080) == {False}
    # Pods are not confined to this node's endpoints, and the node's own processes are
    # masqueraded.
    assert send(rs, POD, "192.168.77.1", 30080) == {"10.244.0.11:8080": 0.5,
                                                   "10.244.1.12:8080": 0.5}
    assert masqueraded(rs, "192.168.77.1", "192.168.77.1", 30080, "output") == {True}
    # "far" has a ready endpoint, but on node-2: dropped here, not rejected.
    assert send(rs, OUTSIDE, "192.168.77.1", 30081) == {"DROP": 1.0}
    # Its ClusterIP still works (internalTrafficPolicy is Cluster).
    assert send(rs, POD, "10.96.0.11", 80) == {"10.244.1.13:8080": 1.0}


def test_loadbalancer_and_external_ips_take_the_external_path() -> None:
    rs = scenario("loadbalancer_external_ips")
    assert send(rs, OUTSIDE, "192.0.2.10", 443) == {"10.244.0.20:8443": 1.0}
    assert masqueraded(rs, OUTSIDE, "192.0.2.10", 443) == {True}
    assert send(rs, OUTSIDE, "192.168.77.1", 30443) == {"10.244.0.20:8443": 1.0}
    assert send(rs, OUTSIDE, "192.0.2.53", 53, "udp") == {"10.244.1.53:5353": 1.0}
    assert send(rs, OUTSIDE, "192.0.2.53", 54, "udp") == {"ACCEPT": 1.0}


def test_internal_traffic_policy_local() -> None:
    rs = scenario("internal_local")
    assert send(rs, POD, "10.96.0.50", 80) == {"10.244.0.51:8080": 1.0}
    assert send(rs, POD, "10.96.0.51", 80) == {"DROP": 1.0}  # endpoints, none here


def test_session_affinity_sets_and_stickiness() -> None:
    rs = scenario("session_affinity")
    spid = names.service_port_id("default", "sticky", "TCP", 80)
    sets = {names.affinity_set(spid, ip, 8080) for ip in ("10.244.0.31", "10.244.0.32")}
    for name in sets:
        s = rs.set(name)
        assert (s.key_type, s.flags, s.timeout) == ("ipv4_addr", ("dynamic", "timeout"), 600)
    first = evaluate(rs, Packet(POD, "10.96.0.30", "tcp", 80), "prerouting", LOCAL)
    assert {o.dnat for o in first} == {("10.244.0.31", 8080), ("10.244.0.32", 8080)}
    for o in first:  # the chosen endpoint's set learns the client
        assert o.dnat is not None
        assert o.updates == ((names.affinity_set(spid, o.dnat[0], 8080), POD),)
    chosen = names.affinity_set(spid, "10.244.0.32", 8080)
    again = send(rs, POD, "10.96.0.30", 80, dynamic={chosen: [POD]})
    assert again == {"10.244.0.32:8080": 1.0}
    other = send(rs, "10.244.0.6", "10.96.0.30", 80, dynamic={chosen: [POD]})
    assert len(other) == 2


def test_hairpin_traffic_is_masqueraded() -> None:
    rs = scenario("clusterip_two_endpoints")
    outs = evaluate(rs, Packet("10.244.0.11", "10.96.0.10", "tcp", 80), "prerouting", LOCAL)
    by_endpoint = {o.dnat: o.masquerade for o in outs}
    assert by_endpoint == {("10.244.0.11", 8080): True, ("10.244.1.12", 8080): False}


def test_masquerade_all() -> None:
    node = NodeContext("node-1", ("192.168.77.1",), "10.244.0.0/16", masquerade_all=True)
    rs = scenario("clusterip_two_endpoints", node)
    assert masqueraded(rs, POD, "10.96.0.10", 80) == {True}


def test_headless_and_external_name_produce_no_rules() -> None:
    rs = scenario("headless_and_external_name")
    empty = compile_proxy([], [], NODE)
    assert rs == empty
    assert all(not s.elements for s in rs.sets
               if s.name not in (names.NODEPORT_IPS,))


def test_ports_match_slices_by_name_and_protocol() -> None:
    svc = service("multi", "10.96.0.70", [
        {"name": "http", "port": 80}, {"name": "metrics", "port": 9090},
        {"name": "dns", "port": 53, "protocol": "UDP"}])
    sl = endpoint_slice("multi", [endpoint("10.244.0.71")], [
        {"name": "http", "port": 8080}, {"name": "metrics", "port": 9100},
        {"name": "dns", "port": 5353, "protocol": "TCP"}])  # wrong protocol: no match
    rs = compile_proxy([svc], [sl], NODE)
    assert send(rs, POD, "10.96.0.70", 80) == {"10.244.0.71:8080": 1.0}
    assert send(rs, POD, "10.96.0.70", 9090) == {"10.244.0.71:9100": 1.0}
    assert send(rs, POD, "10.96.0.70", 53, "udp") == {"REJECT": 1.0}


def test_an_endpoint_in_two_slices_counts_once() -> None:
    svc = service("web", "10.96.0.10", HTTP)
    a = endpoint_slice("web", [endpoint("10.244.0.11", ready=False)], HTTP_SLICE, name="a")
    b = endpoint_slice("web", [endpoint("10.244.0.11"), endpoint("10.244.0.12")], HTTP_SLICE,
                       name="b")
    rs = compile_proxy([svc], [a, b], NODE)
    assert send(rs, POD, "10.96.0.10", 80) == {"10.244.0.11:8080": 0.5, "10.244.0.12:8080": 0.5}


def test_address_conflicts_warn_and_first_service_wins() -> None:
    a = service("a", "10.96.0.1", HTTP, externalIPs=["192.0.2.1"])
    b = service("b", "10.96.0.2", HTTP, externalIPs=["192.0.2.1"])
    slices = [endpoint_slice("a", [endpoint("10.244.0.1")], HTTP_SLICE),
              endpoint_slice("b", [endpoint("10.244.0.2")], HTTP_SLICE)]
    rs = compile_proxy([b, a], slices, NODE)
    assert rs.warnings == ("default/b: external address 192.0.2.1 tcp/80 is already used by "
                           "default/a; ignored",)
    assert send(rs, OUTSIDE, "192.0.2.1", 80) == {"10.244.0.1:8080": 1.0}


def test_output_is_deterministic_whatever_the_input_order() -> None:
    services, slices = synthetic(60, 3)
    first = compile_proxy(services, slices, NODE)
    rng = random.Random(7)
    for _ in range(3):
        rng.shuffle(services)
        rng.shuffle(slices)
        again = compile_proxy(services, slices, NODE)
        assert again == first
        assert again.render() == first.render()
    assert check_ruleset(first) == []


def test_incremental_compiler_matches_a_fresh_compile() -> None:
    services, slices = synthetic(40, 2)
    compiler = ProxyCompiler(NODE)
    rng = random.Random(3)
    for step in range(25):
        i = rng.randrange(len(slices))
        if step % 3 == 0:
            slices[i] = dict(slices[i], endpoints=slices[i]["endpoints"][:1])
        elif step % 3 == 1:
            services[i] = service(f"new-{step}", f"10.100.0.{step}", HTTP)
        else:
            del services[i]
        assert compiler.compile(services, slices) == compile_proxy(services, slices, NODE)


def test_names_are_stable_short_and_unique() -> None:
    spid = names.service_port_id("default", "web", "TCP", 80)
    assert spid == "default/web/tcp/80"
    digest = base64.b32encode(hashlib.sha256(spid.encode()).digest()).decode()[:8]
    assert names.service_chain(spid) == f"service-{digest}-default/web/tcp/80"
    assert names.service_chain(spid) == "service-QUQIVZQZ-default/web/tcp/80"
    ep = "default/web/tcp/80__10.244.0.5/8080"
    assert names.affinity_set(spid, "10.244.0.5", 8080) == \
        f"affinity-{names.name_hash(ep)}-{ep}"
    long_a = names.service_port_id("n" * 63, "a" * 250, "tcp", 1)
    long_b = names.service_port_id("n" * 63, "a" * 249 + "b", "tcp", 1)
    a, b = names.external_chain(long_a), names.external_chain(long_b)
    assert len(a) == len(b) == names.MAX_NAME_LENGTH and a != b


def test_views_read_kubernetes_json() -> None:
    svc = ServiceView.from_k8s(service(
        "web", "10.96.0.10", [{"name": "http", "port": 80, "nodePort": 30080}],
        type="LoadBalancer", clusterIPs=["10.96.0.10", "fd00::10"],
        externalIPs=["192.0.2.2", "2001:db8::1"], loadBalancerIngress=["192.0.2.1"],
        sessionAffinity="ClientIP", externalTrafficPolicy="Local"))
    assert svc.cluster_ips == ("10.96.0.10",)
    assert svc.external_ips == ("192.0.2.2",)
    assert svc.load_balancer_ips == ("192.0.2.1",)
    assert svc.affinity_timeout == 10800 and svc.external_local and not svc.internal_local
    assert svc.ports[0].node_port == 30080
    # nodePort is ignored on a ClusterIP Service.
    plain = ServiceView.from_k8s(service("p", "10.96.0.11", [{"port": 80, "nodePort": 30001}]))
    assert plain.ports[0].node_port is None
    sl = SliceView.from_k8s(endpoint_slice("web", [
        {"addresses": ["10.244.0.1"]},
        {"addresses": ["10.244.0.2"], "conditions": {"ready": False, "terminating": True}},
        {"addresses": ["10.244.0.3"], "conditions": {"ready": False, "serving": True}}],
        [{"name": "http", "port": 8080}, {"name": "noport"}]))
    assert [(e.ready, e.serving, e.terminating) for e in sl.endpoints] == [
        (True, True, False), (False, False, True), (False, True, False)]
    assert [p.name for p in sl.ports] == ["http"]
    v6 = SliceView.from_k8s(dict(endpoint_slice("web", [endpoint("10.0.0.1")], HTTP_SLICE),
                                 addressType="IPv6"))
    assert v6.endpoints == ()


def test_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(ProxyInputError, match="protocol 'ICMP'"):
        ServiceView.from_k8s(service("x", "10.96.0.1", [{"port": 1, "protocol": "ICMP"}]))
    with pytest.raises(ProxyInputError, match=r"metadata\.name"):
        ServiceView.from_k8s({"spec": {}})
    with pytest.raises(ProxyInputError, match="cluster_cidr"):
        NodeContext("n", ("192.168.0.1",), "10.244.0.0/33")
    with pytest.raises(ProxyInputError, match="node_ips"):
        NodeContext("n", ("fe80::1",), "10.244.0.0/16")


def test_stale_udp_flows() -> None:
    svc = service("dns", "10.96.0.10", [{"name": "dns", "port": 53, "protocol": "UDP",
                                         "nodePort": 30053}], type="NodePort")
    def slices(*ips: str) -> list[dict[str, Any]]:
        return [endpoint_slice("dns", [endpoint(ip) for ip in ips],
                               [{"name": "dns", "port": 5353, "protocol": "UDP"}])]
    none = compile_proxy([svc], [], NODE)
    two = compile_proxy([svc], slices("10.244.0.2", "10.244.0.3"), NODE)
    one = compile_proxy([svc], slices("10.244.0.3"), NODE)
    assert stale_udp_flows(None, two) == ()
    assert stale_udp_flows(none, two) == (StaleFlow(None, 30053, None),
                                          StaleFlow("10.96.0.10", 53, None))
    assert stale_udp_flows(two, one) == (StaleFlow(None, 30053, "10.244.0.2"),
                                         StaleFlow("10.96.0.10", 53, "10.244.0.2"))
    assert stale_udp_flows(one, one) == ()
    assert stale_udp_flows(one, none) == (StaleFlow(None, 30053, "10.244.0.3"),
                                          StaleFlow("10.96.0.10", 53, "10.244.0.3"))
    assert StaleFlow("10.96.0.10", 53, "10.244.0.2").conntrack_args() == [
        "-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--orig-port-dst", "53",
        "--dst-nat", "10.244.0.2"]
    assert StaleFlow(None, 30053, None).conntrack_args() == [
        "-D", "-p", "udp", "--orig-port-dst", "30053"]
