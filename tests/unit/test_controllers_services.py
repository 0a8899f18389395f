"""Service allocation: cluster IPs, node ports, load-balancer IPs, defaults and problems."""

from __future__ import annotations

import copy
import random
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from kubewire.controllers.services import (
    DEFAULT_SESSION_AFFINITY_TIMEOUT,
    ServiceAllocation,
    allocate_services,
    reserved_cluster_ips,
)

CIDR = IPv4Network("10.96.0.0/12")
POOL = IPv4Network("172.18.255.0/24")


def svc(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"port": 80}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def run(
    services: list[dict[str, Any]],
    cidr: IPv4Network = CIDR,
    pool: IPv4Network | None = POOL,
    existing: list[dict[str, Any]] | None = None,
    **options: Any,
) -> ServiceAllocation:
    return allocate_services(services, cidr, pool, existing or [], **options)


def by_name(result: ServiceAllocation) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in result.services}


def cluster_ip(result: ServiceAllocation, name: str) -> str:
    return str(by_name(result)[name]["spec"]["clusterIP"])


def node_ports(result: ServiceAllocation, name: str) -> list[int | None]:
    return [p.get("nodePort") for p in by_name(result)[name]["spec"]["ports"]]


def lb_ip(result: ServiceAllocation, name: str) -> str | None:
    ingress = by_name(result)[name]["status"]["loadBalancer"].get("ingress")
    return str(ingress[0]["ip"]) if ingress else None


# --- defaults ---------------------------------------------------------------------------------


