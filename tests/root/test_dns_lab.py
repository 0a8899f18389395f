"""Cluster DNS in the lab: kube-dns pods behind 10.96.0.10, resolv.conf per pod, real dig."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from labkit import cluster_yaml, kw, lab, pods, wait_until

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

        # A new Service is answered within a second of being created.
        kw("apply", "-f", "-", lab=name, stdin=(
            "apiVersion: v1\nkind: Service\nmetadata: {name: late}\n"
            "spec: {selector: {app: web}, ports: [{port: 81, targetPort: 80}]}\n"))
        created = time.monotonic()
        late_ip = cluster_ip(name, "late")
        wait_until(lambda: dig(name, "client", "+short", "late.default.svc.cluster.local")
                   .split() == [late_ip], timeout=10, what="late Service in DNS")
        assert time.monotonic() - created < 3.0  # dig itself and the CLI take ~0.3 s each


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
        edited = corefile.replace("    errors\n", "    errors\n    hosts {\n"
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
        # A broken Corefile is refused by the servers; the last good one keeps serving.
        manifest["data"] = {"Corefile": edited.replace("hosts {", "hostz {", 1)}
        kw("apply", "-f", "-", lab=name, stdin=json.dumps(manifest))

        def refused_everywhere() -> bool:
            return all('unknown plugin "hostz"' in kw("logs", pod, "-n", "kube-system",
                                                      lab=name).stdout for pod in dns_pods)

        wait_until(refused_everywhere, timeout=20, what="both servers to refuse the Corefile")
        assert everywhere("legacy.example") == [["10.1.2.3"]] * 2
        assert everywhere("web.default.svc.cluster.local") == [[cluster_ip(name, "web")]] * 2
