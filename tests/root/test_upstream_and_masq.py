"""The outside-world resolver (Unbound) and pod egress masquerade, with real packets.

A tiny topology of our own, all in `kwtest-upm-*` namespaces and removed even on failure:

    pod-a 10.99.1.2 --veth-- 10.99.1.1 \\
                                   node  172.31.0.2 --veth-- 172.31.0.1 outside (Unbound)
    pod-b 10.99.2.2 --veth-- 10.99.2.1 /

The cluster CIDR is 10.99.0.0/16. As in the lab, the outside namespace has no route to the
pod network: a pod's packet reaches it either way, but only a masqueraded one gets a reply.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from kubewire.kernel import netns
from kubewire.kernel.netlink import set_sysctl
from kubewire.lab import upstream
from kubewire.proxy.compiler import compile_proxy
from kubewire.proxy.scenarios import endpoint, endpoint_slice, service
from kubewire.proxy.sync import ProxySyncer
from kubewire.proxy.views import NodeContext
from kubewire.routing.masquerade import (
    TABLE,
    EgressMasqueradeError,
    remove_egress_masquerade,
    sync_egress_masquerade,
)
from kubewire.workload.runner import KillResult, ProcessRecord, is_running

DIG = "/usr/bin/dig"
CIDR = IPv4Network("10.99.0.0/16")
POD_A, GW_A = "10.99.1.2", "10.99.1.1"
POD_B, GW_B = "10.99.2.2", "10.99.2.1"
NODE_IP, OUTSIDE_IP = "172.31.0.2", "172.31.0.1"
UNDERLAY = IPv4Network("172.31.0.0/24")
PREFIX = f"kwtest-upm-{os.getpid()}-"


@dataclass(frozen=True)
class Topo:
    node: Path
    pod_a: Path
    pod_b: Path
    outside: Path
    unbound: ProcessRecord
    state_dir: Path


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=30)


def _build(names: dict[str, str]) -> None:
    for name in names.values():
        netns.create_netns(name)
        _ip(name, "link", "set", "lo", "up")
    node = names["node"]
    for peer, dev, gw, addr in (("pod-a", "vpa", GW_A, POD_A), ("pod-b", "vpb", GW_B, POD_B),
                                ("outside", "vout", NODE_IP, OUTSIDE_IP)):
        ns = names[peer]
        prefix = 24
        _ip(node, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip(node, "addr", "add", f"{gw}/{prefix}", "dev", dev)
        _ip(node, "link", "set", dev, "up")
        _ip(ns, "addr", "add", f"{addr}/{prefix}", "dev", "eth0")
        _ip(ns, "link", "set", "eth0", "up")
        if peer != "outside":  # the outside world has no route to the pod network
            _ip(ns, "route", "add", "default", "via", gw)
    set_sysctl(netns.netns_path(node), "net.ipv4.ip_forward", "1")


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topo]:
    if not os.path.exists(DIG) or not shutil.which("unbound", path="/usr/sbin:/usr/bin"):
        pytest.fail("needs dig and unbound: run `make setup`")
    names = {role: f"{PREFIX}{role}" for role in ("node", "pod-a", "pod-b", "outside")}
    record: ProcessRecord | None = None
    try:
        _build(names)
        state = tmp_path_factory.mktemp("upstream")
        outside = netns.netns_path(names["outside"])
        record = upstream.start_upstream(outside, IPv4Address(OUTSIDE_IP), state,
                                         allow=[CIDR, UNDERLAY])
        yield Topo(netns.netns_path(names["node"]), netns.netns_path(names["pod-a"]),
                   netns.netns_path(names["pod-b"]), outside, record, state)
    finally:
        if record is not None:
            upstream.stop_upstream(record)
        for name in names.values():
            netns.delete_netns(name)


def dig(ns: Path, *args: str) -> str:
    proc = subprocess.run(["nsenter", f"--net={ns}", DIG, f"@{OUTSIDE_IP}", "+time=2",
                           "+tries=1", *args], capture_output=True, text=True, timeout=20)
    return proc.stdout + proc.stderr


def status(output: str) -> str | None:
    found = re.search(r"status: (\w+)", output)
    return found.group(1) if found else None


def answers(output: str) -> list[str]:
    section = output.partition(";; ANSWER SECTION:\n")[2].partition("\n\n")[0]
    return [" ".join(line.split()) for line in section.splitlines() if line]


def udp_source(src_ns: Path, dst_ns: Path, dst: str, port: int, sport: int,
               send_to: str | None = None) -> tuple[str, int]:
    """Send one datagram from `src_ns` (source port `sport`) and return the source address
    the receiver in `dst_ns` sees. A fixed source port per call keeps conntrack from
    reusing an earlier flow's NAT decision."""
    with netns.entered(dst_ns):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns.entered(src_ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("0.0.0.0", port))
        rx.settimeout(5)
        tx.bind(("0.0.0.0", sport))
        tx.sendto(b"who am i", (send_to or dst, port))
        data, peer = rx.recvfrom(100)
    assert data == b"who am i"
    return peer[0], peer[1]


