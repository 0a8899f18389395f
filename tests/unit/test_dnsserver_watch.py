"""The DNS server's list+watch client, against a stand-in for the lab daemon's socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from kubewire.dnsserver.watch import LabWatchSource, Snapshot


def svc(name: str, ns: str = "default") -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {}}


class FakeDaemon:
    """Answers one watch per connection: SYNC with ``items``, then whatever is pushed."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.requests: list[dict[str, Any]] = []
        self.clients: list[asyncio.StreamWriter] = []
        self.connected = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests.append(json.loads(await reader.readline()))
        writer.write(json.dumps({"ok": True, "type": "SYNC", "items": self.items}).encode()
                     + b"\n")
        await writer.drain()
        self.clients.append(writer)
        self.connected.set()

    async def push(self, type_: str, obj: dict[str, Any]) -> None:
        for w in self.clients:
            w.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")
            await w.drain()


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def names(snapshot: Snapshot) -> list[str]:
    return [o["metadata"]["name"] for o in snapshot["Service"]]


def test_list_then_watch_coalesces_and_reconnects(tmp_path: Path) -> None:
    async def main() -> None:
        sock = tmp_path / "d.sock"
        daemon = FakeDaemon([svc("a")])
        server = await asyncio.start_unix_server(daemon.handle, path=str(sock))
        seen: list[Snapshot] = []
        source = LabWatchSource(sock, ("Service",), settle=0.05, retry_max=0.2)
        task = asyncio.create_task(source.run(seen.append))
        try:
            await wait_for(lambda: seen)
            assert daemon.requests == [{"op": "watch", "kinds": ["Service"]}]
            assert names(seen[-1]) == ["a"]
            # A burst of events becomes one snapshot.
            count = len(seen)
            for n in ("b", "c", "d"):
                await daemon.push("ADDED", svc(n))
            await daemon.push("DELETED", svc("a"))
            await wait_for(lambda: len(seen) > count and names(seen[-1]) == ["b", "c", "d"])
            assert len(seen) == count + 1
            # The daemon restarts: the source lists again and forgets what is gone.
            for w in daemon.clients:
                w.close()
            daemon.clients.clear()
            daemon.items = [svc("z")]
            await wait_for(lambda: names(seen[-1]) == ["z"])
            assert len(daemon.requests) == 2
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_a_failing_consumer_keeps_the_watch_alive(tmp_path: Path) -> None:
    async def main() -> None:
        sock = tmp_path / "d.sock"
        daemon = FakeDaemon([svc("a")])
        server = await asyncio.start_unix_server(daemon.handle, path=str(sock))
        calls: list[list[str]] = []

        def consume(snapshot: Snapshot) -> None:
            calls.append(names(snapshot))
            if len(calls) == 1:
                raise ValueError("bad object")

        source = LabWatchSource(sock, ("Service",), settle=0.01)
        task = asyncio.create_task(source.run(consume))
        try:
            await wait_for(lambda: calls)
            await daemon.push("ADDED", svc("b"))
            await wait_for(lambda: calls[-1] == ["a", "b"])
            assert source.syncs == 1  # only the call that did not raise counts
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.close()
            await server.wait_closed()

    asyncio.run(main())