def test_cluster_ip_service_gets_apiserver_defaults() -> None:
    result = run([svc("web", selector={"app": "web"})])
    assert result.problems == {} and result.warnings == []
    (service,) = result.services
    spec = service["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["sessionAffinity"] == "None"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert IPv4Address(spec["clusterIP"]) in CIDR
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["ipFamilyPolicy"] == "SingleStack"
    assert service["status"] == {"loadBalancer": {}}
    assert service["metadata"]["namespace"] == "default"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "NodePort"}, {"externalTrafficPolicy": "Cluster"}),
        (
            {"type": "LoadBalancer"},
            {"externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": True},
        ),
        (
            {"sessionAffinity": "ClientIP"},
            {
                "sessionAffinityConfig": {
                    "clientIP": {"timeoutSeconds": DEFAULT_SESSION_AFFINITY_TIMEOUT}
                }
            },
        ),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            },
            {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}},
        ),
        (
            {"type": "NodePort", "externalTrafficPolicy": "Local"},
            {"externalTrafficPolicy": "Local"},
        ),
        ({"internalTrafficPolicy": "Local"}, {"internalTrafficPolicy": "Local"}),
        ({"clusterIP": "None"}, {"clusterIP": "None", "clusterIPs": ["None"]}),
    ],
)
def test_defaults_by_type(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    result = run([svc("s", **spec)])
    assert result.problems == {}
    got = result.services[0]["spec"]
    assert {key: got.get(key) for key in expected} == expected


def test_user_values_are_kept_and_input_is_not_modified() -> None:
    service = svc("s", ports=[{"name": "web", "port": 80, "targetPort": "http", "protocol": "UDP"}])
    before = copy.deepcopy(service)
    result = run([service])
    assert service == before
    assert result.services[0]["spec"]["ports"] == [
        {"name": "web", "port": 80, "targetPort": "http", "protocol": "UDP"}
    ]


def test_external_name_gets_no_cluster_ip() -> None:
    result = run([svc("ext", type="ExternalName", externalName="example.com", ports=[])])
    spec = result.services[0]["spec"]
    assert result.problems == {}
    for absent in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        assert absent not in spec
    assert spec["sessionAffinity"] == "None"


def test_headless_service_needs_no_ports() -> None:
    result = run([svc("db", clusterIP="None", ports=[])])
    assert result.problems == {}
    assert result.services[0]["spec"]["clusterIP"] == "None"


# --- cluster IPs ------------------------------------------------------------------------------


def many(count: int, namespace: str = "default", **spec: Any) -> list[dict[str, Any]]:
    return [svc(f"svc-{index:05d}", namespace, **spec) for index in range(count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_allocation_does_not_depend_on_order(seed: int) -> None:
    services = [
        *many(40),
        *many(5, "other", type="NodePort"),
        *many(5, "lbs", type="LoadBalancer"),
        svc("dns", "kube-system", clusterIP="10.96.0.10"),
    ]
    shuffled = services[:]
    random.Random(seed).shuffle(shuffled)
    assert shuffled != services
    assert run(shuffled).services == run(services).services


def test_addresses_are_unique_and_avoid_reserved_ones() -> None:
    result = run(many(2000))
    addresses = [IPv4Address(s["spec"]["clusterIP"]) for s in result.services]
    assert len(set(addresses)) == 2000
    reserved = set(reserved_cluster_ips(CIDR)) | {CIDR.network_address, CIDR.broadcast_address}
    assert not reserved & set(addresses)


def test_dynamic_addresses_prefer_the_upper_band() -> None:
    # A /24 keeps .1-.16 for explicit requests (min(max(16, 256/16), 256) = 16).
    result = run(many(50), cidr=IPv4Network("10.96.0.0/24"))
    last_octets = [int(s["spec"]["clusterIP"].rsplit(".", 1)[1]) for s in result.services]
    assert min(last_octets) > 16


def test_small_range_never_hands_out_reserved_addresses_and_then_runs_out() -> None:
    cidr = IPv4Network("10.96.0.0/28")  # 14 hosts, .1 and .10 reserved: 12 to hand out
    result = run(many(13), cidr=cidr)
    assert len(result.services) == 12
    handed_out = {s["spec"]["clusterIP"] for s in result.services}
    assert handed_out == {f"10.96.0.{i}" for i in range(2, 15) if i != 10}
    (problem,) = result.problems.values()
    assert "service range 10.96.0.0/28 is exhausted" in problem


@pytest.mark.parametrize("address", ["10.96.0.1", "10.96.0.10"])
def test_reserved_addresses_can_be_requested(address: str) -> None:
    result = run([svc("special", clusterIP=address)])
    assert result.problems == {}
    assert cluster_ip(result, "special") == address


@pytest.mark.parametrize(
    ("services", "existing", "problem_key", "message"),
    [
        (
            [svc("a", clusterIP="10.97.0.5"), svc("b", clusterIP="10.97.0.5")],
            [],
            "default/b",
            "spec.clusterIP: 10.97.0.5 is already allocated to service default/a",
        ),
        (
            [svc("new", clusterIP="10.97.0.5")],
            [svc("other", clusterIP="10.97.0.5")],
            "default/new",
            "spec.clusterIP: 10.97.0.5 is already allocated to service default/other",
        ),
        (
            [svc("far", clusterIP="10.112.0.5")],
            [],
            "default/far",
            "spec.clusterIP: 10.112.0.5 is not in the service range 10.96.0.0/12",
        ),
        (
            [svc("net", clusterIP="10.96.0.0")],
            [],
            "default/net",
            "spec.clusterIP: 10.96.0.0 is the network or broadcast address",
        ),
        (
            [svc("junk", clusterIP="ten.one")],
            [],
            "default/junk",
            "spec.clusterIP: 'ten.one' is not an IPv4 address",
        ),
        (
            [svc("np", type="NodePort", clusterIP="None")],
            [],
            "default/np",
            'spec.clusterIP: may be "None" (headless) only when type is ClusterIP',
        ),
        (
            [svc("two", clusterIPs=["10.96.5.5", "fd00::5"])],
            [],
            "default/two",
            "spec.clusterIPs: this cluster is IPv4 single-stack",
        ),
        (
            [svc("dual", ipFamilyPolicy="RequireDualStack")],
            [],
            "default/dual",
            "spec.ipFamilyPolicy: RequireDualStack needs a dual-stack cluster",
        ),
    ],
)
def test_cluster_ip_problems(
    services: list[dict[str, Any]],
    existing: list[dict[str, Any]],
    problem_key: str,
    message: str,
) -> None:
    result = run(services, existing=existing)
    assert list(result.problems) == [problem_key]
    assert result.problems[problem_key].startswith(message)
    assert problem_key.split("/")[1] not in by_name(result)


def test_a_problem_leaves_other_services_alone() -> None:
    good = [svc("a"), svc("b", type="NodePort"), svc("c", type="LoadBalancer")]
    bad = [
        svc("bad-ip", clusterIP="10.112.0.1"),
        svc("bad-port", ports=[{"port": 80}, {"port": 80}]),
        svc("bad-proto", ports=[{"port": 80, "protocol": "SCTP"}]),
    ]
    alone = run(good)
    together = run(good + bad)
    assert sorted(together.problems) == ["default/bad-ip", "default/bad-port", "default/bad-proto"]
    assert together.services == alone.services


def test_rejected_request_does_not_block_a_later_requester() -> None:
    # "a" asks for the address first but is refused for its node port, so "b" gets it.
    services = [
        svc("a", type="NodePort", clusterIP="10.96.7.7", ports=[{"port": 80, "nodePort": 30500}]),
        svc("b", clusterIP="10.96.7.7"),
    ]
    existing = [svc("holder", type="NodePort", ports=[{"port": 80, "nodePort": 30500}])]
    result = run(services, existing=existing)
    assert list(result.problems) == ["default/a"]
    assert (
        "30500/TCP is already allocated to service default/holder" in result.problems["default/a"]
    )
    assert cluster_ip(result, "b") == "10.96.7.7"


# --- stability --------------------------------------------------------------------------------


def test_existing_services_keep_their_addresses_and_ports() -> None:
    first = run([*many(20, type="LoadBalancer")])
    # New manifests carry no allocations; adding Services must not move the old ones.
    second = run(
        [*many(20, type="LoadBalancer"), *many(20, "new", type="LoadBalancer")],
        existing=first.services,
    )
    old = {s["metadata"]["name"]: s for s in first.services}
    for service in second.services:
        if service["metadata"]["namespace"] != "default":
            continue
        before = old[service["metadata"]["name"]]
        assert service["spec"]["clusterIP"] == before["spec"]["clusterIP"]
        assert service["spec"]["ports"] == before["spec"]["ports"]
        assert service["status"] == before["status"]


def test_existing_allocation_wins_over_the_hash() -> None:
    stored = svc(
        "web", type="LoadBalancer", clusterIP="10.99.1.2", ports=[{"port": 80, "nodePort": 31111}]
    )
    stored["status"] = {"loadBalancer": {"ingress": [{"ip": "172.18.255.77", "ipMode": "VIP"}]}}
    result = run([svc("web", type="LoadBalancer")], existing=[stored])
    assert cluster_ip(result, "web") == "10.99.1.2"
    assert node_ports(result, "web") == [31111]
    assert lb_ip(result, "web") == "172.18.255.77"


def test_feeding_the_output_back_changes_nothing() -> None:
    services = [*many(10), *many(5, "np", type="NodePort"), *many(5, "lb", type="LoadBalancer")]
    first = run(services)
    again = run(first.services, existing=first.services)
    assert again.services == first.services
    assert again.problems == {}


def test_existing_services_not_in_the_input_still_hold_their_values() -> None:
    stored = svc(
        "old", type="NodePort", clusterIP="10.96.9.9", ports=[{"port": 80, "nodePort": 30123}]
    )
    result = run(
        [
            svc(
                "new",
                type="NodePort",
                clusterIP="10.96.9.9",
                ports=[{"port": 80, "nodePort": 30123}],
            )
        ],
        existing=[stored],
    )
    assert "10.96.9.9 is already allocated to service default/old" in result.problems["default/new"]
    assert "30123/TCP is already allocated to service default/old" in result.problems["default/new"]


def test_address_given_up_in_the_same_call_can_be_taken() -> None:
    stored = svc("was-ip", clusterIP="10.96.4.4")
    result = run(
        [svc("was-ip", clusterIP="None"), svc("taker", clusterIP="10.96.4.4")], existing=[stored]
    )
    assert result.problems == {}
    assert cluster_ip(result, "taker") == "10.96.4.4"


# --- node ports -------------------------------------------------------------------------------


def test_node_ports_are_allocated_in_range_and_unique() -> None:
    result = run(
        many(300, type="NodePort", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 443}])
    )
    ports = [p for s in result.services for p in node_ports(result, s["metadata"]["name"])]
    assert len(ports) == 600 and len(set(ports)) == 600
    assert all(port is not None and 30000 <= port <= 32767 for port in ports)


def test_requested_node_port_is_honoured() -> None:
    result = run([svc("np", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])])
    assert node_ports(result, "np") == [30080]


