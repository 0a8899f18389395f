"""The network policy agent of one node: NetworkPolicy -> this node's nftables table.

It lists and watches NetworkPolicies, Pods and Namespaces through ``StoreClient`` (the
watch starts with every existing object, as an informer's list does), keeps the cut-down
views the compiler reads, and on every change that matters recompiles the node's table
with ``kubewire.policy.compile_policy`` and applies it with one ``nft -f -`` transaction
(``PolicySyncer``). A change is a policy event, or a pod or namespace whose *view* changed
(address, node, labels, named ports, phase): the many status updates that change none of
these (readiness, restarts) cost a dictionary comparison and no sync.

Bursts coalesce: events set a flag, the sync loop waits ``COALESCE_SECONDS`` and then
compiles once from the latest state. Every ``RESYNC_SECONDS`` the table is replaced as a
whole, which repairs hand edits; a refused transaction keeps the previous rules and is
retried after ``RETRY_SECONDS``. Until the first NetworkPolicy exists there is no table
at all, and it is deleted again when the last one goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from kubewire.lab.policysync import PolicySyncer, PolicySyncError, PolicySyncReport
from kubewire.policy import (
    NamespaceView,
    PodView,
    PolicyNode,
    PolicyView,
    Ruleset,
    compile_policy,
)
from kubewire.policy.errors import PolicyInputError
from kubewire.store.store import StoreClient, WatchEvent

log = logging.getLogger(__name__)

KINDS = ("NetworkPolicy", "Pod", "Namespace")


class PolicyAgent:
    COALESCE_SECONDS = 0.02
    RESYNC_SECONDS = 30.0
    RETRY_SECONDS = 1.0

    def __init__(self, node: str, client: StoreClient, netns_path: Path | str | None = None,
                 executor: Executor | None = None, *, syncer: PolicySyncer | None = None,
                 on_sync: Callable[[PolicySyncReport], None] | None = None) -> None:
        self.node = PolicyNode(node)
        self.client = client
        self.executor = executor
        self.syncer = syncer if syncer is not None else PolicySyncer(netns_path)
        self.on_sync = on_sync
        self.policies: dict[tuple[str, str], PolicyView] = {}
        self.rejected: dict[tuple[str, str], str] = {}  # policies that failed conversion
        self.pods: dict[tuple[str, str], PodView] = {}
        self.namespaces: dict[str, NamespaceView] = {}
        self.warnings: tuple[str, ...] = ()
        self.syncs = 0  # transactions the kernel accepted (for tests and status)
        self._dirty = asyncio.Event()
        self._force_full = False
        # With no policy and no table, pod and namespace events are not even converted (a
        # lab starting 1,000 pods on 10 nodes would do it 10,000 times for nothing); the
        # first policy reloads them from the store.
        self._views_stale = True

    # -- state from watch events -----------------------------------------------------
    def handle(self, event: WatchEvent) -> bool:
        """Fold one event into the views; True if the table may have to change."""
        obj = event.obj
        kind = obj["kind"]
        meta = obj.get("metadata") or {}
        gone = event.type == "DELETED"
        if kind == "NetworkPolicy":
            key = (str(meta.get("namespace") or "default"), str(meta.get("name")))
            self.rejected.pop(key, None)
            if gone:
                return self.policies.pop(key, None) is not None
            try:
                # Converted once per change, not per compile: ~40% of a compile at 1k.
                self.policies[key] = PolicyView.from_k8s(obj)
            except PolicyInputError as exc:
                self.rejected[key] = str(exc)  # left out; the others keep working
                return self.policies.pop(key, None) is not None
            if self._views_stale:
                self._reload_views()
            return True
        if kind in ("Pod", "Namespace") and self._idle():
            self._views_stale = True
            return False
        if kind == "Pod":
            key = (str(meta.get("namespace") or "default"), str(meta.get("name")))
            if gone:
                return self.pods.pop(key, None) is not None
            try:
                view = PodView.from_k8s(obj)
            except PolicyInputError:
                return self.pods.pop(key, None) is not None
            if self.pods.get(key) == view:
                return False
            self.pods[key] = view
            return True
        if kind == "Namespace":
            name = str(meta.get("name"))
            if gone:
                return self.namespaces.pop(name, None) is not None
            try:
                ns = NamespaceView.from_k8s(obj)
            except PolicyInputError:
                return False
            old = self.namespaces.get(name)
            self.namespaces[name] = ns
            return old is None or dict(old.labels) != dict(ns.labels)
        return False

    def _idle(self) -> bool:
        return not self.policies and self.syncer.applied is None

    def _reload_views(self) -> None:
        self._views_stale = False
        self.pods.clear()
        self.namespaces.clear()
        for kind in ("Namespace", "Pod"):
            for obj in self.client.list(kind):
                self.handle(WatchEvent("ADDED", obj))

    def compile(self) -> Ruleset:
        return compile_policy(list(self.policies.values()), list(self.pods.values()),
                              list(self.namespaces.values()), self.node)

    # -- the loops ------------------------------------------------------------------------
    async def run(self) -> None:
        watch = self.client.watch(KINDS)
        syncing = asyncio.create_task(self._sync_loop())
        try:
            async for event in watch:
                changed = False
                for ev in [event, *watch.drain()]:
                    try:
                        changed |= self.handle(ev)
                    except Exception:  # one odd object must not stop enforcement
                        log.exception("policy agent on %s: event %s", self.node.name, ev.type)
                # Only a table that exists (or the first policy) needs a pass.
                if changed and (self.policies or self.syncer.applied is not None):
                    self._dirty.set()
        finally:
            syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await syncing
            watch.close()

    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_full = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.RESYNC_SECONDS)
            await asyncio.sleep(self.COALESCE_SECONDS)
            self._dirty.clear()
            full = self._force_full or time.monotonic() - last_full >= self.RESYNC_SECONDS
            routine = full and not self._force_full and self.syncer.applied is not None
            try:
                if not self.policies:
                    if self.syncer.applied is None:
                        continue
                    report = await loop.run_in_executor(self.executor, self.syncer.remove)
                else:
                    # Compiling 1k policies over 5k pods takes ~0.3 s: off the event loop.
                    ruleset = await loop.run_in_executor(self.executor, self.compile)
                    self._warn((*sorted(self.rejected.values()), *ruleset.warnings))
                    sync = self.syncer.resync if full else self.syncer.sync
                    report = await loop.run_in_executor(self.executor, sync, ruleset)
                if full:
                    last_full = time.monotonic()
                self._force_full = False
            except Exception as exc:
                # nft refused (the old rules stay in force), or a bug: retry in full.
                if isinstance(exc, PolicySyncError):
                    log.error("policy sync on %s failed (will retry): %s", self.node.name, exc)
                else:
                    log.exception("policy sync on %s failed (will retry)", self.node.name)
                self._force_full = True
                await asyncio.sleep(self.RETRY_SECONDS)
                self._dirty.set()
                continue
            if report.changed:
                self.syncs += 1
                # The periodic resync is routine: only changes are worth a line.
                log.log(logging.DEBUG if routine else logging.INFO,
                        "policy on %s: %s sync (%s), +%d/-%d elements in %.1f ms",
                        self.node.name, report.kind, report.reason, report.elements_added,
                        report.elements_removed, report.seconds * 1000)
            if self.on_sync is not None:
                self.on_sync(report)

    def _warn(self, warnings: tuple[str, ...]) -> None:
        if warnings != self.warnings:
            for w in warnings:
                if w not in self.warnings:
                    log.warning("policy on %s: left out: %s", self.node.name, w)
            self.warnings = warnings

    async def shutdown(self) -> None:
        """Remove the table (node removal); the namespace usually goes right after."""
        if self.syncer.applied is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.syncer.remove)
        except PolicySyncError as exc:
            log.warning("removing the policy table on %s: %s", self.node.name, exc)