def tcp_source(src_ns: Path, dst_ns: Path, dst: str, port: int) -> str:
    with netns.entered(dst_ns):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with netns.entered(src_ns):
        csock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with lsock, csock:
        lsock.bind((dst, port))
        lsock.listen(1)
        lsock.settimeout(5)
        csock.settimeout(5)
        csock.connect((dst, port))  # needs the SYN-ACK back: only works masqueraded
        conn, peer = lsock.accept()
        conn.close()
    return str(peer[0])


def nft_list(ns: Path) -> str:
    with netns.entered(ns):
        proc = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                              timeout=30, check=True)
    return proc.stdout


# --- Unbound -----------------------------------------------------------------------------


def test_unbound_checkconf_accepts_the_rendered_config(tmp_path: Path) -> None:
    conf = tmp_path / "unbound.conf"
    conf.write_text(upstream.render_unbound_conf(
        IPv4Address("172.18.0.1"), upstream.DEFAULT_RECORDS, tmp_path,
        [IPv4Network("10.244.0.0/16"), IPv4Network("172.18.0.0/16")]))
    proc = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "no errors" in proc.stdout


def test_rejected_config_reports_unbounds_message(topo: Topo, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "render_unbound_conf",
                        lambda *a, **k: "server:\n    no-such-option: yes\n")
    with pytest.raises(upstream.UnboundConfigError, match="no-such-option"):
        upstream.start_upstream(topo.pod_a, IPv4Address(POD_A), tmp_path, [])
    assert netns.pids_in_netns(topo.pod_a) == []


def test_pod_resolves_the_outside_world_through_the_node(topo: Topo) -> None:
    sync_egress_masquerade(topo.node, CIDR)
    out = dig(topo.pod_a, "external.test")
    assert status(out) == "NOERROR", out
    assert answers(out) == [f"external.test. 300 IN A {OUTSIDE_IP}"]

    out = dig(topo.pod_a, "no-such-name.example.org")
    assert status(out) == "NXDOMAIN", out
    # A real name is just as unknown: the fake internet has nothing but its records.
    assert status(dig(topo.pod_a, "www.debian.org")) == "NXDOMAIN"

    out = dig(topo.pod_a, "-x", OUTSIDE_IP)
    assert status(out) == "NOERROR", out
    assert answers(out) == ["1.0.31.172.in-addr.arpa. 300 IN PTR external.test."]

    out = dig(topo.pod_a, "+tcp", "www.example.test")
    assert status(out) == "NOERROR", out
    assert "(TCP)" in out
    assert answers(out) == ["www.example.test. 300 IN A 192.0.2.10"]

    assert answers(dig(topo.pod_a, "example.test", "MX")) == [
        "example.test. 300 IN MX 10 mail.example.test."]
    assert answers(dig(topo.pod_a, "example.test", "TXT")) == [
        'example.test. 300 IN TXT "kubewire outside world"']
    assert answers(dig(topo.pod_a, "mail.example.test", "AAAA")) == [
        "mail.example.test. 300 IN AAAA 2001:db8::25"]
    # Another class is not covered by the static zone; it must end here, not be recursed.
    assert status(dig(topo.pod_a, "-c", "CH", "foo.test", "TXT")) in {"REFUSED", "SERVFAIL"}


def test_without_masquerade_the_reply_has_no_way_back(topo: Topo) -> None:
    remove_egress_masquerade(topo.node)
    out = dig(topo.pod_b, "+time=1", "external.test")
    assert status(out) is None, out
    assert "timed out" in out or "no servers could be reached" in out, out


def test_upstream_refuses_a_second_server_on_the_port(topo: Topo, tmp_path: Path) -> None:
    with pytest.raises(upstream.UpstreamPortInUseError, match="already in use"):
        upstream.start_upstream(topo.outside, IPv4Address(OUTSIDE_IP), tmp_path, [CIDR])
    with pytest.raises(upstream.UpstreamStartError, match="not an address"):
        upstream.start_upstream(topo.outside, IPv4Address("172.31.0.99"), tmp_path, [CIDR])
    with pytest.raises(upstream.UpstreamStartError, match="no network namespace"):
        upstream.start_upstream(Path(f"/run/netns/{PREFIX}absent"), IPv4Address(OUTSIDE_IP),
                                tmp_path, [CIDR])
    assert is_running(topo.unbound)
    assert not (tmp_path / upstream.RECORD_NAME).exists()


