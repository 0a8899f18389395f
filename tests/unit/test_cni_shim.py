"""Shim executables and the plugin server, exercised with kubewire-ipam (no root needed)."""

from __future__ import annotations

import json
import os
import py_compile
import socket
import stat
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kubewire.cni.invoke import NsRef
from kubewire.cni.plugins import PLUGINS
from kubewire.cni.server import PluginServer, ServerError, decode_request
from kubewire.cni.shim import MAGIC, install_plugins


def ipam_conf(tmp_path: Path) -> bytes:
    return json.dumps(
        {
            "cniVersion": "1.1.0",
            "name": "shimnet",
            "type": "kubewire-ipam",
            "ipam": {
                "type": "kubewire-ipam",
                "ranges": [[{"subnet": "10.50.0.0/24"}]],
                "dataDir": str(tmp_path / "ipam"),
            },
        }
    ).encode()


def call(executable: Path, command: str, stdin: bytes, container_id: str = "c1") -> tuple[int, Any]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": "/run/netns/unused",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(executable.parent),
    }
    proc = subprocess.run([str(executable)], input=stdin, env=env, capture_output=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else None


def test_install_writes_executable_shims(tmp_path: Path) -> None:
    paths = install_plugins(tmp_path / "bin", sys.executable, tmp_path / "s.sock")
    assert sorted(p.name for p in paths) == sorted(PLUGINS)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        text = path.read_text()
        assert text.startswith(f"#!{sys.executable} -IS\n")
        assert "import json" not in text and "import socket\n" not in text
        py_compile.compile(str(path), doraise=True, cfile=str(tmp_path / "x.pyc"))
    assert not [p for p in (tmp_path / "bin").iterdir() if p.name.startswith(".")]


def test_fallback_runs_the_plugin_in_process(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    install_plugins(bin_dir, sys.executable, tmp_path / "nobody-listens.sock")
    shim = bin_dir / "kubewire-ipam"
    code, out = call(shim, "VERSION", b'{"cniVersion": "1.0.0"}')
    assert (code, out["cniVersion"]) == (0, "1.0.0")
    code, out = call(shim, "ADD", ipam_conf(tmp_path))
    assert code == 0
    assert out["ips"] == [{"address": "10.50.0.2/24", "gateway": "10.50.0.1"}]
    code, out = call(shim, "ADD", b"{broken")
    assert code == 1 and out["code"] == 6


def test_no_socket_configured_means_fallback(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    install_plugins(bin_dir, sys.executable, None)
    code, out = call(bin_dir / "kubewire-ipam", "ADD", ipam_conf(tmp_path))
    assert code == 0 and out["ips"][0]["address"] == "10.50.0.2/24"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PluginServer]:
    srv = PluginServer(tmp_path / "run" / "plugins.sock", max_workers=4)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_server_path(tmp_path: Path, server: PluginServer) -> None:
    bin_dir = tmp_path / "bin"
    install_plugins(bin_dir, sys.executable, server.socket_path)
    assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o600
    shim = bin_dir / "kubewire-ipam"
    code, out = call(shim, "ADD", ipam_conf(tmp_path))
    assert code == 0 and out["ips"][0]["address"] == "10.50.0.2/24"
    code, out = call(shim, "ADD", b"{broken")
    assert code == 1 and out["code"] == 6
    assert server.served == 2


def test_server_handles_parallel_shims(tmp_path: Path, server: PluginServer) -> None:
    bin_dir = tmp_path / "bin"
    install_plugins(bin_dir, sys.executable, server.socket_path)
    conf = ipam_conf(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda n: call(bin_dir / "kubewire-ipam", "ADD", conf, f"c{n}"), range(16))
        )
    assert all(code == 0 for code, _ in results)
    addresses = {out["ips"][0]["address"] for _, out in results}
    assert len(addresses) == 16
    assert server.served == 16


def test_server_passes_the_shims_netns_as_host_namespace(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def run(
        command: str, env: Mapping[str, str], stdin: bytes, host_netns: NsRef
    ) -> tuple[int, bytes]:
        assert isinstance(host_netns, int)
        seen.append((command, os.fstat(host_netns).st_ino))
        return 0, b'{"ok": true, "stdin": "' + stdin + b'"}'

    module = types.ModuleType("kwtest_cni_fake_plugin")
    module.run = run  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        plugins = {"kubewire-fake": module.__name__}
        with PluginServer(tmp_path / "s.sock", plugins=plugins) as srv:
            install_plugins(tmp_path / "bin", sys.executable, srv.socket_path, plugins=plugins)
            code, out = call(tmp_path / "bin" / "kubewire-fake", "DEL", b"hello")
    finally:
        del sys.modules[module.__name__]
    assert (code, out) == (0, {"ok": True, "stdin": "hello"})
    assert seen == [("DEL", os.stat("/proc/self/ns/net").st_ino)]


def test_plugin_crash_in_server_becomes_an_error_result(tmp_path: Path) -> None:
    def run(
        command: str, env: Mapping[str, str], stdin: bytes, host_netns: NsRef
    ) -> tuple[int, bytes]:
        raise RuntimeError("exploded")

    module = types.ModuleType("kwtest_cni_crash_plugin")
    module.run = run  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        plugins = {"kubewire-crash": module.__name__}
        with PluginServer(tmp_path / "s.sock", plugins=plugins) as srv:
            install_plugins(tmp_path / "bin", sys.executable, srv.socket_path, plugins=plugins)
            code, out = call(tmp_path / "bin" / "kubewire-crash", "ADD", b"{}")
    finally:
        del sys.modules[module.__name__]
    assert code == 1
    assert out["code"] == 999 and "exploded" in out["msg"]


def test_server_start_and_stop(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a crashed server leaves it
    with PluginServer(path) as srv:
        assert path.exists()
        with pytest.raises(ServerError, match="another plugin server"):
            PluginServer(path).start()
        assert srv.served == 0
    assert not path.exists()


@pytest.mark.parametrize(
    "data",
    [b"", b"kwcni1\0", b"other\0kubewire-ipam\0\0{}", b"kwcni1\0p\0NOEQUALS\0\0{}"],
)
def test_decode_rejects_malformed_requests(data: bytes) -> None:
    with pytest.raises(ServerError):
        decode_request(data)


def test_decode_request() -> None:
    data = MAGIC + b'\0kubewire-bridge\0CNI_COMMAND=ADD\0CNI_ARGS=\0\0{"a": 1}\0tail'
    assert decode_request(data) == (
        "kubewire-bridge",
        {"CNI_COMMAND": "ADD", "CNI_ARGS": ""},
        b'{"a": 1}\0tail',
    )
