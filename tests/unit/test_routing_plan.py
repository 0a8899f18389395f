"""The diff/plan logic of the applier, run against the validating fake kernel."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubewire.routing import (
    BACKENDS,
    Delta,
    DesiredNodeNetwork,
    KernelSupportError,
    Link,
    Neighbour,
    NodeInfo,
    Route,
    SyncError,
)
from kubewire.routing.apply import OWNER_ALIAS, sync_with
from kubewire.routing.fake import DEFAULT_KINDS, FakeDevice, FakeKernel
from kubewire.routing.plan import Verb, plan_sync

NODES = tuple(
    NodeInfo.for_node(f"node-{i}", f"172.18.0.{i + 1}", f"10.244.{i}.0/24") for i in range(1, 6)
)
SELF = NODES[0]

# Backends that program static routes; bgp leaves routing to its speaker.
STATIC_BACKENDS = sorted(name for name in BACKENDS if name != "bgp")


def node_kernel(supported_kinds: frozenset[str] = DEFAULT_KINDS) -> FakeKernel:
    return FakeKernel(
        devices={"lo": ("127.0.0.1/8",), "eth0": ("172.18.0.2/16",), "cni0": ("10.244.1.1/24",)},
        supported_kinds=supported_kinds,
    )


def compile_for(backend: str, nodes: tuple[NodeInfo, ...] = NODES[:3]) -> DesiredNodeNetwork:
    return BACKENDS[backend].compile(SELF, nodes, 1500)


def assert_converged(kernel: FakeKernel, desired: DesiredNodeNetwork) -> None:
    assert kernel.read_state(frozenset()).as_desired() == desired
    again = sync_with(kernel, desired)
    assert again.changes == 0, again


def test_vxlan_initial_sync_then_noop() -> None:
    kernel = node_kernel()
    desired = compile_for("vxlan")
    report = sync_with(kernel, desired)
    assert report.links == Delta(added=1)
    assert report.routes == Delta(added=2)
    assert report.neighbours == Delta(added=2)
    assert report.fdb == Delta(added=2)
    assert report.changes == 7
    assert_converged(kernel, desired)


def test_hostgw_initial_sync_then_noop() -> None:
    kernel = node_kernel()
    desired = compile_for("host-gw")
    report = sync_with(kernel, desired)
    assert (report.links, report.routes) == (Delta(), Delta(added=2))
    assert report.changes == 2
    assert_converged(kernel, desired)


@pytest.mark.parametrize("backend", STATIC_BACKENDS)
def test_node_leaving_and_joining_is_incremental(backend: str) -> None:
    kernel = node_kernel()
    sync_with(kernel, compile_for(backend, NODES))
    per_node = 3 if backend == "vxlan" else 1

    leave = sync_with(kernel, compile_for(backend, NODES[:4]))
    assert leave.changes == per_node
    assert leave.routes == Delta(removed=1)
    assert_converged(kernel, compile_for(backend, NODES[:4]))

    join = sync_with(kernel, compile_for(backend, NODES))
    assert join.changes == per_node
    assert join.routes == Delta(added=1)
    assert_converged(kernel, compile_for(backend, NODES))


def test_switch_vxlan_to_hostgw_and_back() -> None:
    kernel = node_kernel()
    sync_with(kernel, compile_for("vxlan"))

    to_hostgw = sync_with(kernel, compile_for("host-gw"))
    assert to_hostgw.links == Delta(removed=1)
    assert to_hostgw.neighbours == Delta(removed=2)
    assert to_hostgw.fdb == Delta(removed=2)
    assert to_hostgw.routes == Delta(updated=2)
    assert "flannel.1" not in kernel.links
    assert_converged(kernel, compile_for("host-gw"))

    back = sync_with(kernel, compile_for("vxlan"))
    assert back.links == Delta(added=1)
    assert back.routes == Delta(updated=2)
    assert_converged(kernel, compile_for("vxlan"))


def test_empty_desired_state_removes_everything_owned() -> None:
    kernel = node_kernel()
    sync_with(kernel, compile_for("vxlan"))
    report = sync_with(kernel, DesiredNodeNetwork())
    assert report.links == Delta(removed=1)
    assert set(kernel.links) == {"lo", "eth0", "cni0"}
    assert kernel.routes == {} and kernel.neighbours == {} and kernel.fdb == set()


def test_drift_is_repaired_in_place() -> None:
    kernel = node_kernel()
    desired = compile_for("vxlan")
    sync_with(kernel, desired)
    vtep = kernel.links["flannel.1"]
    vtep.link = replace(vtep.link, mtu=1500, addresses=("10.9.9.9/32",))
    vtep.up = False
    stale = Neighbour("10.244.2.0", "0e:de:ad:be:ef:00", "flannel.1")
    kernel.neighbours[("flannel.1", "10.244.2.0")] = stale

    report = sync_with(kernel, desired)
    assert report.links == Delta(updated=1)
    assert report.neighbours == Delta(updated=1)
    assert report.changes == 2
    assert kernel.links["flannel.1"].up
    assert_converged(kernel, desired)


def test_mac_drift_reprograms_the_flushed_neighbours() -> None:
    kernel = node_kernel()
    desired = compile_for("vxlan")
    sync_with(kernel, desired)
    kernel.set_mac("flannel.1", "0e:de:ad:00:00:01")
    kernel.neighbours[("flannel.1", "10.244.2.0")] = desired.neighbours[0]  # stale survivor
    report = sync_with(kernel, desired)
    assert report.links == Delta(updated=1)
    assert report.neighbours == Delta(added=2)
    assert_converged(kernel, desired)


def test_downed_link_comes_back_with_its_routes() -> None:
    kernel = node_kernel()
    desired = compile_for("vxlan")
    sync_with(kernel, desired)
    kernel.set_down("flannel.1")
    report = sync_with(kernel, desired)
    assert report.links == Delta(updated=1)
    assert (report.routes, report.neighbours, report.fdb) == (
        Delta(added=2),
        Delta(added=2),
        Delta(),
    )
    assert_converged(kernel, desired)


def test_changed_vxlan_attributes_recreate_the_device() -> None:
    kernel = node_kernel()
    sync_with(kernel, compile_for("vxlan"))
    moved = replace(SELF, underlay_ip="172.18.0.200")
    nodes = (moved, *NODES[1:3])
    desired = BACKENDS["vxlan"].compile(moved, nodes, 1500)
    report = sync_with(kernel, desired)
    assert report.links == Delta(added=1, removed=1)
    # Everything on the old device vanished with it and is programmed again.
    assert report.neighbours == Delta(added=2)
    assert report.fdb == Delta(added=2)
    assert report.routes == Delta(updated=2)
    assert_converged(kernel, desired)


def test_foreign_link_with_the_wanted_name_is_adopted_or_replaced() -> None:
    kernel = node_kernel()
    kernel.links["flannel.1"] = FakeDevice(Link("flannel.1", "bridge", 1500))
    desired = compile_for("vxlan")
    report = sync_with(kernel, desired)
    assert report.links == Delta(added=1, removed=1)
    assert kernel.links["flannel.1"].alias == OWNER_ALIAS
    assert_converged(kernel, desired)


def test_foreign_objects_are_left_alone() -> None:
    kernel = node_kernel()
    kernel.foreign_routes["0.0.0.0/0"] = Route("0.0.0.0/0", "172.18.0.1", "eth0")
    kernel.links["vxlan.calico"] = FakeDevice(Link("vxlan.calico", "vxlan", 1450))
    sync_with(kernel, compile_for("vxlan"))
    sync_with(kernel, DesiredNodeNetwork())
    assert "vxlan.calico" in kernel.links
    assert "0.0.0.0/0" in kernel.foreign_routes


def test_missing_vxlan_support_is_a_clear_error() -> None:
    kernel = node_kernel(supported_kinds=frozenset({"bridge", "veth"}))
    with pytest.raises(KernelSupportError) as info:
        sync_with(kernel, compile_for("vxlan"))
    assert str(info.value).startswith("this kernel has no vxlan support (CONFIG_VXLAN)")


def test_hostgw_gateway_off_the_segment_changes_nothing() -> None:
    kernel = node_kernel()
    far = NodeInfo.for_node("far", "192.168.7.7", "10.244.77.0/24")
    with pytest.raises(SyncError, match="one L2 segment"):
        sync_with(kernel, compile_for("host-gw", (*NODES[:3], far)))
    assert kernel.executed == []


def test_missing_underlay_device_changes_nothing() -> None:
    kernel = FakeKernel(devices={"lo": ("127.0.0.1/8",)})
    with pytest.raises(SyncError, match="underlay device eth0"):
        sync_with(kernel, compile_for("vxlan"))
    with pytest.raises(SyncError, match="does not exist"):
        sync_with(kernel, compile_for("host-gw"))
    assert kernel.executed == []


def test_plan_order_deletes_before_adds_and_routes_last() -> None:
    kernel = node_kernel()
    sync_with(kernel, compile_for("host-gw"))
    plan = plan_sync(kernel.read_state(frozenset({"flannel.1"})), compile_for("vxlan"))
    kinds = [(op.verb, type(op.obj).__name__) for op in plan.ops]
    assert kinds[0] == (Verb.ADD, "Link")
    assert kinds[-2:] == [(Verb.UPDATE, "Route")] * 2


node_sets = st.sets(st.integers(min_value=1, max_value=len(NODES) - 1), max_size=4)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(sorted(BACKENDS)), node_sets), max_size=6))
def test_any_sequence_of_syncs_converges(steps: list[tuple[str, set[int]]]) -> None:
    kernel = node_kernel()
    for backend, others in steps:
        nodes = (SELF, *(NODES[i] for i in sorted(others)))
        desired = BACKENDS[backend].compile(SELF, nodes, 1500)
        sync_with(kernel, desired)
        assert_converged(kernel, desired)
