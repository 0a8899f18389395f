"""Services with real traffic: kube-proxy's job, done by kubewire's nftables proxy."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from labkit import (
    cluster_yaml,
    http_get_from,
    kw,
    lab,
    pod_netns,
    pods,
    udp_exchange_from,
    wait_until,
)

from kubewire.kernel.netns import entered
from kubewire.lab import names

APPS = """---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: srv
        image: agnhost
        ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: node-1
  containers:
  - {name: c, image: agnhost, ports: [{containerPort: 9999}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, targetPort: dns, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: client}
  ports: [{port: 80, targetPort: 9999}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-ext}
spec:
  selector: {app: web}
  externalIPs: [172.18.200.10]
  ports: [{port: 8088, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
"""


def service(lab_name: str, name: str) -> dict[str, Any]:
    svc: dict[str, Any] = json.loads(kw("get", "svc", name, "-o", "json", lab=lab_name).stdout)
    return svc


def external_netns(lab_name: str) -> Path:
    return Path("/run/netns") / names.host_netns(lab_name, "external")


def test_every_service_type_carries_real_traffic(tmp_path: Path) -> None:
    name = "t-svc"
    with lab(name, cluster_yaml(name, nodes=3) + APPS, tmp_path):
        items = {p["metadata"]["name"]: p for p in pods(name, "default")}
        client = items.pop("client")
        web_pods = {p["status"]["podIP"]: p["metadata"]["name"] for p in items.values()}
        assert len(web_pods) == 3
        client_ns = pod_netns(name, client)
        web = service(name, "web")
        vip = web["spec"]["clusterIP"]
        assert vip.startswith("10.")

        # ClusterIP spreads over every ready endpoint, and only those.
        seen = Counter(http_get_from(client_ns, vip, 80)["pod"] for _ in range(60))
        assert set(seen) == set(web_pods.values()), seen
        # UDP through the ClusterIP.
        assert udp_exchange_from(client_ns, vip, 53, b"hello") == b"hello"

        # Session affinity: the same client always lands on the same pod.
        sticky = service(name, "sticky")["spec"]["clusterIP"]
        assert len({http_get_from(client_ns, sticky, 80)["pod"] for _ in range(20)}) == 1

        # Hairpin: a pod reaching itself through its own Service.
        me = next(iter(items.values()))
        answers = {http_get_from(pod_netns(name, me), vip, 80)["pod"] for _ in range(30)}
        assert me["metadata"]["name"] in answers

        # A Service with no endpoints is rejected at once, not timed out.
        nobody = service(name, "nobody")["spec"]["clusterIP"]
        web_ip = service(name, "web")["spec"]["clusterIP"]
        # No endpoints, a port the Service does not define, an address no Service holds:
        # each refused at once, not timed out.
        for address, port in ((nobody, 80), (web_ip, 81), ("10.96.255.254", 80)):
            started = time.monotonic()
            with entered(client_ns):
                s = socket.socket()
            s.settimeout(3)
            try:
                s.connect((address, port))
                raise AssertionError(f"connected to {address}:{port}")
            except ConnectionRefusedError:
                pass
            finally:
                s.close()
            assert time.monotonic() - started < 0.5, (address, port)

        # NodePort on every node's underlay address, from the external client.
        ext = external_netns(name)
        for node_ip in ("172.18.0.2", "172.18.0.3", "172.18.0.4"):
            assert http_get_from(ext, node_ip, 30080)["pod"] in web_pods.values()

        # LoadBalancer from the external client.
        lb_ip = service(name, "web-lb")["status"]["loadBalancer"]["ingress"][0]["ip"]
        assert http_get_from(ext, lb_ip, 80)["pod"] in web_pods.values()

        # externalIPs: routed to the nodes (as an admin's router would) and proxied there.
        assert http_get_from(ext, "172.18.200.10", 8088)["pod"] in web_pods.values()

        # externalTrafficPolicy Local: the real client address reaches the pod.
        local = service(name, "web-local")["status"]["loadBalancer"]["ingress"][0]["ip"]
        reply = http_get_from(ext, local, 80)
        assert reply["pod"] == "client"
        assert reply["remoteAddr"].split(":")[0] == "172.18.0.1"
        # ... and a node without a local endpoint drops NodePort traffic for it.
        np_local = service(name, "web-local")["spec"]["ports"][0]["nodePort"]
        with entered(ext):
            s = socket.socket()
        s.settimeout(1)
        try:
            s.connect(("172.18.0.3", np_local))  # node-2: no client pod there
            raise AssertionError("a node without local endpoints accepted ETP Local traffic")
        except (TimeoutError, ConnectionRefusedError, OSError):
            pass
        finally:
            s.close()


def test_udp_fails_over_when_its_endpoint_goes(tmp_path: Path) -> None:
    name = "t-udp"
    manifests = cluster_yaml(name, nodes=2) + """---
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: dns}}
spec:
  nodeName: node-1
  containers: [{name: c, image: x, ports: [{containerPort: 5353, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: dns}}
spec:
  nodeName: node-2
  containers: [{name: c, image: x, ports: [{containerPort: 5353, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: c, image: x, ports: [{containerPort: 9}]}]
---
apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  selector: {app: dns}
  ports: [{port: 53, targetPort: 5353, protocol: UDP}]
"""
    with lab(name, manifests, tmp_path):
        client = next(p for p in pods(name, "default") if p["metadata"]["name"] == "client")
        vip = service(name, "dns")["spec"]["clusterIP"]
        netns = pod_netns(name, client)
        with entered(netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 40000))  # one client flow: conntrack pins it to one endpoint
        s.settimeout(2)
        s.sendto(b"hostname", (vip, 53))
        first = s.recv(100).decode()
        kw("delete", "pod", first, lab=name)
        # The stale conntrack entry is deleted with the endpoint, so the same flow moves.
        other = {"a": "b", "b": "a"}[first]

        def moved() -> bool:
            try:
                s.sendto(b"hostname", (vip, 53))
                return s.recv(100).decode() == other
            except OSError:
                return False

        wait_until(moved, timeout=10, what="the UDP flow to fail over")
        s.close()
        assert udp_exchange_from(netns, vip, 53, b"ping") == b"ping"
