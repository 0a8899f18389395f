"""The proxy with real nftables and real sockets, in namespaces made for each test.

Topology (all in namespaces named kwtest-px-*; nothing touches the machine's own)::

    pod1 10.244.0.11 --+
    pod2 10.244.0.12 --+-- cni0 10.244.0.1 [node] eth0 192.168.77.1 --- 192.168.77.2 [client]
    pod3 10.244.0.13 --+

Pod servers answer "<pod name> <peer address>" (TCP 8080, UDP 5353), so a test sees both
which endpoint it reached and whether it was masqueraded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubewire.kernel.netns import create_netns, delete_netns, entered
from kubewire.proxy import names
from kubewire.proxy.compiler import ProxyCompiler, compile_proxy
from kubewire.proxy.errors import ProxySyncError
from kubewire.proxy.model import Chain, Ruleset
from kubewire.proxy.scenarios import SCENARIOS, endpoint, endpoint_slice, service
from kubewire.proxy.sync import ProxySyncer
from kubewire.proxy.views import NodeContext

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces")

NODE_IP, CLIENT_IP, GATEWAY = "192.168.77.1", "192.168.77.2", "10.244.0.1"
POD_IPS = {"pod1": "10.244.0.11", "pod2": "10.244.0.12", "pod3": "10.244.0.13"}
NODE = NodeContext("node-1", (NODE_IP,), "10.244.0.0/16")
HTTP = [{"name": "http", "port": 80, "targetPort": 8080}]
HTTP_SLICE = [{"name": "http", "port": 8080}]
DNS = [{"name": "dns", "port": 53, "protocol": "UDP"}]
DNS_SLICE = [{"name": "dns", "port": 5353, "protocol": "UDP"}]


def run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr}")
    return proc.stdout


@dataclass
class Lab:
    prefix: str
    servers: list[socket.socket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def ns(self, name: str) -> Path:
        return Path("/run/netns") / f"{self.prefix}-{name}"

    @property
    def node(self) -> Path:
        return self.ns("node")

    def nft(self, *args: str) -> str:
        return run("ip", "netns", "exec", self.node.name, "nft", *args)

    def serve(self, pod: str) -> None:
        """TCP 8080 and UDP 5353 servers in a pod, answering "<pod> <peer ip>"."""
        with entered(self.ns(pod)):
            tcp = socket.socket()
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("0.0.0.0", 8080))
            tcp.listen(128)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("0.0.0.0", 5353))
        for s in (tcp, udp):
            s.settimeout(0.2)
            self.servers.append(s)

        def tcp_loop() -> None:
            while not self.stop.is_set():
                try:
                    conn, peer = tcp.accept()
                except (TimeoutError, OSError):
                    continue
                with conn:
                    conn.sendall(f"{pod} {peer[0]}\n".encode())

        def udp_loop() -> None:
            while not self.stop.is_set():
                try:
                    data, peer = udp.recvfrom(2048)
                except (TimeoutError, OSError):
                    continue
                udp.sendto(f"{pod} {peer[0]} {data.decode()}".encode(), peer)

        for loop in (tcp_loop, udp_loop):
            threading.Thread(target=loop, daemon=True).start()


def connect(ns: Path, ip: str, port: int, timeout: float = 2.0) -> tuple[str, str]:
    """(pod that answered, the peer address it saw)."""
    with entered(ns):
        s = socket.create_connection((ip, port), timeout=timeout)
    with s:
        data = b""
        while chunk := s.recv(256):
            data += chunk
    pod, peer = data.decode().split()
    return pod, peer


@contextlib.contextmanager
def udp_socket(ns: Path) -> Iterator[socket.socket]:
    with entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(2.0)
        yield s


def udp_ask(s: socket.socket, ip: str, port: int, payload: str = "hi") -> list[str]:
    s.sendto(payload.encode(), (ip, port))
    return s.recv(2048).decode().split()


def ns_name(path: Path) -> str:
    return path.name


@contextlib.contextmanager
def lab(tag: str) -> Iterator[Lab]:
    prefix = f"kwtest-px-{tag}-{os.getpid() % 100000}"
    made: list[str] = []
    lab = Lab(prefix)
    try:
        for name in ("node", "client", *POD_IPS):
            create_netns(f"{prefix}-{name}")
            made.append(f"{prefix}-{name}")
        node = ns_name(lab.node)
        client = f"{prefix}-client"
        batches: dict[str, list[str]] = {node: [
            "link set lo up",
            "link add cni0 type bridge",
            f"addr add {GATEWAY}/24 dev cni0",
            "link set cni0 up",
            f"link add eth0 type veth peer name eth0 netns {client}",
            f"addr add {NODE_IP}/24 dev eth0",
            "link set eth0 up",
            # Services without endpoints must be routable to reach the filter hooks (a
            # real node has a default route); the client does not forward, so nothing
            # leaves the lab.
            f"route add default via {CLIENT_IP}",
        ], client: [
            "link set lo up",
            f"addr add {CLIENT_IP}/24 dev eth0",
            "link set eth0 up",
            f"route add 10.96.0.0/12 via {NODE_IP}",
            f"route add 192.0.2.0/24 via {NODE_IP}",
        ]}
        for i, (pod, ip) in enumerate(POD_IPS.items(), 1):
            batches[node] += [
                f"link add veth{i} type veth peer name eth0 netns {prefix}-{pod}",
                f"link set veth{i} master cni0 up",
                # As the CNI bridge plugin's hairpinMode does: with br_netfilter a pod's
                # own Service traffic is DNATed while bridged and must go back out the
                # port it came in on.
                f"link set veth{i} type bridge_slave hairpin on",
            ]
            batches[f"{prefix}-{pod}"] = [
                "link set lo up", f"addr add {ip}/24 dev eth0", "link set eth0 up",
                f"route add default via {GATEWAY}",
            ]
        for ns, batch in batches.items():  # node first: it creates the others' links
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch),
                           text=True, check=True)
        # Pod-to-pod traffic through a Service is bridged on the way back: br_netfilter
        # lets conntrack undo the DNAT (as every kube-proxy node needs).
        for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
            run("ip", "netns", "exec", node, "sysctl", "-qw", f"{key}=1")
        for pod in POD_IPS:
            lab.serve(pod)
        yield lab
    finally:
        lab.stop.set()
        for s in lab.servers:
            s.close()
        for name in made:
            delete_netns(name)


def web(name: str, ip: str, pods: list[str], **spec: Any) -> tuple[dict[str, Any],
                                                                   dict[str, Any]]:
    ports = [dict(HTTP[0], nodePort=spec.pop("nodePort"))] if "nodePort" in spec else HTTP
    node_of = spec.pop("node_of", {})
    svc = service(name, ip, ports, **spec)
    sl = endpoint_slice(name, [endpoint(POD_IPS.get(p, p), node_of.get(p, "node-1"))
                               for p in pods], HTTP_SLICE)
    return svc, sl


def apply(syncer: ProxySyncer, *pairs: tuple[dict[str, Any], dict[str, Any]]) -> Ruleset:
    rs = compile_proxy([p[0] for p in pairs], [p[1] for p in pairs], NODE)
    syncer.sync(rs)
    return rs


def test_clusterip_spreads_affinity_sticks_and_hairpin_works() -> None:
    with lab("lb") as lb:
        syncer = ProxySyncer(lb.node)
        apply(syncer, web("web", "10.96.0.10", ["pod1", "pod2"]),
              web("sticky", "10.96.0.11", ["pod1", "pod2"], sessionAffinity="ClientIP"),
              web("self", "10.96.0.12", ["pod1"]))
        seen = Counter(connect(lb.ns("pod3"), "10.96.0.10", 80) for _ in range(60))
        assert set(seen) == {("pod1", "10.244.0.13"), ("pod2", "10.244.0.13")}
        assert min(seen.values()) >= 10, seen  # P(< 10 of 60) is ~1e-6
        sticky = {connect(lb.ns("pod3"), "10.96.0.11", 80)[0] for _ in range(20)}
        assert len(sticky) == 1
        # Hairpin: pod1 reaches itself through the Service, seen as the node's bridge.
        assert connect(lb.ns("pod1"), "10.96.0.12", 80) == ("pod1", GATEWAY)
        # From the node itself (output path): masqueraded, not a pod address.
        with entered(lb.node):
            pod, peer = connect(lb.node, "10.96.0.10", 80)
        assert pod in ("pod1", "pod2") and peer == GATEWAY


def test_no_endpoints_is_refused_at_once() -> None:
    with lab("rej") as lb:
        syncer = ProxySyncer(lb.node)
        rs = apply(syncer, web("empty", "10.96.0.20", []))
        for ns in (lb.ns("pod3"), lb.node):
            start = time.monotonic()
            with pytest.raises(ConnectionRefusedError):
                connect(ns, "10.96.0.20", 80, timeout=3)
            assert time.monotonic() - start < 1.0
        udp_svc = compile_proxy([service("dns", "10.96.0.53", DNS)], [], NODE)
        syncer.sync(Ruleset(chains=rs.chains, sets=udp_svc.sets))
        with udp_socket(lb.ns("pod3")) as s:
            s.connect(("10.96.0.53", 53))  # a connected UDP socket hears the ICMP error
            s.send(b"x")
            with pytest.raises(ConnectionRefusedError):
                s.recv(100)


def test_udp_and_stale_conntrack_entries() -> None:
    with lab("udp") as lb:
        syncer = ProxySyncer(lb.node)
        svc = service("dns", "10.96.0.53", DNS)

        def dns_on(pod: str) -> Ruleset:
            return compile_proxy([svc], [endpoint_slice("dns", [endpoint(POD_IPS[pod])],
                                                        DNS_SLICE)], NODE)
        syncer.sync(dns_on("pod1"))
        with udp_socket(lb.ns("pod3")) as s:
            assert udp_ask(s, "10.96.0.53", 53)[:2] == ["pod1", "10.244.0.13"]
            report = syncer.sync(dns_on("pod2"))
            assert [f.endpoint for f in report.stale_flows] == ["10.244.0.11"]
            assert report.conntrack_deleted >= 1 and not report.conntrack_errors
            # Same client socket (same 5-tuple): without the deletion conntrack would
            # keep sending it to pod1.
            assert udp_ask(s, "10.96.0.53", 53)[0] == "pod2"


def test_nodeport_loadbalancer_and_traffic_policies() -> None:
    with lab("np") as lb:
        syncer = ProxySyncer(lb.node)
        apply(syncer,
              web("cluster", "10.96.0.30", ["pod1", "pod2"], type="NodePort", nodePort=30080),
              web("local", "10.96.0.31", ["pod1", "10.244.1.50"], type="NodePort",
                  nodePort=30081, externalTrafficPolicy="Local",
                  node_of={"10.244.1.50": "node-2"}),
              web("remote", "10.96.0.32", ["10.244.1.51"], type="NodePort", nodePort=30082,
                  externalTrafficPolicy="Local", node_of={"10.244.1.51": "node-2"}),
              web("lb", "10.96.0.33", ["pod2"], type="LoadBalancer", nodePort=30083,
                  loadBalancerIngress=["192.0.2.10"], externalIPs=["192.0.2.11"]))
        client = lb.ns("client")
        pods = {connect(client, NODE_IP, 30080)[0] for _ in range(30)}
        assert pods == {"pod1", "pod2"}
        assert connect(client, NODE_IP, 30080)[1] == GATEWAY  # Cluster: masqueraded
        assert connect(client, NODE_IP, 30081) == ("pod1", CLIENT_IP)  # Local: kept
        with pytest.raises(TimeoutError):  # Local without a local endpoint: dropped
            connect(client, NODE_IP, 30082, timeout=0.5)
        assert connect(client, "192.0.2.10", 80)[0] == "pod2"
        assert connect(client, "192.0.2.11", 80)[0] == "pod2"
        assert connect(client, NODE_IP, 30083)[0] == "pod2"


def test_failed_sync_keeps_rules_and_resync_repairs_hand_edits() -> None:
    with lab("fail") as lb:
        syncer = ProxySyncer(lb.node)
        good = apply(syncer, web("web", "10.96.0.40", ["pod1"]))
        broken = Ruleset(chains=(*good.chains, Chain("zz-broken", ("jump nowhere",))),
                         sets=good.sets)
        with pytest.raises(ProxySyncError, match=r"nowhere|No such file"):
            syncer.sync(broken)
        assert connect(lb.ns("pod3"), "10.96.0.40", 80)[0] == "pod1"
        assert "zz-broken" not in lb.nft("list", "chains")
        report = syncer.sync(good)
        assert report.full and report.reason == "retry after a failed sync"

        lb.nft("flush", "chain", "ip", names.TABLE, names.SERVICES)
        with pytest.raises(TimeoutError):
            connect(lb.ns("pod3"), "10.96.0.40", 80, timeout=0.5)
        report = syncer.resync()
        assert report.full and report.reason == "resync"
        assert connect(lb.ns("pod3"), "10.96.0.40", 80)[0] == "pod1"


def test_incremental_sync_changes_only_what_changed() -> None:
    with lab("inc") as lb:
        syncer = ProxySyncer(lb.node)
        a = web("a", "10.96.0.50", ["pod1"])
        apply(syncer, a)
        chain_a = names.service_chain("default/a/tcp/80")
        handles_before = lb.nft("-a", "list", "chain", "ip", names.TABLE, chain_a)
        report = syncer.sync(compile_proxy([a[0], web("b", "10.96.0.51", ["pod2"])[0]],
                                           [a[1], web("b", "10.96.0.51", ["pod2"])[1]], NODE))
        assert not report.full
        assert report.chains_added == (names.service_chain("default/b/tcp/80"),)
        assert report.chains_changed == () and report.chains_removed == ()
        assert lb.nft("-a", "list", "chain", "ip", names.TABLE, chain_a) == handles_before
        assert connect(lb.ns("pod3"), "10.96.0.51", 80)[0] == "pod2"
        assert connect(lb.ns("pod3"), "10.96.0.50", 80)[0] == "pod1"
        syncer.delete_table()
        assert names.TABLE not in lb.nft("list", "tables")


def test_every_golden_scenario_loads_into_nft() -> None:
    with lab("gold") as lb:
        syncer = ProxySyncer(lb.node)
        for name, build in sorted(SCENARIOS.items()):
            services, slices = build()
            report = syncer.sync(compile_proxy(services, slices, NODE))
            assert report.commands > 0, name
        syncer.resync()


def test_local_policies_spread_over_local_endpoints_and_update_is_elementwise() -> None:
    """Two local endpoints (the local chains' offset choices in @service-endpoints-tcp)
    and a remote one; then a Service added through update() syncs incrementally."""
    with lab("loc") as lb:
        syncer = ProxySyncer(lb.node)
        remote = {"10.244.1.52": "node-2"}
        etp = web("etp", "10.96.0.60", ["pod1", "pod2", "10.244.1.52"], type="NodePort",
                  nodePort=30090, externalTrafficPolicy="Local", node_of=remote)
        itp = web("itp", "10.96.0.61", ["pod1", "pod2", "10.244.1.52"],
                  internalTrafficPolicy="Local", node_of=remote)
        compiler = ProxyCompiler(NODE)
        syncer.sync(compiler.compile([etp[0], itp[0]], [etp[1], itp[1]]))
        client = lb.ns("client")
        seen = Counter(connect(client, NODE_IP, 30090) for _ in range(40))
        assert set(seen) == {("pod1", CLIENT_IP), ("pod2", CLIENT_IP)}, seen
        inside = {connect(lb.ns("pod3"), "10.96.0.61", 80)[0] for _ in range(40)}
        assert inside == {"pod1", "pod2"}
        report = syncer.sync(compiler.update(changed_services=[web("new", "10.96.0.62", [])[0]],
                                             changed_slices=[web("new", "10.96.0.62",
                                                                 ["pod1", "pod2"])[1]]))
        assert not report.full
        # its own chain, and the first shared 2-endpoint choice chain (etp/itp use 3 and 2-local)
        assert report.chains_added == (names.choice_chain("tcp", 2, False),
                                       names.service_chain("default/new/tcp/80"))
        assert report.chains_changed == () and report.chains_removed == ()
        assert {connect(lb.ns("pod3"), "10.96.0.62", 80)[0] for _ in range(40)} \
            == {"pod1", "pod2"}
        syncer.resync()
        assert connect(client, NODE_IP, 30090)[1] == CLIENT_IP
