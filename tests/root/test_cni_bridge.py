"""kubewire CNI plugins on real namespaces, driven through CniRuntime and the shims.

Every namespace is called kwtest-cni-<tag>-*, lives only as long as its test, and
is deleted in a finally block; a module-level check asserts none was left behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kubewire.cni.plugins import bridge, ipam, loopback
from kubewire.cni.plugins.bridge import host_veth_name
from kubewire.cni.protocol import CniError, ErrorCode, NetworkConfigList, parse_conflist
from kubewire.cni.runtime import CniRuntime
from kubewire.cni.server import PluginServer
from kubewire.cni.shim import install_plugins
from kubewire.kernel.netns import create_netns, delete_netns, list_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

REFERENCE_DIR = Path("/usr/lib/cni")
PREFIX = "kwtest-cni-"
_created: set[str] = set()


def ip_json(netns: str, *args: str) -> Any:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out) if out.strip() else []


def ping(netns: str, address: str) -> bool:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "ping", "-c1", "-W1", address], capture_output=True
    )
    return proc.returncode == 0


class CniLab:
    """A node namespace, pod namespaces, installed shims and a runtime; torn down by close()."""

    def __init__(self, tmp: Path, with_server: bool = True):
        self.tag = secrets.token_hex(3)
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.socket = tmp / "run" / "cni.sock"
        self.pods: list[str] = []
        self.server: PluginServer | None = None
        self.node_name = self._netns("node")
        self.node = str(create_netns(self.node_name))
        install_plugins(self.bin, sys.executable, self.socket)
        self.runtime = CniRuntime([self.bin, REFERENCE_DIR], tmp / "cache")
        if with_server:
            self.server = PluginServer(self.socket, max_workers=4)
            self.server.start()

    def _netns(self, suffix: str) -> str:
        name = f"{PREFIX}{self.tag}-{suffix}"
        _created.add(name)
        return name

    def pod(self) -> tuple[str, str]:
        name = self._netns(f"p{len(self.pods)}")
        path = str(create_netns(name))
        self.pods.append(name)
        return name, path

    def conflist(
        self, subnet: str = "10.66.0.0/24", version: str = "1.1.0", **extra: Any
    ) -> NetworkConfigList:
        ipam_type = extra.pop("ipam_type", "kubewire-ipam")
        plugin: dict[str, Any] = {
            "type": "kubewire-bridge",
            "bridge": "kwbr0",
            "isGateway": True,
            "isDefaultGateway": True,
            "hairpinMode": True,
            "mtu": 1400,
            "ipam": {
                "type": ipam_type,
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "10.96.0.0/12"}],
                "dataDir": str(self.tmp / "ipam"),
            },
        }
        plugin.update(extra)
        return parse_conflist({"cniVersion": version, "name": "kwpods", "plugins": [plugin]})

    def loopback(self) -> NetworkConfigList:
        return parse_conflist(
            {"cniVersion": "1.1.0", "name": "kwlo", "plugins": [{"type": "kubewire-loopback"}]}
        )

    def ipam_files(self, network: str = "kwpods") -> list[str]:
        directory = self.tmp / "ipam" / network
        return sorted(p.name for p in directory.iterdir() if p.name[0].isdigit())

    def close(self) -> None:
        try:
            if self.server is not None:
                self.server.stop()
        finally:
            for name in [*self.pods, self.node_name]:
                delete_netns(name)


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., CniLab]]:
    labs: list[CniLab] = []

    def make(with_server: bool = True) -> CniLab:
        lab = CniLab(tmp_path / f"lab{len(labs)}", with_server)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()


@pytest.fixture
def lab(make_lab: Callable[..., CniLab]) -> CniLab:
    return make_lab()


@pytest.fixture(scope="module", autouse=True)
def nothing_leaked() -> Iterator[None]:
    yield
    leaked = [n for n in list_netns(PREFIX) if n in _created]
    for name in leaked:
        delete_netns(name)
    assert leaked == []


def eth0(pod: str) -> dict[str, Any]:
    (link,) = ip_json(pod, "addr", "show", "dev", "eth0")
    return dict(link)


# --- tests -----------------------------------------------------------------------------


def test_add_gives_the_pod_an_address_routes_and_lo(lab: CniLab) -> None:
    pod, path = lab.pod()
    result = lab.runtime.add(lab.conflist(), "pod0", path, "eth0", host_netns=lab.node)
    lab.runtime.add(lab.loopback(), "pod0", path, "lo", host_netns=lab.node)

    assert [(ip.address, ip.gateway, ip.interface) for ip in result.ips] == [
        ("10.66.0.2/24", "10.66.0.1", 2)
    ]
    assert [i.name for i in result.interfaces] == [
        "kwbr0",
        host_veth_name("pod0", "eth0"),
        "eth0",
    ]
    assert result.interfaces[2].sandbox == path
    link = eth0(pod)
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    assert link["address"] == result.interfaces[2].mac
    inet = [a for a in link["addr_info"] if a["family"] == "inet"]
    assert [(a["local"], a["prefixlen"], a["broadcast"]) for a in inet] == [
        ("10.66.0.2", 24, "10.66.0.255")
    ]
    routes = {(r["dst"], r.get("gateway")) for r in ip_json(pod, "route", "show")}
    assert routes == {
        ("default", "10.66.0.1"),
        ("10.96.0.0/12", "10.66.0.1"),
        ("10.66.0.0/24", None),
    }
    (lo,) = ip_json(pod, "link", "show", "dev", "lo")
    assert "UP" in lo["flags"]


def test_pods_on_the_bridge_reach_each_other_and_the_gateway(lab: CniLab) -> None:
    conf = lab.conflist()
    (pod_a, path_a), (_pod_b, path_b) = lab.pod(), lab.pod()
    lab.runtime.add(conf, "a", path_a, "eth0", host_netns=lab.node)
    b = lab.runtime.add(conf, "b", path_b, "eth0", host_netns=lab.node)
    assert ping(pod_a, b.ips[0].ip)
    assert ping(pod_a, "10.66.0.1")

    (port,) = ip_json(lab.node_name, "-d", "link", "show", "dev", host_veth_name("a", "eth0"))
    assert port["master"] == "kwbr0"
    assert port["mtu"] == 1400
    assert port["linkinfo"]["info_slave_data"]["hairpin"] is True
    (bridge,) = ip_json(lab.node_name, "addr", "show", "dev", "kwbr0")
    assert [(a["local"], a["prefixlen"]) for a in bridge["addr_info"] if a["family"] == "inet"] == [
        ("10.66.0.1", 24)
    ]
    forward = subprocess.run(
        ["ip", "netns", "exec", lab.node_name, "sysctl", "-n", "net.ipv4.ip_forward"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert forward == "1"


def test_del_removes_the_veth_and_releases_the_address(lab: CniLab) -> None:
    conf = lab.conflist()
    pod, path = lab.pod()
    lab.runtime.add(conf, "p", path, "eth0", host_netns=lab.node)
    assert lab.ipam_files() == ["10.66.0.2"]
    lab.runtime.delete(conf, "p", path, "eth0", host_netns=lab.node)

    assert lab.ipam_files() == []
    assert lab.runtime.cached_result("kwpods", "p", "eth0") is None
    host_links = [link["ifname"] for link in ip_json(lab.node_name, "link", "show")]
    assert host_links == ["lo", "kwbr0"]
    assert [link["ifname"] for link in ip_json(pod, "link", "show")] == ["lo"]
    lab.runtime.delete(conf, "p", path, "eth0", host_netns=lab.node)  # DEL is idempotent


def test_del_after_the_pod_namespace_is_gone(lab: CniLab) -> None:
    conf = lab.conflist()
    pod, path = lab.pod()
    lab.runtime.add(conf, "gone", path, "eth0", host_netns=lab.node)
    delete_netns(pod)
    lab.runtime.delete(conf, "gone", path, "eth0", host_netns=lab.node)
    assert lab.ipam_files() == []
    links = [link["ifname"] for link in ip_json(lab.node_name, "link", "show")]
    assert host_veth_name("gone", "eth0") not in links


def test_check_passes_then_fails_when_an_address_is_removed(lab: CniLab) -> None:
    conf = lab.conflist()
    pod, path = lab.pod()
    lab.runtime.add(conf, "chk", path, "eth0", host_netns=lab.node)
    lab.runtime.check(conf, "chk", path, "eth0", host_netns=lab.node)
    subprocess.run(["ip", "-n", pod, "addr", "del", "10.66.0.2/24", "dev", "eth0"], check=True)
    with pytest.raises(CniError) as info:
        lab.runtime.check(conf, "chk", path, "eth0", host_netns=lab.node)
    assert info.value.code == ErrorCode.CHECK_FAILED
    assert "address 10.66.0.2/24 is missing from eth0" in info.value.msg


def test_check_notices_a_missing_ipam_reservation(lab: CniLab) -> None:
    conf = lab.conflist()
    _pod, path = lab.pod()
    lab.runtime.add(conf, "chk2", path, "eth0", host_netns=lab.node)
    (lab.tmp / "ipam" / "kwpods" / "10.66.0.2").unlink()
    with pytest.raises(CniError, match=re.escape("10.66.0.2 is not reserved")):
        lab.runtime.check(conf, "chk2", path, "eth0", host_netns=lab.node)


def test_gc_releases_stale_attachments(lab: CniLab) -> None:
    conf = lab.conflist()
    (_a, path_a), (_b, path_b) = lab.pod(), lab.pod()
    lab.runtime.add(conf, "keep", path_a, "eth0", host_netns=lab.node)
    lab.runtime.add(conf, "stale", path_b, "eth0", host_netns=lab.node)
    ghost_cfg = ipam.IpamConfig.from_config(dict(conf.plugins[0].config, name="kwpods"))
    ipam.allocate(ghost_cfg, "ghost", "eth0")  # a reservation nobody cached
    assert lab.ipam_files() == ["10.66.0.2", "10.66.0.3", "10.66.0.4"]

    lab.runtime.gc(conf, [("keep", "eth0")], host_netns=lab.node)

    assert lab.ipam_files() == ["10.66.0.2"]
    links = [link["ifname"] for link in ip_json(lab.node_name, "link", "show")]
    assert host_veth_name("stale", "eth0") not in links
    assert host_veth_name("keep", "eth0") in links
    lab.runtime.check(conf, "keep", path_a, "eth0", host_netns=lab.node)


def test_exhaustion_is_a_clear_error_and_leaves_nothing_behind(lab: CniLab) -> None:
    conf = lab.conflist(subnet="10.67.0.0/30")
    (_p1, path1), (pod2, path2) = lab.pod(), lab.pod()
    lab.runtime.status(conf, host_netns=lab.node)
    lab.runtime.add(conf, "first", path1, "eth0", host_netns=lab.node)
    with pytest.raises(CniError) as info:
        lab.runtime.add(conf, "second", path2, "eth0", host_netns=lab.node)
    assert info.value.code == ErrorCode.NO_ADDRESSES
    assert "no IP addresses available in range set: 10.67.0.1-10.67.0.2" in info.value.msg
    assert info.value.plugin == "kubewire-bridge"

    assert [link["ifname"] for link in ip_json(pod2, "link", "show")] == ["lo"]
    host_links = [link["ifname"] for link in ip_json(lab.node_name, "link", "show")]
    assert host_links == ["lo", "kwbr0", host_veth_name("first", "eth0")]
    assert lab.ipam_files() == ["10.67.0.2"]
    assert lab.runtime.cached_result("kwpods", "second", "eth0") is None
    with pytest.raises(CniError) as status:
        lab.runtime.status(conf, host_netns=lab.node)
    assert status.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE


def test_failure_after_ipam_rolls_back(lab: CniLab) -> None:
    conf = lab.conflist()
    pod, path = lab.pod()
    # Something already sits at eth0 in the pod: the veth cannot get that name.
    subprocess.run(
        ["ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other0"],
        check=True,
    )
    with pytest.raises(CniError, match="already has an interface named eth0"):
        lab.runtime.add(conf, "clash", path, "eth0", host_netns=lab.node)
    assert lab.ipam_files() == []
    host_links = [link["ifname"] for link in ip_json(lab.node_name, "link", "show")]
    assert host_veth_name("clash", "eth0") not in host_links


@pytest.mark.parametrize("with_server", [True, False], ids=["server", "fallback"])
def test_shims_work_with_and_without_the_server(
    make_lab: Callable[..., CniLab], with_server: bool
) -> None:
    lab = make_lab(with_server)
    (pod_a, path_a), (_b, path_b) = lab.pod(), lab.pod()
    conf = lab.conflist()
    lab.runtime.add(conf, "a", path_a, "eth0", host_netns=lab.node)
    b = lab.runtime.add(conf, "b", path_b, "eth0", host_netns=lab.node)
    lab.runtime.add(lab.loopback(), "a", path_a, "lo", host_netns=lab.node)
    assert ping(pod_a, b.ips[0].ip)
    lab.runtime.delete(conf, "b", path_b, "eth0", host_netns=lab.node)
    if with_server:
        assert lab.server is not None and lab.server.served == 4
    else:
        assert not lab.socket.exists()
    assert lab.ipam_files() == ["10.66.0.2"]


@pytest.mark.skipif(not (REFERENCE_DIR / "host-local").exists(), reason="reference plugins missing")
def test_bridge_delegates_to_a_real_ipam_executable(lab: CniLab) -> None:
    conf = lab.conflist(version="1.0.0", ipam_type="host-local")
    pod, path = lab.pod()
    result = lab.runtime.add(conf, "hl", path, "eth0", host_netns=lab.node)
    assert result.ips[0].address == "10.66.0.2/24"
    assert (lab.tmp / "ipam" / "kwpods" / "10.66.0.2").read_bytes() == b"hl\r\neth0"
    lab.runtime.check(conf, "hl", path, "eth0", host_netns=lab.node)
    lab.runtime.delete(conf, "hl", path, "eth0", host_netns=lab.node)
    assert not (lab.tmp / "ipam" / "kwpods" / "10.66.0.2").exists()
    assert [link["ifname"] for link in ip_json(pod, "link", "show")] == ["lo"]


def test_add_throughput_through_shim_and_server(lab: CniLab) -> None:
    """100 ADDs sequentially, then 100 from 4 threads; prints ms per ADD (a measurement)."""
    conf = lab.conflist(subnet="10.68.0.0/22")
    n = 100
    seq_pods = [lab.pod()[1] for _ in range(n)]
    par_pods = [lab.pod()[1] for _ in range(n)]

    start = time.perf_counter()
    seq = [
        lab.runtime.add(conf, f"s{i}", p, "eth0", host_netns=lab.node)
        for i, p in enumerate(seq_pods)
    ]
    sequential = (time.perf_counter() - start) / n

    def add(item: tuple[int, str]) -> Any:
        return lab.runtime.add(conf, f"t{item[0]}", item[1], "eth0", host_netns=lab.node)

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(add, enumerate(par_pods)))
    threaded = (time.perf_counter() - start) / n

    addresses = {r.ips[0].address for r in [*seq, *par]}
    assert len(addresses) == 2 * n
    assert len(lab.ipam_files()) == 2 * n
    report = (
        f"\nCNI ADD through shim+server: {sequential * 1000:.1f} ms/ADD sequential, "
        f"{threaded * 1000:.1f} ms/ADD with 4 threads ({os.cpu_count()} CPUs)"
    )
    print(report)
    (lab.tmp.parent / "cni-add-timing.txt").write_text(report)


def test_plugins_refuse_the_machines_own_namespace(tmp_path: Path) -> None:
    # The IPAM type does not exist, so even a broken guard would fail before any kernel
    # change: this test can never touch the machine's namespace itself.
    conf = {
        "cniVersion": "1.1.0",
        "name": "guard",
        "type": "kubewire-bridge",
        "ipam": {"type": "kwtest-no-such-ipam"},
    }
    env = {
        "CNI_CONTAINERID": "guard",
        "CNI_NETNS": "/proc/2/ns/net",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(tmp_path),
    }
    for command in ("ADD", "DEL"):
        code, out = bridge.run(command, env, json.dumps(conf).encode(), "/proc/2/ns/net")
        error = json.loads(out)
        assert (code, error["code"]) == (1, ErrorCode.INVALID_ENVIRONMENT)
        assert "refusing to use the machine's own network namespace" in error["msg"]
    lo_conf = json.dumps({"cniVersion": "1.1.0", "name": "lo", "type": "kubewire-loopback"})
    code, out = loopback.run("DEL", {**env, "CNI_IFNAME": "lo"}, lo_conf.encode(), "/proc/2/ns/net")
    assert code == 1 and "refusing" in json.loads(out)["msg"]


def test_ipam_default_route_plus_default_gateway_gives_one_default(lab: CniLab) -> None:
    # The lab's own config shape; the reference bridge v1.1.1 fails it with "file exists".
    conf = lab.conflist()
    raw = dict(conf.raw)
    raw["plugins"] = [dict(conf.plugins[0].config)]
    raw["plugins"][0]["ipam"] = dict(raw["plugins"][0]["ipam"], routes=[{"dst": "0.0.0.0/0"}])
    pod, path = lab.pod()
    result = lab.runtime.add(raw, "dflt", path, "eth0", host_netns=lab.node)
    assert [(r.dst, r.gw) for r in result.routes] == [("0.0.0.0/0", None)]
    defaults = [r for r in ip_json(pod, "route", "show") if r["dst"] == "default"]
    assert [r["gateway"] for r in defaults] == ["10.66.0.1"]


def test_dual_stack(lab: CniLab) -> None:
    conf = lab.conflist()
    raw = dict(conf.raw)
    plugin = dict(conf.plugins[0].config)
    plugin["ipam"] = dict(
        plugin["ipam"], ranges=[[{"subnet": "10.66.0.0/24"}], [{"subnet": "fd00:66::/64"}]]
    )
    raw["plugins"] = [plugin]
    (pod_a, path_a), (_b, path_b) = lab.pod(), lab.pod()
    lab.runtime.add(raw, "a", path_a, "eth0", host_netns=lab.node)
    b = lab.runtime.add(raw, "b", path_b, "eth0", host_netns=lab.node)
    assert [ip.address for ip in b.ips] == ["10.66.0.3/24", "fd00:66::3/64"]
    inet6 = [a for a in eth0(pod_a)["addr_info"] if a["family"] == "inet6"]
    global6 = [a for a in inet6 if a["scope"] == "global"]
    assert [(a["local"], a.get("tentative", False)) for a in global6] == [("fd00:66::2", False)]
    defaults6 = ip_json(pod_a, "-6", "route", "show", "default")
    assert [r["gateway"] for r in defaults6] == ["fd00:66::1"]
    assert ping(pod_a, "fd00:66::3")
