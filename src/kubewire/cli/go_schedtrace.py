"""`kubewire go schedtrace FILE` and `kubewire go maxprocs`: GODEBUG=schedtrace output and
GOMAXPROCS advice for Go daemons in containers (kubewire.gotelemetry does the work)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from kubewire.cli.failure import Failure
from kubewire.gotelemetry import (
    GoTelemetryError,
    SchedTrace,
    advise,
    parse_cpu_limit,
    parse_go_version,
    parse_schedtrace,
)
from kubewire.gotelemetry.advisor import Advice, CpuLimit, GoVersion
from kubewire.gotelemetry.probe import ProcessCpu, probe


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 132  # rich assumes 80 columns in a pipe: too narrow for the tables
    return console


def load_schedtrace(file: str, *, skip_bad: bool = False) -> SchedTrace:
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as e:
        raise Failure(
            f"cannot read {file}: {e.strerror or e}; give a file holding the stderr of a Go "
            "program run with GODEBUG=schedtrace=1000 (or - for stdin)") from None
    name = "stdin" if file == "-" else file
    # a daemon's stderr may hold anything; bad bytes only matter inside a SCHED record
    try:
        trace = parse_schedtrace(raw.decode("utf-8", errors="replace"), strict=not skip_bad)
    except GoTelemetryError as e:
        raise Failure(
            f"{name}: {e}. If the program's own output is mixed into the runtime's lines, "
            "--skip-bad drops such records.") from None
    if not trace.samples:
        raise Failure(
            f"{name}: no SCHED records in {trace.skipped_lines} lines; run the program with "
            "GODEBUG=schedtrace=1000 (add ,scheddetail=1 for P/M/G detail) and capture its "
            "stderr (2> FILE)")
    return trace


@click.command(name="schedtrace")
@click.argument("file", metavar="FILE")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--samples", "show_samples", is_flag=True,
              help="Also list every SCHED record.")
@click.option("--skip-bad", is_flag=True,
              help="Drop records with a malformed line instead of failing.")
def schedtrace(file: str, output: str, show_samples: bool, skip_bad: bool) -> None:
    """Summarise GODEBUG=schedtrace[,scheddetail=1] output captured from stderr (- = stdin)."""
    trace = load_schedtrace(file, skip_bad=skip_bad)
    summary = trace.summary()
    if output == "json":
        doc: dict[str, Any] = {"file": file, "summary": summary.to_dict(),
                               "truncated": trace.truncated, "notes": list(trace.notes),
                               "bad_lines": list(trace.bad_lines)}
        if show_samples:
            doc["samples"] = [s.to_dict() for s in trace.samples]
        click.echo(json.dumps(doc, indent=2))
        return
    console = _console()
    kind = "schedtrace + scheddetail" if summary.detail_samples else "schedtrace"
    console.print(f"[bold]{file}[/bold]: {summary.samples} SCHED records ({kind}) over "
                  f"{summary.duration_ms} ms")
    t = Table(box=box.SIMPLE, show_header=False)
    t.add_column("what")
    t.add_column("value")
    procs = ", ".join(str(p) for p in summary.gomaxprocs)
    t.add_row("GOMAXPROCS", procs)
    t.add_row("global run queue", f"max {summary.global_max}, avg {summary.global_avg:.1f}")
    t.add_row("local run queues", f"longest {summary.local_max}, avg total "
                                  f"{summary.local_avg:.1f}")
    t.add_row("idle Ps", f"{summary.idle_p_fraction:.0%} of P-samples")
    t.add_row("idle P with work queued", f"{summary.idle_with_work} samples")
    t.add_row("threads", f"{summary.threads_first} -> {summary.threads_last} "
                         f"(max {summary.threads_max})")
    if summary.goroutines_last is not None:
        by = ", ".join(f"{k} {n}" for k, n in summary.goroutines_last.items())
        t.add_row("goroutines (last detail)", f"{sum(summary.goroutines_last.values())}: {by}")
        t.add_row("goroutines (max)", str(summary.goroutines_max))
    t.add_row("other lines skipped", str(summary.skipped_lines))
    console.print(t)
    for note in trace.notes:
        console.print(f"note: {note}")
    for f in summary.findings():
        console.print(f"- {f}")
    if show_samples:
        _print_samples(console, trace)


def _print_samples(console: Console, trace: SchedTrace) -> None:
    t = Table(box=box.SIMPLE_HEAD)
    for col in ("ms", "procs", "idle", "threads", "spin", "needspin", "idle M", "global",
                "local"):
        t.add_column(col, justify="right")
    detail = any(s.detail for s in trace.samples)
    if detail:
        t.add_column("goroutines", justify="right")
    for s in trace.samples:
        row = [str(s.time_ms), str(s.gomaxprocs), str(s.idleprocs), str(s.threads),
               str(s.spinningthreads), "-" if s.needspinning is None else str(s.needspinning),
               str(s.idlethreads), str(s.runqueue), " ".join(map(str, s.local_runqueues))]
        if detail:
            row.append(str(len(s.gs)) if s.detail else "-")
        t.add_row(*row)
    console.print(t)


def _version(text: str | None, what: str) -> GoVersion | None:
    if text is None:
        return None
    try:
        return parse_go_version(text)
    except GoTelemetryError as e:
        raise Failure(f"{what}: {e}") from None


@click.command(name="maxprocs")
@click.option("--cpu-limit", metavar="LIMIT", default=None,
              help="The container's CPU limit: 500m, 2, 1.5 (limits.cpu), '200000 100000' "
                   "or 'max' (cpu.max). Omit for none.")
@click.option("--cpus", type=int, default=None,
              help="CPUs of the node (default: this machine's, or the process's affinity "
                   "with --pid).")
@click.option("--go-version", default=None, metavar="VERSION",
              help="Go toolchain the binary was built with (1.24, go1.25.3).")
@click.option("--go-mod", default=None, metavar="VERSION",
              help="The `go` line of the main module's go.mod.")
@click.option("--gomaxprocs", "gomaxprocs_env", default=None, metavar="VALUE",
              help="The GOMAXPROCS environment variable, if set.")
@click.option("--godebug", default=None, metavar="SETTINGS",
              help="The GODEBUG environment variable, if set.")
@click.option("--pid", type=int, default=None,
              help="Read all of the above from a running Go process (cgroup, affinity, "
                   "environment, build info); options given explicitly win.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def maxprocs(cpu_limit: str | None, cpus: int | None, go_version: str | None,
             go_mod: str | None, gomaxprocs_env: str | None, godebug: str | None,
             pid: int | None, output: str) -> None:
    """What GOMAXPROCS a Go daemon gets in its container, and what it should be."""
    probed: ProcessCpu | None = None
    if pid is not None:
        try:
            probed = probe(pid)
        except GoTelemetryError as e:
            raise Failure(str(e)) from None
    try:
        limit: CpuLimit | None
        if cpu_limit is not None:
            limit = parse_cpu_limit(cpu_limit)
        else:
            limit = probed.limit if probed else None
        n_cpus = cpus if cpus is not None else (
            probed.cpus if probed else len(os.sched_getaffinity(0)))
        gv = _version(go_version, "--go-version")
        if gv is None and probed:
            gv = probed.go_version
        advice = advise(
            cpus=n_cpus, cpu_limit=limit, go_version=gv, go_mod=_version(go_mod, "--go-mod"),
            gomaxprocs_env=gomaxprocs_env if gomaxprocs_env is not None else (
                probed.gomaxprocs_env if probed else None),
            godebug=godebug if godebug is not None else (
                probed.godebug_env if probed else None),
            default_godebug=(probed.build.default_godebug or ""
                             if probed and probed.build and go_mod is None else None),
        )
    except GoTelemetryError as e:
        raise Failure(str(e)) from None
    if output == "json":
        doc = advice.to_dict()
        if probed:
            doc["process"] = {
                "pid": probed.pid, "cgroup_dir": probed.cgroup_dir,
                "cgroup_version": probed.cgroup.version if probed.cgroup else None,
                "go_version": probed.build.go_version if probed.build else None,
            }
        click.echo(json.dumps(doc, indent=2))
        return
    _print_advice(_console(), advice, limit, gv, probed)


def _print_advice(console: Console, a: Advice, limit: CpuLimit | None, gv: GoVersion | None,
                  probed: ProcessCpu | None) -> None:
    style = "green" if a.severity == "ok" else "yellow"
    if probed:
        where = probed.cgroup_dir or "no CPU cgroup"
        built = probed.build.go_version if probed.build else "not a Go 1.18+ binary"
        console.print(f"process {probed.pid}: {built}, cgroup {where}")
    console.print(f"GOMAXPROCS {a.effective} ({a.source}); recommended {a.recommended} "
                  f"[{style}]{a.severity}[/{style}]")
    lim = limit.describe() if limit else "none"
    ver = f"{gv[0]}.{gv[1]}" if gv else "unknown"
    console.print(f"CPU limit {lim}; CPUs {a.cpus}; Go {ver}")
    for r in a.reasons:
        console.print(f"- {r}")
