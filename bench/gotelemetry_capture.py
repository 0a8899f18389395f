"""Capture real GODEBUG=schedtrace / scheddetail output from Go 1.19 and Go 1.27.

    .venv/bin/python bench/gotelemetry_capture.py [--out tests/data/gotelemetry]

Builds tests/data/gotelemetry/src/busy (standard library only) with each installed
toolchain, offline, and runs it at GOMAXPROCS=2 with GODEBUG=schedtrace=10 (300 ms, 40
workers per round) and with schedtrace=10,scheddetail=1 (200 ms, 20 workers), writing the
program's stderr as schedtrace-go1.NN.txt and scheddetail-go1.NN.txt. The program writes
a few lines of its own to stderr, as a daemon would. No network traffic.

Toolchain discovery and the offline build environment are bench/gotrace_make.py's.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "tests" / "data" / "gotelemetry" / "src" / "busy" / "main.go"
OUT = ROOT / "tests" / "data" / "gotelemetry"

_spec = importlib.util.spec_from_file_location("gotrace_make", ROOT / "bench" / "gotrace_make.py")
assert _spec and _spec.loader
gotrace_make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gotrace_make)

# (file prefix, GODEBUG, duration ms, workers per round)
CAPTURES = (
    ("schedtrace", "schedtrace=10", 300, 40),
    ("scheddetail", "schedtrace=10,scheddetail=1", 200, 20),
)


def toolchains() -> dict[str, Path]:
    """"new" / "old" -> go binary, for the installed toolchains."""
    return dict(gotrace_make.find_toolchains())


def short_version(go: Path) -> str:
    """"go1.27" from "go version go1.27.3 linux/amd64"."""
    full = str(gotrace_make.version(go)).split()[2]
    return ".".join(full.split(".")[:2])


def build(go: Path, tmp: Path) -> Path:
    exe = tmp / f"busy-{short_version(go)}"
    subprocess.run([str(go), "build", "-o", str(exe), str(SRC)],
                   env=gotrace_make.go_env(go, tmp), check=True, cwd=tmp, timeout=300)
    return exe


def run(exe: Path, godebug: str, duration_ms: int, workers: int, *, quiet: bool = False,
        gomaxprocs: int = 2) -> str:
    """The program's stderr: the runtime's SCHED records plus its own lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOMAXPROCS=str(gomaxprocs), GODEBUG=godebug)
    args = [str(exe), str(duration_ms), str(workers)] + (["quiet"] if quiet else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True,
                         timeout=60)
    return out.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    chains = toolchains()
    if not chains:
        print("gotelemetry_capture: no Go toolchain found; run scripts/setup.sh",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="kubewire-gotelemetry-"))
    try:
        for _name, go in sorted(chains.items()):
            exe = build(go, tmp)
            ver = short_version(go)
            for prefix, godebug, dur, workers in CAPTURES:
                dest = args.out / f"{prefix}-{ver}.txt"
                dest.write_text(run(exe, godebug, dur, workers))
                print(f"{dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}"
                      f"  {dest.stat().st_size} bytes  ({gotrace_make.version(go)})")
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
