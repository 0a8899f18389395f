"""NetworkPolicy reachability: the measured from -> to matrix next to the oracle's.

Every probe is a real connection whose socket is created while the thread sits in the
source pod's network namespace, all of them in parallel on one event loop:

* **TCP**: connect; against a pod served by the built-in server, an HTTP request whose
  JSON reply must name the destination pod. A reset (what kubewire's ``policy-deny`` chain
  sends) is "blocked" at once; the timeout is only a backstop for a silent drop.
* **UDP**: ``hostname`` to a built-in server (the reply must be the pod's name), a DNS query
  to port 53 of any other pod. ICMP admin-prohibited (kubewire's reject) arrives as
  EHOSTUNREACH on the socket, at once. ICMP port-unreachable means the datagram reached
  the pod (nothing listens there): reachable, as far as policy is concerned.

Pairs of a pod with itself are measured but never compared (traffic to itself never
leaves the pod, and upstream's suite ignores loopback). The expected matrix comes from
``kubewire.policy.matrix.oracle_matrix`` over the lab's own objects.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import socket
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from kubewire.kernel.netns import entered
from kubewire.policy.matrix import differences, oracle_matrix
from kubewire.policy.views import NamespaceView, PodView, PolicyView, views

Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A running pod as a probe source or destination."""

    namespace: str
    name: str
    ip: str
    netns: Path
    node: str = ""
    builtin: bool = True  # served by the built-in server: replies name the pod

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Outcome:
    reachable: bool
    detail: str  # "http ok", "reset", "admin-prohibited", "timeout", ...
    ms: float


@dataclass(frozen=True, slots=True)
class MatrixResult:
    protocol: str
    port: int
    order: tuple[str, ...]
    observed: dict[Pair, Outcome]
    expected: dict[Pair, bool] | None
    seconds: float

    @property
    def reachable(self) -> dict[Pair, bool]:
        return {k: o.reachable for k, o in self.observed.items()}

    def differences(self) -> list[tuple[str, str, bool, bool]]:
        """(from, to, expected, observed) where they differ, self-pairs skipped."""
        return [] if self.expected is None else differences(self.expected, self.reachable)


# ---------------------------------------------------------------- probes


def _dns_query() -> bytes:
    labels = b"".join(bytes([len(p)]) + p for p in (b"kubernetes", b"default", b"svc"))
    return struct.pack("!HHHHHH", 0x6b77, 0x0100, 1, 0, 0, 0) + labels + b"\0" + \
        struct.pack("!HH", 1, 1)


async def _tcp(loop: asyncio.AbstractEventLoop, sock: socket.socket, dst: Endpoint, port: int,
               timeout: float) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (dst.ip, port)), timeout)
    except ConnectionRefusedError:
        return False, "reset"
    if not dst.builtin:
        return True, "connected"
    request = (f"GET /policy HTTP/1.1\r\nHost: {dst.ip}:{port}\r\n"
               "User-Agent: kubewire-check\r\nConnection: close\r\n\r\n").encode()
    await loop.sock_sendall(sock, request)

    async def read_all() -> bytes:
        chunks = []
        while data := await loop.sock_recv(sock, 65536):
            chunks.append(data)
        return b"".join(chunks)

    raw = await asyncio.wait_for(read_all(), timeout)
    try:
        reply = json.loads(raw.partition(b"\r\n\r\n")[2])
    except ValueError:
        return True, "connected (not the built-in server)"
    who = f"{reply.get('namespace')}/{reply.get('pod')}" if isinstance(reply, dict) else "?"
    if who != dst.ref:
        return False, f"wrong pod answered ({who})"
    return True, "http ok"


async def _udp(loop: asyncio.AbstractEventLoop, sock: socket.socket, dst: Endpoint, port: int,
               timeout: float) -> tuple[bool, str]:
    await loop.sock_connect(sock, (dst.ip, port))
    await loop.sock_sendall(sock, b"hostname\n" if dst.builtin else _dns_query())
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
    except ConnectionRefusedError:
        return True, "port unreachable (reached the pod)"
    if dst.builtin and data.strip() != dst.name.encode():
        return False, f"wrong pod answered ({data[:40]!r})"
    return True, "udp ok" if dst.builtin else "dns reply"