@pytest.mark.parametrize(
    ("services", "problem_key", "message"),
    [
        (
            [
                svc("a", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]),
                svc("b", type="LoadBalancer", ports=[{"port": 81, "nodePort": 30080}]),
            ],
            "default/b",
            "spec.ports[0].nodePort: 30080/TCP is already allocated to service default/a",
        ),
        (
            [svc("low", type="NodePort", ports=[{"port": 80, "nodePort": 8080}])],
            "default/low",
            "spec.ports[0].nodePort: 8080 is not in the node port range 30000-32767",
        ),
        (
            [svc("cip", ports=[{"port": 80, "nodePort": 30080}])],
            "default/cip",
            "spec.ports[0].nodePort: may not be used when type is ClusterIP",
        ),
        (
            [
                svc(
                    "twice",
                    type="NodePort",
                    ports=[
                        {"name": "a", "port": 80, "nodePort": 30080},
                        {"name": "b", "port": 81, "nodePort": 30080},
                    ],
                )
            ],
            "default/twice",
            "spec.ports[1].nodePort: duplicate node port 30080/TCP",
        ),
    ],
)
def test_node_port_problems(services: list[dict[str, Any]], problem_key: str, message: str) -> None:
    result = run(services)
    assert list(result.problems) == [problem_key]
    assert result.problems[problem_key].startswith(message)


