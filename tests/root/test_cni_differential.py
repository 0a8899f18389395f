"""Differential test: kubewire's bridge/ipam/loopback against the reference CNI plugins.

The same configuration shape runs once with the reference plugins from
/usr/lib/cni (bridge + host-local + loopback, spec 1.0.0) and once with ours, each
in its own node namespace with two pods. Results and kernel state must match once
names that are random by design (MACs, the host veth name, sandbox paths) are
normalised.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubewire.cni.protocol import parse_conflist
from kubewire.cni.runtime import CniRuntime
from kubewire.cni.server import PluginServer
from kubewire.cni.shim import install_plugins
from kubewire.kernel.netns import create_netns, delete_netns, list_netns

REFERENCE_DIR = Path("/usr/lib/cni")
PREFIX = "kwtest-cni-"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
    pytest.mark.skipif(
        not all((REFERENCE_DIR / p).exists() for p in ("bridge", "host-local", "loopback")),
        reason="reference CNI plugins (containernetworking-plugins) not installed",
    ),
]

FLAVOURS = {
    "reference": {"bridge": "bridge", "ipam": "host-local", "loopback": "loopback"},
    "kubewire": {
        "bridge": "kubewire-bridge",
        "ipam": "kubewire-ipam",
        "loopback": "kubewire-loopback",
    },
}


def ip_json(netns: str, *args: str) -> Any:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out) if out.strip() else []


class Side:
    """One flavour's node with two pods, all added through CniRuntime."""

    def __init__(self, flavour: str, tmp: Path, server_socket: Path, shape: dict[str, Any]):
        self.flavour = flavour
        self.tmp = tmp
        self.tag = f"{PREFIX}{secrets.token_hex(3)}-{flavour[:3]}"
        self.names = [f"{self.tag}-node", f"{self.tag}-p0", f"{self.tag}-p1"]
        self.paths: list[str] = []
        for name in self.names:
            self.paths.append(str(create_netns(name)))
        types = FLAVOURS[flavour]
        self.net = parse_conflist(
            {
                "cniVersion": "1.0.0",
                "name": "diffnet",
                "plugins": [
                    {
                        "type": types["bridge"],
                        "bridge": "kwdiff0",
                        **shape["bridge"],
                        "ipam": {
                            "type": types["ipam"],
                            "ranges": [[{"subnet": "10.77.0.0/24"}]],
                            "routes": shape["routes"],
                            "dataDir": str(tmp / "ipam"),
                        },
                    }
                ],
            }
        )
        self.lo = parse_conflist(
            {"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": types["loopback"]}]}
        )
        dirs = [REFERENCE_DIR] if flavour == "reference" else [tmp / "bin"]
        if flavour == "kubewire":
            install_plugins(tmp / "bin", sys.executable, server_socket)
        self.runtime = CniRuntime(dirs, tmp / "cache")
        self.results: list[dict[str, Any]] = []
        self.lo_results: list[dict[str, Any]] = []

    @property
    def node(self) -> str:
        return self.names[0]

    @property
    def pods(self) -> list[str]:
        return self.names[1:]

    def add_all(self) -> None:
        for i, path in enumerate(self.paths[1:]):
            result = self.runtime.add(self.net, f"pod{i}", path, "eth0", host_netns=self.paths[0])
            self.results.append(result.to_wire("1.0.0"))
            lo = self.runtime.add(self.lo, f"pod{i}", path, "lo", host_netns=self.paths[0])
            self.lo_results.append(lo.to_wire("1.0.0"))

    def delete_all(self) -> None:
        for i, path in enumerate(self.paths[1:]):
            self.runtime.delete(self.net, f"pod{i}", path, "eth0", host_netns=self.paths[0])
            self.runtime.delete(self.lo, f"pod{i}", path, "lo", host_netns=self.paths[0])

    def close(self) -> None:
        for name in reversed(self.names):
            delete_netns(name)

    # --- normalised views ----------------------------------------------------------

    def normal_results(self) -> list[Any]:
        return [_normal_result(r, self.paths) for r in self.results + self.lo_results]

    def pod_state(self, pod: str) -> dict[str, Any]:
        links = {}
        for link in ip_json(pod, "addr", "show"):
            links[link["ifname"]] = {
                "mtu": link["mtu"],
                "flags": sorted(link["flags"]),
                "link_type": link.get("link_type"),
                "inet": sorted(
                    (a["local"], a["prefixlen"], a.get("broadcast"), a.get("scope"))
                    for a in link["addr_info"]
                    if a["family"] == "inet"
                ),
                "inet6_scopes": sorted(
                    a["scope"] for a in link["addr_info"] if a["family"] == "inet6"
                ),
            }
        routes = sorted(
            json.dumps({k: v for k, v in r.items() if k != "flags"}, sort_keys=True)
            for r in ip_json(pod, "route", "show")
        )
        return {"links": links, "routes": routes}

    def node_state(self) -> dict[str, Any]:
        (bridge,) = ip_json(self.node, "addr", "show", "dev", "kwdiff0")
        ports = [
            {
                "master": link.get("master"),
                "mtu": link["mtu"],
                "flags": sorted(link["flags"]),
                "hairpin": link["linkinfo"]["info_slave_data"]["hairpin"],
                "kind": link["linkinfo"]["info_kind"],
            }
            for link in ip_json(self.node, "-d", "link", "show")
            if link.get("master") == "kwdiff0"
        ]
        forward = subprocess.run(
            ["ip", "netns", "exec", self.node, "sysctl", "-n", "net.ipv4.ip_forward"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {
            "bridge_mtu": bridge["mtu"],
            "bridge_flags": sorted(bridge["flags"]),
            "bridge_inet": sorted(
                (a["local"], a["prefixlen"], a.get("broadcast"))
                for a in bridge["addr_info"]
                if a["family"] == "inet"
            ),
            "ports": ports,
            "ip_forward": forward,
            "node_routes": sorted(
                json.dumps(r, sort_keys=True) for r in ip_json(self.node, "route", "show")
            ),
        }

    def ipam_files(self) -> list[str]:
        directory = self.tmp / "ipam" / "diffnet"
        return sorted(p.name for p in directory.iterdir() if p.name[0].isdigit())


def _normal_result(result: dict[str, Any], paths: list[str]) -> Any:
    """Replace what is random by design with its role."""
    text = json.dumps(result)
    for i, path in enumerate(paths[1:]):
        text = text.replace(json.dumps(path), json.dumps(f"<pod{i}>"))
    out = json.loads(text)
    for n, iface in enumerate(out.get("interfaces", [])):
        if iface.get("mac") and iface["mac"] != "00:00:00:00:00:00":
            iface["mac"] = "<mac>"
        if n == 1 and iface["name"].startswith("veth"):
            iface["name"] = "<host-veth>"
    return out


SHAPES: dict[str, dict[str, Any]] = {
    # What the lab uses, with a service-CIDR route to show route handling.
    "gateway": {
        "bridge": {"isGateway": True, "isDefaultGateway": True, "hairpinMode": True, "mtu": 1400},
        "routes": [{"dst": "10.96.0.0/12"}],
    },
    # Defaults everywhere: no MTU, no hairpin, a gateway address but no default route.
    "plain": {"bridge": {"isGateway": True}, "routes": []},
}


@pytest.fixture(params=sorted(SHAPES))
def sides(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Side]]:
    shape = SHAPES[request.param]
    made: dict[str, Side] = {}
    server = PluginServer(tmp_path / "cni.sock", max_workers=4)
    server.start()
    try:
        for flavour in FLAVOURS:
            made[flavour] = Side(flavour, tmp_path / flavour, server.socket_path, shape)
        yield made
    finally:
        server.stop()
        for side in made.values():
            side.close()
        leaked = [n for n in list_netns(PREFIX) if any(n in s.names for s in made.values())]
        assert leaked == []


def test_results_and_kernel_state_match_the_reference(sides: dict[str, Side]) -> None:
    ref, ours = sides["reference"], sides["kubewire"]
    for side in (ref, ours):
        side.add_all()

    assert ours.normal_results() == ref.normal_results()
    # Spot-check the shape too, so a shared mistake cannot hide behind equality.
    first = ours.normal_results()[0]
    assert [i["name"] for i in first["interfaces"]] == ["kwdiff0", "<host-veth>", "eth0"]
    assert first["ips"] == [{"interface": 2, "address": "10.77.0.2/24", "gateway": "10.77.0.1"}]
    if ours.net.plugins[0].config.get("isDefaultGateway"):
        assert first["routes"] == [
            {"dst": "10.96.0.0/12"},
            {"dst": "0.0.0.0/0", "gw": "10.77.0.1"},
        ]
    else:
        assert "routes" not in first

    for ref_pod, our_pod in zip(ref.pods, ours.pods, strict=True):
        assert ours.pod_state(our_pod) == ref.pod_state(ref_pod)
    assert ours.node_state() == ref.node_state()
    assert ours.ipam_files() == ref.ipam_files() == ["10.77.0.2", "10.77.0.3"]

    for side in (ref, ours):
        assert (
            subprocess.run(
                ["ip", "netns", "exec", side.pods[0], "ping", "-c1", "-W1", "10.77.0.3"],
                capture_output=True,
            ).returncode
            == 0
        ), f"{side.flavour}: pod0 cannot reach pod1"

    for side in (ref, ours):
        side.delete_all()
    assert ours.ipam_files() == ref.ipam_files() == []
    for ref_pod, our_pod in zip(ref.pods, ours.pods, strict=True):
        assert ours.pod_state(our_pod) == ref.pod_state(ref_pod)
    assert ours.node_state()["ports"] == ref.node_state()["ports"] == []
