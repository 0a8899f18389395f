"""Cluster DNS in the lab: kube-dns pods behind 10.96.0.10, resolv.conf per pod, real dig."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
from labkit import cluster_yaml, kw, lab, pod_netns, pods, wait_until

from kubewire.dns.search import search_candidates
from kubewire.kernel.netns import entered

APPS = """---
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: srv, image: agnhost, ports: [{name: http, containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: pg, image: agnhost, ports: [{name: pg, containerPort: 5432}]}]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: www.example.test}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: team}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-2
  containers: [{name: c, image: agnhost, ports: [{containerPort: 9999}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: custom}
spec:
  dnsPolicy: "None"
  dnsConfig:
    nameservers: [10.96.0.10]
    searches: [team.svc.cluster.local]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers: [{name: c, image: agnhost, ports: [{containerPort: 9999}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: outside}
spec:
  dnsPolicy: Default
  containers: [{name: c, image: agnhost, ports: [{containerPort: 9999}]}]
"""


def dig(lab_name: str, pod: str, *args: str) -> str:
    return kw("exec", pod, "--", "dig", "+time=2", "+tries=1", *args, lab=lab_name).stdout


SEARCH = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def first_answer(netns: Path, qname: str, deadline: float) -> tuple[float, str] | None:
    """(monotonic time, address) of the first A answer for ``qname`` from 10.96.0.10."""
    query = dns.message.make_query(qname, "A")
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    end = time.monotonic() + deadline
    with sock:
        while time.monotonic() < end:
            try:
                got = dns.query.udp(query, "10.96.0.10", timeout=0.2, sock=sock)
            except dns.exception.Timeout:
                continue
            if got.answer:
                return time.monotonic(), got.answer[0][0].to_text()
            time.sleep(0.02)  # NXDOMAIN: ask again (a poll interval, not a synchronisation)
    return None


def dns_ready(lab_name: str) -> bool:
    ready = [p for p in pods(lab_name, "kube-system")
             if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns"
             and any(c.get("type") == "Ready" and c.get("status") == "True"
                     for c in p.get("status", {}).get("conditions", []))]
    return len(ready) == 2


def cluster_ip(lab_name: str, name: str, namespace: str = "default") -> str:
    svc: dict[str, Any] = json.loads(
        kw("get", "svc", name, "-n", namespace, "-o", "json", lab=lab_name).stdout)
    return str(svc["spec"]["clusterIP"])


def test_pods_resolve_cluster_names_through_kube_dns(tmp_path: Path) -> None:
    name = "t-dns"
    with lab(name, cluster_yaml(name, nodes=2) + APPS, tmp_path):
        # kubeadm's add-on objects: a kube-dns Service at the range's tenth address.
        assert cluster_ip(name, "kube-dns", "kube-system") == "10.96.0.10"
        wait_until(lambda: dns_ready(name), timeout=30, what="2 ready kube-dns pods")
        web_ip = cluster_ip(name, "web")

        resolv = kw("exec", "client", "--", "cat", "/etc/resolv.conf", lab=name).stdout
        assert resolv.splitlines() == [
            "nameserver 10.96.0.10",
            "search default.svc.cluster.local svc.cluster.local cluster.local",
            "options ndots:5"]

        # The full name, through the Service VIP and the proxy, answered by a DNS pod.
        out = dig(name, "client", "+short", "web.default.svc.cluster.local")
        assert out.split() == [web_ip]
        # Search paths, as the stub resolver applies them (getent uses glibc).
        assert kw("exec", "client", "--", "getent", "hosts", "web", lab=name).stdout.split()[0] \
            == web_ip
        assert kw("exec", "client", "--", "getent", "hosts", "api.team",
                  lab=name).stdout.split()[0] == cluster_ip(name, "api", "team")
        # And a real client by name.
        body = json.loads(kw("exec", "client", "--", "curl", "-s", "--max-time", "5",
                             "http://web/hello", lab=name).stdout)
        assert body["path"] == "/hello" and body["pod"].startswith("web-")

        # Headless: one A per ready endpoint; SRV for the named port; NXDOMAIN with SOA.
        web_ips = sorted(p["status"]["podIP"] for p in pods(name, "default")
                         if p["metadata"]["name"].startswith("web-"))
        out = dig(name, "client", "+short", "web-headless.default.svc.cluster.local")
        assert sorted(out.split()) == web_ips
        out = dig(name, "client", "+short", "SRV", "_http._tcp.web.default.svc.cluster.local")
        assert out.split()[2:] == ["80", "web.default.svc.cluster.local."]
        out = dig(name, "client", "nope.default.svc.cluster.local")
        assert "status: NXDOMAIN" in out and "SOA" in out

        # Every record form of the spec, asked with real dig from inside a pod.
        db_ip = next(p["status"]["podIP"] for p in pods(name, "default")
                     if p["metadata"]["name"] == "db-0")
        reverse = ".".join(reversed(web_ip.split("."))) + ".in-addr.arpa"
        client_ip = next(p["status"]["podIP"] for p in pods(name, "default")
                         if p["metadata"]["name"] == "client")
        table = [
            (["TXT", "dns-version.cluster.local"], ['"1.1.0"']),
            (["PTR", reverse], ["web.default.svc.cluster.local."]),
            (["A", "db-0.db.default.svc.cluster.local"], [db_ip]),
            (["A", "db.default.svc.cluster.local"], [db_ip]),
            (["SRV", "_pg._tcp.db.default.svc.cluster.local"],
             ["0", "100", "5432", "db-0.db.default.svc.cluster.local."]),
            (["CNAME", "ext.default.svc.cluster.local"], ["www.example.test."]),
            (["A", client_ip.replace(".", "-") + ".default.pod.cluster.local"], [client_ip]),
            (["A", "WEB.Default.SVC.Cluster.Local"], [web_ip]),
            (["+tcp", "A", "web.default.svc.cluster.local"], [web_ip]),
            (["AAAA", "web.default.svc.cluster.local"], []),  # NODATA
        ]
        for query, expected in table:
            assert dig(name, "client", "+short", *query).split() == expected, query
        nodata = dig(name, "client", "AAAA", "web.default.svc.cluster.local")
        assert "status: NOERROR" in nodata and "ANSWER: 0" in nodata and "SOA" in nodata
        # The stub resolver follows the ExternalName CNAME out to the upstream resolver.
        assert kw("exec", "client", "--", "getent", "hosts", "ext",
                  lab=name).stdout.split()[0] == "192.0.2.10"

        # Outside names go to the upstream resolver on the external host (forward).
        out = dig(name, "client", "+short", "external.test")
        assert out.split() == ["172.18.0.1"]
        assert "status: NXDOMAIN" in dig(name, "client", "no-such-name.test")

        # dnsPolicy None and Default.
        resolv = kw("exec", "custom", "--", "cat", "/etc/resolv.conf", lab=name).stdout
        assert resolv.splitlines() == ["nameserver 10.96.0.10",
                                       "search team.svc.cluster.local",
                                       "options ndots:2 edns0"]
        out = kw("exec", "custom", "--", "getent", "hosts", "api", lab=name).stdout
        assert out.split()[0] == cluster_ip(name, "api", "team")
        resolv = kw("exec", "outside", "--", "cat", "/etc/resolv.conf", lab=name).stdout
        assert resolv.splitlines() == ["nameserver 172.18.0.1"]

        # A new Service is answered within a second of being created: asked every 20 ms
        # from inside the client pod, through the kube-dns Service.
        client_netns = pod_netns(name, next(p for p in pods(name, "default")
                                            if p["metadata"]["name"] == "client"))
        kw("apply", "-f", "-", lab=name, stdin=(
            "apiVersion: v1\nkind: Service\nmetadata: {name: late}\n"
            "spec: {selector: {app: web}, ports: [{port: 81, targetPort: 80}]}\n"))
        created = time.monotonic()
        seen = first_answer(client_netns, "late.default.svc.cluster.local", deadline=5.0)
        assert seen is not None, "late Service never answered"
        assert seen[1] == cluster_ip(name, "late")
        assert seen[0] - created < 1.0, f"answered {seen[0] - created:.2f} s after apply"


def test_coredns_configmap_change_reloads(tmp_path: Path) -> None:
    name = "t-dnscfg"
    with lab(name, cluster_yaml(name, nodes=1) + APPS.split("---\napiVersion: v1\nkind: Pod")[0]
             + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n"
             "  containers: [{name: c, image: agnhost, ports: [{containerPort: 9999}]}]\n",
             tmp_path):
        wait_until(lambda: dns_ready(name), timeout=30, what="2 ready kube-dns pods")
        corefile = json.loads(kw("get", "configmap", "coredns", "-n", "kube-system", "-o",
                                 "json", lab=name).stdout)["data"]["Corefile"]
        assert "kubernetes cluster.local" in corefile
        edited = corefile.replace("    errors\n", "    errors\n    log\n    hosts {\n"
                                  "        10.1.2.3 legacy.example\n        fallthrough\n"
                                  "    }\n", 1)
        assert edited != corefile
        manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "coredns", "namespace": "kube-system"},
                    "data": {"Corefile": edited}}
        kw("apply", "-f", "-", lab=name, stdin=json.dumps(manifest))
        # Each server reloads on its own poll: ask each one directly.
        dns_pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods(name, "kube-system")
                    if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns"}
        assert len(dns_pods) == 2

        def everywhere(qname: str) -> list[list[str]]:
            return [dig(name, "client", f"@{ip}", "+short", qname).split()
                    for ip in dns_pods.values()]

        wait_until(lambda: everywhere("legacy.example") == [["10.1.2.3"]] * 2, timeout=20,
                   what="the hosts entry on both servers after reload")
        # The query log shows a stub resolver's search-list walk (ndots:5): a pod that asks
        # one server directly, so the order of its queries is that server's log order.
        first_server = sorted(dns_pods.values())[0]
        stub = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stub"},
                "spec": {"dnsPolicy": "None", "dnsConfig": {
                    "nameservers": [first_server], "searches": SEARCH,
                    "options": [{"name": "ndots", "value": "5"}]},
                    "containers": [{"name": "c", "image": "agnhost",
                                    "ports": [{"containerPort": 9999}]}]}}
        kw("apply", "-f", "-", lab=name, stdin=json.dumps(stub))
        wait_until(lambda: any(p["metadata"]["name"] == "stub" and p["status"].get("podIP")
                               for p in pods(name, "default")), what="stub pod")
        lookup = kw("exec", "stub", "--", "getent", "ahostsv4", "nope.example", lab=name,
                    check=False)
        assert lookup.returncode == 2  # not found anywhere
        server_pod = next(n for n, ip in dns_pods.items() if ip == first_server)
        log = kw("logs", server_pod, "-n", "kube-system", lab=name).stdout
        asked = [m for m in re.findall(r'"A IN (\S+) ', log) if m.startswith("nope.example")]
        assert asked == search_candidates("nope.example", SEARCH, 5)

        # A broken Corefile is refused by the servers; the last good one keeps serving.
        manifest["data"] = {"Corefile": edited.replace("hosts {", "hostz {", 1)}
        kw("apply", "-f", "-", lab=name, stdin=json.dumps(manifest))

        def refused_everywhere() -> bool:
            return all('unknown plugin "hostz"' in kw("logs", pod, "-n", "kube-system",
                                                      lab=name).stdout for pod in dns_pods)

        wait_until(refused_everywhere, timeout=20, what="both servers to refuse the Corefile")
        assert everywhere("legacy.example") == [["10.1.2.3"]] * 2
        assert everywhere("web.default.svc.cluster.local") == [[cluster_ip(name, "web")]] * 2
