"""Builders for Service / EndpointSlice JSON and the named scenarios used by the golden
files, the lab tests and the benchmark (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kubewire.proxy.views import SERVICE_NAME_LABEL, NodeContext

Obj = dict[str, Any]

NODE = NodeContext("node-1", ("192.168.77.1",), "10.244.0.0/16", service_cidr="10.96.0.0/12")


def service(name: str, cluster_ip: str | None, ports: Sequence[Obj], namespace: str = "default",
            type: str = "ClusterIP", **spec: Any) -> Obj:
    """A Service; ``ports`` items are ServicePort dicts (protocol defaults to TCP)."""
    body: Obj = {"type": type, "ports": [{"protocol": "TCP", **p} for p in ports], **spec}
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
        body["clusterIPs"] = [cluster_ip]
    lb = body.pop("loadBalancerIngress", None)
    obj: Obj = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": namespace}, "spec": body}
    if lb:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in lb]}}
    return obj


def endpoint(address: str, node: str | None = "node-1", ready: bool | None = True,
             serving: bool | None = None, terminating: bool | None = None) -> Obj:
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving),
                                     ("terminating", terminating)) if v is not None}
    ep: Obj = {"addresses": [address], "conditions": conditions}
    if node is not None:
        ep["nodeName"] = node
    return ep


def endpoint_slice(service_name: str, endpoints: Sequence[Obj], ports: Sequence[Obj],
                   namespace: str = "default", name: str | None = None) -> Obj:
    """An EndpointSlice; ``ports`` items are {name, port, protocol} (the target ports)."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": name or f"{service_name}-abcde", "namespace": namespace,
                     "labels": {SERVICE_NAME_LABEL: service_name}},
        "endpoints": list(endpoints),
        "ports": [{"protocol": "TCP", **p} for p in ports],
    }


def _http(node_port: int | None = None) -> list[Obj]:
    port: Obj = {"name": "http", "port": 80, "targetPort": 8080}
    if node_port is not None:
        port["nodePort"] = node_port
    return [port]


_HTTP_SLICE_PORTS = [{"name": "http", "port": 8080}]
Scenario = tuple[list[Obj], list[Obj]]


def clusterip_two_endpoints() -> Scenario:
    return ([service("web", "10.96.0.10", _http())],
            [endpoint_slice("web", [endpoint("10.244.0.11"), endpoint("10.244.1.12", "node-2")],
                            _HTTP_SLICE_PORTS)])


def nodeport_cluster() -> Scenario:
    return ([service("web", "10.96.0.10", _http(30080), type="NodePort")],
            [endpoint_slice("web", [endpoint("10.244.0.11"), endpoint("10.244.1.12", "node-2")],
                            _HTTP_SLICE_PORTS)])


def nodeport_local() -> Scenario:
    """Two Local NodePorts: one with a local endpoint, one with only a remote one."""
    return ([service("web", "10.96.0.10", _http(30080), type="NodePort",
                     externalTrafficPolicy="Local"),
             service("far", "10.96.0.11", _http(30081), type="NodePort",
                     externalTrafficPolicy="Local")],
            [endpoint_slice("web", [endpoint("10.244.0.11"), endpoint("10.244.1.12", "node-2")],
                            _HTTP_SLICE_PORTS),
             endpoint_slice("far", [endpoint("10.244.1.13", "node-2")], _HTTP_SLICE_PORTS)])


def loadbalancer_external_ips() -> Scenario:
    return ([service("lb", "10.96.0.20", [{"name": "https", "port": 443, "nodePort": 30443}],
                     type="LoadBalancer", loadBalancerIngress=["192.0.2.10"]),
             service("ext", "10.96.0.21", [{"name": "dns", "port": 53, "protocol": "UDP"}],
                     externalIPs=["192.0.2.53"])],
            [endpoint_slice("lb", [endpoint("10.244.0.20")], [{"name": "https", "port": 8443}]),
             endpoint_slice("ext", [endpoint("10.244.1.53", "node-2")],
                            [{"name": "dns", "port": 5353, "protocol": "UDP"}])])


