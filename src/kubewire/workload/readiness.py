"""Readiness of real-command containers: connect from inside the pod's network namespace.

Like the kubelet, a container with a `readinessProbe` of kind `tcpSocket` or `httpGet` is
ready when that probe passes (an HTTP status 200-399; `scheme: HTTPS` is checked as a TCP
connect); without one, it is ready when every declared TCP `containerPort` accepts a
connection. `exec` probes are not run (they are treated as absent).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubewire.kernel.netns import entered
from kubewire.workload.errors import ContainerSpecError


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    port: int
    http_path: str | None = None  # None: a TCP connect is enough


def _resolve_port(container: Mapping[str, Any], value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    elif isinstance(value, str) and value.isdigit():
        port = int(value)
    elif isinstance(value, str):
        for entry in container.get("ports") or []:
            if isinstance(entry, Mapping) and entry.get("name") == value:
                port = entry.get("containerPort")  # type: ignore[assignment]
                break
        else:
            raise ContainerSpecError(
                f"container {container.get('name', '?')}: readiness probe names port"
                f" {value!r}, but no entry of 'ports' has that name"
            )
    else:
        raise ContainerSpecError(f"readiness probe port {value!r} is not a number or a name")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ContainerSpecError(f"readiness probe port {port!r} is outside 1-65535")
    return port


def readiness_checks(container: Mapping[str, Any]) -> tuple[ReadinessCheck, ...]:
    """What must pass before a real-command container is ready (empty: ready at once)."""
    probe = container.get("readinessProbe")
    if isinstance(probe, Mapping):
        tcp = probe.get("tcpSocket")
        if isinstance(tcp, Mapping):
            return (ReadinessCheck(_resolve_port(container, tcp.get("port"))),)
        http = probe.get("httpGet")
        if isinstance(http, Mapping):
            port = _resolve_port(container, http.get("port"))
            if str(http.get("scheme", "HTTP")).upper() == "HTTPS":
                return (ReadinessCheck(port),)
            path = http.get("path") or "/"
            return (ReadinessCheck(port, str(path)),)
    checks: list[ReadinessCheck] = []
    for entry in container.get("ports") or []:
        if isinstance(entry, Mapping) and str(entry.get("protocol", "TCP")) == "TCP":
            check = ReadinessCheck(_resolve_port(container, entry.get("containerPort")))
            if check not in checks:
                checks.append(check)
    return tuple(checks)


def _thread_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def _socket_in(netns_path: str | Path, ip: str) -> socket.socket:
    """A TCP socket created inside the namespace; OSError if the namespace is unusable."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    home = _thread_netns()
    try:
        with entered(netns_path):
            return socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        if _thread_netns() != home:
            # Failing to come back is not a failed probe: the caller's thread is now in
            # the pod's namespace, and everything it does next would go wrong.
            raise RuntimeError("could not return from a pod network namespace") from None
        raise


def probe_tcp(netns_path: str | Path, ip: str, port: int, timeout: float = 1.0) -> bool:
    """True if a TCP connection to ip:port, made from inside the namespace, succeeds."""
    try:
        sock = _socket_in(netns_path, ip)
    except OSError:
        return False
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
        except OSError:
            return False
    return True


def probe_http(
    netns_path: str | Path, ip: str, port: int, path: str = "/", timeout: float = 1.0
) -> bool:
    """True if GET path answers with a status from 200 to 399 (the kubelet's rule)."""
    try:
        sock = _socket_in(netns_path, ip)
    except OSError:
        return False
    host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/kubewire\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", "replace")
    deadline = time.monotonic() + timeout
    with sock:
        try:
            sock.settimeout(timeout)
            sock.connect((ip, port))
            sock.sendall(request)
            head = b""
            while b"\n" not in head and len(head) < 4096:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError:
            return False
    parts = head.split(b"\n", 1)[0].split()
    return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400


def probe(netns_path: str | Path, ip: str, check: ReadinessCheck, timeout: float = 1.0) -> bool:
    if check.http_path is None:
        return probe_tcp(netns_path, ip, check.port, timeout)
    return probe_http(netns_path, ip, check.port, check.http_path, timeout)


def wait_ready(
    netns_path: str | Path,
    ip: str,
    checks: Iterable[ReadinessCheck],
    timeout: float = 10.0,
    interval: float = 0.05,
) -> bool:
    """Poll until every check passes (True) or the deadline passes (False)."""
    pending = list(checks)
    deadline = time.monotonic() + timeout
    while True:
        pending = [
            c
            for c in pending
            if not probe(netns_path, ip, c, min(1.0, max(0.05, deadline - time.monotonic())))
        ]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def probe_tcp_async(netns_path: str | Path, ip: str, port: int, timeout: float = 1.0) -> bool:
    """probe_tcp for asyncio callers: only the socket creation happens in the namespace."""
    try:
        sock = _socket_in(netns_path, ip)
    except OSError:
        return False
    with sock:
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (ip, port)), timeout
            )
        except (OSError, TimeoutError):
            return False
    return True