async def probe(src: Endpoint, dst: Endpoint, protocol: str, port: int,
                timeout: float = 1.0) -> Outcome:
    """One real connection from ``src`` to ``dst``; never raises for network errors."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
    with entered(src.netns):
        sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    try:
        if protocol == "TCP":
            ok, detail = await _tcp(loop, sock, dst, port, timeout)
        elif protocol == "UDP":
            ok, detail = await _udp(loop, sock, dst, port, timeout)
        else:
            raise ValueError(f"cannot probe {protocol}: only TCP and UDP")
    except TimeoutError:
        ok, detail = False, "timeout"
    except OSError as exc:
        ok, detail = False, ("admin-prohibited" if exc.errno == errno.EHOSTUNREACH
                             else exc.strerror or str(exc))
    finally:
        sock.close()
    return Outcome(ok, detail, (time.monotonic() - started) * 1000)


async def measure(sources: Sequence[Endpoint], destinations: Sequence[Endpoint],
                  protocol: str, port: int, timeout: float = 1.0,
                  concurrency: int = 256) -> dict[Pair, Outcome]:
    """Every ordered pair (self-pairs included), in parallel."""
    gate = asyncio.Semaphore(concurrency)

    async def one(src: Endpoint, dst: Endpoint) -> tuple[Pair, Outcome]:
        async with gate:
            return (src.ref, dst.ref), await probe(src, dst, protocol, port, timeout)

    done = await asyncio.gather(*(one(a, b) for a in sources for b in destinations))
    return dict(done)


def measure_matrix(endpoints: Sequence[Endpoint], protocol: str, port: int,
                   timeout: float = 1.0, expected: Mapping[Pair, bool] | None = None,
                   ) -> MatrixResult:
    started = time.monotonic()
    observed = asyncio.run(measure(endpoints, endpoints, protocol, port, timeout))
    return MatrixResult(protocol, port, tuple(e.ref for e in endpoints), observed,
                        dict(expected) if expected is not None else None,
                        time.monotonic() - started)


# ---------------------------------------------------------------- the lab's objects


def endpoints_from_pods(pods: Iterable[Mapping[str, Any]], netns_of: Any,
                        namespaces: Iterable[str] | None = None) -> list[Endpoint]:
    """Running pods with an address (``netns_of(namespace, name) -> Path``), sorted."""
    from kubewire.lab.clusterdns import is_coredns_image
    from kubewire.workload.containers import decide

    wanted = set(namespaces) if namespaces is not None else None
    out = []
    for p in pods:
        meta, spec, status = p["metadata"], p.get("spec", {}), p.get("status", {})
        ns = meta.get("namespace", "default")
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            continue
        if wanted is not None and ns not in wanted:
            continue
        containers = spec.get("containers") or []
        builtin = bool(containers) and all(
            decide(c) == "builtin" and not is_coredns_image(c.get("image")) for c in containers)
        out.append(Endpoint(ns, meta["name"], ip, Path(netns_of(ns, meta["name"])),
                            spec.get("nodeName", ""), builtin))
    return sorted(out, key=lambda e: (e.namespace, e.name))


def expected_matrix(endpoints: Sequence[Endpoint], pods: Iterable[Mapping[str, Any]],
                    namespaces: Iterable[Mapping[str, Any]],
                    policies: Iterable[Mapping[str, Any]], protocol: str, port: int,
                    ) -> tuple[dict[Pair, bool], list[str]]:
    """What Kubernetes says for every pair of ``endpoints``; and the policies left out."""
    refs = {e.ref for e in endpoints}
    pod_views, pod_errors = views(pods, PodView)
    chosen = sorted((p for p in pod_views if p.key in refs), key=lambda p: p.key)
    policy_views, errors = views(policies, PolicyView)
    ns_views, ns_errors = views(namespaces, NamespaceView)
    return (oracle_matrix(chosen, protocol, port, policy_views, ns_views),
            [*errors, *pod_errors, *ns_errors])


# ---------------------------------------------------------------- rendering


def _table(title: str, result: MatrixResult, cells: Mapping[Pair, bool],
           highlight: set[Pair]) -> Table:
    table = Table(title=title, show_lines=False, pad_edge=False, box=None,
                  min_width=len(title))
    table.add_column("", style="bold", no_wrap=True,
                     min_width=max(map(len, result.order), default=0))
    for ref in result.order:
        table.add_column(ref, justify="center", no_wrap=True, min_width=len(ref))
    for a in result.order:
        row: list[RenderableType] = [a]
        for b in result.order:
            if a == b:
                row.append(Text("-", style="dim"))
                continue
            value = cells.get((a, b))
            mark = "?" if value is None else "." if value else "X"
            row.append(Text(mark, style="bold white on red" if (a, b) in highlight else
                            "green" if value else "yellow"))
        table.add_row(*row)
    return table


def table_width(result: MatrixResult) -> int:
    """Columns one matrix needs (rows are sources, columns destinations)."""
    # Each column: its header plus rich's padding of one space either side; or the title.
    columns = max(map(len, result.order), default=0) + sum(len(r) + 2 for r in result.order)
    return max(columns + 2, len(f"measured {result.protocol}/{result.port} (00.00s)"))


def render(result: MatrixResult, width: int = 10_000) -> RenderableType:
    """Expected and measured matrices side by side (one above the other if ``width`` is
    too narrow; ``.`` reachable, ``X`` blocked), differing cells highlighted in both,
    then the probes that disagree."""
    diff = {(a, b) for a, b, _, _ in result.differences()}
    head = f"{result.protocol}/{result.port}"
    measured = _table(f"measured {head} ({result.seconds:.2f}s)", result, result.reachable,
                      diff)
    parts: list[RenderableType] = []
    if result.expected is not None:
        expected = _table(f"expected {head} (oracle)", result, result.expected, diff)
        if 2 * table_width(result) + 4 <= width:
            grid = Table.grid(padding=(0, 4))
            grid.add_row(expected, measured)
            parts.append(grid)
        else:
            parts += [expected, measured]
    else:
        parts.append(measured)
    for a, b, want, _got in result.differences():
        o = result.observed[a, b]
        parts.append(Text(f"DIFF {a} -> {b} {head}: expected "
                          f"{'reachable' if want else 'blocked'}, measured "
                          f"{'reachable' if o.reachable else 'blocked'} ({o.detail}, "
                          f"{o.ms:.0f} ms)", style="bold red"))
    compared = sum(1 for a, b in result.observed if a != b)
    summary = (f"{head}: {len(result.observed)} probes in {result.seconds:.2f}s, "
               + (f"{len(diff)} of {compared} pairs differ from the oracle"
                  if result.expected is not None else "no expectation"))
    parts.append(Text(summary, style="bold red" if diff else "bold green"))
    return Group(*parts)


def render_text(results: Sequence[MatrixResult], width: int = 200) -> str:
    """The report as plain text (no colours): for logs and test failures."""
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    for r in results:
        console.print(render(r, width))
    return console.export_text()


def to_json(results: Sequence[MatrixResult], warnings: Sequence[str] = ()) -> str:
    return json.dumps({
        "warnings": list(warnings),
        "matrices": [{
            "protocol": r.protocol, "port": r.port, "seconds": round(r.seconds, 3),
            "pods": list(r.order),
            "differences": [{"from": a, "to": b, "expected": want, "measured": got}
                            for a, b, want, got in r.differences()],
            "probes": [{"from": a, "to": b, "reachable": o.reachable, "detail": o.detail,
                        "expected": None if r.expected is None or a == b
                        else r.expected.get((a, b)),
                        "ms": round(o.ms, 2)} for (a, b), o in sorted(r.observed.items())],
        } for r in results]}, indent=2)



def check_lab(lab: str, pods: Sequence[Mapping[str, Any]],
              namespaces: Sequence[Mapping[str, Any]], policies: Sequence[Mapping[str, Any]],
              checks: Sequence[tuple[str, int]], only: Iterable[str] | None = None,
              timeout: float = 1.0) -> tuple[list[MatrixResult], list[str]]:
    """Measure and predict every (protocol, port) matrix over the lab's running pods
    (those of the namespaces ``only``; default: every namespace but kube-system)."""
    from kubewire.lab import names

    if only is None:
        only = sorted({p["metadata"].get("namespace", "default") for p in pods} -
                      {"kube-system"})
    endpoints = endpoints_from_pods(
        pods, lambda ns, name: Path("/run/netns") / names.pod_netns(lab, ns, name), only)
    results: list[MatrixResult] = []
    warnings: list[str] = []
    for protocol, port in checks:
        expected, warnings = expected_matrix(endpoints, pods, namespaces, policies, protocol,
                                             port)
        results.append(measure_matrix(endpoints, protocol, port, timeout, expected))
    return results, warnings
