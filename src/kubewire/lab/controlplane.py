"""The control plane: kube-controller-manager and kube-scheduler, as one reconcile loop.

It watches the store, recomputes the derived objects (ReplicaSets, Pods, node pod CIDRs,
bindings) with the pure functions in `kubewire.controllers`, and writes only the
differences. Recomputing everything is deliberate: expansion of 1,000 pods takes a few
milliseconds, and a full recompute cannot drift the way incremental bookkeeping can.
Bursts of events are coalesced into one pass.
"""

from __future__ import annotations

import asyncio
import logging
from ipaddress import IPv4Network
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.controllers import nodes as node_ctl
from kubewire.controllers import scheduler, workloads
from kubewire.controllers.capacity import capacity_status
from kubewire.store.store import ObjectStore, key_of

log = logging.getLogger(__name__)

WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")
WATCHED = frozenset({*WORKLOAD_KINDS, "Pod", "Node", "Service", "Namespace"})


def _owned(obj: dict[str, Any]) -> bool:
    return any(ref.get("controller") for ref in obj["metadata"].get("ownerReferences", []))


def _pod_key(pod: dict[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _comparable(obj: dict[str, Any]) -> Any:
    spec = dict(obj.get("spec", {}))
    spec.pop("nodeName", None)
    return (spec, obj["metadata"].get("labels", {}))


class ControlPlane:
    def __init__(self, store: ObjectStore, spec: ClusterSpec) -> None:
        self.store = store
        self.spec = spec
        self.warnings: list[str] = []
        self.unschedulable: dict[str, str] = {}
        self._dirty = asyncio.Event()

    async def run(self) -> None:
        watch = self.store.watch(WATCHED)
        waiter = asyncio.create_task(self._pump(watch))
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                # Let a burst of writes (an apply of many objects) land before one pass.
                await asyncio.sleep(0.005)
                self._dirty.clear()
                try:
                    self.reconcile()
                except Exception:
                    log.exception("reconcile failed")
        finally:
            waiter.cancel()
            watch.close()

    def busy(self) -> bool:
        return self._dirty.is_set()

    async def _pump(self, watch: Any) -> None:
        # Status writes (every pod becoming ready) cannot change what the controllers
        # want, and a full pass costs ~0.1 s at 1,000 pods: skip events that changed
        # neither spec (generation) nor labels.
        seen: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        async for event in watch:
            relevant = False
            for ev in [event, *watch.drain()]:
                key = key_of(ev.obj)
                meta = ev.obj["metadata"]
                if ev.type == "DELETED":
                    seen.pop(key, None)
                    relevant = True
                    continue
                fingerprint = (meta.get("generation"), meta.get("labels"))
                if seen.get(key) != fingerprint:
                    seen[key] = fingerprint
                    relevant = True
            if relevant:
                self._dirty.set()

    # -- one pass ------------------------------------------------------------
    def reconcile(self) -> None:
        nodes = self._allocate_node_cidrs()
        self._sync_workloads(nodes)
        self._bind_pods(nodes)

    def _allocate_node_cidrs(self) -> list[dict[str, Any]]:
        nodes = self.store.list("Node")
        existing = {
            n["metadata"]["name"]: IPv4Network(n["spec"]["podCIDR"])
            for n in nodes
            if n.get("spec", {}).get("podCIDR")
        }
        names = [n["metadata"]["name"] for n in nodes]
        wanted = node_ctl.allocate_pod_cidrs(
            self.spec.pod_cidr, self.spec.node_cidr_mask_size, names, existing
        )
        for node in nodes:
            cidr = str(wanted[node["metadata"]["name"]])
            if node.get("spec", {}).get("podCIDR") != cidr:
                pods = capacity_status(cidr)
                updated = {**node, "spec": {**node.get("spec", {}), "podCIDR": cidr,
                                           "podCIDRs": [cidr]},
                           "status": {**node.get("status", {}), "capacity": pods,
                                      "allocatable": pods}}
                self.store.put(updated)
        return self.store.list("Node")

    def _sync_workloads(self, nodes: list[dict[str, Any]]) -> None:
        sources = [o for kind in WORKLOAD_KINDS for o in self.store.list(kind) if not _owned(o)]
        # Plain pods go in too, so generated names never collide with them; they come back
        # out unchanged and are filtered below (the store already holds them).
        plain_pods = [p for p in self.store.list("Pod") if not _owned(p)]
        result = workloads.expand([*sources, *plain_pods], nodes)
        generated = [p for p in result.pods if _owned(p)]
        services = self.store.list("Service")
        self.warnings = [*result.warnings,
                         *workloads.service_warnings(services, [*generated, *plain_pods])]
        self._converge("ReplicaSet", result.replicasets, owned_only=True)
        self._converge("Pod", generated, owned_only=True)

    def _converge(self, kind: str, desired: list[dict[str, Any]], owned_only: bool) -> None:
        current = {key_of(o): o for o in self.store.list(kind) if not owned_only or _owned(o)}
        wanted = {key_of(o): o for o in desired}
        for key in current:
            if key not in wanted:
                self.store.delete(*key)
        for key, obj in wanted.items():
            have = current.get(key)
            if have is None:
                self.store.put(obj)
            elif _comparable(have) != _comparable(obj):
                # Pod specs are immutable in Kubernetes: a changed pod is a new pod.
                if kind == "Pod":
                    self.store.delete(*key)
                    self.store.put(obj)
                else:
                    self.store.put({**obj, "status": have.get("status", {})})

    def _bind_pods(self, nodes: list[dict[str, Any]]) -> None:
        pods = self.store.list("Pod")
        bound = {_pod_key(p): p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")}
        ready_nodes = [n for n in nodes if n.get("spec", {}).get("podCIDR")]
        result = scheduler.schedule(pods, ready_nodes, bound)
        self.unschedulable = dict(result.unschedulable)
        for pod in pods:
            key = _pod_key(pod)
            target = result.assignments.get(key)
            if target and pod["spec"].get("nodeName") != target:
                self.store.put({**pod, "spec": {**pod["spec"], "nodeName": target}})
            if key in self.unschedulable:
                status = {
                    "phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "False",
                                    "reason": "Unschedulable",
                                    "message": self.unschedulable[key]}],
                }
                if pod.get("status") != status:
                    ns, name = key.split("/", 1)
                    self.store.update_status("Pod", ns, name, status)
