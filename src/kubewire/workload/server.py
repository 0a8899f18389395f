"""The built-in test server: one asyncio process serving the containers of many pods.

A socket keeps the network namespace it was created in, so this process enters each pod's
namespace just long enough to create and bind that container's sockets, then serves them
all from one event loop. See README.md for the protocol and the limits.

    python -m kubewire.workload.server --control SOCKET [--log FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from kubewire.kernel.netns import entered
from kubewire.workload.echo import (
    PodContext,
    Reply,
    error_reply,
    format_addr,
    http_reply,
    udp_reply,
)
from kubewire.workload.errors import ContainerSpecError, PortBindError
from kubewire.workload.http import (
    CONTINUE,
    BadRequest,
    ContinueNeeded,
    Request,
    RequestParser,
    render_response,
)
from kubewire.workload.protocol import (
    MAX_LINE,
    ContainerStart,
    PortSpec,
    decode,
    encode,
)
from kubewire.workload.protocol import error_reply as control_error

log = logging.getLogger("kubewire.workload.server")

LISTEN_BACKLOG = 512
WRITE_HIGH_WATER = 64 * 1024
IDLE_TIMEOUT = 120.0
SWEEP_INTERVAL = 15.0
LOG_FLUSH_DELAY = 0.1
LOG_PENDING_LIMIT = 4096


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "EIO")


class _Clock:
    """Access-log timestamps; the seconds part is formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((t - second) * 1000):03d}Z"


class _Container:
    __slots__ = (
        "conns",
        "ctx",
        "log_fd",
        "pending",
        "requests",
        "servers",
        "spec",
        "stopped",
        "udp",
    )

    def __init__(self, spec: ContainerStart, log_fd: int) -> None:
        self.spec = spec
        self.ctx = PodContext(spec.pod, spec.namespace, spec.node, spec.pod_ip, spec.container)
        self.log_fd = log_fd
        self.servers: list[asyncio.Server] = []
        self.udp: list[asyncio.DatagramTransport] = []
        self.conns: set[_HttpConnection] = set()
        self.pending: list[str] = []
        self.requests = 0
        self.stopped = False


class _HttpConnection(asyncio.Protocol):
    __slots__ = (
        "_closing",
        "_container",
        "_parser",
        "_paused",
        "_port",
        "_remote",
        "_server",
        "_transport",
        "last_active",
    )

    def __init__(self, server: PodServer, container: _Container, port: int) -> None:
        self._server = server
        self._container = container
        self._port = port
        self._parser = RequestParser()
        self._transport: asyncio.Transport | None = None
        self._remote = "-"
        self._paused = False
        self._closing = False
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._container.stopped:
            transport.abort()
            return
        self._transport = transport
        self._remote = format_addr(transport.get_extra_info("peername"))
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._container.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._container.conns.discard(self)
        self._transport = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_active = time.monotonic()
        self._parser.receive(data)
        self._process()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._process()

    def _process(self) -> None:
        transport = self._transport
        while transport is not None and not self._paused and not self._closing:
            event = self._parser.next_event()
            if event is None:
                return
            if isinstance(event, ContinueNeeded):
                transport.write(CONTINUE)
            elif isinstance(event, Request):
                self._answer(transport, event)
            else:
                self._reject(transport, event)

    def _answer(self, transport: asyncio.Transport, request: Request) -> None:
        container = self._container
        container.requests += 1
        reply: Reply = http_reply(request, container.ctx, self._remote, self._port)
        keep_alive = request.keep_alive
        transport.write(
            render_response(
                reply.status,
                reply.body,
                content_type=reply.content_type,
                keep_alive=keep_alive,
                head_only=request.method == "HEAD",
                version=request.version,
            )
        )
        self._server.access_log(
            container, self._remote, request.method, request.target, reply.status
        )
        if not keep_alive:
            self._closing = True
            transport.close()

    def _reject(self, transport: asyncio.Transport, error: BadRequest) -> None:
        reply = error_reply(error)
        transport.write(render_response(reply.status, reply.body, keep_alive=False))
        self._server.access_log(self._container, self._remote, "-", "-", reply.status)
        self._closing = True
        transport.close()


