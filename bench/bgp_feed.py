"""Receiving a full IPv4 table: kubewire's speaker against BIRD 2, fed the same UPDATE stream.

    sudo .venv/bin/python bench/bgp_feed.py --prefixes 100000 [--per-update 100] [--timeout 600]

Three throwaway namespaces (always removed), joined by two veth pairs:

    kwtest-bgpb-<pid>-bird  172.31.250.2 --veth-- 172.31.250.1  kwtest-bgpb-<pid>-feed
    kwtest-bgpb-<pid>-kw    172.31.251.2 --veth-- 172.31.251.1        (the feeder, AS 65100)

The feeder is a small process written with the kubewire.bgp codec: it builds the whole table
as pre-encoded UPDATEs before it connects (``--per-update`` prefixes share one attribute set,
several such sets vary the AS_PATH and MED, as in a real full-table feed; ``--mixed``
mixes prefix lengths /16-/24 instead of sending only /24s), opens an eBGP session (hold
time 0), notes the moment it sends the KEEPALIVE that makes the session
Established, and writes the stream as fast as the receiver reads it. The receivers run one
after the other (BIRD first, then ours), so they do not compete for the 2 CPUs:

- BIRD 2 (``import all; export none``, no kernel protocol) asked ``show route count`` over
  one connection to its control socket (what birdc sends; ~0.1 ms a question) every 2 ms
  until every prefix is in its table;
- kubewire's ``Speaker`` in its own process (this script, ``_speaker``), which reports the
  moment its Loc-RIB holds every prefix, checked every 2 ms on its loop as BIRD is polled
  (``--on-change``: checked from an ``on_change`` listener that reads every change's prefix
  and best next hop, as a kernel route programmer would; RibChanges are then built).

Time is Established -> last prefix in the Loc-RIB (CLOCK_MONOTONIC is shared by the
processes). Memory is the receiver process's RSS (VmRSS) then, and its RSS before the feed.
Output: one JSON line per receiver, then one with the ratios (ours / BIRD).
Every process is started by us, in its own namespace, and stopped by its recorded pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

BIRD, BIRDC = "/usr/sbin/bird", "/usr/sbin/birdc"
FEED_AS, RECV_AS = 65100, 65001
FEED_ID = "10.255.0.1"
POLL = 0.002  # seconds between "is every prefix in?" checks, for both receivers
NETS = {"bird": ("172.31.250.1", "172.31.250.2"), "kw": ("172.31.251.1", "172.31.251.2")}


def _now() -> float:
    return time.monotonic()


def _rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- the table ---------------------------------------------------------------------------


# --mixed: the length of prefix i by i % 32 (the rest are /24s, ~72%), and by i % 256 for
# the two shortest. One of each length per aligned block of 32 /24s (two for 20-23, in
# different halves) keeps every prefix distinct.
_MIXED = {1: 23, 17: 23, 2: 22, 18: 22, 3: 21, 19: 21, 5: 20, 21: 20, 7: 19}


def table_prefixes(n: int, mixed: bool = False) -> list[IPv4Network]:
    """n distinct /24s from 16.0.0.0 up (just data: no receiver programs a kernel); with
    ``mixed``, lengths /16-/24 in the proportions of ``_MIXED`` (NLRI of mixed lengths)."""
    base = 16 << 24
    if not mixed:
        return [IPv4Network((base + (i << 8), 24)) for i in range(n)]
    out = []
    for i in range(n):
        plen = {255: 16, 254: 18}.get(i % 256) or _MIXED.get(i % 32, 24)
        out.append(IPv4Network((base + (i << 8), plen), strict=False))
    return out


def build_stream(n: int, per_update: int, next_hop: str, mixed: bool = False) -> bytes:
    """The whole feed as UPDATE messages, each at most 4096 octets."""
    from kubewire.bgp.attributes import (
        AsPath,
        AsSegment,
        MultiExitDisc,
        NextHop,
        OriginAttr,
    )
    from kubewire.bgp.constants import Origin, SegmentType
    from kubewire.bgp.update import Update

    prefixes = table_prefixes(n, mixed)
    nh = NextHop(IPv4Address(next_hop))
    out = bytearray()
    chunk = min(per_update, 900)  # 900 /24s = 3600 octets of NLRI: fits one message
    for k, i in enumerate(range(0, n, chunk)):
        path = (FEED_AS, 64600 + k % 300, 3000 + k % 7, 174 + k % 3)[: 2 + k % 3]  # not RECV_AS
        attrs = (
            OriginAttr(Origin.IGP),
            AsPath((AsSegment(SegmentType.AS_SEQUENCE, path),)),
            nh,
            MultiExitDisc(k % 50),
        )
        out += Update(attributes=attrs, nlri=tuple(prefixes[i : i + chunk])).to_wire()
    out += Update().to_wire()  # End-of-RIB
    return bytes(out)


# --- feeder process ----------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            raise ConnectionError("the receiver closed the session")
        buf += got
    return buf


def _recv_message(sock: socket.socket) -> tuple[int, bytes]:
    head = _recv_exact(sock, 19)
    length = int.from_bytes(head[16:18], "big")
    return head[18], _recv_exact(sock, length - 19)


def feeder(args: argparse.Namespace) -> int:
    from kubewire.bgp.constants import Afi, Safi
    from kubewire.bgp.messages import Keepalive, Multiprotocol, Open

    stream = build_stream(args.prefixes, args.per_update, args.local, args.mixed)
    _emit({"event": "built", "octets": len(stream)})
    deadline = _now() + args.timeout
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((args.local, 0))
        try:
            sock.connect((args.target, 179))
            break
        except OSError:
            sock.close()
            if _now() > deadline:
                raise
            time.sleep(0.1)
    sock.settimeout(args.timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    caps = (Multiprotocol(Afi.IPV4, Safi.UNICAST),)
    sock.sendall(Open.build(FEED_AS, 0, IPv4Address(FEED_ID), caps).to_wire())
    mtype, _ = _recv_message(sock)
    if mtype != 1:
        raise ConnectionError(f"expected OPEN, got message type {mtype}")
    sock.sendall(Keepalive().to_wire())
    while True:  # the receiver's KEEPALIVE confirms our OPEN
        mtype, body = _recv_message(sock)
        if mtype == 3:
            raise ConnectionError(f"NOTIFICATION {body[:2].hex()}")
        if mtype == 4:
            break
    t0 = _now()
    _emit({"event": "established", "t": t0})

    def drain() -> None:  # whatever the receiver sends (End-of-RIB, ...) is read and dropped
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    sock.sendall(stream)
    _emit({"event": "sent", "t": _now(), "seconds": _now() - t0})
    # Stay up (hold time 0: no keepalives) until stdin closes or the timeout.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    time.sleep(max(0.0, deadline - _now()))
    return 0


# --- our speaker, as its own process -----------------------------------------------------


def speaker(args: argparse.Namespace) -> int:
    from kubewire.bgp.rib import RibChange
    from kubewire.bgpd import NeighborConfig, Speaker, SpeakerConfig

    config = SpeakerConfig(
        asn=RECV_AS,
        router_id=IPv4Address("10.255.0.2"),
        neighbors=(NeighborConfig(IPv4Address(args.feeder), FEED_AS, passive=True),),
        listen=(IPv4Address(args.listen),),
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        sp: Speaker | None = None
        seen = 0

        def check() -> None:
            if sp is not None and not done.done() and len(sp.rib.loc) >= args.prefixes:
                done.set_result(_now())

        def on_change(changes: list[RibChange]) -> None:
            # what a kernel route programmer reads: the prefix and the best next hop
            nonlocal seen
            for c in changes:
                if c.new is not None and c.prefix.version == 4 and c.new.best.attrs.next_hop:
                    seen += 1
            check()

        def poll() -> None:  # like birdc's poll of BIRD: no listener on the speaker
            check()
            if not done.done():
                loop.call_later(POLL, poll)

        sp = Speaker(config, on_change=on_change if args.on_change else None)
        await sp.start()
        if not args.on_change:
            poll()
        _emit({"event": "ready", "rss_kib": _rss_kib()})
        try:
            t = await asyncio.wait_for(done, args.timeout)
            _emit({"event": "done", "t": t, "routes": len(sp.rib.loc), "rss_kib": _rss_kib()})
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            await sp.stop()

    asyncio.run(main())
    return 0


# --- orchestration -----------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def namespaces(tag: str) -> Iterator[dict[str, Path]]:
    from kubewire.kernel import netns

    names = {r: f"kwtest-bgpb-{tag}-{r}" for r in ("feed", "bird", "kw")}
    created: list[str] = []
    try:
        for name in names.values():
            netns.create_netns(name)
            created.append(name)
        for role, (feed_ip, recv_ip) in NETS.items():
            a, b = f"kwbf{tag}{role[0]}", f"kwbr{tag}{role[0]}"
            _ip("link", "add", a, "netns", names["feed"], "type", "veth",
                "peer", "name", b, "netns", names[role])
            _ip("-n", names["feed"], "addr", "add", f"{feed_ip}/30", "dev", a)
            _ip("-n", names[role], "addr", "add", f"{recv_ip}/30", "dev", b)
            _ip("-n", names["feed"], "link", "set", a, "up")
            _ip("-n", names[role], "link", "set", b, "up")
            _ip("-n", names[role], "link", "set", "lo", "up")
        _ip("-n", names["feed"], "link", "set", "lo", "up")
        yield {r: netns.netns_path(n) for r, n in names.items()}
    finally:
        for name in created:
            try:
                netns.delete_netns(name)
            except OSError as e:
                print(f"warning: could not delete namespace {name}: {e}", file=sys.stderr)


class Proc:
    """A process we start in a namespace (nsenter execs in place: the pid is the command's)."""

    def __init__(self, ns: Path, argv: list[str], log: Path, stdout: bool = False) -> None:
        from kubewire.workload.runner import record_process

        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={ns}", "--", *argv], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if stdout else self.out, stderr=self.out,
            start_new_session=True, close_fds=True, text=True)
        self.record = record_process(self.proc.pid, argv, log)

    def line(self, deadline: float, event: str) -> dict[str, object]:
        """The next JSON line about ``event`` from its stdout (``watchdog`` enforces the
        deadline on a read that blocks)."""
        assert self.proc.stdout is not None
        while True:
            text = self.proc.stdout.readline()
            if not text:
                raise RuntimeError(f"{self.record.argv[0]} exited: {self.tail()}")
            if _now() > deadline:
                raise TimeoutError("deadline passed")
            if text.startswith("{"):
                got: dict[str, object] = json.loads(text)
                if got.get("event") == event:
                    return got

    def tail(self) -> str:
        try:
            return self.log.read_text()[-1500:]
        except OSError:
            return ""

    def stop(self) -> None:
        from kubewire.workload.runner import kill_record

        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                kill_record(self.record, grace=3)
                self.proc.wait(timeout=5)
        self.out.close()