def test_node_port_is_unique_across_protocols_between_services() -> None:
    # The API server's allocator ignores the protocol: another Service cannot take the
    # same node port for UDP.
    result = run(
        [
            svc("tcp", type="NodePort", ports=[{"port": 53, "nodePort": 30053}]),
            svc("udp", type="NodePort", ports=[{"port": 53, "protocol": "UDP", "nodePort": 30053}]),
        ]
    )
    assert list(result.problems) == ["default/udp"]
    assert "30053/UDP is already allocated to service default/tcp" in result.problems["default/udp"]


def test_same_port_number_on_two_protocols_shares_a_node_port() -> None:
    result = run(
        [
            svc(
                "dns",
                type="NodePort",
                ports=[
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53},
                ],
            )
        ]
    )
    udp, tcp = node_ports(result, "dns")
    assert udp == tcp is not None


@pytest.mark.parametrize(("flag", "expected"), [(False, [None]), (True, [int])])
def test_allocate_load_balancer_node_ports(flag: bool, expected: list[Any]) -> None:
    result = run([svc("lb", type="LoadBalancer", allocateLoadBalancerNodePorts=flag)])
    got = node_ports(result, "lb")
    assert [type(port) if port is not None else None for port in got] == expected
    assert lb_ip(result, "lb") is not None


def test_node_ports_can_be_exhausted() -> None:
    result = run(many(20, type="NodePort"), node_port_range=(30000, 30009))
    assert len(result.services) == 10
    assert len(result.problems) == 10
    assert all("no free node port is left in 30000-30009" in p for p in result.problems.values())


# --- load balancers ---------------------------------------------------------------------------


def test_load_balancer_gets_an_address_from_the_pool() -> None:
    result = run([svc("lb", type="LoadBalancer")])
    ingress = by_name(result)["lb"]["status"]["loadBalancer"]["ingress"]
    assert len(ingress) == 1 and ingress[0]["ipMode"] == "VIP"
    assert IPv4Address(ingress[0]["ip"]) in POOL
    assert ingress[0]["ip"] not in ("172.18.255.0", "172.18.255.255")


def test_requested_load_balancer_ip_is_honoured() -> None:
    result = run([svc("lb", type="LoadBalancer", loadBalancerIP="172.18.255.42")])
    assert lb_ip(result, "lb") == "172.18.255.42"


