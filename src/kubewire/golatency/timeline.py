"""A self-contained HTML page: Ps over time with their goroutines, and the wait distributions.

Inline SVG and CSS only (tooltips are SVG <title>s): no script, no fetch, opens offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from kubewire.golatency.attribution import (
    BUCKETS_NS,
    Cause,
    LatencyReport,
    root_function,
    start_function,
)
from kubewire.golatency.summary import Slice, TraceSummary, format_ns, iter_slices
from kubewire.gotrace import Event, Kind

WIDTH = 1100  # px of the time axis
ROW = 22  # px per P row
LABEL = 70  # px left of the time axis
MAX_SLICES = 5000  # slices drawn one by one; the rest are merged per pixel column
MIN_PX = 1.0  # narrower slices are merged
LEGEND = 12  # start functions named in the legend, one palette colour each
# twelve colours far apart; the functions that ran longest get them in order
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#393b79", "#ad494a", "#637939")
OTHER = "#aaa"


@dataclass(frozen=True, slots=True)
class TimelineStats:
    """What the page drew, and what it merged to stay small."""

    slices: int
    drawn: int
    merged: int
    merged_columns: int
    netpoll_wakeups: int


def render_html(events: Sequence[Event], summary: TraceSummary, report: LatencyReport,
                title: str = "Go trace", slices: Sequence[Slice] | None = None,
                ) -> tuple[str, TimelineStats]:
    """The page, and what it drew. ``slices``: ``iter_slices(events)`` if already computed."""
    t0, span = summary.first_ts, max(1, summary.duration_ns)
    scale = WIDTH / span
    funcs = _functions(events)
    slices = list(iter_slices(events)) if slices is None else slices
    ps = sorted({p for p, _ in summary.p_busy} | {s.p for s in slices})
    row_of = {p: i for i, p in enumerate(ps)}
    # the widest slices are drawn one by one; everything else becomes a per-column busy share
    ranked = sorted(slices, key=lambda s: s.start - s.end)
    drawn = [s for s in ranked[:MAX_SLICES] if (s.end - s.start) * scale >= MIN_PX]
    drawn_set = {id(s) for s in drawn}
    columns: dict[tuple[int, int], float] = {}
    for s in slices:
        if id(s) not in drawn_set:
            _spread(columns, row_of[s.p], (s.start - t0) * scale, (s.end - t0) * scale)
    wakeups = [w for w in report.waits if w.cause is Cause.NETPOLL]
    poll_cols: dict[int, int] = {}
    for w in wakeups:
        col = min(WIDTH - 1, int((w.runnable_ts - t0) * scale))
        poll_cols[col] = poll_cols.get(col, 0) + 1

    top = _top_functions(slices, funcs)
    colour = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(top)}
    out: list[str] = []
    height = (len(ps) + 1) * ROW + 30
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL + WIDTH + 40}" '
               f'height="{height}" class="timeline">')
    busy_of = dict(summary.p_busy)
    drawn_by_p: dict[int, list[Slice]] = {}
    for s in drawn:
        drawn_by_p.setdefault(s.p, []).append(s)
    columns_by_row: dict[int, list[tuple[int, float]]] = {}
    for (r, col), share in sorted(columns.items()):
        columns_by_row.setdefault(r, []).append((col, share))
    for p in ps:
        y = row_of[p] * ROW
        busy = busy_of.get(p, 0.0)
        out.append(f'<g class="p-row" data-p="{p}">'
                   f'<text x="4" y="{y + 15}">P{p}</text>'
                   f'<rect class="lane" x="{LABEL}" y="{y + 2}" width="{WIDTH}" '
                   f'height="{ROW - 4}"><title>P{p}: busy {busy:.1%}</title></rect>')
        for s in drawn_by_p.get(p, []):
            f = funcs.get(s.g, "?")
            out.append(
                f'<rect x="{LABEL + (s.start - t0) * scale:.1f}" y="{y + 2}" '
                f'width="{(s.end - s.start) * scale:.1f}" height="{ROW - 4}" '
                f'fill="{colour.get(f, OTHER)}"><title>G{s.g} {escape(f)}: '
                f'{format_ns(s.end - s.start)} from +{format_ns(s.start - t0)}</title></rect>')
        for col, share in columns_by_row.get(row_of[p], []):
            out.append(f'<rect x="{LABEL + col}" y="{y + 2}" width="1" height="{ROW - 4}" '
                       f'fill="#555" fill-opacity="{min(1.0, share):.2f}"/>')
        out.append("</g>")
    y = len(ps) * ROW
    out.append(f'<g class="netpoll-row"><text x="4" y="{y + 15}">netpoll</text>')
    for col, n in sorted(poll_cols.items()):
        h = min(ROW - 4, 4 + 3 * n.bit_length())
        out.append(f'<rect x="{LABEL + col}" y="{y + ROW - 2 - h}" width="1" height="{h}" '
                   f'fill="#000"><title>{n} net poller wake-up{"s" * (n != 1)} at '
                   f'+{format_ns(int(col / scale))}</title></rect>')
    out.append("</g>")
    for i in range(6):
        x = LABEL + i * WIDTH / 5
        out.append(f'<text class="tick" x="{x:.0f}" y="{y + ROW + 20}" text-anchor="middle">'
                   f'+{format_ns(int(i * span / 5))}</text>')
    out.append("</svg>")

    merged = len(slices) - len(drawn)
    stats = TimelineStats(len(slices), len(drawn), merged, len(columns), len(wakeups))
    note = (f"{len(drawn)} of {len(slices)} run slices drawn one by one; "
            f"{merged} shorter than {MIN_PX:g} px (or beyond the first {MAX_SLICES} by length) "
            f"are merged into {len(columns)} grey pixel columns whose shade is the P's busy "
            "share there." if merged else f"All {len(slices)} run slices drawn.")
    legend = "".join(f'<li><span class="sw" style="background:{colour[f]}"></span>'
                     f'{escape(f)}</li>' for f in top)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body{{font:13px system-ui,sans-serif;margin:16px;color:#222}}
svg text{{font:11px monospace}} .lane{{fill:#f3f3f3}} .tick{{fill:#666}}
table{{border-collapse:collapse}} td,th{{padding:2px 8px;text-align:right}}
td:last-child,th:last-child{{text-align:left}}
th{{border-bottom:1px solid #999}} td:first-child,th:first-child{{text-align:left}}
.sw{{display:inline-block;width:10px;height:10px;margin-right:4px}}
ul.legend{{columns:2;list-style:none;padding:0}}
</style></head><body>
<h1>{escape(title)}</h1>
<p>{escape(summary.format)}, {format_ns(summary.duration_ns)}, GOMAXPROCS {summary.gomaxprocs},
{summary.goroutines} goroutines, {summary.events} events, {summary.gc_count} GC cycles.</p>
<h2>Ps over time</h2>
<p>One row per P; each bar is a goroutine running there (colour: its start function; hover
for details). The black ticks in the bottom row mark net poller wake-ups
({len(wakeups)}): goroutines the poller made runnable. {escape(note)}</p>
{"".join(out)}
<ul class="legend">{legend}<li><span class="sw" style="background:{OTHER}"></span>other</li></ul>
<h2>Runnable &rarr; running waits by cause</h2>
{_cause_table(report)}
</body></html>
"""
    return page, stats


