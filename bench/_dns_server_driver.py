"""The bare kubewire DNS server for bench/dns_perf.py: build_zone + DnsServer, nothing else.

    python bench/_dns_server_driver.py --objects OBJECTS.json --host H [--port 53]
                                       [--upstream IP[:PORT]]

No Corefile and no plugins: names outside the zone go to ``--upstream`` through the
server's ``fallback`` hook, one UDP exchange per query, no cache. Prints ``ready`` once the
sockets are bound; on SIGTERM prints the server's counters and the cyclic GC's collections
and longest pause per generation as one JSON line, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
import time
from typing import Any, cast

from kubewire.dns.zone import build_zone
from kubewire.dnsserver.server import DnsServer

UPSTREAM_TIMEOUT = 2.0


class Forwarder(asyncio.DatagramProtocol):
    """One UDP socket to the upstream; our own query ids so clients' ids may collide."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[bytes, asyncio.Future[bytes]]] = {}
        self.next_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        entry = self.pending.pop(int.from_bytes(data[:2], "big"), None) if len(data) >= 12 \
            else None
        if entry is not None and not entry[1].done():
            entry[1].set_result(entry[0] + data[2:])

    def error_received(self, exc: Exception) -> None:
        pass

    async def query(self, wire: bytes) -> bytes | None:
        if self.transport is None or len(self.pending) >= 65000:
            return None
        while self.next_id in self.pending:
            self.next_id = (self.next_id + 1) & 0xFFFF
        qid, self.next_id = self.next_id, (self.next_id + 1) & 0xFFFF
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[qid] = (wire[:2], fut)
        self.transport.sendto(qid.to_bytes(2, "big") + wire[2:])
        try:
            return await asyncio.wait_for(fut, UPSTREAM_TIMEOUT)
        except TimeoutError:
            return None
        finally:
            if self.pending.get(qid, (b"", None))[1] is fut:
                del self.pending[qid]


class GcPauses:
    """Count and longest pause of the cyclic GC per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.max_ms = [0.0, 0.0, 0.0]
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        gen = info["generation"]
        self.count[gen] += 1
        self.max_ms[gen] = max(self.max_ms[gen], (time.perf_counter() - self._t0) * 1e3)


async def serve(args: argparse.Namespace) -> None:
    with open(args.objects) as f:
        items = json.load(f)["items"]
    kinds: dict[str, list[Any]] = {"Service": [], "EndpointSlice": [], "Pod": []}
    for obj in items:
        kinds.setdefault(obj.get("kind", ""), []).append(obj)
    zone = build_zone(kinds["Service"], kinds["EndpointSlice"], kinds["Pod"])
    del items, kinds
    gc.collect()
    if args.gc_freeze:
        # The zone's ~1M objects never form cycles: keep them out of every later collection.
        gc.freeze()
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    loop = asyncio.get_running_loop()
    fallback = None
    if args.upstream:
        host, _, port = args.upstream.partition(":")
        _, fwd = await loop.create_datagram_endpoint(Forwarder,
                                                     remote_addr=(host, int(port or 53)))
        fallback = fwd.query
    server = DnsServer(lambda: zone, args.host, args.port, fallback=fallback)
    await server.start()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    c = server.counters
    print(json.dumps({"queries": c.queries, "responses": dict(c.responses), "drops": c.drops,
                      "fallbacks": c.fallbacks, "fallback_failures": c.fallback_failures,
                      "gc_collections": pauses.count,
                      "gc_max_pause_ms": [round(x, 1) for x in pauses.max_ms]}),
          flush=True)
    await server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--upstream", default="")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() after building the zone")
    asyncio.run(serve(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
