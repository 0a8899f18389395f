"""What the built-in test server answers: pure functions from a request to reply bytes.

HTTP: every path answers a JSON echo of the request (the Gateway API conformance echo
server's shape plus pod details), except three agnhost-netexec-compatible paths that many
Kubernetes examples use: `/hostname` (the pod name), `/clientip` (the client's ip:port)
and `/echo?msg=TEXT` (TEXT), all text/plain.

UDP: a datagram `hostname` answers the pod name and `clientip` the client's ip:port (like
agnhost netexec's UDP commands; one trailing newline is ignored and mirrored back); every
other datagram is echoed back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from kubewire.workload.http import BadRequest, Request, canonical_header_name


@dataclass(frozen=True, slots=True)
class PodContext:
    """The identity a built-in container reports."""

    pod: str
    namespace: str
    node: str
    pod_ip: str
    container: str


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes


def format_addr(addr: object) -> str:
    """`ip:port` (IPv4, with IPv4-mapped IPv6 unmapped) or `[ip]:port` (IPv6)."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return str(addr)
    host, port = str(addr[0]), addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:") :]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def echo_document(request: Request, ctx: PodContext, remote: str, port: int) -> dict[str, object]:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        if name.lower() == "host":
            continue  # like Go's net/http: the Host header is reported as `host` only
        headers.setdefault(canonical_header_name(name), []).append(value)
    return {
        "path": request.target,
        "host": request.host,
        "method": request.method,
        "proto": request.version,
        "headers": headers,
        "namespace": ctx.namespace,
        "pod": ctx.pod,
        "node": ctx.node,
        "podIP": ctx.pod_ip,
        "container": ctx.container,
        "port": port,
        "remoteAddr": remote,
    }


def _text(status: int, text: str) -> Reply:
    return Reply(status, "text/plain; charset=utf-8", text.encode())


def http_reply(request: Request, ctx: PodContext, remote: str, port: int) -> Reply:
    path = urlsplit(request.target).path if request.target.startswith("/") else request.target
    if path == "/hostname":
        return _text(200, ctx.pod)
    if path == "/clientip":
        return _text(200, remote)
    if path == "/echo":
        query = parse_qs(urlsplit(request.target).query)
        return _text(200, query.get("msg", [""])[0])
    body = json.dumps(echo_document(request, ctx, remote, port), indent=1) + "\n"
    return Reply(200, "application/json", body.encode())


def error_reply(error: BadRequest) -> Reply:
    body = json.dumps({"error": error.reason, "status": error.status}) + "\n"
    return Reply(error.status, "application/json", body.encode())


def udp_reply(datagram: bytes, ctx: PodContext, remote: str) -> tuple[str, bytes]:
    """(query kind for the access log, reply datagram)."""
    newline = b""
    command = datagram
    for ending in (b"\r\n", b"\n"):
        if command.endswith(ending):
            command, newline = command[: -len(ending)], ending
            break
    if command == b"hostname":
        return "hostname", ctx.pod.encode() + newline
    if command == b"clientip":
        return "clientip", remote.encode() + newline
    return "echo", datagram
