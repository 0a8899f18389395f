"""The warm plugin server behind the shims (see shim.py for the wire format).

One accept thread hands each connection to a bounded thread pool. A worker decodes
the request, runs the plugin's `run()` with the received netns fd as the host
namespace, replies and closes the fd. Plugins switch namespaces per thread only
(kernel.netns.entered) and open their own netlink sockets, so workers share nothing
but the file-backed IPAM store, which has its own lock.

The socket is created mode 0600: whoever can connect can make root rewire namespaces.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from kubewire.cni.plugins import PLUGINS
from kubewire.cni.plugins.skel import RunFn
from kubewire.cni.protocol import CniError, ErrorCode
from kubewire.cni.shim import MAGIC

log = logging.getLogger(__name__)

_MAX_FDS = 4


class ServerError(CniError):
    def __init__(self, msg: str, details: str = ""):
        super().__init__(ErrorCode.IO_FAILURE, msg, details)


def decode_request(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """(plugin name, CNI_* env, stdin) from a shim request."""
    fields: list[bytes] = []
    pos = 0
    while True:
        end = data.find(b"\0", pos)
        if end < 0:
            raise ServerError("truncated shim request: header has no end")
        field = data[pos:end]
        pos = end + 1
        if not field:
            break
        fields.append(field)
    if len(fields) < 2 or fields[0] != MAGIC:
        raise ServerError("not a kubewire shim request (bad magic or no plugin name)")
    env: dict[str, str] = {}
    for item in fields[2:]:
        key, sep, value = item.partition(b"=")
        if not sep:
            raise ServerError(f"malformed env entry {item!r}")
        env[key.decode()] = value.decode()
    return fields[1].decode(), env, data[pos:]


def encode_reply(code: int, stdout: bytes) -> bytes:
    return f"{code}\n".encode() + stdout


class PluginServer:
    """Serve shim requests on `socket_path` with up to `max_workers` concurrent plugins."""

    def __init__(
        self,
        socket_path: Path,
        max_workers: int = 8,
        plugins: Mapping[str, str] = PLUGINS,
        io_timeout: float = 300.0,
    ):
        self.socket_path = Path(socket_path)
        self.max_workers = max_workers
        self.io_timeout = io_timeout
        self._plugin_modules = dict(plugins)
        self._runs: dict[str, RunFn] = {}
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.served = 0

    def start(self) -> None:
        if self._listener is not None:
            raise ServerError("plugin server already started")
        # Import the plugins now so the first pod does not pay for it.
        for name, module in self._plugin_modules.items():
            self._runs[name] = importlib.import_module(module).run
        self._remove_stale_socket()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o600)
            listener.listen(1024)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="kubewire-cni")
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="kubewire-cni-accept", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes accept() in the accept thread
        if self._accept_thread is not None:
            self._accept_thread.join()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> PluginServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _remove_stale_socket(self) -> None:
        if not self.socket_path.exists():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket_path))
        except OSError:
            self.socket_path.unlink()  # left behind by a server that died
            return
        finally:
            probe.close()
        raise ServerError(
            f"another plugin server is listening on {self.socket_path}",
            "stop it first or use another socket path",
        )

    def _accept_loop(self) -> None:
        listener, pool = self._listener, self._pool
        assert listener is not None and pool is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.warning("plugin server accept failed: %s", exc)
                continue
            pool.submit(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            conn.settimeout(self.io_timeout)
            data, fds = self._receive(conn)
            code, out = self._run(data, fds)
            conn.sendall(encode_reply(code, out))
        except Exception:
            log.exception("plugin server: request failed")
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()
            with self._lock:
                self.served += 1

    @staticmethod
    def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
        first, fds, flags, _addr = socket.recv_fds(conn, 65536, _MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        chunks = [first]
        if flags & socket.MSG_CTRUNC:
            for fd in fds:
                os.close(fd)
            raise ServerError("shim sent more file descriptors than expected")
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), list(fds)

    def _run(self, data: bytes, fds: list[int]) -> tuple[int, bytes]:
        try:
            plugin, env, stdin = decode_request(data)
            run = self._runs.get(plugin)
            if run is None:
                raise ServerError(f"plugin server has no plugin {plugin!r}")
            if len(fds) != 1:
                raise ServerError(f"expected one netns fd from the shim, got {len(fds)}")
            return run(env.get("CNI_COMMAND", ""), env, stdin, fds[0])
        except CniError as exc:
            return 1, exc.to_json()
        except Exception as exc:
            log.exception("plugin server: plugin crashed")
            return 1, CniError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}").to_json()
