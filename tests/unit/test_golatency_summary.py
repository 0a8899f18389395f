"""kubewire.golatency's trace summary, run slices and HTML timeline on real Go traces."""

from __future__ import annotations

from functools import cache
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import pytest

from kubewire.golatency import attribute, timeline
from kubewire.golatency.summary import TraceSummary, iter_slices, summarize
from kubewire.golatency.timeline import TimelineStats, render_html
from kubewire.gotrace import Event, Kind, read_events

DATA = Path(__file__).resolve().parents[1] / "data" / "gotrace"
VERSIONS = ("new", "old")
# workload -> (GOMAXPROCS, at least this many goroutines)
EXPECT = {"spawn": (1, 3000), "cpu": (4, 640), "net": (2, 300), "ticker": (2, 1)}


@cache
def events(name: str) -> tuple[Event, ...]:
    return tuple(read_events((DATA / f"{name}.trace").read_bytes()))


@cache
def summary(name: str) -> TraceSummary:
    return summarize(events(name))


@pytest.mark.parametrize("v", VERSIONS)
@pytest.mark.parametrize("workload", sorted(EXPECT))
def test_summary_of_each_trace(workload: str, v: str) -> None:
    name = f"{workload}-{v}"
    s = summary(name)
    procs, goroutines = EXPECT[workload]
    assert s.format == ("go 1.26 trace" if v == "new" else "go 1.19 trace")
    assert s.gomaxprocs == procs
    assert goroutines <= s.goroutines <= goroutines + 40  # plus the runtime's and net/http's
    assert s.events == len(events(name)) == sum(n for _, n in s.by_kind)
    assert s.duration_ns == events(name)[-1].ts - events(name)[0].ts > 0
    assert [p for p, _ in s.p_busy] == list(range(procs))
    assert all(0.0 <= f <= 1.0 for _, f in s.p_busy)
    d = s.to_dict()
    assert d["by_kind"]["GoStart"] == sum(1 for e in events(name) if e.kind is Kind.GO_START)


def test_busy_fractions_match_the_workloads() -> None:
    assert summary("ticker-new").p_busy[0][1] < 0.01  # a 20 ms ticker does almost nothing
    assert summary("spawn-new").p_busy[0][1] > 0.3  # one P doing 3000 goroutines' work
    assert all(f > 0.2 for _, f in summary("cpu-old").p_busy)
    assert summary("ticker-new").duration_ns > 2_400_000_000  # 2.5 s
    assert summary("net-new").gc_count >= 1


@pytest.mark.parametrize("name", ["cpu-new", "cpu-old", "net-new", "net-old"])
def test_run_slices_never_overlap_on_a_p_and_each_start_opens_one(name: str) -> None:
    slices = list(iter_slices(events(name)))
    by_p: dict[int, list[tuple[int, int]]] = {}
    for s in slices:
        assert s.end > s.start and s.g > 0
        by_p.setdefault(s.p, []).append((s.start, s.end))
    for spans in by_p.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in pairwise(spans))
    starts = sum(1 for e in events(name) if e.kind is Kind.GO_START)
    assert starts * 0.95 <= len(slices)


class _Checker(HTMLParser):
    """Collects P rows and checks that every element is closed in order."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.rows: list[str] = []
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "g" and a.get("class") == "p-row":
            self.rows.append(a["data-p"] or "")
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        self.scripts += tag == "script"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <rect .../>: opened and closed

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def _page(name: str) -> tuple[str, TimelineStats]:
    evs = events(name)
    return render_html(evs, summary(name), attribute(evs), title=name)


@pytest.mark.parametrize("name", ["spawn-new", "cpu-new", "cpu-old", "net-new", "net-old"])
def test_timeline_is_well_formed_with_one_row_per_p(name: str) -> None:
    page, stats = _page(name)
    c = _Checker()
    c.feed(page)
    c.close()
    assert c.stack == []
    assert c.rows == [str(p) for p in range(summary(name).gomaxprocs)]
    assert c.links == [] and c.scripts == 0  # self-contained: nothing to fetch
    assert "xmlns" in page and page.count("://") == 1  # only the SVG namespace name
    assert stats.drawn + stats.merged == stats.slices
    assert stats.drawn <= timeline.MAX_SLICES
    for cause in attribute(events(name)).causes:
        assert f"<td>{cause.cause.value}</td>" in page


def test_timeline_marks_net_poller_wakeups() -> None:
    page, stats = _page("net-new")
    assert stats.netpoll_wakeups >= 590
    assert 'class="netpoll-row"' in page and "net poller wake-up" in page
    _, quiet = _page("spawn-new")
    assert quiet.netpoll_wakeups == 0


def test_timeline_bounds_big_traces_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline, "MAX_SLICES", 50)
    page, stats = _page("cpu-new")
    assert stats.drawn <= 50 and stats.merged == stats.slices - stats.drawn > 3000
    assert "merged into" in page and f"{stats.drawn} of {stats.slices}" in page
    # merged slices become at most one shaded column per pixel and P
    assert stats.merged_columns <= timeline.WIDTH * 4
    assert len(page) < 400_000
