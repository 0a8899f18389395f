from __future__ import annotations

import pytest

from kubewire.lab import names


def test_names_follow_the_documented_scheme() -> None:
    assert names.underlay_netns("demo") == "kw-demo-underlay"
    assert names.node_netns("demo", "node-1") == "kw-demo-node-node-1"
    assert names.pod_netns("demo", "shop", "web-0") == "kw-demo-pod-shop_web-0"
    assert names.lab_prefix("demo") == "kw-demo-"


def test_long_pod_names_are_hashed_to_fit_a_file_name() -> None:
    long = "p" * 253
    name = names.pod_netns("demo", "n" * 63, long)
    assert len(name) <= names.MAX_NETNS_NAME
    assert name.startswith("kw-demo-pod-")
    assert name != names.pod_netns("demo", "n" * 63, long[:-1] + "q")


@pytest.mark.parametrize("node", ["node-1", "a" * 253, "worker.example.com"])
def test_underlay_ports_fit_the_kernels_15_byte_interface_names(node: str) -> None:
    port = names.underlay_port(node)
    assert len(port) <= 15 and port.startswith("ul")


def test_container_ids_differ_per_pod_incarnation() -> None:
    a = names.container_id("demo", "default", "web-0", "uid-1")
    b = names.container_id("demo", "default", "web-0", "uid-2")
    assert a != b and len(a) == 32