def session_affinity() -> Scenario:
    return ([service("sticky", "10.96.0.30", _http(), sessionAffinity="ClientIP",
                     sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}})],
            [endpoint_slice("sticky", [endpoint("10.244.0.31"), endpoint("10.244.0.32")],
                            _HTTP_SLICE_PORTS)])


def no_endpoints() -> Scenario:
    """No slice at all, a slice whose endpoints are all unready, and a NodePort."""
    return ([service("empty", "10.96.0.40", _http()),
             service("unready", "10.96.0.41", [{"name": "dns", "port": 53, "protocol": "UDP"}]),
             service("np", "10.96.0.42", _http(30042), type="NodePort")],
            [endpoint_slice("unready", [endpoint("10.244.0.41", ready=False)],
                            [{"name": "dns", "port": 53, "protocol": "UDP"}])])


def internal_local() -> Scenario:
    return ([service("near", "10.96.0.50", _http(), internalTrafficPolicy="Local"),
             service("away", "10.96.0.51", _http(), internalTrafficPolicy="Local")],
            [endpoint_slice("near", [endpoint("10.244.0.51"), endpoint("10.244.1.52", "node-2")],
                            _HTTP_SLICE_PORTS),
             endpoint_slice("away", [endpoint("10.244.1.53", "node-2")], _HTTP_SLICE_PORTS)])


def terminating_fallback() -> Scenario:
    """No ready endpoint: traffic goes to those still serving while terminating."""
    return ([service("rolling", "10.96.0.60", _http())],
            [endpoint_slice("rolling", [
                endpoint("10.244.0.61", ready=False, serving=True, terminating=True),
                endpoint("10.244.0.62", ready=False, serving=False, terminating=True),
                endpoint("10.244.0.63", ready=False)], _HTTP_SLICE_PORTS)])


def headless_and_external_name() -> Scenario:
    return ([service("headless", "None", _http()),
             service("alias", None, [], type="ExternalName", externalName="example.com")],
            [endpoint_slice("headless", [endpoint("10.244.0.71")], _HTTP_SLICE_PORTS)])


#: Golden scenarios: name -> builder. tests/golden/proxy/<name>.nft holds each one's
#: compiled ruleset for NODE.
SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "clusterip_two_endpoints": clusterip_two_endpoints,
    "nodeport_cluster": nodeport_cluster,
    "nodeport_local": nodeport_local,
    "loadbalancer_external_ips": loadbalancer_external_ips,
    "session_affinity": session_affinity,
    "no_endpoints": no_endpoints,
    "internal_local": internal_local,
    "terminating_fallback": terminating_fallback,
    "headless_and_external_name": headless_and_external_name,
}


def synthetic(count: int, endpoints: int, start: int = 0, nodes: int = 3,
              node_port_every: int = 20) -> Scenario:
    """``count`` Services (from index ``start``) with ``endpoints`` endpoints each, spread
    over ``nodes`` nodes; every ``node_port_every``-th Service is a NodePort (the default
    keeps 30k Services' NodePorts inside 30000-32767). Addresses: Services in
    10.96.0.0/12, endpoint j of Service i is 10.(128+j).(i>>8).(i&255), so up to 65536
    Services x 127 endpoints stay distinct."""
    services, slices = [], []
    for i in range(start, start + count):
        ns, name = f"ns-{i % 100}", f"svc-{i}"
        hi, mid, lo = i >> 16, (i >> 8) & 255, i & 255
        port: Obj = {"name": "http", "port": 80, "targetPort": 8080}
        kind = "ClusterIP"
        if node_port_every and i % node_port_every == 0:
            kind = "NodePort"
            port["nodePort"] = 30000 + (i // node_port_every) % 2768
        services.append(service(name, f"10.{96 + hi}.{mid}.{lo}", [port], ns, kind))
        eps = [endpoint(f"10.{128 + j}.{(i >> 8) & 255}.{i & 255}", f"node-{j % nodes + 1}")
               for j in range(endpoints)]
        slices.append(endpoint_slice(name, eps, _HTTP_SLICE_PORTS, ns, f"{name}-x"))
    return services, slices