def _cause_table(report: LatencyReport) -> str:
    rows = []
    for c in report.causes:
        d = c.dist
        peak = max(d.histogram) or 1  # each row scaled to its own tallest bucket: the shape
        bars = "".join(
            f'<rect x="{i * 9}" y="{20 - 20 * n / peak:.1f}" width="8" '
            f'height="{20 * n / peak:.1f}" fill="#1f77b4"><title>{n} '
            f'{"&le; " + format_ns(b) if b else "&gt; " + format_ns(BUCKETS_NS[-1])}'
            "</title></rect>"
            for i, (n, b) in enumerate(zip(d.histogram, (*BUCKETS_NS, 0), strict=True)))
        cells = [c.cause.value, str(d.count),
                 *(format_ns(x) for x in (d.p50_ns, d.p90_ns, d.p99_ns, d.max_ns)),
                 str(c.other_p), str(c.no_p)]
        rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells)
                    + f'<td><svg width="{9 * len(d.histogram)}" height="20">{bars}</svg></td>'
                    "</tr>")
    head = ("<tr><th>cause</th><th>waits</th><th>p50</th><th>p90</th><th>p99</th><th>max</th>"
            "<th>other P</th><th>no P</th><th>histogram: &le; 1 &micro;s &hellip; 100 ms, "
            "longer</th></tr>")
    return f'<table class="causes">{head}{"".join(rows)}</table>'


def _spread(columns: dict[tuple[int, int], float], row: int, x0: float, x1: float) -> None:
    c = int(x0)
    while c < x1 and c < WIDTH:
        share = min(x1, c + 1) - max(x0, c)
        columns[(row, c)] = columns.get((row, c), 0.0) + share
        c += 1


def _functions(events: Sequence[Event]) -> dict[int, str]:
    out: dict[int, str] = {}
    for ev in events:
        if ev.kind in (Kind.GO_CREATE, Kind.GO_CREATE_BLOCKED, Kind.GO_CREATE_SYSCALL):
            out.setdefault(ev.args[0], start_function(ev))
        elif ev.kind in (Kind.GO_BLOCK, Kind.GO_STOP) and ev.g not in out and ev.stack:
            out[ev.g] = root_function(ev)
    return out


def _top_functions(slices: Sequence[Slice], funcs: dict[int, str]) -> list[str]:
    run: dict[str, int] = {}
    for s in slices:
        f = funcs.get(s.g, "?")
        run[f] = run.get(f, 0) + s.end - s.start
    return [f for f, _ in sorted(run.items(), key=lambda kv: (-kv[1], kv[0]))[:LEGEND]]


