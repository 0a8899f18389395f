"""Helpers for lab tests: run the real CLI, always clean up, talk to pods from inside."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubewire.kernel.netns import entered, list_netns
from kubewire.lab import names

KW = [sys.executable, "-m", "kubewire.cli.main"]


def kw(*args: str, lab: str | None = None, stdin: str | None = None,
       check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = [*KW, *(["--lab", lab] if lab else []), *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def cluster_yaml(name: str, nodes: int = 3, backend: str = "vxlan", cni: str = "kubewire",
                 extra: str = "") -> str:
    return (f"apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\n"
            f"spec:\n  nodes: {nodes}\n  network: {{backend: {backend}}}\n  cni: {cni}\n"
            f"{extra}")


def deployment_yaml(name: str, replicas: int, ports: str = "[{containerPort: 8080}]",
                    namespace: str = "default") -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: srv
        image: agnhost
        ports: {ports}
"""


@contextlib.contextmanager
def lab(name: str, manifests: str, tmp: Path) -> Iterator[str]:
    """A running lab built by `kubewire up`; always removed, even if the test fails."""
    path = tmp / f"{name}.yaml"
    path.write_text(manifests)
    try:
        kw("up", "-f", str(path))
        yield name
    finally:
        kw("down", name, check=False)


def pods(lab_name: str, namespace: str | None = None) -> list[dict[str, Any]]:
    args = ["get", "pods", "-o", "json"] + (["-n", namespace] if namespace else ["-A"])
    items: list[dict[str, Any]] = json.loads(kw(*args, lab=lab_name).stdout)["items"]
    return items


def pod_netns(lab_name: str, pod: dict[str, Any]) -> Path:
    return Path("/run/netns") / names.pod_netns(
        lab_name, pod["metadata"]["namespace"], pod["metadata"]["name"])


def http_get_from(netns: Path, ip: str, port: int, timeout: float = 3.0) -> dict[str, Any]:
    with entered(netns):
        s = socket.create_connection((ip, port), timeout=timeout)
    with s:
        s.sendall(f"GET /t HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        local = s.getsockname()
    reply: dict[str, Any] = json.loads(data.partition(b"\r\n\r\n")[2])
    reply["_client"] = f"{local[0]}:{local[1]}"
    return reply


def udp_exchange_from(netns: Path, ip: str, port: int, payload: bytes,
                      timeout: float = 3.0) -> bytes:
    with entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(timeout)
        s.sendto(payload, (ip, port))
        data, _ = s.recvfrom(65536)
        return data


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def lab_namespaces(lab_name: str) -> list[str]:
    return list_netns(names.lab_prefix(lab_name))
