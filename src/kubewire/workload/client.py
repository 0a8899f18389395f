"""Clients for the pod server's control socket (sync and asyncio), and a launcher."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kubewire.workload.errors import ControlError, PortBindError, RequestRejectedError
from kubewire.workload.protocol import MAX_LINE, ContainerStart, decode, encode


def raise_for_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """Return an ok reply; turn a refusal into RequestRejectedError (PortBindError for ports)."""
    if reply.get("ok") is True:
        return reply
    message = str(reply.get("error", "request refused"))
    code = str(reply.get("code", "EINVAL"))
    if "port" in reply:
        raise PortBindError(message, code, int(reply["port"]), str(reply.get("protocol", "TCP")))
    raise RequestRejectedError(message, code)


def _start_message(spec: ContainerStart | None, wire: dict[str, Any]) -> dict[str, Any]:
    if spec is None:
        spec = ContainerStart.from_wire(wire)
    elif wire:
        raise TypeError("pass a ContainerStart or keyword fields, not both")
    return spec.to_wire()


class PodServerClient:
    """Blocking client; one connection, reconnected on demand; safe to share between threads."""

    def __init__(self, socket_path: str | Path, timeout: float = 10.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def __enter__(self) -> PodServerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except OSError as exc:
                sock.close()
                raise ControlError(
                    f"cannot reach the pod server at {self.socket_path}: {exc.strerror or exc};"
                    " is it running?"
                ) from exc
            self._sock = sock
        return self._sock

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its reply as is (`ok` may be false)."""
        data = encode(message)
        with self._lock:
            for attempt in (1, 2):
                sock = self._connect()
                try:
                    sock.sendall(data)
                except OSError as exc:
                    # A stale connection (server restarted): reconnect once. Nothing was
                    # delivered, so resending cannot run the request twice.
                    self._drop()
                    if attempt == 2:
                        raise ControlError(f"pod server at {self.socket_path}: {exc}") from exc
                    continue
                try:
                    return decode(self._read_line(sock))
                except (OSError, ValueError) as exc:
                    self._drop()
                    raise ControlError(
                        f"pod server at {self.socket_path} gave no valid reply: {exc}"
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_line(self, sock: socket.socket) -> bytes:
        while True:
            idx = self._buffer.find(b"\n")
            if idx >= 0:
                line = bytes(self._buffer[: idx + 1])
                del self._buffer[: idx + 1]
                return line
            if len(self._buffer) > MAX_LINE:
                raise ValueError("reply line too long")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed by the pod server")
            self._buffer += chunk

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        return raise_for_reply(self.request(message))

    def ping(self) -> dict[str, Any]:
        return self.call({"op": "ping"})

    def start(self, spec: ContainerStart | None = None, /, **wire: Any) -> list[str]:
        """Serve a container; returns the bound ports ("80/TCP"). All or nothing.

        Pass a ContainerStart, or its wire fields as keywords (id=, pod=, namespace=,
        node=, podIP=, netns=, container=, ports=[{"port": 80, "protocol": "TCP"}], log=).
        """
        return list(self.call(_start_message(spec, wire)).get("bound", []))

    def stop(self, container_id: str) -> bool:
        """Stop serving a container; False if the server did not know it (already stopped)."""
        return bool(self.call({"op": "stop", "id": container_id}).get("found"))

    def list(self) -> list[dict[str, Any]]:
        return list(self.call({"op": "list"})["containers"])

    def shutdown(self) -> None:
        self.call({"op": "shutdown"})

    def wait_ready(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ping until the server answers or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ping()
            except ControlError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)


class AsyncPodServerClient:
    """asyncio client with the same operations as PodServerClient."""

    def __init__(self, socket_path: str | Path, timeout: float = 10.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            if self._writer is None:
                try:
                    self._reader, self._writer = await asyncio.wait_for(
                        asyncio.open_unix_connection(self.socket_path, limit=MAX_LINE),
                        self.timeout,
                    )
                except (OSError, TimeoutError) as exc:
                    raise ControlError(
                        f"cannot reach the pod server at {self.socket_path}: {exc}; is it running?"
                    ) from exc
            assert self._reader is not None and self._writer is not None
            try:
                self._writer.write(encode(message))
                await self._writer.drain()
                line = await asyncio.wait_for(self._reader.readline(), self.timeout)
                if not line:
                    raise ConnectionResetError("connection closed by the pod server")
                return decode(line)
            except (OSError, ValueError, TimeoutError) as exc:
                await self._drop()
                raise ControlError(
                    f"pod server at {self.socket_path} gave no valid reply: {exc}"
                ) from exc

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        return raise_for_reply(await self.request(message))

    async def ping(self) -> dict[str, Any]:
        return await self.call({"op": "ping"})

    async def start(self, spec: ContainerStart | None = None, /, **wire: Any) -> list[str]:
        return list((await self.call(_start_message(spec, wire))).get("bound", []))

    async def stop(self, container_id: str) -> bool:
        return bool((await self.call({"op": "stop", "id": container_id})).get("found"))

    async def list(self) -> list[dict[str, Any]]:
        return list((await self.call({"op": "list"}))["containers"])

    async def shutdown(self) -> None:
        await self.call({"op": "shutdown"})


def spawn_server(
    control: str | Path,
    log: str | Path | None = None,
    *,
    python: str = sys.executable,
    ready_timeout: float = 10.0,
) -> subprocess.Popen[bytes]:
    """Start `python -m kubewire.workload.server` in its own session and wait until it
    answers a ping. The caller owns the process (record it, stop it by PID)."""
    argv = [python, "-m", "kubewire.workload.server", "--control", str(control)]
    if log is not None:
        argv += ["--log", str(log)]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "ab")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
    client = PodServerClient(control, timeout=2.0)
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise ControlError(
                    f"pod server exited with status {proc.returncode} before answering"
                    + (f"; see {log}" if log is not None else "")
                )
            try:
                # Another server may still own the socket: only our own answer counts.
                if client.ping().get("pid") == proc.pid:
                    return proc
            except ControlError:
                pass
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                raise ControlError(
                    f"pod server (pid {proc.pid}) did not answer on {control} within"
                    f" {ready_timeout:g}s"
                )
            time.sleep(0.02)
    finally:
        client.close()
