"""Read what the Go runtime would read for a live process: its cgroup CPU limit, its CPU
affinity, GOMAXPROCS/GODEBUG from its environment, and the Go version and DefaultGODEBUG
embedded in its executable. Not pure (it reads /proc and /sys); the parsers are
separate functions that take text or bytes so they can be tested on their own.

The cgroup lookup follows internal/runtime/cgroup (Go 1.25+): in /proc/PID/cgroup a v1
hierarchy whose controller list has ``cpu`` wins, otherwise the v2 line ``0::PATH``; the
mount comes from /proc/PID/mountinfo (fstype cgroup2, or cgroup with ``cpu`` in the super
options, whose root is a prefix of PATH); only that one cgroup's files are read, not its
ancestors' (the runtime does the same).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from kubewire.gotelemetry.advisor import CpuLimit, GoVersion, cpu_limit_from_cfs, parse_go_version
from kubewire.gotelemetry.errors import AdviceInputError, ProbeError

BUILDINFO_MAGIC = b"\xff Go buildinf:"


@dataclass(frozen=True, slots=True)
class CgroupRef:
    version: int  # 1 or 2
    path: str  # the cgroup's path inside its hierarchy, e.g. /kubepods/pod1/abc


@dataclass(frozen=True, slots=True)
class BuildInfo:
    go_version: str  # "go1.27.3"
    settings: tuple[tuple[str, str], ...]  # the "build KEY=VALUE" lines

    @property
    def default_godebug(self) -> str | None:
        return dict(self.settings).get("DefaultGODEBUG")


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    pid: int
    cgroup: CgroupRef | None
    cgroup_dir: str | None
    limit: CpuLimit | None
    cpus: int  # sched_getaffinity count, what the runtime calls getCPUCount
    gomaxprocs_env: str | None
    godebug_env: str | None
    build: BuildInfo | None

    @property
    def go_version(self) -> GoVersion | None:
        return parse_go_version(self.build.go_version) if self.build else None


def parse_proc_cgroup(text: str) -> CgroupRef | None:
    """The CPU cgroup of a /proc/PID/cgroup listing, or None when there is none."""
    v2: CgroupRef | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = CgroupRef(2, path)
        elif "cpu" in controllers.split(","):
            return CgroupRef(1, path)
    return v2


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str, ref: CgroupRef) -> str | None:
    """The directory of ``ref`` under the first matching cgroup mount, or None."""
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        root, mount, fstype, opts = _unescape(lf[3]), _unescape(lf[4]), rf[0], rf[2]
        if ref.version == 2 and fstype != "cgroup2":
            continue
        if ref.version == 1 and (fstype != "cgroup" or "cpu" not in opts.split(",")):
            continue
        if root == "/":
            rel = ref.path
        elif ref.path == root or ref.path.startswith(root + "/"):
            rel = ref.path[len(root):]
        else:
            continue
        rel = rel.rstrip("/")
        return mount.rstrip("/") + (rel if rel.startswith("/") or not rel else "/" + rel) or "/"
    return None


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise ProbeError("Go build info is cut off; is the executable complete?")


def parse_buildinfo(data: bytes | mmap.mmap) -> BuildInfo | None:
    """Go version and build settings from a Go executable (Go 1.18+ layout: a 32-byte
    header at a 16-byte boundary, flag 2 = version and module info inline, each a uvarint
    length then bytes; the module info is framed by 16-byte sentinels)."""
    pos = data.find(BUILDINFO_MAGIC)
    while pos >= 0 and pos % 16:
        pos = data.find(BUILDINFO_MAGIC, pos + 1)
    if pos < 0 or len(data) < pos + 32:
        return None
    flags = data[pos + 15]
    if not flags & 2:
        return None  # Go 1.17 or older: pointers into the data segment, not read here
    head = bytes(data[pos + 32:pos + 32 + (1 << 16)])
    n, p = _uvarint(head, 0)
    version = head[p:p + n].decode("utf-8", "replace")
    n, p = _uvarint(head, p + n)
    mod = head[p:p + n]
    if len(mod) >= 33 and mod[-17:-16] == b"\n":
        mod = mod[16:-16]
    settings = []
    for line in mod.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] == "build" and "=" in parts[1]:
            k, _, v = parts[1].partition("=")
            settings.append((k, v))
    return BuildInfo(version, tuple(settings))


def read_buildinfo(exe: str | Path) -> BuildInfo | None:
    with open(exe, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return parse_buildinfo(m)


def read_cgroup_limit(ref: CgroupRef, cgroup_dir: str) -> CpuLimit | None:
    """cpu.max (v2) or cpu.cfs_quota_us + cpu.cfs_period_us (v1) of one cgroup."""
    d = Path(cgroup_dir)
    try:
        if ref.version == 2:
            if not (d / "cpu.max").exists():
                return None  # the cpu controller is not enabled for this v2 cgroup
            text = (d / "cpu.max").read_text().split()
            if len(text) != 2:
                raise ProbeError(f"{d / 'cpu.max'}: expected 'QUOTA PERIOD', got {text!r}")
            if text[0] == "max":
                return None
            return cpu_limit_from_cfs(int(text[0]), int(text[1]), source=f"{d}/cpu.max")
        quota = int((d / "cpu.cfs_quota_us").read_text())
        period = int((d / "cpu.cfs_period_us").read_text())
        return cpu_limit_from_cfs(quota, period, source=f"{d}/cpu.cfs_quota_us")
    except (OSError, ValueError, AdviceInputError) as e:
        raise ProbeError(f"cannot read the CPU limit of cgroup {cgroup_dir}: {e}") from e


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}  # another user's process; the caller reports what it could not read
    out = {}
    for item in raw.split(b"\0"):
        k, eq, v = item.partition(b"=")
        if eq:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def probe(pid: int) -> ProcessCpu:
    """Everything the advisor needs about a running process."""
    proc = Path(f"/proc/{pid}")
    try:
        cgroup_text = (proc / "cgroup").read_text()
        mountinfo = (proc / "mountinfo").read_text()
        cpus = len(os.sched_getaffinity(pid))
    except (FileNotFoundError, ProcessLookupError):
        raise ProbeError(f"no process {pid}; give the PID of a running Go program") from None
    except PermissionError:
        raise ProbeError(f"not allowed to read /proc/{pid}; run as that user or root") from None
    ref = parse_proc_cgroup(cgroup_text)
    cg_dir = parse_mountinfo(mountinfo, ref) if ref else None
    if cg_dir and os.access(proc / "root", os.R_OK | os.X_OK):
        # the mount point is as the process sees it (a container has its own mounts)
        cg_dir = f"{proc}/root{cg_dir}"
    limit = read_cgroup_limit(ref, cg_dir) if ref and cg_dir else None
    env = _environ(pid)
    try:
        build = read_buildinfo(proc / "exe")
    except OSError:
        build = None
    return ProcessCpu(pid=pid, cgroup=ref, cgroup_dir=cg_dir, limit=limit, cpus=cpus,
                      gomaxprocs_env=env.get("GOMAXPROCS"), godebug_env=env.get("GODEBUG"),
                      build=build)