@contextmanager
def watchdog(seconds: float, on_expiry: Callable[[], None]) -> Iterator[None]:
    """Stop everything when a run overruns (blocking reads cannot overrun then)."""
    timer = threading.Timer(seconds, on_expiry)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _feed(ns: Path, work: Path, role: str, args: argparse.Namespace) -> Proc:
    local, target = NETS[role]
    return Proc(ns, [sys.executable, __file__, "_feed", "--local", local, "--target", target,
                     "--prefixes", str(args.prefixes), "--per-update", str(args.per_update),
                     "--timeout", str(args.timeout), *(["--mixed"] if args.mixed else [])],
                work / f"feed-{role}.log", stdout=True)


def run_bird(nss: dict[str, Path], work: Path, args: argparse.Namespace,
             procs: list[Proc]) -> dict[str, object]:
    feed_ip, recv_ip = NETS["bird"]
    conf, ctl = work / "bird.conf", str(work / "bird.ctl")
    conf.write_text(f"""\
router id 10.255.0.3;
protocol device {{ }}
protocol bgp feed {{
  local {recv_ip} as {RECV_AS};
  neighbor {feed_ip} as {FEED_AS};
  passive on;
  ipv4 {{ import all; export none; }};
}}
""")
    bird = Proc(nss["bird"], [BIRD, "-f", "-c", str(conf), "-s", ctl], work / "bird.log")
    procs.append(bird)
    deadline = _now() + args.timeout

    def birdc(*a: str) -> str:
        return subprocess.run([BIRDC, "-s", ctl, *a], capture_output=True, text=True,
                              timeout=30).stdout

    while not os.path.exists(ctl) or "BIRD" not in birdc("show", "status"):
        if bird.proc.poll() is not None or _now() > deadline:
            raise RuntimeError(f"bird did not start: {bird.tail()}")
        time.sleep(0.05)
    base_rss = _rss_kib(bird.proc.pid)
    feed = _feed(nss["feed"], work, "bird", args)
    procs.append(feed)
    ask = _BirdControl(ctl)
    t0 = float(feed.line(deadline, "established")["t"])  # type: ignore[arg-type]
    count = 0
    while True:
        out = ask("show route count")
        for word in out.split():
            if word.isdigit():
                count = int(word)
                break
        if count >= args.prefixes:
            t1 = _now()
            break
        if _now() > deadline or bird.proc.poll() is not None:
            state = birdc("show", "protocols", "all", "feed")
            raise RuntimeError(f"BIRD has {count} of {args.prefixes} routes:\n{state}")
        time.sleep(POLL)
    ask.close()
    rss = _rss_kib(bird.proc.pid)
    feed.stop()
    bird.stop()
    return {"receiver": "bird", "prefixes": args.prefixes, "routes": count,
            "seconds": round(t1 - t0, 3), "prefixes_per_s": round(args.prefixes / (t1 - t0)),
            "rss_kib": rss, "rss_before_kib": base_rss}


