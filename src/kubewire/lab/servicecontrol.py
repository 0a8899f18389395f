"""Service IP/port allocation and the EndpointSlice controller, as one reconcile loop.

Separate from the workload control plane because it must react to pod *status* (a pod
becoming ready or getting its IP changes endpoints), which the workload loop ignores on
purpose. Both sides are pure functions in `kubewire.controllers`; this loop only feeds them
the store and writes back the differences.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.controllers.endpointslices import compute_endpoint_slices
from kubewire.controllers.services import allocate_services
from kubewire.store.store import ObjectStore, key_of

log = logging.getLogger(__name__)

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
WATCHED = ("Service", "Pod", "EndpointSlice")


def _managed(sl: dict[str, Any]) -> bool:
    return bool(sl["metadata"].get("labels", {}).get(MANAGED_BY) == CONTROLLER_NAME)


def _content(obj: dict[str, Any]) -> Any:
    return {k: v for k, v in obj.items() if k != "metadata"}, \
        obj["metadata"].get("labels"), obj["metadata"].get("annotations")


class ServiceController:
    def __init__(self, store: ObjectStore, spec: ClusterSpec) -> None:
        self.store = store
        self.spec = spec
        self.problems: dict[str, str] = {}
        self.warnings: list[str] = []
        self.explanations: dict[str, list[str]] = {}
        self._dirty = asyncio.Event()
        # Namespaces holding a Service with a selector, as of the last pass: a pod event
        # elsewhere cannot change any endpoint (None: not known yet).
        self._selecting: frozenset[str] | None = None

    def busy(self) -> bool:
        return self._dirty.is_set()

    async def run(self) -> None:
        watch = self.store.watch(WATCHED)
        pump = asyncio.create_task(self._pump(watch))
        try:
            while True:
                await self._dirty.wait()
                # Coalesce a burst of pod status writes (1,000 pods starting) into few passes.
                await asyncio.sleep(0.05)
                self._dirty.clear()
                try:
                    self.reconcile()
                except Exception:
                    log.exception("service reconcile failed")
        finally:
            pump.cancel()
            watch.close()

    async def _pump(self, watch: Any) -> None:
        async for event in watch:
            if any(self._matters(ev.obj) for ev in [event, *watch.drain()]):
                self._dirty.set()

    def _matters(self, obj: dict[str, Any]) -> bool:
        return (obj["kind"] != "Pod" or self._selecting is None
                or obj["metadata"]["namespace"] in self._selecting)

    def reconcile(self) -> None:
        services = self.store.list("Service")
        if not services and not any(_managed(s) for s in self.store.list("EndpointSlice")):
            self._selecting = frozenset()
            return  # nothing to allocate or to keep endpoints for (a lab's start-up, often)
        allocation = allocate_services(services, self.spec.service_cidr,
                                       self.spec.load_balancer_cidr, existing=services)
        self.problems, self.warnings = dict(allocation.problems), list(allocation.warnings)
        for svc in allocation.services:
            current = self.store.get(*key_of(svc))
            if current is None:
                continue
            if svc.get("spec") != current.get("spec"):
                self.store.put({**current, "spec": svc["spec"]})
            if svc.get("status", {}) != current.get("status", {}):
                self.store.update_status(*key_of(svc), svc.get("status", {}))
        services = self.store.list("Service")
        # Only pods in a namespace with a selecting Service can be endpoints: a lab starting
        # 1,000 pods next to kube-system/kube-dns alone should not rescan them every pass.
        selecting = frozenset(s["metadata"]["namespace"] for s in services
                              if (s.get("spec") or {}).get("selector"))
        self._selecting = selecting
        pods = [p for ns in sorted(selecting) for p in self.store.list("Pod", ns)]
        result = compute_endpoint_slices(services, pods, self.store.list("EndpointSlice"))
        self.explanations = dict(result.explanations)
        wanted = {key_of(s): s for s in result.slices if _managed(s)}
        for sl in self.store.list("EndpointSlice"):
            if _managed(sl) and key_of(sl) not in wanted:
                self.store.delete(*key_of(sl))
        for key, sl in wanted.items():
            have = self.store.get(*key)
            if have is None or _content(have) != _content(sl):
                self.store.put(sl)

    def defaulted(self, service: dict[str, Any]) -> dict[str, Any]:
        """The Service as the store will hold it: defaults filled and allocations kept.

        Stands in for kubectl's three-way merge: re-applying a manifest that does not
        mention the clusterIP or nodePorts keeps the allocated ones instead of churning.
        """
        others = [s for s in self.store.list("Service") if key_of(s) != key_of(service)]
        current = self.store.get(*key_of(service))
        existing = [*others, *([current] if current else [])]
        allocation = allocate_services([*others, service], self.spec.service_cidr,
                                       self.spec.load_balancer_cidr, existing=existing)
        mine = [s for s in allocation.services if key_of(s) == key_of(service)]
        return {**service, "spec": mine[0]["spec"]} if mine else service

    def admission_problems(self, incoming: list[dict[str, Any]]) -> list[str]:
        """Problems the allocator finds in `incoming` Services, against the store's."""
        merged = {key_of(s): s for s in self.store.list("Service")}
        new_keys = {key_of(s) for s in incoming if s["kind"] == "Service"}
        merged.update((key_of(s), s) for s in incoming if s["kind"] == "Service")
        allocation = allocate_services(list(merged.values()), self.spec.service_cidr,
                                       self.spec.load_balancer_cidr,
                                       existing=self.store.list("Service"))
        return [f"service/{key.split('/', 1)[1]}: {msg}" if "/" in key else msg
                for key, msg in sorted(allocation.problems.items())
                if any(f"{k[1]}/{k[2]}" == key for k in new_keys)]
