"""kubewire.golatency.attribution on the real Go traces in tests/data/gotrace (both formats)."""

from __future__ import annotations

import statistics
from bisect import bisect_left, bisect_right
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest

from kubewire.golatency import (
    BUCKETS_NS,
    Cause,
    Distribution,
    LatencyReport,
    Placement,
    Wait,
    attribute,
    attribution,
)
from kubewire.gotrace import Event, Frame, Kind, read_events

DATA = Path(__file__).resolve().parents[1] / "data" / "gotrace"
VERSIONS = ("new", "old")


@cache
def events(name: str) -> tuple[Event, ...]:
    return tuple(read_events((DATA / f"{name}.trace").read_bytes()))


@cache
def report(name: str) -> LatencyReport:
    return attribute(events(name))


@pytest.mark.parametrize("v", VERSIONS)
@pytest.mark.parametrize("workload", ["spawn", "cpu", "net", "ticker"])
def test_every_goroutine_start_is_one_wait_or_counted_as_unknown(workload: str, v: str) -> None:
    name = f"{workload}-{v}"
    starts = [e for e in events(name) if e.kind is Kind.GO_START]
    r = report(name)
    assert len(r.waits) + r.unattributed == len(starts)
    # only goroutines already runnable (or running) when tracing began lack a start of wait
    assert r.unattributed <= 3
    assert all(w.runnable_ts <= w.start_ts for w in r.waits)
    assert sum(c.dist.count for c in r.causes) == r.overall.count == len(r.waits)
    assert sum(g.dist.total_ns for g in r.goroutines) == r.overall.total_ns
    assert sum(f.goroutines for f in r.functions) == len(r.goroutines)


@pytest.mark.parametrize("v", VERSIONS)
def test_net_server_goroutines_are_woken_by_the_net_poller(v: str) -> None:
    r = report(f"net-{v}")
    netpoll = r.cause(Cause.NETPOLL)
    assert netpoll is not None
    # 300 requests: each server read and each client read parks in the poller once
    assert 590 <= netpoll.dist.count <= 620
    waits = [w for w in r.waits if w.cause is Cause.NETPOLL]
    assert all(w.wait_ns > 0 for w in waits)
    assert all(w.block_reason == "network" for w in waits)
    assert netpoll.dist.p50_ns > 0 and netpoll.dist.max_ns < 10_000_000
    # the 4 server connection goroutines share the 300 requests (not evenly: the clients
    # pick idle connections), each but the first read on a connection from the poller
    serve = [g for g in r.goroutines if g.func == "net/http.(*conn).serve"]
    assert len(serve) == 4
    assert sum(dict(g.by_cause)[Cause.NETPOLL] for g in serve) >= 290
    for g in serve:
        by = dict(g.by_cause)
        assert by[Cause.NETPOLL] >= 30
        # the rest is net/http's own hand-offs (the background reader) plus its creation
        assert set(by) <= {Cause.NETPOLL, Cause.GOROUTINE, Cause.CREATED, Cause.PREEMPTED,
                           Cause.YIELDED}
    server_waits = sum(g.dist.count for g in serve)
    server_netpoll = sum(dict(g.by_cause)[Cause.NETPOLL] for g in serve)
    assert server_netpoll >= 0.45 * server_waits


def test_go119_netpoll_pseudo_p_and_block_reason_agree() -> None:
    # Go 1.19 marks poller wake-ups with pseudo-P 1000002; the current format only by the
    # reason the goroutine blocked with. Both rules must pick the same wake-ups.
    evs = events("net-old")
    on_pseudo_p = sum(1 for e in evs if e.kind is Kind.GO_UNBLOCK and e.p == 1000002)
    waits = [w for w in report("net-old").waits if w.cause is Cause.NETPOLL]
    assert len(waits) == on_pseudo_p == 600
    assert all(w.ready_p == -1 and w.placement is Placement.NO_P for w in waits)


