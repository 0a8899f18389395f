"""An in-memory object store with list and watch, like a tiny kube-apiserver + etcd.

Objects are plain dicts in Kubernetes JSON form. Every write bumps a store-wide
resourceVersion; watchers get ADDED/MODIFIED/DELETED events in write order. Watches start
with the current objects as ADDED events (list-then-watch, as an informer does), so a
watcher never misses an object that existed before it subscribed.

The store is single-threaded by design: it lives on the lab daemon's event loop, and
agents reach it only through `StoreClient`. Objects handed out are shared, not copied
(copying every pod for every watching node agent dominated start-up at 1,000 pods): treat
them as read-only and copy before changing. Writes always store a private copy.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace or "", name)
EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class StoreError(Exception):
    """Base for store failures."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    obj: Obj


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata", {})
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def _content(obj: Obj) -> Obj:
    """What `generation` tracks: everything but metadata and status (spec, or the top-level
    fields of kinds without a spec, such as an EndpointSlice's endpoints or a ConfigMap's
    data)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Watch:
    """A subscription: an async iterator of events for some kinds."""

    def __init__(self, store: ObjectStore, kinds: frozenset[str]) -> None:
        self._store = store
        self.kinds = kinds
        self.queue: asyncio.Queue[WatchEvent] = asyncio.Queue()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        return await self.queue.get()

    def drain(self) -> list[WatchEvent]:
        """Every event already queued, without waiting (for batching)."""
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events

    def close(self) -> None:
        self._store._watches.discard(self)


class ObjectStore:
    def __init__(self) -> None:
        self._objects: dict[Key, Obj] = {}
        self._by_kind: dict[str, dict[Key, Obj]] = {}
        self._version = itertools.count(1)
        self._watches: set[Watch] = set()

    # -- reads ---------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self._objects.get((kind, namespace, name))

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        where: Callable[[Obj], bool] | None = None,
    ) -> builtins.list[Obj]:
        items = self._by_kind.get(kind, {})
        return [
            o
            for k, o in sorted(items.items())
            if (namespace is None or k[1] == namespace) and (where is None or where(o))
        ]

    def kinds(self) -> builtins.list[str]:
        return sorted(k for k, v in self._by_kind.items() if v)

    # -- writes --------------------------------------------------------------
    def put(self, obj: Obj) -> Obj:
        """Create or replace an object (apply semantics). Returns the stored copy."""
        obj = copy.deepcopy(obj)
        key = key_of(obj)
        old = self._objects.get(key)
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._version))
        if old is None:
            meta.setdefault("creationTimestamp", _now())
            meta["generation"] = 1
        else:
            meta["creationTimestamp"] = old["metadata"].get("creationTimestamp", _now())
            meta.setdefault("uid", old["metadata"].get("uid"))
            meta["generation"] = old["metadata"].get("generation", 1) + int(
                _content(obj) != _content(old))
            if "status" not in obj and "status" in old:
                obj["status"] = old["status"]
        self._objects[key] = obj
        self._by_kind.setdefault(key[0], {})[key] = obj
        self._notify("ADDED" if old is None else "MODIFIED", obj)
        return obj

    def create(self, obj: Obj) -> Obj:
        """Store a new object; raises Conflict if one with its key exists (a POST, not an
        apply). Agents claim shared resources this way: the first writer wins."""
        kind, namespace, name = key = key_of(obj)
        if key in self._objects:
            where = f" in namespace {namespace!r}" if namespace else ""
            raise Conflict(f"{kind.lower()}/{name} already exists{where}")
        return self.put(obj)

    def update_status(self, kind: str, namespace: str, name: str, status: Obj) -> Obj:
        key = (kind, namespace, name)
        obj = self._objects.get(key)
        if obj is None:
            raise NotFound(f"{kind.lower()}/{name} not found in namespace {namespace!r}")
        if obj.get("status") == status:
            return obj
        obj = {**obj, "metadata": dict(obj["metadata"]), "status": copy.deepcopy(status)}
        obj["metadata"]["resourceVersion"] = str(next(self._version))
        self._objects[key] = obj
        self._by_kind[kind][key] = obj
        self._notify("MODIFIED", obj)
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> Obj:
        key = (kind, namespace, name)
        obj = self._objects.pop(key, None)
        if obj is None:
            raise NotFound(f"{kind.lower()}/{name} not found in namespace {namespace!r}")
        del self._by_kind[kind][key]
        self._notify("DELETED", obj)
        return obj

    # -- watch ---------------------------------------------------------------
    def watch(self, kinds: Iterable[str]) -> Watch:
        w = Watch(self, frozenset(kinds))
        for kind in sorted(w.kinds):
            for _, obj in sorted(self._by_kind.get(kind, {}).items()):
                w.queue.put_nowait(WatchEvent("ADDED", obj))
        self._watches.add(w)
        return w

    def _notify(self, type_: EventType, obj: Obj) -> None:
        for w in self._watches:
            if obj["kind"] in w.kinds:
                w.queue.put_nowait(WatchEvent(type_, obj))


class StoreClient(Protocol):
    """What agents may do: list, watch, report status, and create objects they own (a node's
    IPAM block affinities, as Calico's IPAM plugin writes them). Nothing else.

    Kept this small so an agent could one day watch a real kube-apiserver instead.
    """

    def list(
        self, kind: str, namespace: str | None = None, where: Callable[[Obj], bool] | None = None
    ) -> list[Obj]: ...

    def watch(self, kinds: Iterable[str]) -> Watch: ...

    def update_status(self, kind: str, namespace: str, name: str, status: Obj) -> Obj: ...

    def create(self, obj: Obj) -> Obj: ...
