"""Trace parse rate: events/s of kubewire.gotrace on a trace of >= 1M events.

    .venv/bin/python bench/gotrace_parse.py [--goroutines 250000] [--toolchain new|old]
                                            [--trace FILE] [--profile] [--smoke]

Without --trace it builds the spawn-storm workload (tests/data/gotrace/src/spawn) with the
chosen toolchain and traces it into a temp dir (the trace is tens of MB: not committed). The
file is read in 1 MiB chunks through the streaming reader, so the figure includes decoding,
stack/string resolution, the per-M merge and building every Event.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kubewire.gotrace import iter_events  # noqa: E402

_spec = importlib.util.spec_from_file_location("gotrace_make", ROOT / "bench" / "gotrace_make.py")
assert _spec and _spec.loader
gotrace_make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gotrace_make)


def parse(path: Path) -> tuple[int, float, float]:
    """(events, wall seconds, CPU seconds of this process)."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    n = 0
    with path.open("rb") as f:
        for _ev in iter_events(iter(lambda: f.read(1 << 20), b"")):
            n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path)
    ap.add_argument("--goroutines", type=int, default=250_000)
    ap.add_argument("--toolchain", choices=["new", "old"], default="new")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the parse")
    ap.add_argument("--repeat", type=int, default=3,
                    help="parse this many times; report the best and the median (noisy hosts)")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (5k goroutines)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kubewire-gotrace-bench-") as t:
        return _run(args, Path(t))


def trace_for(args: argparse.Namespace, tmp: Path, bench: str) -> Path | None:
    """``--trace``, or a spawn-storm trace made with ``--toolchain`` (None: not installed).
    Shared with bench/gosched_replay.py, which reads the same arguments."""
    if args.trace is not None:
        return Path(args.trace)
    chains = gotrace_make.find_toolchains()
    if args.toolchain not in chains:
        print(f"{bench}: toolchain {args.toolchain!r} not installed; run `make setup`",
              file=sys.stderr)
        return None
    go = chains[args.toolchain]
    n_g = 5_000 if args.smoke else args.goroutines
    path = tmp / f"spawn-{args.toolchain}.trace"
    t0 = time.perf_counter()
    gotrace_make.make_trace(go, "spawn", path, n_g, tmp)
    print(f"trace: {gotrace_make.version(go)}, spawn storm of {n_g} goroutines, "
          f"{path.stat().st_size / 1e6:.1f} MB, made in {time.perf_counter() - t0:.1f} s")
    return path


def _run(args: argparse.Namespace, tmp: Path) -> int:
    path = trace_for(args, tmp, "gotrace_parse")
    if path is None:
        return 2
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        n, dt, cpu = parse(path)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
        runs = [(dt, cpu)]
    else:
        runs = []
        for _ in range(1 if args.smoke else max(1, args.repeat)):
            n, dt, cpu = parse(path)
            runs.append((dt, cpu))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    walls = sorted(r[0] for r in runs)
    best, median = walls[0], walls[len(walls) // 2]
    print(f"parsed {n} events in {best:.2f} s: {n / best / 1e3:.0f}k events/s best of "
          f"{len(runs)}, median {n / median / 1e3:.0f}k/s "
          f"(peak RSS {rss:.0f} MB, Python {sys.version.split()[0]})")
    if not args.smoke and n < 1_000_000:
        print("warning: fewer than 1M events; raise --goroutines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
