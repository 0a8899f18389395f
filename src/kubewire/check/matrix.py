"""Pod-to-pod connectivity, measured with real TCP connections from inside pod namespaces.

Each probe's client socket is created while the calling thread sits in the source pod's
network namespace, so the SYN really leaves from that pod. Against a pod serving HTTP the
probe also checks that the reply names the destination pod (it reached the right pod, not
merely some listener). Against a pod with no TCP port, a RST ("connection refused") from
the pod's own kernel still proves the path, and is reported as such.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubewire.kernel.netns import entered

# A port no built-in server listens on, for pods that declare no TCP port.
UNUSED_PORT = 9


@dataclass(frozen=True, slots=True)
class Target:
    namespace: str
    name: str
    node: str
    ip: str
    netns: Path
    tcp_port: int | None
    http: bool = True  # the port is the built-in echo server's (a DNS pod's 53 is not)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    src: Target
    dst: Target
    ok: bool
    outcome: str  # "http ok", "refused (reachable)", "timeout", "wrong pod answered", ...
    ms: float


def choose_pairs(
    targets: Sequence[Target], max_pairs: int, seed: int = 1
) -> tuple[list[tuple[Target, Target]], bool]:
    """All ordered pairs when they fit in max_pairs; else a sample covering every node pair.

    Returns (pairs, sampled).
    """
    everything = [(a, b) for a in targets for b in targets if a is not b]
    if len(everything) <= max_pairs:
        return everything, False
    rng = random.Random(seed)
    by_node: dict[str, list[Target]] = {}
    for t in targets:
        by_node.setdefault(t.node, []).append(t)
    chosen: dict[tuple[str, str], tuple[Target, Target]] = {}
    # Every ordered node pair (and each node to itself) gets at least one probe ...
    for _a_node, a_pods in sorted(by_node.items()):
        for _b_node, b_pods in sorted(by_node.items()):
            src = rng.choice(a_pods)
            dst_pool = [p for p in b_pods if p is not src]
            if dst_pool:
                dst = rng.choice(dst_pool)
                chosen[(src.ref, dst.ref)] = (src, dst)
    # ... and every pod is a source and a destination at least once.
    for t in targets:
        others = [o for o in targets if o is not t]
        dst = rng.choice(others)
        chosen.setdefault((t.ref, dst.ref), (t, dst))
        src = rng.choice(others)
        chosen.setdefault((src.ref, t.ref), (src, t))
    pairs = list(chosen.values())
    while len(pairs) < max_pairs:
        a, b = rng.sample(list(targets), 2)
        if (a.ref, b.ref) not in chosen:
            chosen[(a.ref, b.ref)] = (a, b)
            pairs.append((a, b))
    return sorted(pairs, key=lambda p: (p[0].ref, p[1].ref)), True


async def probe(src: Target, dst: Target, timeout: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    port = dst.tcp_port or UNUSED_PORT
    with entered(src.netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)

    def result(ok: bool, outcome: str) -> ProbeResult:
        return ProbeResult(src, dst, ok, outcome, (time.monotonic() - started) * 1000)

    try:
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (dst.ip, port)), timeout)
        except ConnectionRefusedError:
            if dst.tcp_port is None:
                return result(True, "refused (reachable)")
            return result(False, "connection refused")
        except TimeoutError:
            return result(False, "timeout")
        except OSError as exc:
            return result(False, exc.strerror or str(exc))
        if dst.tcp_port is None or not dst.http:
            return result(True, "connected")
        request = (f"GET /check HTTP/1.1\r\nHost: {dst.ip}:{port}\r\n"
                   "User-Agent: kubewire-check\r\nConnection: close\r\n\r\n").encode()
        await loop.sock_sendall(sock, request)
        body = await asyncio.wait_for(_read_all(loop, sock), timeout)
        return _judge(body, dst, result)
    except TimeoutError:
        return result(False, "timeout waiting for reply")
    except OSError as exc:
        return result(False, exc.strerror or str(exc))
    finally:
        sock.close()


async def _read_all(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _judge(raw: bytes, dst: Target, result: Callable[[bool, str], ProbeResult]) -> ProbeResult:
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        # Some other server (a real container command): a TCP handshake is what we asked.
        return result(True, "connected")
    try:
        reply = json.loads(body)
    except ValueError:
        return result(True, "connected")
    if not isinstance(reply, dict) or "pod" not in reply:
        return result(True, "connected")
    if reply.get("pod") != dst.name or reply.get("namespace") != dst.namespace:
        return result(False, f"wrong pod answered ({reply.get('namespace')}/{reply.get('pod')})")
    return result(True, "http ok")


async def run_matrix(
    pairs: Sequence[tuple[Target, Target]],
    timeout: float = 2.0,
    concurrency: int = 128,
    progress: Callable[[int], None] | None = None,
) -> list[ProbeResult]:
    gate = asyncio.Semaphore(concurrency)

    async def one(pair: tuple[Target, Target]) -> ProbeResult:
        async with gate:
            r = await probe(pair[0], pair[1], timeout)
            if progress:
                progress(1)
            return r

    return list(await asyncio.gather(*(one(p) for p in pairs)))