def test_stop_upstream_by_record(topo: Topo, tmp_path: Path) -> None:
    # A second resolver on another address of its own namespace, stopped by its record.
    record = upstream.start_upstream(topo.pod_b, IPv4Address(POD_B), tmp_path, [CIDR],
                                     records=[("only.test", "A", "192.0.2.1")],
                                     pid_file=tmp_path / "rec.json")
    try:
        assert (tmp_path / "rec.json").exists()
        out = subprocess.run(["nsenter", f"--net={topo.pod_b}", DIG, f"@{POD_B}", "+short",
                              "+time=2", "+tries=1", "only.test"],
                             capture_output=True, text=True, timeout=20).stdout
        assert out.split() == ["192.0.2.1"]
    finally:
        assert upstream.stop_upstream(record) is KillResult.TERMINATED
    assert not is_running(record)
    assert netns.pids_in_netns(topo.pod_b) == []
    assert upstream.stop_upstream(record) is KillResult.GONE


# --- egress masquerade ---------------------------------------------------------------------


def test_egress_masquerade_sources(topo: Topo) -> None:
    remove_egress_masquerade(topo.node)
    assert udp_source(topo.pod_a, topo.outside, OUTSIDE_IP, 9999, 40001) == (POD_A, 40001)

    sync_egress_masquerade(topo.node, CIDR)
    assert udp_source(topo.pod_a, topo.outside, OUTSIDE_IP, 9999, 40002)[0] == NODE_IP
    assert tcp_source(topo.pod_a, topo.outside, OUTSIDE_IP, 9998) == NODE_IP
    with netns.entered(topo.node):
        ct = subprocess.run(["conntrack", "-L", "-p", "udp", "--orig-src", POD_A,
                             "--sport", "40002"], capture_output=True, text=True, timeout=30)
    # The reply direction is addressed to the node: that is the masquerade.
    assert re.search(rf"src={OUTSIDE_IP} dst={NODE_IP} sport=9999", ct.stdout), ct

    # Pod to pod (through the node, so postrouting sees it) keeps the pod's address.
    assert udp_source(topo.pod_a, topo.pod_b, POD_B, 9999, 40003) == (POD_A, 40003)

    remove_egress_masquerade(topo.node)
    assert udp_source(topo.pod_a, topo.outside, OUTSIDE_IP, 9999, 40004) == (POD_A, 40004)


def test_egress_table_is_replaced_whole_and_removed(topo: Topo) -> None:
    sync_egress_masquerade(topo.node, CIDR)
    sync_egress_masquerade(topo.node, CIDR)
    listing = nft_list(topo.node)
    assert listing.count(f"table ip {TABLE}") == 1
    assert listing.count("masquerade") == 1
    assert f"ip saddr {CIDR} ip daddr != {CIDR} masquerade fully-random" in listing
    sync_egress_masquerade(topo.node, IPv4Network("10.98.0.0/16"))
    listing = nft_list(topo.node)
    assert listing.count("masquerade") == 1 and "10.98.0.0/16" in listing
    remove_egress_masquerade(topo.node)
    remove_egress_masquerade(topo.node)  # absent is fine
    assert TABLE not in nft_list(topo.node)


def test_egress_refuses_the_machines_own_namespace() -> None:
    with pytest.raises(EgressMasqueradeError, match="own network namespace"):
        sync_egress_masquerade(Path("/proc/self/ns/net"), CIDR)


def test_service_traffic_and_proxy_masquerade_are_untouched(topo: Topo) -> None:
    """With the real proxy table beside it: a ClusterIP from a pod is DNATed to a pod and
    keeps the client's address; a NodePort from outside is still masqueraded by the proxy
    (to the node's address toward the endpoint)."""
    node = NodeContext("node-1", (NODE_IP,), str(CIDR))
    port = {"name": "echo", "port": 9999, "targetPort": 9999, "protocol": "UDP",
            "nodePort": 30999}
    ruleset = compile_proxy(
        [service("echo", "10.96.0.10", [port], type="NodePort")],
        [endpoint_slice("echo", [endpoint(POD_B)],
                        [{"name": "echo", "port": 9999, "protocol": "UDP"}])], node)
    syncer = ProxySyncer(topo.node)
    syncer.sync(ruleset)
    try:
        sync_egress_masquerade(topo.node, CIDR)
        assert udp_source(topo.pod_a, topo.pod_b, POD_B, 9999, 40011,
                          send_to="10.96.0.10") == (POD_A, 40011)
        # NodePort: outside -> node:30999 -> pod-b:9999, masqueraded by the proxy.
        with netns.entered(topo.pod_b):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with netns.entered(topo.outside):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with rx, tx:
            rx.bind(("0.0.0.0", 9999))
            rx.settimeout(5)
            tx.sendto(b"nodeport", (NODE_IP, 30999))
            data, peer = rx.recvfrom(100)
        assert (data, peer[0]) == (b"nodeport", GW_B)
    finally:
        syncer.delete_table()
        remove_egress_masquerade(topo.node)
