"""Control protocol codecs, echo replies, process records and the server's request
handling that needs no namespace."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from kubewire.workload.client import raise_for_reply
from kubewire.workload.echo import PodContext, format_addr, http_reply, udp_reply
from kubewire.workload.errors import (
    ContainerSpecError,
    PortBindError,
    ProcessRecordError,
    RequestRejectedError,
)
from kubewire.workload.http import Request
from kubewire.workload.protocol import ContainerStart, PortSpec, decode, encode
from kubewire.workload.runner import (
    KillResult,
    ProcessRecord,
    kill_record,
    kill_recorded,
    process_start_ticks,
    read_record,
    record_process,
    write_record,
)
from kubewire.workload.server import PodServer, _startup_line

CTX = PodContext("web-1", "default", "node-a", "10.244.1.5", "nginx")


def make_start(**overrides: Any) -> ContainerStart:
    fields: dict[str, Any] = {
        "id": "c1",
        "pod": "web-1",
        "namespace": "default",
        "node": "node-a",
        "pod_ip": "10.244.1.5",
        "netns": "/run/netns/x",
        "container": "nginx",
        "ports": (PortSpec(80), PortSpec(53, "UDP")),
        "log": "/tmp/x.log",
    }
    fields.update(overrides)
    return ContainerStart(**fields)


def test_start_round_trip() -> None:
    spec = make_start()
    wire = json.loads(encode(spec.to_wire()))
    assert wire["op"] == "start"
    assert wire["podIP"] == "10.244.1.5"
    assert wire["ports"] == [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]
    assert ContainerStart.from_wire(wire) == spec


@pytest.mark.parametrize(
    "change",
    [
        {"id": ""},
        {"pod": 5},
        {"ports": (PortSpec(80), PortSpec(80))},
        {"netns": None},
    ],
)
def test_start_validation(change: dict[str, Any]) -> None:
    with pytest.raises(ContainerSpecError):
        make_start(**change)


@pytest.mark.parametrize(
    "raw",
    [
        {"port": 0},
        {"port": 65536},
        {"port": "80"},
        {"port": True},
        {"port": 80, "protocol": "tcp"},
        "80",
    ],
)
def test_port_validation(raw: object) -> None:
    with pytest.raises(ContainerSpecError):
        PortSpec.from_wire(raw)


def test_decode_rejects_non_objects() -> None:
    assert decode(b'{"op":"ping"}\n') == {"op": "ping"}
    with pytest.raises(ValueError):
        decode(b"[1]\n")
    with pytest.raises(ValueError):
        decode(b"{nope\n")


def test_raise_for_reply() -> None:
    assert raise_for_reply({"ok": True, "x": 1}) == {"ok": True, "x": 1}
    with pytest.raises(PortBindError) as info:
        raise_for_reply(
            {"ok": False, "error": "busy", "code": "EADDRINUSE", "port": 80, "protocol": "TCP"}
        )
    assert (info.value.code, info.value.port, info.value.protocol) == ("EADDRINUSE", 80, "TCP")
    with pytest.raises(RequestRejectedError) as other:
        raise_for_reply({"ok": False, "error": "dup", "code": "EEXIST"})
    assert other.value.code == "EEXIST" and not isinstance(other.value, PortBindError)


@pytest.mark.parametrize(
    ("addr", "text"),
    [
        (("10.0.0.1", 5000), "10.0.0.1:5000"),
        (("::ffff:10.0.0.1", 5000, 0, 0), "10.0.0.1:5000"),
        (("fd00::1", 80, 0, 0), "[fd00::1]:80"),
        (("::1", 80, 0, 0), "[::1]:80"),
    ],
)
def test_format_addr(addr: tuple[object, ...], text: str) -> None:
    assert format_addr(addr) == text


def test_http_echo_document() -> None:
    request = Request(
        "POST",
        "/p?q=1",
        "HTTP/1.1",
        (("Host", "svc.example"), ("x-request-id", "a"), ("X-Request-Id", "b")),
        3,
    )
    reply = http_reply(request, CTX, "10.0.0.9:1234", 8080)
    assert reply.status == 200 and reply.content_type == "application/json"
    doc = json.loads(reply.body)
    assert doc == {
        "path": "/p?q=1",
        "host": "svc.example",
        "method": "POST",
        "proto": "HTTP/1.1",
        "headers": {"X-Request-Id": ["a", "b"]},
        "namespace": "default",
        "pod": "web-1",
        "node": "node-a",
        "podIP": "10.244.1.5",
        "container": "nginx",
        "port": 8080,
        "remoteAddr": "10.0.0.9:1234",
    }


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/hostname", b"web-1"),
        ("/clientip", b"10.0.0.9:1234"),
        ("/echo?msg=hi%20there", b"hi there"),
    ],
)
def test_http_netexec_paths(target: str, body: bytes) -> None:
    request = Request("GET", target, "HTTP/1.1", (("Host", "h"),))
    reply = http_reply(request, CTX, "10.0.0.9:1234", 80)
    assert (reply.status, reply.body) == (200, body)
    assert reply.content_type.startswith("text/plain")


@pytest.mark.parametrize(
    ("datagram", "kind", "reply"),
    [
        (b"hostname", "hostname", b"web-1"),
        (b"hostname\n", "hostname", b"web-1\n"),
        (b"hostname\r\n", "hostname", b"web-1\r\n"),
        (b"clientip", "clientip", b"10.0.0.9:1234"),
        (b"hello", "echo", b"hello"),
        (b"hostnames", "echo", b"hostnames"),
        (b"", "echo", b""),
        (b"\xff\x00", "echo", b"\xff\x00"),
    ],
)
def test_udp_reply(datagram: bytes, kind: str, reply: bytes) -> None:
    assert udp_reply(datagram, CTX, "10.0.0.9:1234") == (kind, reply)


def test_startup_line() -> None:
    assert _startup_line(make_start()) == (
        "serving HTTP on :80/TCP, UDP echo on :53/UDP in pod default/web-1"
    )
    assert _startup_line(make_start(ports=(PortSpec(53, "UDP"),))) == (
        "serving UDP echo on :53/UDP in pod default/web-1"
    )
    assert _startup_line(make_start(ports=())) == (
        "serving nothing (no ports declared) in pod default/web-1"
    )


def test_server_control_requests_without_namespaces(tmp_path: Path) -> None:
    async def scenario() -> list[dict[str, Any]]:
        server = PodServer()
        log = str(tmp_path / "c.log")
        replies = [
            await server.handle({"op": "ping", "rid": 7}),
            await server.handle({"op": "dance"}),
            await server.handle({"op": "start", "id": "c1"}),
            await server.handle(make_start(netns=str(tmp_path / "missing"), log=log).to_wire()),
            await server.handle(make_start(log=str(tmp_path / "no" / "dir.log")).to_wire()),
            await server.handle({"op": "stop", "id": "unknown"}),
            await server.handle({"op": "stop"}),
            await server.handle({"op": "list"}),
        ]
        await server.close()
        return replies

    replies = asyncio.run(scenario())
    ping, unknown, incomplete, no_netns, no_logdir, stop_unknown, stop_bad, listed = replies
    assert ping == {"ok": True, "pid": os.getpid(), "containers": 0, "rid": 7}
    assert unknown["ok"] is False and "unknown op" in unknown["error"]
    assert incomplete["ok"] is False and incomplete["code"] == "EINVAL"
    assert no_netns["ok"] is False and no_netns["code"] == "ENOENT"
    assert "missing" in no_netns["error"]
    assert no_logdir["ok"] is False and no_logdir["code"] == "ENOENT"
    assert stop_unknown == {"ok": True, "found": False}
    assert stop_bad["ok"] is False
    assert listed == {"ok": True, "containers": []}


def test_process_record_round_trip(tmp_path: Path) -> None:
    record = record_process(os.getpid(), ["python", "-m", "pytest"], tmp_path / "log")
    assert record.start_time_ticks == process_start_ticks(os.getpid())
    pid_file = tmp_path / "c.pid"
    write_record(record, pid_file)
    assert read_record(pid_file) == record
    assert json.loads(pid_file.read_text())["argv"] == ["python", "-m", "pytest"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"pid": 1, "start_time_ticks": 5}',
        '{"pid": 100}',
        '{"pid": 100, "start_time_ticks": -1}',
        '{"pid": true, "start_time_ticks": 1}',
    ],
)
def test_bad_pid_files(tmp_path: Path, text: str) -> None:
    pid_file = tmp_path / "bad.pid"
    pid_file.write_text(text)
    with pytest.raises(ProcessRecordError):
        read_record(pid_file)
    with pytest.raises(ProcessRecordError):
        kill_recorded(pid_file)
    with pytest.raises(ProcessRecordError, match="cannot read"):
        read_record(tmp_path / "missing.pid")


def test_stale_record_is_never_signalled(tmp_path: Path) -> None:
    # Our own PID with another start time: if this signalled anything, pytest would die.
    mine = record_process(os.getpid(), ["pytest"])
    stale = ProcessRecord(mine.pid, mine.start_time_ticks + 1, ("old",), "")
    pid_file = tmp_path / "stale.pid"
    write_record(stale, pid_file)
    assert kill_recorded(pid_file) is KillResult.STALE
    assert not pid_file.exists()


def test_missing_process_is_gone() -> None:
    # Above any possible pid_max, so no such process can exist.
    assert kill_record(ProcessRecord(4_194_305, 1, ("x",), "")) is KillResult.GONE
