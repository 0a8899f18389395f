"""routing.bgproutes against the real kernel: BGP routes (single and ECMP) installed,
replaced, withdrawn and resynced in a node namespace, read back with `ip -j route`, and an
ECMP route forwarding real packets over both next hops.

Topology (namespaces kwtest-bgpr-<pid>-<tag>-*, all deleted in `finally`): a `lan`
namespace with bridge br0; `node` (eth0 172.30.0.1/24) and two next hops `nh1` (.2) and
`nh2` (.3) on it, each of which also holds the anycast address 10.99.0.1/32 on lo; for the
forwarding test a `cli` namespace (10.50.0.2/24) behind the node's cli0 (10.50.0.1/24).
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest

from kubewire.kernel.netns import create_netns, delete_netns, entered
from kubewire.routing.bgproutes import (
    DEFAULT_METRIC,
    BgpRoute,
    BgpRouteError,
    BgpRouteProgrammer,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]

NODE_IP = IPv4Address("172.30.0.1")
NH1, NH2 = IPv4Address("172.30.0.2"), IPv4Address("172.30.0.3")
ANYCAST = IPv4Address("10.99.0.1")
A = IPv4Network("10.244.1.0/26")
B = IPv4Network("10.244.2.0/26")
_IP_RECVERR = 11  # linux/in.h; the socket module does not export it
_tags = itertools.count()


@dataclass
class Lab:
    names: dict[str, str]  # role -> namespace name

    def path(self, role: str) -> str:
        return f"/run/netns/{self.names[role]}"

    def ip(self, role: str, *args: str) -> str:
        proc = subprocess.run(
            ["ip", "-n", self.names[role], *args], capture_output=True, text=True, timeout=10
        )
        if proc.returncode:
            raise AssertionError(f"ip -n {role} {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def routes(self, role: str = "node") -> dict[str, dict[str, object]]:
        """Main-table IPv4 routes as `ip -j` reports them: dst -> protocol, metric, via."""
        out: dict[str, dict[str, object]] = {}
        for r in json.loads(self.ip(role, "-j", "-4", "route", "show", "table", "main")):
            dst = str(ipaddress.ip_network(r["dst"])) if r["dst"] != "default" else "default"
            hops = r.get("nexthops") or [r]
            via = tuple(sorted(h["gateway"] for h in hops if "gateway" in h))
            key = dst if dst not in out else f"{dst}@{r.get('metric', 0)}"
            # ip -j leaves out protocol boot (what `ip route add` uses) and metric 0.
            proto, metric = r.get("protocol", "boot"), r.get("metric", 0)
            out[key] = {"protocol": proto, "metric": metric, "via": via}
        return out

    def bgp(self, role: str = "node") -> dict[str, tuple[str, ...]]:
        return {
            dst.split("@")[0]: r["via"]  # type: ignore[misc]
            for dst, r in self.routes(role).items()
            if r["protocol"] == "bgp" and r["metric"] == DEFAULT_METRIC
        }


def _veth(lab: Lab, lan_name: str, role: str, ifname: str = "eth0") -> None:
    lab.ip(
        "lan",
        "link",
        "add",
        lan_name,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        lab.names[role],
    )
    lab.ip("lan", "link", "set", lan_name, "master", "br0", "up")
    lab.ip(role, "link", "set", ifname, "up")


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = f"kwtest-bgpr-{os.getpid()}-{next(_tags)}"
    roles = ("lan", "node", "nh1", "nh2", "cli")
    made: list[str] = []
    try:
        for role in roles:
            create_netns(f"{tag}-{role}")
            made.append(f"{tag}-{role}")
        lab = Lab({role: f"{tag}-{role}" for role in roles})
        lab.ip("lan", "link", "add", "br0", "type", "bridge")
        lab.ip("lan", "link", "set", "br0", "up")
        for role, addr in (("node", NODE_IP), ("nh1", NH1), ("nh2", NH2)):
            _veth(lab, f"p-{role}", role)
            lab.ip(role, "addr", "add", f"{addr}/24", "dev", "eth0")
            lab.ip(role, "link", "set", "lo", "up")
        for role in ("nh1", "nh2"):
            lab.ip(role, "addr", "add", f"{ANYCAST}/32", "dev", "lo")
            lab.ip(role, "route", "add", "10.50.0.0/24", "via", str(NODE_IP))
        yield lab
    finally:
        for name in made:
            delete_netns(name)


def test_install_replace_withdraw_single_and_ecmp(lab: Lab) -> None:
    with BgpRouteProgrammer(lab.path("node")) as prog:
        single, ecmp = BgpRoute(A, (NH1,)), BgpRoute(B, (NH2, NH1))
        report = prog.apply({A: single, B: ecmp})
        assert (report.added, report.replaced, report.deleted, report.failed) == (2, 0, 0, ())
        assert lab.bgp() == {str(A): (str(NH1),), str(B): (str(NH1), str(NH2))}
        shown = lab.ip("node", "route", "show", str(B))
        assert f"nexthop via {NH1} dev eth0 weight 1" in shown and "proto bgp metric 20" in shown
        assert prog.read() == {A: single, B: ecmp}  # our decoder agrees with ip's

        again = prog.apply({A: single, B: ecmp})
        assert (again.unchanged, again.messages, again.changes) == (2, 0, 0)

        # ECMP -> single and single -> ECMP, each in place.
        report = prog.apply({B: BgpRoute(B, (NH2,)), A: BgpRoute(A, (NH1, NH2))})
        assert (report.replaced, report.added, report.ok) == (2, 0, True)
        assert lab.bgp() == {str(A): (str(NH1), str(NH2)), str(B): (str(NH2),)}

        report = prog.apply({A: None})
        assert (report.deleted, report.ok) == (1, True)
        assert lab.bgp() == {str(B): (str(NH2),)}
        gone = prog.apply({A: None})  # withdrawing what is not there is fine
        assert (gone.deleted, gone.ok) == (0, True)
        assert prog.installed == {B: BgpRoute(B, (NH2,))}


def test_other_protocols_are_never_replaced_or_deleted(lab: Lab) -> None:
    # A proto-75 (routing package) route for A at metric 0, and a boot route at our metric.
    lab.ip("node", "route", "add", str(A), "via", str(NH2), "proto", "75")
    lab.ip("node", "route", "add", "10.77.0.0/24", "via", str(NH2), "metric", "20")
    with BgpRouteProgrammer(lab.path("node")) as prog:
        report = prog.apply(
            {
                A: BgpRoute(A, (NH1,)),
                IPv4Network("10.77.0.0/24"): BgpRoute(IPv4Network("10.77.0.0/24"), (NH1,)),
            }
        )
        assert report.added == 1
        ((dst, reason),) = report.failed
        assert dst == IPv4Network("10.77.0.0/24")
        assert "protocol 3 already uses metric 20" in reason and "only protocol 186" in reason
        routes = lab.routes()
        assert routes[str(A)] == {"protocol": "75", "metric": 0, "via": (str(NH2),)}
        assert routes[f"{A}@20"] == {"protocol": "bgp", "metric": 20, "via": (str(NH1),)}
        assert routes["10.77.0.0/24"] == {"protocol": "boot", "metric": 20, "via": (str(NH2),)}

        # Withdrawals and a resync to nothing remove ours only.
        assert prog.apply({A: None, IPv4Network("10.77.0.0/24"): None}).deleted == 1
        assert prog.resync({}).deleted == 0
        routes = lab.routes()
        assert routes[str(A)]["protocol"] == "75" and f"{A}@20" not in routes
        assert routes["10.77.0.0/24"]["protocol"] == "boot"


def test_resync_converges_and_removes_stale_routes(lab: Lab) -> None:
    stale = IPv4Network("10.66.0.0/24")
    other_metric = IPv4Network("10.67.0.0/24")
    keep = IPv4Network("10.68.0.0/24")
    lab.ip("node", "route", "add", str(stale), "via", str(NH1), "proto", "bgp", "metric", "20")
    lab.ip(
        "node", "route", "add", str(other_metric), "via", str(NH1), "proto", "bgp", "metric", "30"
    )
    lab.ip(
        "node",
        "route",
        "add",
        str(keep),
        "proto",
        "bgp",
        "metric",
        "20",
        "nexthop",
        "via",
        str(NH1),
        "nexthop",
        "via",
        str(NH2),
    )
    lab.ip(
        "node",
        "route",
        "add",
        str(A),
        "proto",
        "bgp",
        "metric",
        "20",
        "nexthop",
        "via",
        str(NH1),
        "dev",
        "eth0",
        "weight",
        "2",
        "nexthop",
        "via",
        str(NH2),
    )
    lab.ip("node", "route", "add", "10.69.0.0/24", "via", str(NH1), "proto", "static")
    lab.ip("node", "route", "add", "10.70.0.0/24", "via", str(NH2), "proto", "75")
    full = {
        keep: BgpRoute(keep, (NH1, NH2)),
        A: BgpRoute(A, (NH1, NH2)),  # same hops, but the kernel's has weight 2: replaced
        B: BgpRoute(B, (NH2,)),
        other_metric: BgpRoute(other_metric, (NH2,)),
    }
    with BgpRouteProgrammer(lab.path("node")) as prog:
        report = prog.resync(full)
        assert (report.unchanged, report.replaced, report.added, report.deleted) == (1, 1, 2, 2)
        assert report.ok and report.messages == 5
        assert lab.bgp() == {
            str(keep): (str(NH1), str(NH2)),
            str(A): (str(NH1), str(NH2)),
            str(B): (str(NH2),),
            str(other_metric): (str(NH2),),
        }
        shown = lab.ip("node", "route", "show", str(A))
        assert "weight 2" not in shown
        assert not any(r["metric"] == 30 for r in lab.routes().values())
        routes = lab.routes()
        assert routes["10.69.0.0/24"]["protocol"] == "static"
        assert routes["10.70.0.0/24"]["protocol"] == "75"
        assert prog.installed == full
        assert prog.resync(full).changes == 0

    # A second programmer that never resynced finds its adds already there (proto 186):
    # it takes them over by replacing them, rather than failing.
    with BgpRouteProgrammer(lab.path("node")) as fresh:
        report = fresh.apply({B: BgpRoute(B, (NH1,)), keep: BgpRoute(keep, (NH1, NH2))})
        assert (report.replaced, report.ok) == (2, True)
        assert lab.bgp()[str(B)] == (str(NH1),)


def test_refused_routes_are_reported_and_the_rest_applied(lab: Lab) -> None:
    far = IPv4Network("10.88.0.0/24")
    with BgpRouteProgrammer(lab.path("node")) as prog:
        report = prog.apply(
            {
                far: BgpRoute(far, (IPv4Address("192.0.2.1"),)),
                A: BgpRoute(A, (NH1,)),
            }
        )
        assert report.added == 1
        assert [dst for dst, _ in report.failed] == [far]
        reasons = dict(report.failed)
        assert "on a subnet of the programmer's device" in reasons[far]
        assert reasons[far].startswith(f"ip route replace {far} via 192.0.2.1 dev eth0")
        assert lab.bgp() == {str(A): (str(NH1),)}
        assert set(prog.installed) == {A}


def test_missing_namespace_or_device_says_what_to_do(lab: Lab) -> None:
    with pytest.raises(BgpRouteError, match="does not exist"):
        BgpRouteProgrammer("/run/netns/kwtest-bgpr-no-such-ns").apply({})
    with (
        BgpRouteProgrammer(lab.path("node"), device="ens9") as prog,
        pytest.raises(
            BgpRouteError, match=r"device ens9 does not exist .*create the node's underlay link"
        ),
    ):
        prog.apply({A: BgpRoute(A, (NH1,))})
    with BgpRouteProgrammer(lab.path("node")) as prog:
        with pytest.raises(ValueError, match=r"was given for prefix 10\.244\.1\.0/26"):
            prog.apply({A: BgpRoute(B, (NH1,))})
        assert lab.bgp() == {}


def _servers(lab: Lab, port: int) -> dict[str, socket.socket]:
    servers = {}
    for role in ("nh1", "nh2"):
        with entered(lab.path(role)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((str(ANYCAST), port))
        s.setblocking(False)
        servers[role] = s
    return servers


def _count_arrivals(servers: dict[str, socket.socket], expected: int) -> dict[str, int]:
    got = dict.fromkeys(servers, 0)
    by_fd = {s.fileno(): role for role, s in servers.items()}
    deadline = time.monotonic() + 5
    while sum(got.values()) < expected and time.monotonic() < deadline:
        ready, _, _ = select.select(list(servers.values()), [], [], 0.2)
        for s in ready:
            while True:
                try:
                    s.recv(16)
                except BlockingIOError:
                    break
                got[by_fd[s.fileno()]] += 1
    return got


def test_ecmp_route_forwards_over_both_next_hops(lab: Lab) -> None:
    """The node routes the client's flows to 10.99.0.1, held by both next hops: with the
    L4 flow hash, 64 flows from different source ports must land on both of them."""
    lab.ip(
        "node",
        "link",
        "add",
        "cli0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        lab.names["cli"],
    )
    lab.ip("node", "link", "set", "cli0", "up")
    lab.ip("node", "addr", "add", "10.50.0.1/24", "dev", "cli0")
    lab.ip("cli", "link", "set", "eth0", "up")
    lab.ip("cli", "addr", "add", "10.50.0.2/24", "dev", "eth0")
    lab.ip("cli", "route", "add", "default", "via", "10.50.0.1")
    for key in ("net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"):
        subprocess.run(
            ["ip", "netns", "exec", lab.names["node"], "sysctl", "-qw", key], check=True, timeout=10
        )

    dst = IPv4Network(f"{ANYCAST}/32")
    with BgpRouteProgrammer(lab.path("node")) as prog:
        assert prog.apply({dst: BgpRoute(dst, (NH1, NH2))}).added == 1
        servers = _servers(lab, 7000)
        flows = 64
        with entered(lab.path("cli")):
            clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
        try:
            for c in clients:  # each socket gets its own source port: 64 flows
                c.sendto(b"x", (str(ANYCAST), 7000))
            got = _count_arrivals(servers, flows)
        finally:
            for s in [*servers.values(), *clients]:
                s.close()
        assert sum(got.values()) == flows, got
        assert got["nh1"] > 0 and got["nh2"] > 0, f"ECMP did not spread the flows: {got}"

        # Withdraw: the anycast address is unreachable from the client again.
        assert prog.apply({dst: None}).deleted == 1
        with entered(lab.path("cli")):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.settimeout(2)
            # Without IP_RECVERR Linux drops ICMP net-unreachable for UDP (not a hard error).
            probe.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
            probe.connect((str(ANYCAST), 7000))
            probe.send(b"x")
            # The node has no route now: it answers with ICMP net unreachable.
            with pytest.raises(OSError) as info:
                probe.recv(16)
            assert info.value.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
        finally:
            probe.close()
