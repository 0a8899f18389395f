"""Readiness probes made from inside a pod's network namespace (needs root)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubewire.kernel.netns import create_netns, delete_netns, entered, list_netns
from kubewire.workload.readiness import (
    ReadinessCheck,
    probe_http,
    probe_tcp,
    probe_tcp_async,
    readiness_checks,
    wait_ready,
)
from kubewire.workload.runner import start_process

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces"),
]

PREFIX = f"kwtest-wl-p{os.getpid()}-"


@pytest.fixture(scope="module", autouse=True)
def no_leaked_namespaces() -> Iterator[None]:
    yield
    assert list_netns(PREFIX) == []


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Path]:
    name = f"{PREFIX}{tmp_path.name[-20:]}"
    path = create_netns(name)
    try:
        with entered(path):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            request = struct.pack("16sh14x", b"lo", 0)
            flags = struct.unpack("16sh14x", fcntl.ioctl(sock, 0x8913, request))[1]
            fcntl.ioctl(sock, 0x8914, struct.pack("16sh14x", b"lo", flags | 1))
        yield path
    finally:
        delete_netns(name)


def test_probe_tcp_sees_only_the_pods_namespace(netns: Path) -> None:
    with entered(netns):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert probe_tcp(netns, "127.0.0.1", port, 1.0)
        assert not probe_tcp(netns, "127.0.0.1", port + 1 if port < 65535 else 1, 1.0)
        assert asyncio.run(probe_tcp_async(netns, "127.0.0.1", port, 1.0))
        assert not probe_tcp(Path("/run/netns/kwtest-wl-does-not-exist"), "127.0.0.1", port)
    assert not probe_tcp(netns, "127.0.0.1", port, 1.0)
    assert not asyncio.run(probe_tcp_async(netns, "127.0.0.1", port, 1.0))


def test_real_http_server_becomes_ready(netns: Path, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "ready").write_text("ok")
    container = {
        "name": "web",
        "command": [sys.executable, "-m", "http.server", "18080", "--bind", "127.0.0.1"],
        "workingDir": str(tmp_path / "www"),
        "ports": [{"containerPort": 18080, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
    }
    checks = readiness_checks(container)
    assert checks == (ReadinessCheck(18080, "/ready"),)
    running = start_process(container, pod="web", netns=netns, log=tmp_path / "web.log")
    try:
        assert wait_ready(netns, "127.0.0.1", checks, timeout=15)
        assert probe_http(netns, "127.0.0.1", 18080, "/ready")
        assert not probe_http(netns, "127.0.0.1", 18080, "/missing")  # 404
        assert wait_ready(netns, "127.0.0.1", [ReadinessCheck(18080)], timeout=1)
        assert not wait_ready(netns, "127.0.0.1", [ReadinessCheck(18081)], timeout=0.3)
    finally:
        os.killpg(running.record.pid, signal.SIGKILL)
        running.popen.wait(timeout=5)


def test_probe_http_rejects_a_non_http_listener(netns: Path) -> None:
    script = (
        "import socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 18090)); s.listen(); print('up', flush=True)\n"
        "while True:\n"
        "    c, _ = s.accept(); c.sendall(b'SSH-2.0-nope\\r\\n'); c.close()\n"
    )
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns}", sys.executable, "-c", script], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        assert probe_tcp(netns, "127.0.0.1", 18090)
        assert not probe_http(netns, "127.0.0.1", 18090, "/")
    finally:
        proc.kill()
        proc.wait()
