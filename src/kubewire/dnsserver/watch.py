"""List and watch the lab's API (the daemon socket) for the DNS server, as CoreDNS's
``kubernetes`` plugin watches the API server.

One connection, one ``watch`` request; the daemon answers with a ``SYNC`` line holding every
object of the kinds asked for, then one line per event. Bursts of events are coalesced: the
zone is rebuilt at most once per ``settle`` interval, so a Deployment scaling by a hundred
pods costs one rebuild, and a change is served within ``settle`` plus one build. When the
daemon goes away the source reconnects with a back-off and lists again; the last zone keeps
serving meanwhile (CoreDNS does the same when it loses the API server).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Snapshot = dict[str, list[Obj]]  # kind -> objects

WATCHED_KINDS = ("Service", "EndpointSlice", "Namespace")
LINE_LIMIT = 2**28  # one SYNC line holds the whole cluster


def _key(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


class LabWatchSource:
    """Feeds ``on_snapshot`` with the watched objects whenever they change."""

    def __init__(self, socket_path: Path | str, kinds: tuple[str, ...] = WATCHED_KINDS, *,
                 settle: float = 0.05, retry_max: float = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.kinds = kinds
        self.settle = settle
        self.retry_max = retry_max
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._dirty = asyncio.Event()
        self.syncs = 0  # snapshots delivered (for tests and logs)

    def snapshot(self) -> Snapshot:
        out: Snapshot = {kind: [] for kind in self.kinds}
        for (kind, _, _), obj in sorted(self._objects.items()):
            out.setdefault(kind, []).append(obj)
        return out

    async def run(self, on_snapshot: Callable[[Snapshot], Any]) -> None:
        """Watch until cancelled; ``on_snapshot`` may be sync or return an awaitable."""
        publisher = asyncio.create_task(self._publish(on_snapshot))
        delay = 0.1
        try:
            while True:
                try:
                    await self._watch_once()
                    delay = 0.1
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    log.warning("watch of %s lost (%s); retrying in %.1f s",
                                self.socket_path, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
        finally:
            publisher.cancel()

    async def _watch_once(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=LINE_LIMIT)
        try:
            request = {"op": "watch", "kinds": list(self.kinds)}
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            first = json.loads(await reader.readline() or b"null")
            if not isinstance(first, dict) or first.get("type") != "SYNC":
                error = first.get("error") if isinstance(first, dict) else "no reply"
                raise ValueError(f"watch refused: {error}")
            self._objects = {_key(o): o for o in first["items"]}
            self._dirty.set()
            while line := await reader.readline():
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "DELETED":
                    self._objects.pop(_key(obj), None)
                else:
                    self._objects[_key(obj)] = obj
                self._dirty.set()
            raise ConnectionError("the daemon closed the watch")
        finally:
            writer.close()

    async def _publish(self, on_snapshot: Callable[[Snapshot], Any]) -> None:
        while True:
            await self._dirty.wait()
            if self.syncs:  # the first list is served at once: readiness waits on it
                await asyncio.sleep(self.settle)  # let a burst of events land first
            self._dirty.clear()
            try:
                result = on_snapshot(self.snapshot())
                if asyncio.iscoroutine(result):
                    await result
                self.syncs += 1
            except Exception:
                log.exception("applying the watched objects failed; the last zone stays")


class LabWatch:
    """The ``--watch SOCKET`` object source of ``python -m kubewire.dnsserver``."""

    def __init__(self, socket_path: Path | str) -> None:
        self.source = LabWatchSource(socket_path)

    async def run(self, app: Any) -> None:
        async def apply(snapshot: Snapshot) -> None:
            namespaces = [n["metadata"]["name"] for n in snapshot.get("Namespace", [])]
            await app.update_cluster(snapshot.get("Service", []),
                                     snapshot.get("EndpointSlice", []), namespaces=namespaces)

        await self.source.run(apply)
