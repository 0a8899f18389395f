"""Talking to a lab daemon over its Unix socket (one JSON request per connection)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from kubewire.lab.state import LabDirs


class DaemonUnavailable(Exception):
    pass


class DaemonClient:
    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.socket_path: Path = LabDirs.of(lab).socket

    def request(self, payload: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(self.socket_path))
                s.sendall(json.dumps(payload).encode() + b"\n")
                chunks = []
                while True:
                    data = s.recv(1 << 20)
                    if not data:
                        break
                    chunks.append(data)
        except PermissionError as exc:
            raise DaemonUnavailable(
                f"permission denied on {self.socket_path}: labs belong to root; "
                "run kubewire with sudo") from exc
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(
                f"lab {self.lab!r} is not running (no daemon at {self.socket_path}); "
                "start it with `kubewire up -f FILE`") from exc
        reply: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
        return reply