@pytest.mark.parametrize(
    ("services", "pool", "message"),
    [
        (
            [svc("lb", type="LoadBalancer", loadBalancerIP="192.0.2.1")],
            POOL,
            "spec.loadBalancerIP: 192.0.2.1 is not in the loadBalancer pool 172.18.255.0/24",
        ),
        (
            [
                svc("a", type="LoadBalancer", loadBalancerIP="172.18.255.42"),
                svc("lb", type="LoadBalancer", loadBalancerIP="172.18.255.42"),
            ],
            POOL,
            "spec.loadBalancerIP: 172.18.255.42 is already allocated to service default/a",
        ),
        (
            # A /30 has two usable addresses; "a" and "b" take them.
            [
                svc("a", type="LoadBalancer"),
                svc("b", type="LoadBalancer"),
                svc("lb", type="LoadBalancer"),
            ],
            IPv4Network("172.18.255.0/30"),
            "status.loadBalancer: the loadBalancer pool 172.18.255.0/30 is exhausted",
        ),
    ],
)
def test_load_balancer_problems(
    services: list[dict[str, Any]], pool: IPv4Network, message: str
) -> None:
    result = run(services, pool=pool)
    assert list(result.problems) == ["default/lb"]
    assert result.problems["default/lb"].startswith(message)


def test_without_a_pool_load_balancers_stay_pending() -> None:
    result = run([svc("lb", type="LoadBalancer"), svc("plain")], pool=None)
    assert result.problems == {}
    assert by_name(result)["lb"]["status"] == {"loadBalancer": {}}
    assert node_ports(result, "lb")[0] is not None  # still reachable through node ports
    (warning,) = result.warnings
    assert warning.startswith(
        "service default/lb: no loadBalancer pool configured in the Cluster object"
    )


# --- port validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        (
            [{"name": "a", "port": 80}, {"name": "b", "port": 80}],
            "spec.ports[1]: duplicate port 80/TCP (also spec.ports[0])",
        ),
        (
            [{"name": "a", "port": 80}, {"name": "a", "port": 81}],
            "spec.ports[1].name: duplicate port name 'a'",
        ),
        ([{"port": 80}, {"port": 81}], "spec.ports[0].name: ports must be named"),
        ([{"port": 0}], "spec.ports[0].port: must be a port number (1-65535), got 0"),
        ([{"port": 70000}], "spec.ports[0].port: must be a port number (1-65535), got 70000"),
        ([{"port": 80, "targetPort": 0}], "spec.ports[0].targetPort: must be a port number"),
        (
            [{"port": 80, "protocol": "SCTP"}],
            "spec.ports[0].protocol: SCTP is not supported by this kernel",
        ),
        ([{"port": 80, "protocol": "ICMP"}], "spec.ports[0].protocol: unsupported value 'ICMP'"),
        (
            [{"port": 80, "targetPort": "8080"}],
            "spec.ports[0].targetPort: '8080' is not a valid port name",
        ),
        (
            [{"port": 80, "targetPort": "HTTP"}],
            "spec.ports[0].targetPort: 'HTTP' is not a valid port name",
        ),
        (
            [{"port": 80, "targetPort": "a-very-long-port-name"}],
            "spec.ports[0].targetPort: 'a-very-long-port-name' is not a valid port name",
        ),
        ([], "spec.ports: a Service needs at least one port"),
    ],
)
def test_port_problems(ports: list[dict[str, Any]], message: str) -> None:
    result = run([svc("s", ports=ports)])
    assert result.services == []
    assert result.problems["default/s"].startswith(message)


def test_same_port_on_two_protocols_is_fine() -> None:
    result = run(
        [
            svc(
                "dns",
                ports=[{"name": "u", "port": 53, "protocol": "UDP"}, {"name": "t", "port": 53}],
            )
        ]
    )
    assert result.problems == {}


def test_supported_protocols_are_a_parameter() -> None:
    ports = [{"port": 80, "protocol": "SCTP"}]
    assert run([svc("s", ports=ports)], supported_protocols={"TCP", "UDP", "SCTP"}).problems == {}


def test_every_problem_of_a_service_is_reported() -> None:
    result = run(
        [svc("s", clusterIP="10.112.0.1", ports=[{"port": 0}, {"port": 80, "protocol": "SCTP"}])]
    )
    problem = result.problems["default/s"]
    assert "spec.clusterIP" in problem
    assert "spec.ports[0].port" in problem
    assert "spec.ports[1].protocol" in problem


def test_duplicate_definitions_are_both_refused() -> None:
    result = run([svc("s"), svc("s", clusterIP="None"), svc("t")])
    assert result.problems == {
        "default/s": "the Service is defined 2 times; give each Service in a namespace its own name"
    }
    assert [s["metadata"]["name"] for s in result.services] == ["t"]
