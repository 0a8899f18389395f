"""Scheduler-model replay rate: events/s of kubewire.gosched on a trace of >= 1M events.

    .venv/bin/python bench/gosched_replay.py [--goroutines 250000] [--toolchain new|old]
                                             [--trace FILE] [--repeat 3] [--profile] [--smoke]

Without --trace it makes the same spawn-storm trace as bench/gotrace_parse.py (its code is
reused). It times three things on one trace: the parse alone (streaming, as gotrace_parse.py
does), the replay alone (over the parsed events held in a list) and parse + replay streamed
together (what `kubewire go trace` does), and prints the model's agreement too.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kubewire.gosched import ReplayResult, replay  # noqa: E402
from kubewire.gotrace import Event, iter_events  # noqa: E402

_spec = importlib.util.spec_from_file_location("gotrace_parse", ROOT / "bench" / "gotrace_parse.py")
assert _spec and _spec.loader
gotrace_parse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gotrace_parse)


def _chunks(path: Path):  # type: ignore[no-untyped-def]
    f = path.open("rb")
    try:
        yield from iter(lambda: f.read(1 << 20), b"")
    finally:
        f.close()


def load(path: Path) -> list[Event]:
    return list(iter_events(_chunks(path)))


def time_replay(events: list[Event]) -> tuple[float, ReplayResult]:
    t0 = time.perf_counter()
    res = replay(events)
    return time.perf_counter() - t0, res


def time_streamed(path: Path) -> tuple[float, ReplayResult]:
    t0 = time.perf_counter()
    res = replay(iter_events(_chunks(path)))
    return time.perf_counter() - t0, res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path)
    ap.add_argument("--goroutines", type=int, default=250_000)
    ap.add_argument("--toolchain", choices=["new", "old"], default="new")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one replay")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (5k goroutines)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kubewire-gosched-bench-") as t:
        return _run(args, Path(t))


def _run(args: argparse.Namespace, tmp: Path) -> int:
    path = gotrace_parse.trace_for(args, tmp, "gosched_replay")
    if path is None:
        return 2
    repeat = 1 if args.smoke else max(1, args.repeat)
    parse_walls = []
    for _ in range(repeat):
        n, dt, _cpu = gotrace_parse.parse(path)
        parse_walls.append(dt)
    events = load(path)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        replay(events)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    replay_walls = []
    res = None
    for _ in range(repeat):
        dt, res = time_replay(events)
        replay_walls.append(dt)
    del events
    both_walls = []
    for _ in range(repeat):
        dt, res = time_streamed(path)
        both_walls.append(dt)
    assert res is not None
    p, r, b = min(parse_walls), min(replay_walls), min(both_walls)
    print(f"replayed {n} events: replay alone {n / r / 1e3:.0f}k events/s, parse alone "
          f"{n / p / 1e3:.0f}k/s, parse+replay {n / b / 1e3:.0f}k/s (best of {repeat}, "
          f"Python {sys.version.split()[0]}); model agreement {res.agreement * 100:.2f} % of "
          f"{res.decisions} decisions ({res.several_possible} of them among several equally "
          "possible goroutines)")
    if not args.smoke and n < 1_000_000:
        print("warning: fewer than 1M events; raise --goroutines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