class _UdpEcho(asyncio.DatagramProtocol):
    __slots__ = ("_container", "_paused", "_server", "_transport")

    def __init__(self, server: PodServer, container: _Container) -> None:
        self._server = server
        self._container = container
        self._transport: asyncio.DatagramTransport | None = None
        self._paused = False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        transport = self._transport
        if transport is None or self._container.stopped:
            return
        remote = format_addr(addr)
        kind, reply = udp_reply(data, self._container.ctx, remote)
        # A flood must not grow our send buffer without bound: drop replies instead.
        if not self._paused:
            transport.sendto(reply, addr)
        self._container.requests += 1
        self._server.access_log(self._container, remote, "UDP", kind, len(reply))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (client gone): nothing to do.
        pass


def _bind_socket(port: PortSpec) -> socket.socket:
    """A bound (and for TCP, listening) non-blocking socket on all addresses of the
    calling thread's network namespace; dual-stack when IPv6 is available."""
    if port.protocol == "SCTP":
        raise PortBindError(
            f"port {port}: the built-in server cannot serve SCTP (this kernel has no SCTP)",
            "EPROTONOSUPPORT",
            port.port,
            port.protocol,
        )
    kind = socket.SOCK_STREAM if port.protocol == "TCP" else socket.SOCK_DGRAM
    candidates: list[tuple[socket.AddressFamily, str]] = [
        (socket.AF_INET6, "::"),
        (socket.AF_INET, "0.0.0.0"),
    ]
    last: OSError | None = None
    for family, address in candidates:
        try:
            sock = socket.socket(family, kind)
        except OSError as exc:  # IPv6 unavailable: fall back to IPv4
            last = exc
            continue
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if kind == socket.SOCK_STREAM:
                # TCP only: on UDP, SO_REUSEADDR would let a second bind of the same
                # port succeed and hide a real conflict.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port.port))
            if kind == socket.SOCK_STREAM:
                sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL) and family == socket.AF_INET6:
                continue
            break
    assert last is not None
    name = _errno_name(last)
    raise PortBindError(
        f"port {port}: {os.strerror(last.errno or 0).lower()} ({name})",
        name,
        port.port,
        port.protocol,
    )


def _thread_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def _startup_line(spec: ContainerStart) -> str:
    tcp = [f":{p.port}/TCP" for p in spec.ports if p.protocol == "TCP"]
    udp = [f":{p.port}/UDP" for p in spec.ports if p.protocol == "UDP"]
    parts = []
    if tcp:
        parts.append("serving HTTP on " + ", ".join(tcp))
    if udp:
        parts.append(("UDP echo on " if tcp else "serving UDP echo on ") + ", ".join(udp))
    what = ", ".join(parts) if parts else "serving nothing (no ports declared)"
    return f"{what} in pod {spec.namespace}/{spec.pod}"


