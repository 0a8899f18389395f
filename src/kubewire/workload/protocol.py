"""The pod server's control protocol: JSON lines over a Unix stream socket.

Each request is one JSON object on one line with an `op` key; each gets exactly one reply
line, in order: `{"ok": true, ...}` or `{"ok": false, "error": MESSAGE, "code": CODE, ...}`.
A request may carry `rid` (any JSON value); the reply repeats it.

    {"op": "ping"}                      -> {"ok": true, "pid": N, "containers": N}
    {"op": "start", "id": ..., "pod": ..., "namespace": ..., "node": ..., "podIP": ...,
     "netns": PATH, "container": ..., "ports": [{"port": 80, "protocol": "TCP"}],
     "log": PATH}                       -> {"ok": true, "bound": ["80/TCP"]}
                                           or code EADDRINUSE/... with "port", "protocol"
    {"op": "stop", "id": ...}           -> {"ok": true, "found": true|false}
    {"op": "list"}                      -> {"ok": true, "containers": [...]}
    {"op": "shutdown"}                  -> {"ok": true}, then the server exits
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubewire.workload.errors import ContainerSpecError

PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_LINE = 1 << 20


@dataclass(frozen=True, slots=True, order=True)
class PortSpec:
    port: int
    protocol: str = "TCP"

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ContainerSpecError(f"port must be an integer, got {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ContainerSpecError(f"port {self.port} is outside 1-65535")
        if self.protocol not in PROTOCOLS:
            raise ContainerSpecError(
                f"protocol {self.protocol!r} of port {self.port} is not one of {PROTOCOLS}"
            )

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"

    def to_wire(self) -> dict[str, Any]:
        return {"port": self.port, "protocol": self.protocol}

    @classmethod
    def from_wire(cls, raw: object) -> PortSpec:
        if not isinstance(raw, Mapping):
            raise ContainerSpecError(f"a port must be an object, got {raw!r}")
        return cls(raw.get("port"), raw.get("protocol", "TCP"))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ContainerStart:
    """Everything the pod server needs to serve one built-in container."""

    id: str
    pod: str
    namespace: str
    node: str
    pod_ip: str
    netns: str
    container: str
    ports: tuple[PortSpec, ...]
    log: str

    def __post_init__(self) -> None:
        for field in ("id", "pod", "namespace", "netns", "container", "log"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ContainerSpecError(
                    f"start request field {field!r} must be a non-empty string"
                )
        for field in ("node", "pod_ip"):
            if not isinstance(getattr(self, field), str):
                raise ContainerSpecError(f"start request field {field!r} must be a string")
        seen: set[PortSpec] = set()
        for port in self.ports:
            if port in seen:
                raise ContainerSpecError(
                    f"port {port} is listed twice in container {self.container}"
                )
            seen.add(port)

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": "start",
            "id": self.id,
            "pod": self.pod,
            "namespace": self.namespace,
            "node": self.node,
            "podIP": self.pod_ip,
            "netns": self.netns,
            "container": self.container,
            "ports": [p.to_wire() for p in self.ports],
            "log": self.log,
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> ContainerStart:
        ports = raw.get("ports", [])
        if not isinstance(ports, list):
            raise ContainerSpecError("start request field 'ports' must be a list")
        return cls(
            id=raw.get("id"),  # type: ignore[arg-type]
            pod=raw.get("pod"),  # type: ignore[arg-type]
            namespace=raw.get("namespace"),  # type: ignore[arg-type]
            node=raw.get("node", ""),
            pod_ip=raw.get("podIP", ""),
            netns=raw.get("netns"),  # type: ignore[arg-type]
            container=raw.get("container"),  # type: ignore[arg-type]
            ports=tuple(PortSpec.from_wire(p) for p in ports),
            log=raw.get("log"),  # type: ignore[arg-type]
        )


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line; raises ValueError for anything but a JSON object."""
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("a control message must be a JSON object")
    return value


def error_reply(message: str, code: str = "EINVAL", **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": message, "code": code, **extra}
