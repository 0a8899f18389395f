"""The top-of-rack router of a BGP lab: BIRD 2 on the external host.

In a `network.backend: bgp` lab the external host (`host/external`, the underlay's first
address) is what a rack's ToR switch is to real nodes: their default gateway and their eBGP
peer. It runs BIRD (a daemon we did not write) in AS 65000 (`TOR_ASN`) and accepts an eBGP
session from any address on the underlay (BIRD's dynamic neighbours, `neighbor range ...
external`), so a node peers with it as soon as a BGPPeer object says so:

    apiVersion: projectcalico.org/v3
    kind: BGPPeer
    metadata: {name: tor}
    spec: {peerIP: 172.18.0.1, asNumber: 65000}

What the nodes announce (pod blocks, Service ranges and addresses) is installed in the
external host's kernel (`proto bird`, metric 32, equal paths merged into one ECMP route), so
the outside world reaches pods and Services through BGP-learned routes, and BIRD re-announces
every route to every node (a node drops what carries its own AS, RFC 4271 9.1.2).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from kubewire.workload.runner import KillResult, ProcessRecord, kill_record, write_record

TOR_ASN = 65000
BIRD = "/usr/sbin/bird"
BIRDC = "/usr/sbin/birdc"
RECORD_NAME = "tor-bird.json"
_POLL = 0.02


# Popen handles of the BIRDs this process started, so stop_tor reaps them.
_children: dict[int, subprocess.Popen[bytes]] = {}


class TorError(Exception):
    """The ToR router could not be started or asked."""


def render_bird_conf(router_id: IPv4Address, underlay: IPv4Network, state_dir: Path) -> str:
    return f"""\
# kubewire: the lab's top-of-rack router (host/external). Generated; edits are lost.
router id {router_id};
log "{state_dir / 'bird.log'}" {{ info, warning, error, fatal }};

protocol device {{}}

# Routes learned from the nodes go into this host's kernel; equal paths become one
# multipath route (ECMP), as a ToR spreads traffic to a Service range over its nodes.
protocol kernel {{
  ipv4 {{ import none; export where source = RTS_BGP; }};
  merge paths on;
  metric 32;
}}

# One eBGP session per node, created when the node connects (dynamic neighbours).
protocol bgp nodes {{
  local {router_id} as {TOR_ASN};
  neighbor range {underlay} external;
  dynamic name "node";
  hold time 30;
  # BIRD waits 60-300 s after a session error before it accepts that peer again; a lab
  # that fixes a misconfigured BGPPeer should see the session back in seconds.
  error wait time 1, 5;
  ipv4 {{ import all; export all; }};
}}
"""


def socket_path(state_dir: Path) -> Path:
    return state_dir / "bird.ctl"


def birdc(state_dir: Path, *args: str, timeout: float = 5.0) -> str:
    """Ask the ToR's BIRD (`birdc -s SOCKET ARGS`); raises TorError with BIRD's words."""
    proc = subprocess.run([BIRDC, "-s", str(socket_path(state_dir)), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise TorError(f"birdc {' '.join(args)}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def start_tor(netns_path: Path, router_id: IPv4Address, underlay: IPv4Network,
              state_dir: Path, *, pid_file: Path | None = None,
              timeout: float = 5.0) -> ProcessRecord:
    """Start BIRD in the namespace at `netns_path`; return once it answers on its socket."""
    if not Path(BIRD).exists():
        raise TorError(f"{BIRD} not found: the bgp backend's ToR router needs BIRD 2 "
                       "(run `make setup`; scripts/setup.sh installs bird2)")
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise TorError("nsenter not found: install util-linux")
    state_dir.mkdir(parents=True, exist_ok=True)
    conf = state_dir / "bird.conf"
    conf.write_text(render_bird_conf(router_id, underlay, state_dir))
    log = state_dir / "bird.out"
    argv = [nsenter, f"--net={netns_path}", "--", BIRD, "-f", "-c", str(conf),
            "-s", str(socket_path(state_dir)), "-P", str(state_dir / "bird.pid")]
    with open(log, "ab") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, cwd="/")
    # nsenter execs BIRD in place: this PID is BIRD's.
    record = write_record(popen.pid, pid_file or state_dir / RECORD_NAME, argv, log)
    _children[popen.pid] = popen
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise TorError(f"bird exited with status {popen.returncode} at start: "
                           f"{log.read_text(errors='replace')[-800:]}")
        if socket_path(state_dir).exists():
            try:
                if "Daemon is up" in birdc(state_dir, "show", "status", timeout=1):
                    return record
            except (TorError, subprocess.TimeoutExpired):
                pass
        if time.monotonic() >= deadline:
            stop_tor(record)
            raise TorError(f"bird in {netns_path} did not answer within {timeout:.0f}s")
        time.sleep(_POLL)


def stop_tor(record: ProcessRecord, grace: float = 2.0) -> KillResult:
    """Stop BIRD by its pid record (never a PID whose start time differs)."""
    result = kill_record(record, grace)
    popen = _children.pop(record.pid, None)
    if popen is not None:
        popen.wait(timeout=grace)
    return result