class _BirdControl:
    """One connection to BIRD's control socket, asked as birdc asks (a command line; the
    reply's lines are "CCCC-text", continuations " text", and the last "CCCC text")."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.connect(path)
        self._file = self._sock.makefile("rwb")
        self._file.readline()  # "0001 BIRD 2.0.12 ready."

    def __call__(self, command: str) -> str:
        self._file.write(command.encode() + b"\n")
        self._file.flush()
        lines = []
        while True:
            line = self._file.readline()
            if not line:
                raise RuntimeError("BIRD closed its control socket")
            lines.append(line.decode())
            if len(line) > 4 and line[:4].isdigit() and line[4:5] == b" ":
                return "".join(lines)

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def run_kw(nss: dict[str, Path], work: Path, args: argparse.Namespace,
           procs: list[Proc]) -> dict[str, object]:
    feed_ip, recv_ip = NETS["kw"]
    deadline = _now() + args.timeout
    sp = Proc(nss["kw"], [sys.executable, __file__, "_speaker", "--listen", recv_ip,
                          "--feeder", feed_ip, "--prefixes", str(args.prefixes),
                          "--timeout", str(args.timeout),
                          *(["--on-change"] if args.on_change else [])],
              work / "speaker.log", stdout=True)
    procs.append(sp)
    ready = sp.line(deadline, "ready")
    feed = _feed(nss["feed"], work, "kw", args)
    procs.append(feed)
    t0 = float(feed.line(deadline, "established")["t"])  # type: ignore[arg-type]
    done = sp.line(deadline, "done")
    t1 = float(done["t"])  # type: ignore[arg-type]
    feed.stop()
    sp.stop()
    return {"receiver": "kubewire", "prefixes": args.prefixes, "routes": done["routes"],
            "seconds": round(t1 - t0, 3), "prefixes_per_s": round(args.prefixes / (t1 - t0)),
            "rss_kib": done["rss_kib"], "rss_before_kib": ready["rss_kib"],
            "on_change": args.on_change}


def orchestrate(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bgp_feed.py needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    if not os.path.exists(BIRD):
        print(f"{BIRD} is missing: run the project's setup (it installs bird2)", file=sys.stderr)
        return 2
    tag = str(os.getpid() % 100000)
    work = Path(tempfile.mkdtemp(prefix="kwtest-bgpb-"))
    procs: list[Proc] = []

    def kill_all() -> None:
        from kubewire.workload.runner import kill_record

        for p in procs:
            if p.proc.poll() is None:
                kill_record(p.record, grace=1)

    results: list[dict[str, object]] = []
    try:
        with namespaces(tag) as nss, watchdog(2 * args.timeout + 30, kill_all):
            for run in (run_bird, run_kw):
                r = run(nss, work, args, procs)
                r["per_update"] = args.per_update
                r["mixed"] = args.mixed
                results.append(r)
                _emit(r)
    finally:
        kill_all()
        for p in procs:
            if not p.out.closed:
                p.out.close()
        if args.keep_logs:
            print(f"logs in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    bird, kw = results
    _emit({"ratio": "kubewire/bird", "prefixes": args.prefixes,
           "time": round(float(kw["seconds"]) / float(bird["seconds"]), 2),  # type: ignore[arg-type]
           "rss": round(int(kw["rss_kib"]) / int(bird["rss_kib"]), 2),  # type: ignore[call-overload]
           "time_target": 2.0, "rss_target": 3.0})
    return 0 if all(r["routes"] == args.prefixes for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("role", nargs="?", default="run", choices=("run", "_feed", "_speaker"))
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--per-update", type=int, default=100,
                    help="prefixes sharing one attribute set (one UPDATE, at most 900)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per receiver")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--mixed", action="store_true",
                    help="prefix lengths /16-/24 (72%% /24s) instead of only /24s")
    ap.add_argument("--on-change", action="store_true",
                    help="give our speaker an on_change listener that reads every change"
                         " (as a kernel route programmer would) and time it by that")
    ap.add_argument("--local", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--listen", help=argparse.SUPPRESS)
    ap.add_argument("--feeder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "_feed":
        return feeder(args)
    if args.role == "_speaker":
        return speaker(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