@pytest.mark.parametrize("v", VERSIONS)
def test_ticker_wakeups_are_timers_every_20_ms(v: str) -> None:
    r = report(f"ticker-{v}")
    timer = r.cause(Cause.TIMER)
    assert timer is not None and timer.dist.count >= 120  # 2.5 s of a 20 ms ticker
    main = [w for w in r.waits if w.cause is Cause.TIMER and w.block_reason == "chan receive"]
    assert len(main) >= 120
    period = statistics.median(b.runnable_ts - a.runnable_ts for a, b in pairwise(main))
    assert 19_000_000 <= period <= 21_000_000
    assert all(w.waker == -1 for w in main)  # no goroutine sent: the timer ran in the scheduler
    assert r.cause(Cause.NETPOLL) is None


@pytest.mark.parametrize("v", VERSIONS)
def test_spawn_storm_on_one_p_steals_nothing(v: str) -> None:
    r = report(f"spawn-{v}")
    assert {w.start_p for w in r.waits} == {0}
    assert all(w.placement is not Placement.OTHER_P for w in r.waits)
    assert all(c.other_p == 0 for c in r.causes)
    created = r.cause(Cause.CREATED)
    assert created is not None and created.dist.count >= 3000
    worker = max(r.functions, key=lambda f: f.goroutines)
    assert worker.goroutines == 3000 and worker.func.startswith("main.main.func")


@pytest.mark.parametrize("v", VERSIONS)
def test_spawn_queued_behind_counts_follow_creation_order(v: str) -> None:
    evs = events(f"spawn-{v}")
    starts = [(e.ts, e.args[0]) for e in evs if e.kind is Kind.GO_START]
    start_ts = [ts for ts, _ in starts]
    r = report(f"spawn-{v}")
    created = sorted((w for w in r.waits if w.cause is Cause.CREATED and w.waker > 0),
                     key=lambda w: w.runnable_ts)
    # one P: queued behind = every goroutine started between being created and starting
    for w in created:
        between = [g for _, g in starts[bisect_right(start_ts, w.runnable_ts):
                                        bisect_left(start_ts, w.start_ts)]]
        assert w.queued_behind == len(between)
        assert w.behind == tuple(between[:5])
    # The local run queue is FIFO: after the runnext goroutine, the last batch of created
    # goroutines starts in creation order, each queued behind the one created before it
    # (and main, which takes each result in between).
    by_start = sorted(created, key=lambda w: w.start_ts)
    run = longest_run_in_creation_order(by_start, created)
    assert len(run) >= 100
    for a, b in pairwise(run):
        assert b.queued_behind > a.queued_behind


def longest_run_in_creation_order(by_start: list[Wait], created: list[Wait]) -> list[Wait]:
    rank = {id(w): i for i, w in enumerate(created)}
    best: list[Wait] = []
    cur: list[Wait] = []
    for w in by_start:
        if cur and rank[id(w)] == rank[id(cur[-1])] + 1:
            cur.append(w)
        else:
            cur = [w]
        if len(cur) > len(best):
            best = list(cur)
    return best


@pytest.mark.parametrize("v", VERSIONS)
def test_cpu_workload_yields_and_moves_between_ps(v: str) -> None:
    r = report(f"cpu-{v}")
    yielded = r.cause(Cause.YIELDED)
    assert yielded is not None
    assert yielded.dist.count >= 640 * 4  # 640 workers call runtime.Gosched 4 times each
    # Gosched puts the goroutine on the global queue: any of the 4 Ps may take it
    assert yielded.other_p > 0
    assert {w.start_p for w in r.waits} == {0, 1, 2, 3}


def _ev(kind: Kind, ts: int, p: int, g: int, *args: int, reason: str = "",
        func: str = "") -> Event:
    return Event(kind, ts, 1, p, g, tuple(args), kind.value, ts, (),
                 (reason,) if reason else (), (Frame(1, func, "x.go", 1),) if func else (), 26)


