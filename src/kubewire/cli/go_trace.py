"""`kubewire go trace FILE`: summary, scheduling-latency attribution, model agreement, timeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from kubewire.cli.failure import Failure
from kubewire.cli.progress import Progress
from kubewire.golatency import LatencyReport, attribute
from kubewire.golatency.summary import TraceSummary, format_ns, iter_slices, summarize
from kubewire.golatency.timeline import render_html
from kubewire.gosched import GoSchedError, replay
from kubewire.gotrace import Event, GoTraceError, read_events


def load_events(path: str) -> list[Event]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise Failure(f"cannot read {path}: {e.strerror or e}; give the path of a "
                              "runtime/trace file") from None
    try:
        return read_events(data)
    except GoTraceError as e:
        raise Failure(f"{path}: {e}") from None


def model_replay(events: list[Event]) -> dict[str, Any]:
    """The scheduler model's replay as a dict; a trace the model cannot replay is reported
    as {"error": ...}, not fatal: the trace itself read fine."""
    try:
        result = replay(events)
    except GoSchedError as e:
        return {"error": str(e)}
    return result.to_dict()


@click.command(name="trace")
@click.argument("file", metavar="FILE")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--html", "html_out", metavar="OUT.html", default=None,
              help="Also write a self-contained timeline page.")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Goroutines to list, by total wait.")
@click.option("--waits", is_flag=True, help="With -o json: every single wait too.")
def trace(file: str, output: str, html_out: str | None, top: int, waits: bool) -> None:
    """Read a Go execution trace: who waited to run, why, and for how long."""
    # a live status on a terminal only: a million-event trace takes several seconds
    with Progress("go trace", enabled=sys.stderr.isatty()) as progress:
        progress.update(f"reading {file}")
        events = load_events(file)
        progress.update(f"attributing waits ({len(events)} events)")
        slices = list(iter_slices(events))
        summary = summarize(events, slices)
        report = attribute(events)
        progress.update("replaying the scheduler model")
        model = model_replay(events)
        if html_out:
            progress.update(f"writing {html_out}")
            page, _ = render_html(events, summary, report, Path(file).name, slices)
            try:
                Path(html_out).write_text(page, encoding="utf-8")
            except OSError as e:
                raise Failure(f"cannot write {html_out}: {e.strerror or e}") from None
    if output == "json":
        doc = {"file": file, "summary": summary.to_dict(),
               "latency": report.to_dict(waits=waits, top=top), "model": model}
        click.echo(json.dumps(doc, indent=2))
        return
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 132  # rich assumes 80 columns in a pipe: too narrow for the tables
    _print_text(console, file, summary, report, model, top, html_out)


def _print_text(console: Console, file: str, s: TraceSummary, r: LatencyReport,
                model: dict[str, Any], top: int, html_out: str | None) -> None:
    busy = "  ".join(f"P{p} {f:.0%}" for p, f in s.p_busy)
    console.print(f"[bold]{file}[/bold]: {s.format}, {format_ns(s.duration_ns)}, "
                  f"{s.events} events, GOMAXPROCS {s.gomaxprocs}, {s.goroutines} goroutines, "
                  f"{s.gc_count} GC")
    console.print(f"P busy: {busy}")
    kinds = ", ".join(f"{k} {n}" for k, n in s.by_kind[:8])
    console.print(f"events: {kinds}{', ...' if len(s.by_kind) > 8 else ''}")
    if "error" in model:
        console.print(f"model agreement: n/a (the model could not replay it: {model['error']})")
    else:
        first = model["first_miss"]
        unaided = ("every one predicted unaided" if first is None
                   else f"the first miss at decision {first}")
        console.print(f"model agreement: {100 * float(model['agreement']):.1f} % of "
                      f"{model['decisions']} decisions ({unaided})")

    t = Table(title=f"runnable -> running waits: {r.overall.count} "
                    f"(+{r.unattributed} goroutines already runnable when the trace began)",
              box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("cause", "waits", "p50", "p90", "p99", "max", "total", "other-P", "no-P"):
        t.add_column(col, justify="left" if col == "cause" else "right", no_wrap=True)
    for c in r.causes:
        d = c.dist
        t.add_row(c.cause.value, str(d.count), *(format_ns(x) for x in (
            d.p50_ns, d.p90_ns, d.p99_ns, d.max_ns, d.total_ns)), str(c.other_p), str(c.no_p))
    console.print(t)

    g = Table(title=f"top {top} goroutines by total wait", box=box.SIMPLE_HEAD,
              title_justify="left")
    for col in ("G", "start function", "waits", "total", "p50", "max", "causes"):
        g.add_column(col, justify="left" if col in ("start function", "causes") else "right",
                     no_wrap=col not in ("start function", "causes"))
    for st in r.goroutines[:top]:
        causes = " ".join(f"{c.value} {n}" for c, n in st.by_cause)
        g.add_row(str(st.g), st.func, str(st.dist.count), format_ns(st.dist.total_ns),
                  format_ns(st.dist.p50_ns), format_ns(st.dist.max_ns), causes)
    console.print(g)
    if html_out:
        console.print(f"timeline written to {html_out}")

