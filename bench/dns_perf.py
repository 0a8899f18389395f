"""Cluster DNS throughput, latency and memory with dnsperf, against Unbound in the same run.

    sudo .venv/bin/python bench/dns_perf.py [--services 10000 --endpoints 10 --pods 50000]
        [--servers kubewire-bare,kubewire-chain,unbound] [--mixes cluster,external]
        [--duration 10 --repeats 3 --outstanding 20,100,400]

Three throwaway namespaces, removed at the end::

    kwtest-dnsb-client 10.253.0.2 --- 10.253.0.1 kwtest-dnsb-server 10.253.1.1 --- 10.253.1.2
    (dnsperf, cpu 1)                   (the server under test, cpu 0)     kwtest-dnsb-upstream
                                                                           (Unbound, cpu 1)

The server under test runs pinned to cpu 0 (``taskset -c 0``), so its queries/s are its
queries/s per core; /proc/PID/stat utime+stime deltas over each run check that it really
used about one core. dnsperf runs pinned to cpu 1. The upstream is an Unbound holding a
fake outside world (``www-N.example.test``, TTL 300; NXDOMAIN for everything else): the
only place forwarded queries go. Servers, one at a time on 10.253.0.1:53:

* ``kubewire-bare``: bench/_dns_server_driver.py, ``build_zone`` + ``DnsServer``; names
  outside the zone go to the upstream through the ``fallback`` hook with no cache
  (``kubewire-bare-gcfreeze``: the same with ``gc.freeze()`` after the build, not run
  unless asked for);
* ``kubewire-chain``: ``python -m kubewire.dnsserver -conf COREFILE --objects ...`` with
  kubeadm's default Corefile (``kubewire.dns.corefile.default_corefile``: errors, health,
  ready, kubernetes with pods insecure, prometheus, forward, cache 30, loop, reload,
  loadbalance; no log), forwarding to the upstream;
* ``unbound``: the peer, ``num-threads: 1``, the same records as local data (generated
  from kubewire's own zone, plus one A record per Pod for the pod names kubewire builds per
  query), ``forward-zone "."`` to the same upstream.

Two query mixes (dnsperf input files, dnsperf loops over them): ``cluster`` (Service A and
AAAA-NODATA, SRV, headless A, PTR, pod names, search-path NXDOMAINs; see
``_dns_cluster.CLUSTER_MIX``) and ``external`` (80 % the same, 20 % A queries for
``--external-names`` distinct outside names, repeated, so caches matter).

Per server, per mix: a warm-up, a short search over dnsperf's -q (queries outstanding) for
the highest throughput, then --repeats runs of --duration seconds at that -q, servers
interleaved per repetition so the machine's drift hits all alike, each run started when
both cpus have been idle for half a second (waiting at most --quiet-wait s); then a run at
a fixed --latency-qps for latency without queueing. Each row carries the CPU other
processes took on each cpu during the run (``cpuN_other``) and the server's queries per
CPU-second it really got (``qps_per_server_cpu_s``): on a shared machine that is the
steadier per-core figure. Before the runs, the first --agreement queries of each mix are
asked of every server and the answers compared (rcode and records).

Output: JSON lines (setup, search, each run, agreement, memory) and a summary with medians,
kubewire/Unbound ratios, the target and CoreDNS's published figures. Load is bounded: every
dnsperf run stops by itself after -l seconds (and is killed 30 s later if it has not).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _dns_cluster as dc

from kubewire.dns.zone import build_zone
from kubewire.kernel.netns import (
    create_netns,
    delete_netns,
    entered,
    list_netns,
    netns_path,
    pids_in_netns,
)

PREFIX = "kwtest-dnsb-"
CLIENT, SERVER, UPSTREAM = (PREFIX + r for r in ("client", "server", "upstream"))
CLIENT_IP, SERVER_IP = "10.253.0.2", "10.253.0.1"
SERVER_UP_IP, UPSTREAM_IP = "10.253.1.1", "10.253.1.2"
DNS_PORT = 53
SERVER_CPU, CLIENT_CPU = 0, 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
COREDNS_REFERENCE = {
    "qps": 33_667, "vcpus": 2, "qps_per_core": 16_834,
    "source": "coredns.io/2018/11/15/scaling-coredns-in-kubernetes-clusters (GCE "
              "n1-standard-2, internal names, CoreDNS 1.2.5; quoted in issue 4 as 33.7k "
              "q/s on 2 vCPUs, ~17.7k per core)",
}
TARGET_QPS_PER_CORE = 26_000
SERVER_KINDS = {"kubewire-bare", "kubewire-bare-gcfreeze", "kubewire-chain", "unbound"}
ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def run(*cmd: str, stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[:2000]}")
    return proc.stdout


# --- topology --------------------------------------------------------------------------

def build_topology() -> None:
    for ns in (CLIENT, SERVER, UPSTREAM):
        create_netns(ns)
    # Both veth ends are created inside our namespaces: nothing appears in the machine's own.
    run("ip", "-n", SERVER, "link", "add", "to-client", "type", "veth", "peer", "name", "eth0",
        "netns", CLIENT)
    run("ip", "-n", SERVER, "link", "add", "to-upstream", "type", "veth", "peer", "name",
        "eth0", "netns", UPSTREAM)
    batch = {
        CLIENT: [f"addr add {CLIENT_IP}/24 dev eth0", "link set eth0 up", "link set lo up"],
        SERVER: [f"addr add {SERVER_IP}/24 dev to-client",
                 f"addr add {SERVER_UP_IP}/24 dev to-upstream",
                 "link set to-client up", "link set to-upstream up", "link set lo up"],
        UPSTREAM: [f"addr add {UPSTREAM_IP}/24 dev eth0", "link set eth0 up", "link set lo up"],
    }
    for ns, cmds in batch.items():
        run("ip", "-n", ns, "-batch", "-", stdin="\n".join(cmds) + "\n")


def teardown_topology() -> None:
    for ns in (CLIENT, SERVER, UPSTREAM):
        delete_netns(ns)


def probe(ns: str, addr: str, name: str, rdtype: int = 1, deadline_s: float = 60.0,
          proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Send a query from namespace ``ns`` until one is answered (or the deadline passes, or
    ``proc`` exits)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = struct.pack("!HHHHHH", 0x4B57, 0x0100, 1, 0, 0, 0) + qname + struct.pack(
        "!HH", rdtype, 1)
    with entered(netns_path(ns)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    deadline = time.monotonic() + deadline_s
    try:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return False
            sock.sendto(query, (addr, DNS_PORT))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            # NOERROR with an answer: a server still loading its objects may reply otherwise.
            if data[:2] == query[:2] and data[3] & 0xF == 0 and data[6:8] != b"\0\0":
                return True
        return False
    finally:
        sock.close()


# --- processes -------------------------------------------------------------------------

@dataclass
class Server:
    """A process started in a namespace, pinned to one cpu; stopped by its PID only."""

    name: str
    cmd: list[str]
    ns: str
    cpu: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    out: str = ""

    def start(self) -> None:
        # `ip netns exec` and `taskset` both exec: the PID we get is the server's own.
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "taskset", "-c", str(self.cpu), *self.cmd],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=ROOT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.out = self.log.read_text(errors="replace")
        self.proc = None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def check_pinned(self) -> None:
        comm = Path(f"/proc/{self.pid}/comm").read_text().strip()
        if comm in ("ip", "taskset"):
            raise RuntimeError(f"{self.name}: pid {self.pid} is still {comm!r}; the CPU and "
                               "memory figures would be someone else's")
        got = os.sched_getaffinity(self.pid)
        if got != {self.cpu}:
            raise RuntimeError(f"{self.name}: pinned to {sorted(got)}, expected {self.cpu}")


# --- dnsperf ---------------------------------------------------------------------------

def cpu_ticks() -> dict[int, tuple[int, int, int]]:
    """Per cpu: (busy, steal, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            v = [int(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
            out[int(name[3:])] = (v[0] + v[1] + v[2] + v[5] + v[6], v[7], sum(v))
    return out


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (at most ``max_wait`` s) until both cpus were less than ``threshold`` busy over
    half a second: another tenant's burst should not fall into a measured run. Our servers
    are idle between runs. Returns the seconds waited."""
    if max_wait <= 0:
        return 0.0
    t0 = time.monotonic()
    while True:
        a = cpu_ticks()
        time.sleep(0.5)
        b = cpu_ticks()
        busy = max((b[c][0] - a[c][0]) / max(b[c][2] - a[c][2], 1)
                   for c in (SERVER_CPU, CLIENT_CPU))
        waited = time.monotonic() - t0
        if busy < threshold or waited >= max_wait:
            return round(waited, 1)


def dnsperf(datafile: Path, duration: float, outstanding: int, clients: int,
            server: Server, max_qps: int = 0,
            upstream: Server | None = None) -> dict[str, Any]:
    """One bounded dnsperf run from the client namespace; parsed statistics plus the CPU
    time of the server, the upstream and dnsperf, and how busy each cpu was in all (so
    another tenant's load on the shared machine shows up as ``cpuN_other``)."""
    cmd = ["ip", "netns", "exec", CLIENT, "taskset", "-c", str(CLIENT_CPU), "dnsperf",
           "-s", SERVER_IP, "-p", str(DNS_PORT), "-d", str(datafile), "-l", str(duration),
           "-c", str(clients), "-T", "1", "-q", str(outstanding), "-t", "2",
           *(["-Q", str(max_qps)] if max_qps else [])]
    out_path = datafile.with_suffix(".out")
    cpu0 = server.cpu_seconds()
    up0 = upstream.cpu_seconds() if upstream is not None else 0.0
    ticks0 = cpu_ticks()
    t0 = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    watchdog = threading.Timer(duration + 30, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # Ctrl-C or SIGTERM: dnsperf is in its own session, stop it here
        proc.kill()
        proc.wait()
        raise
    finally:
        watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    server_cpu = server.cpu_seconds() - cpu0
    up_cpu = upstream.cpu_seconds() - up0 if upstream is not None else 0.0
    ticks1 = cpu_ticks()
    text = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {text[-2000:]}")
    stats = parse_dnsperf(text)
    client_cores = (usage.ru_utime + usage.ru_stime) / max(wall, 1e-9)
    stats.update(server_cpu_s=round(server_cpu, 2),
                 server_cores=round(server_cpu / max(stats["run_s"], 1e-9), 3),
                 # Queries per CPU-second the server really got: its per-core cost, robust
                 # to another tenant taking part of cpu 0 away during the run.
                 qps_per_server_cpu_s=round(stats["completed"] / max(server_cpu, 1e-9)),
                 client_cores=round(client_cores, 3),
                 upstream_cores=round(up_cpu / max(wall, 1e-9), 3),
                 outstanding=outstanding, clients=clients)
    for cpu, mine in ((SERVER_CPU, server_cpu / max(wall, 1e-9)),
                      (CLIENT_CPU, client_cores + up_cpu / max(wall, 1e-9))):
        busy = ticks1[cpu][0] - ticks0[cpu][0]
        total = max(ticks1[cpu][2] - ticks0[cpu][2], 1)
        stats[f"cpu{cpu}_busy"] = round(busy / total, 3)
        # Busy time not spent by our processes: softirq for our packets, but also any
        # other tenant of this shared machine.
        stats[f"cpu{cpu}_other"] = round(max(busy / total - mine, 0.0), 3)
        stats[f"cpu{cpu}_steal"] = round((ticks1[cpu][1] - ticks0[cpu][1]) / total, 3)
    return stats


def parse_dnsperf(text: str) -> dict[str, Any]:
    """The figures of dnsperf 2.x's "Statistics:" block."""
    out: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.strip()
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Queries sent":
            out["sent"] = int(value.split()[0])
        elif key == "Queries completed":
            out["completed"] = int(value.split()[0])
        elif key == "Queries lost":
            out["lost"] = int(value.split()[0])
        elif key == "Response codes":
            out["rcodes"] = {p.split()[0]: int(p.split()[1]) for p in value.split(", ")
                             if len(p.split()) >= 2}
        elif key == "Run time (s)":
            out["run_s"] = float(value)
        elif key == "Queries per second":
            out["qps"] = round(float(value), 1)
        elif key == "Average Latency (s)":
            avg, _, rest = value.partition("(")
            out["avg_latency_ms"] = round(float(avg) * 1e3, 3)
            parts = dict(p.strip().split() for p in rest.rstrip(")").split(","))
            out["min_latency_ms"] = round(float(parts["min"]) * 1e3, 3)
            out["max_latency_ms"] = round(float(parts["max"]) * 1e3, 3)
        elif key == "Latency StdDev (s)":
            out["stddev_latency_ms"] = round(float(value) * 1e3, 3)
    missing = {"sent", "completed", "lost", "qps", "run_s", "avg_latency_ms"} - set(out)
    if missing:
        raise RuntimeError(f"dnsperf output without {sorted(missing)}: {text[-2000:]}")
    return out


# --- the servers -----------------------------------------------------------------------

def chain_available() -> bool:
    return importlib.util.find_spec("kubewire.dnsserver.__main__") is not None


def corefile(path: Path) -> Path:
    """kubeadm's default Corefile (what ``kubewire up`` installs), forwarding to the
    namespace's own upstream instead of /etc/resolv.conf."""
    from kubewire.dns.corefile import default_corefile

    path.write_text(default_corefile(dc.DOMAIN, upstream=UPSTREAM_IP, port=DNS_PORT))
    return path


def server_for(kind: str, work: Path) -> Server:
    objects = str(work / "objects.json")
    if kind in ("kubewire-bare", "kubewire-bare-gcfreeze"):
        cmd = [PYTHON, str(ROOT / "bench" / "_dns_server_driver.py"), "--objects", objects,
               "--host", SERVER_IP, "--port", str(DNS_PORT), "--upstream", UPSTREAM_IP,
               *(["--gc-freeze"] if kind.endswith("gcfreeze") else [])]
    elif kind == "kubewire-chain":
        cmd = [PYTHON, "-m", "kubewire.dnsserver", "-conf", str(corefile(work / "Corefile")),
               "--objects", objects, "--host", SERVER_IP]
    elif kind == "unbound":
        cmd = ["unbound", "-d", "-c", str(work / "unbound-peer.conf")]
    else:
        raise ValueError(kind)
    return Server(kind, cmd, SERVER, SERVER_CPU, work / f"{kind}.log")


def start_checked(server: Server) -> float:
    """Start, wait until it answers from the client namespace; seconds to ready."""
    t0 = time.monotonic()
    server.start()
    if not probe(CLIENT, SERVER_IP, f"dns-version.{dc.DOMAIN}", 16, proc=server.proc):
        server.stop()
        raise RuntimeError(f"{server.name} did not answer within 60 s:\n{server.out[-3000:]}")
    server.check_pinned()
    return time.monotonic() - t0


# --- phases ----------------------------------------------------------------------------

@dataclass
class Results:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    chosen_q: dict[tuple[str, str], int] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    answers: dict[str, list[tuple[str, str, tuple[str, ...]]]] = field(default_factory=dict)


def sample_answers(lines: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(query, rcode, sorted answer records) for each "name TYPE" line, asked from the
    client namespace: what both servers must agree on."""
    with entered(netns_path(CLIENT)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out = []
    try:
        for line in lines:
            name, rdtype = line.split()
            q = dns.message.make_query(name, rdtype)
            r = dns.query.udp(q, SERVER_IP, timeout=2, sock=sock)
            records = tuple(sorted(f"{rr.name} {dns.rdatatype.to_text(rr.rdtype)} {rd}"
                                   for rr in r.answer for rd in rr))
            out.append((line, dns.rcode.to_text(r.rcode()), records))
    finally:
        sock.close()
    return out


def measure_server(kind: str, work: Path, args: argparse.Namespace, rep: int,
                   res: Results, upstream: Server) -> None:
    server = server_for(kind, work)
    try:
        ready_s = start_checked(server)
        mem: dict[str, Any] = res.memory.setdefault(kind, {"server": kind})
        if rep == 0:
            mem.update(ready_s=round(ready_s, 2),
                       rss_mb_loaded=round(server.status_kib("VmRSS") / 1024, 1),
                       hwm_mb_loading=round(server.status_kib("VmHWM") / 1024, 1))
        if rep == 0 and args.agreement:
            sample = [line for mix in args.mixes
                      for line in (work / f"queries-{mix}.txt").read_text().splitlines()
                      [:args.agreement]]
            res.answers[kind] = sample_answers(sample)
        for mix in args.mixes:
            data = work / f"queries-{mix}.txt"
            if args.warmup > 0:
                dnsperf(data, args.warmup, max(args.outstanding), args.clients, server,
                        upstream=upstream)
            key = (kind, mix)
            if key not in res.chosen_q:
                best: tuple[float, int] | None = None
                for q in args.outstanding:
                    if len(args.outstanding) == 1:
                        best = (0.0, q)
                        break
                    row = dnsperf(data, args.search_duration, q, args.clients, server,
                                  upstream=upstream)
                    emit({"bench": "dns_perf_search", "server": kind, "mix": mix, **row})
                    lossy = row["lost"] > row["sent"] * 0.001
                    if not lossy and (best is None or row["qps"] > best[0]):
                        best = (row["qps"], q)
                res.chosen_q[key] = (best or (0.0, min(args.outstanding)))[1]
            waited = wait_for_quiet(args.quiet_wait)
            row = dnsperf(data, args.duration, res.chosen_q[key], args.clients, server,
                          upstream=upstream)
            row = {"bench": "dns_perf", "server": kind, "mix": mix, "rep": rep,
                   "waited_for_quiet_s": waited, **row}
            res.runs.setdefault(key, []).append(row)
            emit(row)
            if args.latency_qps:
                # Latency without queueing: the same offered load for every server.
                row = dnsperf(data, args.latency_duration, res.chosen_q[key], args.clients,
                              server, max_qps=args.latency_qps, upstream=upstream)
                row = {"bench": "dns_perf_latency", "server": kind, "mix": mix, "rep": rep,
                       **row}
                res.latency.setdefault(key, []).append(row)
                emit(row)
        mem["rss_mb_after_runs"] = round(server.status_kib("VmRSS") / 1024, 1)
        mem["hwm_mb"] = round(server.status_kib("VmHWM") / 1024, 1)
    finally:
        server.stop()
    if kind.startswith("kubewire") and server.out.strip():
        last = server.out.strip().splitlines()[-1]
        if last.startswith("{"):
            res.memory[kind].setdefault("counters", []).append(json.loads(last))


def memory_baseline(work: Path) -> dict[str, Any]:
    """RSS of the bare driver with an empty cluster: the interpreter and imports alone."""
    empty = work / "empty.json"
    empty.write_text('{"kind": "List", "items": []}')
    server = Server("kubewire-bare-empty",
                    [PYTHON, str(ROOT / "bench" / "_dns_server_driver.py"), "--objects",
                     str(empty), "--host", SERVER_IP, "--port", str(DNS_PORT)],
                    SERVER, SERVER_CPU, work / "empty.log")
    try:
        start_checked(server)
        return {"rss_mb_empty_cluster": round(server.status_kib("VmRSS") / 1024, 1)}
    finally:
        server.stop()


def agreement(answers: dict[str, list[tuple[str, str, tuple[str, ...]]]]) -> dict[str, Any]:
    """Do the servers give the same rcode and answer records? Differences listed."""
    kinds = sorted(answers)
    first = answers[kinds[0]]
    differ = []
    for i, (query, rcode, records) in enumerate(first):
        for other in kinds[1:]:
            _, rcode2, records2 = answers[other][i]
            if (rcode, records) != (rcode2, records2):
                differ.append({"query": query, kinds[0]: [rcode, *records],
                               other: [rcode2, *records2]})
    return {"bench": "dns_perf_agreement", "servers": kinds, "queries": len(first),
            "same": len(first) - len({d["query"] for d in differ}), "differ": differ[:20]}


def summarize(res: Results, args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for (kind, mix), rows in res.runs.items():
        table[f"{kind}/{mix}"] = {
            "outstanding": res.chosen_q[(kind, mix)],
            "runs": len(rows),
            "qps_median": round(statistics.median(r["qps"] for r in rows)),
            "qps_min": round(min(r["qps"] for r in rows)),
            "qps_max": round(max(r["qps"] for r in rows)),
            "qps_per_server_cpu_s_median": round(statistics.median(
                r["qps_per_server_cpu_s"] for r in rows)),
            "avg_latency_ms_median": round(statistics.median(r["avg_latency_ms"]
                                                             for r in rows), 3),
            "max_latency_ms_max": round(max(r["max_latency_ms"] for r in rows), 3),
            "lost_total": sum(r["lost"] for r in rows),
            "sent_total": sum(r["sent"] for r in rows),
            "server_cores_median": round(statistics.median(r["server_cores"] for r in rows), 3),
            "client_cores_median": round(statistics.median(r["client_cores"] for r in rows), 3),
            "upstream_cores_median": round(statistics.median(r["upstream_cores"] for r in rows),
                                           3),
            "cpu0_other_max": max(r["cpu0_other"] for r in rows),
            "cpu1_other_max": max(r["cpu1_other"] for r in rows),
        }
    for (kind, mix), rows in res.latency.items():
        table[f"{kind}/{mix}"].update({
            "at_fixed_qps": rows[0]["qps"] and round(statistics.median(r["qps"] for r in rows)),
            "at_fixed_qps_avg_latency_ms_median": round(statistics.median(
                r["avg_latency_ms"] for r in rows), 3),
            "at_fixed_qps_max_latency_ms_max": round(max(r["max_latency_ms"] for r in rows), 3),
            "at_fixed_qps_lost_total": sum(r["lost"] for r in rows),
        })
    ratios = {}
    for mix in args.mixes:
        peer = table.get(f"unbound/{mix}")
        for kind in ("kubewire-bare", "kubewire-bare-gcfreeze", "kubewire-chain"):
            ours = table.get(f"{kind}/{mix}")
            if ours and peer and peer["qps_median"]:
                ratios[f"{kind}/unbound/{mix}"] = round(ours["qps_median"] / peer["qps_median"],
                                                        3)
                ratios[f"{kind}/unbound/{mix}/per_cpu_s"] = round(
                    ours["qps_per_server_cpu_s_median"] / peer["qps_per_server_cpu_s_median"], 3)
    formula = (setup["pods"] + setup["services"]) / 1000 + 54
    return {"bench": "dns_perf_summary", "table": table, "ratios": ratios,
            "target_qps_per_core_cluster": TARGET_QPS_PER_CORE,
            "coredns_reference": COREDNS_REFERENCE,
            "memory": list(res.memory.values()),
            "coredns_memory_formula_mb": {
                "value": round(formula, 1),
                "formula": "(Pods + Services) / 1000 + 54 (default settings; includes 30 MB "
                           "for a full cache)",
                "source": "github.com/coredns/deployment kubernetes/Scaling_CoreDNS.md"},
            "target_rss_mb": 100}


def stale_check() -> str | None:
    for ns in list_netns(PREFIX):
        pids = pids_in_netns(netns_path(ns))
        if pids:
            return (f"namespace {ns} from an earlier run still holds processes {pids}; "
                    "stop them (by PID) and run again")
        delete_netns(ns)
    return None


def csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=10, help="per headless Service")
    ap.add_argument("--pods", type=int, default=50_000)
    ap.add_argument("--external-names", type=int, default=1000)
    ap.add_argument("--query-lines", type=int, default=50_000,
                    help="lines per dnsperf input file (dnsperf loops over it)")
    ap.add_argument("--servers", default="kubewire-bare,kubewire-chain,unbound")
    ap.add_argument("--mixes", default="cluster,external")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before each mix")
    ap.add_argument("--outstanding", type=csv_ints, default=csv_ints("20,100,400"),
                    help="dnsperf -q values to search (one value: no search)")
    ap.add_argument("--search-duration", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=4, help="dnsperf -c (source sockets)")
    ap.add_argument("--latency-qps", type=int, default=10_000,
                    help="also run at this fixed rate (dnsperf -Q) for latency without "
                         "queueing; 0: skip")
    ap.add_argument("--latency-duration", type=float, default=5.0)
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each measured run, wait up to this long for both cpus to "
                         "be idle (the machine is shared)")
    ap.add_argument("--no-memory-baseline", action="store_true")
    ap.add_argument("--agreement", type=int, default=300,
                    help="first N queries of each mix asked of every server and compared")
    args = ap.parse_args()
    args.mixes = [m for m in args.mixes.split(",") if m]
    servers = [s for s in args.servers.split(",") if s]
    if not set(args.mixes) <= {"cluster", "external"}:
        ap.error("--mixes: cluster and/or external")
    if not set(servers) <= SERVER_KINDS:
        ap.error(f"--servers: any of {', '.join(sorted(SERVER_KINDS))}")
    if not (1 <= args.duration <= 120 and 1 <= args.repeats <= 20):
        ap.error("--duration must be 1..120 s and --repeats 1..20 (bounded load)")
    if os.geteuid() != 0:
        print(f"needs root (creates network namespaces {PREFIX}*)", file=sys.stderr)
        return 2
    for tool in ("dnsperf", "unbound", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: run scripts/setup.sh (apt-get install dnsperf unbound)",
                  file=sys.stderr)
            return 2
    if os.cpu_count() is None or (os.cpu_count() or 0) < 2:
        print("needs 2 cpus (server on cpu 0, dnsperf on cpu 1)", file=sys.stderr)
        return 2
    if "kubewire-chain" in servers and not chain_available():
        emit({"bench": "dns_perf", "server": "kubewire-chain",
              "skipped": "python -m kubewire.dnsserver does not exist yet"})
        servers.remove("kubewire-chain")
    if (problem := stale_check()) is not None:
        print(problem, file=sys.stderr)
        return 2
    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop servers and remove namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix=PREFIX))
    upstream: Server | None = None
    started = time.monotonic()
    try:
        t0 = time.perf_counter()
        objs = dc.cluster(args.services, args.endpoints, args.pods)
        (work / "objects.json").write_text(json.dumps(objs))
        svcs, slices, pods = dc.split(objs["items"])
        zone = build_zone(svcs, slices, pods)
        (work / "unbound-peer.conf").write_text(
            dc.unbound_peer_conf(SERVER_IP, DNS_PORT, zone, pods, UPSTREAM_IP))
        (work / "unbound-upstream.conf").write_text(
            dc.unbound_upstream_conf(UPSTREAM_IP, DNS_PORT, args.external_names))
        for mix in args.mixes:
            lines = dc.queries(mix, args.query_lines, args.services, args.endpoints,
                               args.pods, args.external_names)
            (work / f"queries-{mix}.txt").write_text("\n".join(lines) + "\n")
        setup = {"bench": "dns_perf_setup", "services": args.services,
                 "headless": len(range(0, args.services, dc.HEADLESS_EVERY)),
                 "endpoints": args.endpoints, "pods": args.pods,
                 "zone_answers": len(zone),
                 "unbound_local_data": len(dc.zone_records(zone)) + len(pods),
                 "external_names": args.external_names, "query_lines": args.query_lines,
                 "mix": dict((k, s) for s, k in dc.CLUSTER_MIX), "external_share_pct": 20,
                 "servers": servers, "cpus": {"server": SERVER_CPU, "client": CLIENT_CPU,
                                              "upstream": CLIENT_CPU},
                 "prepare_s": round(time.perf_counter() - t0, 1)}
        del objs, svcs, slices, pods, zone
        emit(setup)
        for cmd in (["unbound-checkconf", str(work / "unbound-peer.conf")],
                    ["unbound-checkconf", str(work / "unbound-upstream.conf")]):
            run(*cmd)

        build_topology()
        upstream = Server("upstream", ["unbound", "-d", "-c", str(work / "unbound-upstream.conf")],
                          UPSTREAM, CLIENT_CPU, work / "upstream.log")
        upstream.start()
        if not probe(SERVER, UPSTREAM_IP, f"www-0.{dc.EXTERNAL_ZONE}", proc=upstream.proc):
            upstream.stop()
            raise RuntimeError(f"the upstream Unbound did not answer:\n{upstream.out[-3000:]}")

        res = Results()
        for rep in range(args.repeats):
            for kind in servers:
                measure_server(kind, work, args, rep, res, upstream)
        if len(res.answers) > 1:
            emit(agreement(res.answers))
        if "kubewire-bare" in servers and not args.no_memory_baseline:
            res.memory["kubewire-bare"].update(memory_baseline(work))
        for mem in res.memory.values():
            emit({"bench": "dns_perf_memory", **mem})
        summary = summarize(res, args, setup)
        summary["total_s"] = round(time.monotonic() - started, 1)
        emit(summary)
    finally:
        if upstream is not None:
            upstream.stop()
        teardown_topology()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