def test_rules_on_a_hand_made_event_sequence() -> None:
    evs = [
        _ev(Kind.GO_CREATE, 10, 0, 1, 5, 0, 0, func="main.worker"),
        _ev(Kind.GO_CREATE, 11, 0, 1, 6, 0, 0, func="main.worker"),
        _ev(Kind.GO_BLOCK, 20, 0, 1, 0, 0, reason="chan receive"),
        _ev(Kind.GO_START, 30, 0, -1, 7, 1),  # someone else first
        _ev(Kind.GO_STOP, 35, 0, 7, 0, 0, reason="preempted"),
        _ev(Kind.GO_START, 40, 1, -1, 5, 1),  # G5 created on P0, run by P1: stolen
        _ev(Kind.GO_BLOCK, 45, 1, 5, 0, 0, reason="network"),
        _ev(Kind.GO_START, 50, 0, -1, 6, 1),  # G6 waited behind G7 on P0
        _ev(Kind.GO_UNBLOCK, 60, 0, 6, 1, 2, 0),  # G6 readies main
        _ev(Kind.GO_UNBLOCK, 61, -1, -1, 5, 2, 0),  # the poller, from a P-less M
        _ev(Kind.GO_DESTROY, 62, 0, 6),
        _ev(Kind.GO_START, 70, 0, -1, 1, 2),
        _ev(Kind.GO_START, 80, 1, -1, 5, 2),
        _ev(Kind.GO_START, 90, 1, -1, 7, 2),
    ]
    r = attribute(evs)
    got = {(w.g, w.start_ts): w for w in r.waits}
    assert r.unattributed == 1  # G7's first start: runnable before the trace
    g5 = got[(5, 40)]
    assert (g5.cause, g5.placement, g5.waker, g5.wait_ns) == (Cause.CREATED, Placement.OTHER_P,
                                                              1, 30)
    assert (g5.queue_p, g5.behind) == (0, (7,))  # it sat in P0's queue while G7 ran there
    g6 = got[(6, 50)]
    assert (g6.placement, g6.queued_behind, g6.behind) == (Placement.SAME_P, 1, (7,))
    main = got[(1, 70)]
    assert (main.cause, main.waker, main.block_reason) == (Cause.GOROUTINE, 6, "chan receive")
    poll = got[(5, 80)]
    assert (poll.cause, poll.placement, poll.ready_p, poll.queue_p) == (
        Cause.NETPOLL, Placement.NO_P, -1, 1)
    assert got[(7, 90)].cause is Cause.PREEMPTED and got[(7, 90)].placement is Placement.OTHER_P
    assert [f.func for f in r.functions][:1] == ["main.worker"]
    assert r.to_dict(waits=True)["waits"][0]["cause"] == "created"


def test_distribution_percentiles_and_histogram() -> None:
    d = Distribution.of([5_000, 100, 1_000, 1_001, 200_000_000] + [50] * 5)
    assert (d.count, d.max_ns, d.total_ns) == (10, 200_000_000, 200_007_351)
    # nearest rank: the ceil(q * n)-th smallest
    assert (d.p50_ns, d.p90_ns, d.p99_ns) == (50, 5_000, 200_000_000)
    assert len(d.histogram) == len(BUCKETS_NS) + 1
    # <= 1 us: 50 x5, 100, 1000; <= 2 us: 1001; <= 5 us: 5000; longer than 100 ms: 1
    assert d.histogram[:3] == (7, 1, 1) and d.histogram[-1] == 1 and sum(d.histogram) == 10
    empty = Distribution.of([])
    assert (empty.count, empty.p99_ns, sum(empty.histogram)) == (0, 0, 0)


@pytest.mark.parametrize("name", ["net-new", "cpu-old"])
def test_pruning_old_starts_changes_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the per-P start lists are cut to what pending waits can still be queued behind;
    # pruning after every few starts must give the same waits as the default
    baseline = attribute(events(name)).waits
    monkeypatch.setattr(attribution, "_PRUNE_EVERY", 7)
    assert attribute(events(name)).waits == baseline