class PodServer:
    """All built-in containers of one lab; driven by control requests."""

    def __init__(self) -> None:
        self.containers: dict[str, _Container] = {}
        self._lock = asyncio.Lock()
        self._clock = _Clock()
        self._dirty: list[_Container] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._home_netns = _thread_netns()
        self._control: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._control_clients: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self.shutdown_requested = asyncio.Event()

    # --- access logs -------------------------------------------------------------------

    def access_log(
        self, container: _Container, remote: str, method: str, path: str, status: int
    ) -> None:
        self._log_line(container, f"{self._clock.now()} {remote} {method} {path} {status}\n")

    def _log_line(self, container: _Container, line: str) -> None:
        if container.log_fd < 0:
            return
        container.pending.append(line)
        if len(container.pending) == 1:
            self._dirty.append(container)
        if len(container.pending) >= LOG_PENDING_LIMIT:
            self._flush_one(container)
        elif self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(LOG_FLUSH_DELAY, self._flush_logs)

    def _flush_logs(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for container in dirty:
            self._flush_one(container)

    def _flush_one(self, container: _Container) -> None:
        if not container.pending or container.log_fd < 0:
            return
        data = "".join(container.pending).encode("utf-8", "replace")
        container.pending.clear()
        try:
            os.write(container.log_fd, data)
        except OSError as exc:
            log.warning("cannot append to %s: %s", container.spec.log, exc)

    # --- control operations ------------------------------------------------------------

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        try:
            if op == "ping":
                reply: dict[str, Any] = {
                    "ok": True,
                    "pid": os.getpid(),
                    "containers": len(self.containers),
                }
            elif op == "start":
                reply = await self._start(message)
            elif op == "stop":
                reply = await self._stop(message.get("id"))
            elif op == "list":
                reply = {"ok": True, "containers": [self._describe(c) for c in self._sorted()]}
            elif op == "shutdown":
                self.shutdown_requested.set()
                reply = {"ok": True}
            else:
                reply = control_error(
                    f"unknown op {op!r}; expected ping, start, stop, list or shutdown"
                )
        except Exception as exc:  # never let one request take the server down
            log.exception("control request %r failed", op)
            reply = control_error(f"internal error: {exc}", "EIO")
        if "rid" in message:
            reply["rid"] = message["rid"]
        return reply

    def _sorted(self) -> list[_Container]:
        return [self.containers[key] for key in sorted(self.containers)]

    @staticmethod
    def _describe(container: _Container) -> dict[str, Any]:
        spec = container.spec
        return {
            "id": spec.id,
            "pod": spec.pod,
            "namespace": spec.namespace,
            "node": spec.node,
            "podIP": spec.pod_ip,
            "container": spec.container,
            "netns": spec.netns,
            "log": spec.log,
            "ports": [p.to_wire() for p in spec.ports],
            "connections": len(container.conns),
            "requests": container.requests,
        }

    async def _start(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            spec = ContainerStart.from_wire(message)
        except ContainerSpecError as exc:
            return control_error(str(exc), "EINVAL")
        async with self._lock:
            if spec.id in self.containers:
                return control_error(f"container id {spec.id} is already running", "EEXIST")
            return await self._start_locked(spec)

    async def _start_locked(self, spec: ContainerStart) -> dict[str, Any]:
        try:
            log_fd = os.open(spec.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            return control_error(f"log file {spec.log}: {exc.strerror}", _errno_name(exc))
        sockets: list[tuple[PortSpec, socket.socket]] = []
        container = _Container(spec, log_fd)
        where = f"network namespace {spec.netns}"
        try:
            try:
                with entered(spec.netns):
                    for port in spec.ports:
                        sockets.append((port, _bind_socket(port)))
            finally:
                self._check_home_netns()
            where = "serving the bound sockets"
            await self._serve(container, sockets)
        except PortBindError as exc:
            self._abandon(container, sockets)
            return control_error(
                f"{exc} in pod {spec.namespace}/{spec.pod} container {spec.container};"
                " nothing was bound",
                exc.code,
                port=exc.port,
                protocol=exc.protocol,
            )
        except OSError as exc:
            self._abandon(container, sockets)
            return control_error(f"{where}: {exc.strerror or exc}", _errno_name(exc))
        except BaseException:
            self._abandon(container, sockets)
            raise
        self.containers[spec.id] = container
        container.pending.append(f"{self._clock.now()} {_startup_line(spec)}\n")
        self._flush_one(container)
        return {"ok": True, "bound": [str(p) for p in spec.ports]}

    def _check_home_netns(self) -> None:
        if _thread_netns() != self._home_netns:
            # Serving on from a pod's namespace would bind later pods' ports in the wrong
            # place; dying loudly is the only safe answer.
            log.critical("event loop thread is stuck in another network namespace; exiting")
            os._exit(70)

    async def _serve(
        self, container: _Container, sockets: list[tuple[PortSpec, socket.socket]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while sockets:
            port, sock = sockets[0]
            if port.protocol == "TCP":
                factory = self._http_factory(container, port.port)
                server = await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG)
                container.servers.append(server)
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpEcho(self, container), sock=sock
                )
                container.udp.append(transport)
            sockets.pop(0)

    def _http_factory(self, container: _Container, port: int) -> Callable[[], asyncio.BaseProtocol]:
        return lambda: _HttpConnection(self, container, port)

    def _abandon(
        self, container: _Container, sockets: list[tuple[PortSpec, socket.socket]]
    ) -> None:
        container.stopped = True
        for _, sock in sockets:
            sock.close()
        sockets.clear()
        self._close_container(container)

    def _close_container(self, container: _Container) -> None:
        container.stopped = True
        for server in container.servers:
            server.close()
        for transport in container.udp:
            transport.close()
        for conn in list(container.conns):
            conn.abort()
        self._flush_one(container)
        if container.log_fd >= 0:
            os.close(container.log_fd)
            container.log_fd = -1

    async def _stop(self, container_id: object) -> dict[str, Any]:
        if not isinstance(container_id, str) or not container_id:
            return control_error("stop needs a non-empty string 'id'", "EINVAL")
        async with self._lock:
            container = self.containers.pop(container_id, None)
            if container is None:
                return {"ok": True, "found": False}
            self._close_container(container)
        # Let the aborted transports run their close callbacks, so the sockets (and with
        # them the namespace references) are gone when the caller hears back.
        await asyncio.sleep(0)
        return {"ok": True, "found": True}

    # --- lifetime ----------------------------------------------------------------------

    async def serve_control(self, path: str | Path) -> None:
        path = Path(path)
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()
                else:
                    raise SystemExit(f"a pod server is already listening on {path}")
        self._control = await asyncio.start_unix_server(
            self._control_client, path=str(path), limit=MAX_LINE
        )
        os.chmod(path, 0o600)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def _control_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._control_clients[writer] = task
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    writer.write(encode(control_error("control line too long", "EMSGSIZE")))
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    message = decode(line)
                except ValueError as exc:
                    reply = control_error(f"not a JSON object: {exc}", "EINVAL")
                else:
                    reply = await self.handle(message)
                writer.write(encode(reply))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._control_clients.pop(writer, None)
            writer.close()

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            cutoff = time.monotonic() - IDLE_TIMEOUT
            for container in list(self.containers.values()):
                for conn in list(container.conns):
                    if conn.last_active < cutoff:
                        conn.abort()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._control is not None:
            self._control.close()
        # Closing the connections ends their handlers through EOF, not cancellation.
        clients = list(self._control_clients.items())
        for writer, _ in clients:
            writer.close()
        if clients:
            await asyncio.wait([task for _, task in clients], timeout=1.0)
        for container in self._sorted():
            self._close_container(container)
        self.containers.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        await asyncio.sleep(0)


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (each port and log costs an fd)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


async def _run(control: str) -> None:
    server = PodServer()
    await server.serve_control(control)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.shutdown_requested.set)
    log.info("pod server %d listening on %s", os.getpid(), control)
    try:
        await server.shutdown_requested.wait()
    finally:
        await server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control)
        log.info("pod server %d stopped", os.getpid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubewire.workload.server",
        description="Serve kubewire's built-in test containers for many pods from one process.",
    )
    parser.add_argument("--control", required=True, help="Unix socket for control requests")
    parser.add_argument("--log", help="append this server's own diagnostics here (not access logs)")
    args = parser.parse_args(argv)
    handler: logging.Handler = (
        logging.FileHandler(args.log) if args.log else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    raise_fd_limit()
    try:
        asyncio.run(_run(args.control))
    except SystemExit as exc:
        log.error("%s", exc.code)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
