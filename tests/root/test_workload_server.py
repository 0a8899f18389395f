"""The built-in pod server against real network namespaces (needs root).

Every namespace is named kwtest-wl-*, every address lives inside those namespaces, and
every fixture cleans up in `finally`.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubewire.kernel.netns import create_netns, delete_netns, entered, list_netns
from kubewire.workload.client import PodServerClient, spawn_server
from kubewire.workload.errors import ControlError, PortBindError, RequestRejectedError
from kubewire.workload.protocol import ContainerStart, PortSpec

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

PREFIX = f"kwtest-wl-s{os.getpid()}-"
ECHO_KEYS = {
    "pod",
    "namespace",
    "node",
    "podIP",
    "remoteAddr",
    "method",
    "path",
    "host",
    "proto",
    "headers",
    "container",
    "port",
}


def lo_up(path: Path) -> None:
    with entered(path):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        # SIOCGIFFLAGS / SIOCSIFFLAGS on a socket of the namespace act on its `lo`.
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(sock, 0x8913, request))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sh14x", b"lo", flags | 1))


def ip(netns: Path, *args: str) -> None:
    """`ip -n NS ...`: only ever inside one of our test namespaces."""
    subprocess.run(["ip", "-n", netns.name, *args], check=True)


def socket_in(path: Path, kind: int = socket.SOCK_STREAM) -> socket.socket:
    with entered(path):
        sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(5)
    return sock


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


@pytest.fixture(scope="module", autouse=True)
def no_leaked_namespaces() -> Iterator[None]:
    yield
    assert list_netns(PREFIX) == []


@pytest.fixture
def make_ns() -> Iterator[Callable[[], Path]]:
    names: list[str] = []

    def make() -> Path:
        name = f"{PREFIX}{len(names)}"
        names.append(name)
        path = create_netns(name)
        lo_up(path)
        return path

    try:
        yield make
    finally:
        for name in names:
            delete_netns(name)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PodServerClient]:
    control = tmp_path / "ctl.sock"
    proc = spawn_server(control, tmp_path / "server.log")
    client = PodServerClient(control)
    try:
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()
    assert not control.exists()


def start(
    client: PodServerClient,
    tmp_path: Path,
    netns: Path,
    cid: str,
    ports: tuple[PortSpec, ...] = (PortSpec(80), PortSpec(53, "UDP")),
    *,
    pod: str | None = None,
    pod_ip: str = "10.244.0.10",
) -> ContainerStart:
    spec = ContainerStart(
        id=cid,
        pod=pod or f"pod-{cid}",
        namespace="team-a",
        node="node-1",
        pod_ip=pod_ip,
        netns=str(netns),
        container="app",
        ports=ports,
        log=str(tmp_path / f"{cid}.log"),
    )
    assert client.start(spec) == [str(p) for p in ports]
    return spec


def http_get(
    sock: socket.socket, target: str = "/", method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("pod.test")
    conn.sock = sock
    conn.request(method, target, headers={k.replace("_", "-"): v for k, v in headers.items()})
    response = conn.getresponse()
    body = response.read()
    return response.status, dict(response.getheaders()), body


def test_http_echo_in_three_namespaces(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    namespaces = [make_ns() for _ in range(3)]
    for i, ns in enumerate(namespaces):
        start(server, tmp_path, ns, f"c{i}", pod_ip=f"10.244.0.{i + 10}")
    for i, ns in enumerate(namespaces):
        sock = socket_in(ns)
        sock.connect(("127.0.0.1", 80))
        client_ip, client_port = sock.getsockname()
        status, headers, body = http_get(sock, f"/path/{i}?q=1", X_Test="a")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        doc = json.loads(body)
        assert set(doc) >= ECHO_KEYS
        assert doc["pod"] == f"pod-c{i}"
        assert doc["namespace"] == "team-a"
        assert doc["node"] == "node-1"
        assert doc["podIP"] == f"10.244.0.{i + 10}"
        assert doc["container"] == "app"
        assert doc["port"] == 80
        assert doc["method"] == "GET"
        assert doc["path"] == f"/path/{i}?q=1"
        assert doc["host"] == "pod.test"
        assert doc["proto"] == "HTTP/1.1"
        assert doc["headers"]["X-Test"] == ["a"]
        assert doc["remoteAddr"] == f"{client_ip}:{client_port}"
        sock.close()
    listed = server.list()
    assert [c["id"] for c in listed] == ["c0", "c1", "c2"]
    assert all(c["requests"] == 1 for c in listed)


def test_http_from_another_namespace_over_veth(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    pod, client_ns = make_ns(), make_ns()
    # Both ends live in our test namespaces; the default namespace is never touched.
    ip(
        pod,
        "link",
        "add",
        "kwwl0",
        "type",
        "veth",
        "peer",
        "name",
        "kwwl1",
        "netns",
        client_ns.name,
    )
    for ns, dev, addr in ((pod, "kwwl0", "10.99.0.1/24"), (client_ns, "kwwl1", "10.99.0.2/24")):
        ip(ns, "addr", "add", addr, "dev", dev)
        ip(ns, "link", "set", dev, "up")
    start(server, tmp_path, pod, "web", pod_ip="10.99.0.1")
    sock = socket_in(client_ns)
    sock.connect(("10.99.0.1", 80))
    assert sock.getsockname()[0] == "10.99.0.2"
    status, _, body = http_get(sock, "/")
    doc = json.loads(body)
    assert status == 200
    assert doc["remoteAddr"] == "{}:{}".format(*sock.getsockname())
    assert doc["podIP"] == "10.99.0.1"
    udp = socket_in(client_ns, socket.SOCK_DGRAM)
    udp.connect(("10.99.0.1", 53))
    udp.send(b"clientip")
    assert udp.recv(100) == "{}:{}".format(*udp.getsockname()).encode()
    udp.close()
    sock.close()


def test_keep_alive_head_and_bodies(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    ns = make_ns()
    start(server, tmp_path, ns, "ka", (PortSpec(8080),))
    sock = socket_in(ns)
    sock.connect(("127.0.0.1", 8080))
    conn = http.client.HTTPConnection("pod.test")
    conn.sock = sock
    conn.request("HEAD", "/head")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    assert int(head.getheader("Content-Length") or 0) > 0
    conn.request("POST", "/post", body=b"x" * 100_000)
    post = json.loads(conn.getresponse().read())
    assert post["method"] == "POST" and post["headers"]["Content-Length"] == ["100000"]
    conn.request("PUT", "/chunked", body=iter([b"abc", b"defg"]), encode_chunked=True)
    put = json.loads(conn.getresponse().read())
    assert put["method"] == "PUT" and put["headers"]["Transfer-Encoding"] == ["chunked"]
    conn.request("DELETE", "/any-method")
    assert json.loads(conn.getresponse().read())["method"] == "DELETE"
    conn.request("GET", "/hostname")
    assert conn.getresponse().read() == b"pod-ka"
    assert conn.sock is sock  # one connection carried every request
    assert server.list()[0]["connections"] == 1
    sock.close()


def test_pipelined_requests_and_http10(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    ns = make_ns()
    start(server, tmp_path, ns, "pipe", (PortSpec(80),))
    sock = socket_in(ns)
    sock.connect(("127.0.0.1", 80))
    sock.sendall(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" * 50 + b"GET /last HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 50
    assert data.count(b"HTTP/1.0 200 OK") == 1
    assert data.endswith(b"}\n") and b'"/last"' in data
    sock.close()


def test_curl_interop(server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path) -> None:
    curl = subprocess.run(["which", "curl"], capture_output=True, text=True).stdout.strip()
    if not curl:
        pytest.fail("curl is not installed: run `make setup` (scripts/setup.sh installs it)")
    ns = make_ns()
    start(server, tmp_path, ns, "curl", (PortSpec(80),))
    out = subprocess.run(
        [
            "nsenter",
            f"--net={ns}",
            curl,
            "-sS",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "@-",
            "http://127.0.0.1/upload",
        ],
        input=b"y" * 5000,
        capture_output=True,
        check=True,
        timeout=10,
    )
    doc = json.loads(out.stdout)
    assert doc["method"] == "POST" and doc["path"] == "/upload"
    assert doc["headers"]["User-Agent"][0].startswith("curl/")


def test_udp_echo_and_hostname(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    ns = make_ns()
    start(server, tmp_path, ns, "dns", (PortSpec(53, "UDP"),), pod="dns-pod")
    udp = socket_in(ns, socket.SOCK_DGRAM)
    udp.sendto(b"hello \x00 world", ("127.0.0.1", 53))
    assert udp.recv(100) == b"hello \x00 world"
    udp.sendto(b"hostname", ("127.0.0.1", 53))
    assert udp.recv(100) == b"dns-pod"
    udp.sendto(b"hostname\n", ("127.0.0.1", 53))
    assert udp.recv(100) == b"dns-pod\n"
    udp.close()
    log = Path(tmp_path / "dns.log").read_text()
    wait_for(
        lambda: log.count(" UDP ") >= 3 or (tmp_path / "dns.log").read_text().count(" UDP ") >= 3
    )


def test_port_conflict_binds_nothing(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    ns = make_ns()
    start(server, tmp_path, ns, "first", (PortSpec(80), PortSpec(53, "UDP")))
    spec = ContainerStart(
        "second",
        "pod-2",
        "team-a",
        "node-1",
        "10.244.0.2",
        str(ns),
        "app",
        (PortSpec(8080), PortSpec(5353, "UDP"), PortSpec(80)),
        str(tmp_path / "second.log"),
    )
    with pytest.raises(PortBindError) as info:
        server.start(spec)
    assert (info.value.code, info.value.port, info.value.protocol) == ("EADDRINUSE", 80, "TCP")
    assert "80/TCP" in str(info.value) and "nothing was bound" in str(info.value)
    # 8080/TCP and 5353/UDP were bound before 80 failed: both must be free again.
    probe = socket_in(ns)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", 8080))
    probe.close()
    with entered(ns):
        free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free.bind(("0.0.0.0", 5353))
    free.close()
    udp_clash = ContainerStart(
        "third",
        "pod-3",
        "team-a",
        "node-1",
        "10.244.0.3",
        str(ns),
        "app",
        (PortSpec(53, "UDP"),),
        str(tmp_path / "third.log"),
    )
    with pytest.raises(PortBindError) as udp_info:
        server.start(udp_clash)
    assert (udp_info.value.code, udp_info.value.port) == ("EADDRINUSE", 53)
    assert [c["id"] for c in server.list()] == ["first"]
    # The id of a failed start stays free for a retry with other ports.
    server.start(spec.__class__(**{**_fields(spec), "ports": (PortSpec(8080),)}))
    with pytest.raises(RequestRejectedError) as dup:
        server.start(spec.__class__(**{**_fields(spec), "ports": (PortSpec(9090),)}))
    assert dup.value.code == "EEXIST"


def _fields(spec: ContainerStart) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in spec.__slots__}


def test_conflict_with_a_foreign_socket(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    ns = make_ns()
    with entered(ns):
        foreign = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    foreign.bind(("127.0.0.1", 80))
    foreign.listen()
    try:
        with pytest.raises(PortBindError) as info:
            server.start(
                ContainerStart(
                    "x", "p", "n", "", "", str(ns), "c", (PortSpec(80),), str(tmp_path / "x.log")
                )
            )
        assert info.value.code == "EADDRINUSE"
        assert server.list() == []
    finally:
        foreign.close()


def test_stop_closes_ports_and_connections(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    ns = make_ns()
    start(server, tmp_path, ns, "stopme")
    open_conn = socket_in(ns)
    open_conn.connect(("127.0.0.1", 80))
    assert http_get(open_conn)[0] == 200
    assert server.stop("stopme") is True
    assert open_conn.recv(100) == b""  # the kept-alive connection was closed
    refused = socket_in(ns)
    with pytest.raises(ConnectionRefusedError):
        refused.connect(("127.0.0.1", 80))
    refused.close()
    open_conn.close()
    with entered(ns):
        rebind = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rebind.bind(("0.0.0.0", 53))  # the UDP port is free again too
    rebind.close()
    assert server.stop("stopme") is False
    assert server.list() == []
    start(server, tmp_path, ns, "stopme")  # the same id and ports can start again


def test_malformed_http_gets_400_and_server_keeps_serving(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    ns = make_ns()
    start(server, tmp_path, ns, "bad", (PortSpec(80),))
    for garbage in (
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    ):
        sock = socket_in(ns)
        sock.connect(("127.0.0.1", 80))
        sock.sendall(garbage)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"Connection: close" in head
        assert json.loads(body)["status"] == 400
    assert server.ping()["ok"] is True
    sock = socket_in(ns)
    sock.connect(("127.0.0.1", 80))
    assert http_get(sock)[0] == 200
    sock.close()
    lines = (tmp_path / "bad.log").read_text
    wait_for(lambda: lines().count(" - - 400") == 4)


def test_control_errors_each_get_a_reply(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(5)
    raw.connect(server.socket_path)
    reader = raw.makefile("rb")
    requests = [
        b"not json\n",
        b"[1, 2]\n",
        b'{"op": "warp", "rid": 1}\n',
        b'{"op": "start", "rid": 2, "id": "x"}\n',
        b'{"op": "start", "rid": 3, "id": "x", "pod": "p", "namespace": "n", "netns": '
        b'"/run/netns/kwtest-wl-missing", "container": "c", "ports": [], "log": "/tmp/kwwl.log"}\n',
        b'{"op": "stop", "rid": 4}\n',
        b'{"op": "ping", "rid": 5}\n',
    ]
    raw.sendall(b"".join(requests))
    replies = [json.loads(reader.readline()) for _ in requests]
    assert [r["ok"] for r in replies] == [False] * 6 + [True]
    assert [r.get("rid") for r in replies] == [None, None, 1, 2, 3, 4, 5]
    assert replies[4]["code"] == "ENOENT" and "kwtest-wl-missing" in replies[4]["error"]
    raw.close()
    Path("/tmp/kwwl.log").unlink(missing_ok=True)
    with pytest.raises(RequestRejectedError):
        server.start(
            id="y",
            pod="p",
            namespace="n",
            netns="/nonexistent",
            container="c",
            ports=[],
            log=str(tmp_path / "y.log"),
        )


def test_access_log_format(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    ns = make_ns()
    spec = start(server, tmp_path, ns, "logged")
    sock = socket_in(ns)
    sock.connect(("127.0.0.1", 80))
    http_get(sock, "/a/b?c=d")
    http_get(sock, "/missing", method="POST")
    sock.close()
    log = Path(spec.log)
    wait_for(lambda: len(log.read_text().splitlines()) >= 3)
    first, *rest = log.read_text().splitlines()
    ts = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(
        ts + r" serving HTTP on :80/TCP, UDP echo on :53/UDP in pod team-a/pod-logged", first
    )
    remote = r"127\.0\.0\.1:\d+"
    assert re.fullmatch(f"{ts} {remote} GET /a/b\\?c=d 200", rest[0])
    assert re.fullmatch(f"{ts} {remote} POST /missing 200", rest[1])


def test_200_containers_start_fast(
    server: PodServerClient, make_ns: Callable[[], Path], tmp_path: Path
) -> None:
    namespaces = [make_ns() for _ in range(200)]
    specs = [
        ContainerStart(
            f"bulk{i}",
            f"bulk-{i}",
            "load",
            "node-1",
            f"10.245.{i // 250}.{i % 250}",
            str(ns),
            "app",
            (PortSpec(80), PortSpec(53, "UDP")),
            str(tmp_path / f"bulk{i}.log"),
        )
        for i, ns in enumerate(namespaces)
    ]
    began = time.perf_counter()
    for spec in specs:
        server.start(spec)
    elapsed = time.perf_counter() - began
    assert elapsed < 5.0, f"200 containers took {elapsed:.2f}s"
    assert server.ping()["containers"] == 200
    for i in (0, 57, 199):
        sock = socket_in(namespaces[i])
        sock.connect(("127.0.0.1", 80))
        assert json.loads(http_get(sock)[2])["pod"] == f"bulk-{i}"
        sock.close()
    for i in (0, 57, 199):
        log = tmp_path / f"bulk{i}.log"
        wait_for(lambda log=log: " GET / 200" in log.read_text())  # type: ignore[misc]
    for spec in specs:
        assert server.stop(spec.id)
    assert server.list() == []


def test_server_refuses_a_second_instance_on_the_same_socket(
    server: PodServerClient, tmp_path: Path
) -> None:
    proc = None
    try:
        with pytest.raises(ControlError, match="exited with status 1"):
            proc = spawn_server(server.socket_path, tmp_path / "second.log", ready_timeout=5)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    assert "already listening" in (tmp_path / "second.log").read_text()
    assert server.ping()["ok"] is True
