"""Test helper: run the Go toolchain's own trace parser and normalise both sides.

Loaded by path from tests/unit/test_gotrace_*.py (it lives with the data it describes).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from kubewire.gotrace import Event, Kind

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data" / "gotrace"

_spec = importlib.util.spec_from_file_location("gotrace_make", ROOT / "bench" / "gotrace_make.py")
assert _spec and _spec.loader
gotrace_make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gotrace_make)

Row = tuple[object, ...]


def toolchains() -> dict[str, Path]:
    return dict(gotrace_make.find_toolchains())


def go_tool_trace(go: Path, trace: Path, args: list[str]) -> str:
    with tempfile.TemporaryDirectory() as t:
        out = subprocess.run(
            [str(go), "tool", "trace", *args, str(trace)],
            env=gotrace_make.go_env(go, Path(t)), capture_output=True, text=True, timeout=120,
        )
    if out.returncode != 0:
        raise RuntimeError(f"go tool trace failed: {out.stderr[-2000:]}")
    return out.stdout


# ---- the current format: `go tool trace -d=parsed` ----------------------------------------

def _stack_key(lines: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for i in range(0, len(lines), 2):
        fn = lines[i][1:].rsplit(" @ ", 1)[0]
        line = int(lines[i + 1].strip().rsplit(":", 1)[1])
        out.append((fn, line))
    return tuple(out)


def parse_go_parsed(text: str) -> list[Row]:
    """Rows (time, M, P, G, kind, detail, stack, transition stack) from -d=parsed output."""
    rows: list[Row] = []
    cur: list[object] | None = None
    section = ""
    frames: dict[str, list[str]] = {}

    def flush() -> None:
        if cur is not None:
            rows.append((*cur, _stack_key(frames.get("Stack=", [])),
                         _stack_key(frames.get("TransitionStack=", []))))

    for line in text.splitlines():
        if line.startswith("M="):
            flush()
            head, _, rest = line.partition(" Time=")
            m, p, g, kind = head.split(" ")
            time_s, _, detail = rest.partition(" ")
            if kind == "Sync":
                detail = detail.split(" Trace=")[0]
            cur = [int(time_s), int(m[2:]), int(p[2:]), int(g[2:]), kind, detail]
            frames = {}
            section = ""
        elif line in ("Stack=", "TransitionStack="):
            section = line
            frames[section] = []
        elif line.startswith("\t") and section:
            frames[section].append(line)
        elif line.strip():
            raise AssertionError(f"unexpected -d=parsed line: {line!r}")
    flush()
    return rows


NO_TASK = (1 << 64) - 1
_GO_STATE = {0: "Bad", 1: "Runnable", 2: "Running", 3: "Syscall", 4: "Waiting"}
# The toolchain's high-level API folds ProcSyscall into Running, SyscallAbandoned into Idle.
_P_STATE = {0: "Bad", 1: "Running", 2: "Idle", 3: "Running", 4: "Idle"}
_FIXED = {
    Kind.GO_CREATE: ("NotExist", "Runnable"),
    Kind.GO_CREATE_BLOCKED: ("NotExist", "Waiting"),
    Kind.GO_CREATE_SYSCALL: ("NotExist", "Syscall"),
    Kind.GO_START: ("Runnable", "Running"),
    Kind.GO_STOP: ("Running", "Runnable"),
    Kind.GO_BLOCK: ("Running", "Waiting"),
    Kind.GO_UNBLOCK: ("Waiting", "Runnable"),
    Kind.GO_DESTROY: ("Running", "NotExist"),
    Kind.GO_DESTROY_SYSCALL: ("Syscall", "NotExist"),
    Kind.GO_SYSCALL_BEGIN: ("Running", "Syscall"),
    Kind.GO_SYSCALL_END: ("Syscall", "Running"),
    Kind.GO_SYSCALL_END_BLOCKED: ("Syscall", "Runnable"),
}
_METRIC = {
    Kind.PROCS_CHANGE: "/sched/gomaxprocs:threads",
    Kind.HEAP_ALLOC: "/memory/classes/heap/objects:bytes",
    Kind.HEAP_GOAL: "/gc/heap/goal:bytes",
}


_RANGES = {
    Kind.GC_BEGIN: ("RangeBegin", "GC concurrent mark phase", "-"),
    Kind.GC_END: ("RangeEnd", "GC concurrent mark phase", "-"),
    Kind.GC_ACTIVE: ("RangeActive", "GC concurrent mark phase", "-"),
    Kind.GC_SWEEP_BEGIN: ("RangeBegin", "GC incremental sweep", "p"),
    Kind.GC_SWEEP_END: ("RangeEnd", "GC incremental sweep", "p"),
    Kind.GC_MARK_ASSIST_BEGIN: ("RangeBegin", "GC mark assist", "g"),
    Kind.GC_MARK_ASSIST_END: ("RangeEnd", "GC mark assist", "g"),
}


def _sk(stack: Iterable[object]) -> tuple[tuple[str, int], ...]:
    return tuple((f.func, f.line) for f in stack)  # type: ignore[attr-defined]


def render_v2(events: Iterable[Event]) -> list[Row]:
    """Our events in the Go toolchain's vocabulary (the mapping the high-level API applies)."""
    rows: list[Row] = []
    gstate: dict[int, str] = {}
    pstate: dict[int, str] = {}
    tasks: dict[int, tuple[int, str]] = {}
    p_raw: dict[int, int] = {}  # last wire status of each P
    stw = ""
    for e in events:
        base = (e.ts, e.m, e.p, e.g)
        st = _sk(e.stack)
        k = e.kind
        if k == Kind.SYNC:
            rows.append((*base, "Sync", f"N={e.args[0]}", (), ()))
        elif k in _FIXED:
            old, new = _FIXED[k]
            gid = e.args[0] if k in (Kind.GO_CREATE, Kind.GO_CREATE_BLOCKED, Kind.GO_CREATE_SYSCALL,
                                     Kind.GO_START, Kind.GO_UNBLOCK) else e.g
            reason = e.strings[0] if k in (Kind.GO_STOP, Kind.GO_BLOCK) else ""
            if k in (Kind.GO_CREATE, Kind.GO_CREATE_BLOCKED):
                stack, tstack = st, _sk(e.extra_stack)
            elif k == Kind.GO_UNBLOCK:
                stack, tstack = st, ()
            else:
                stack, tstack = st, st
            gstate[gid] = new
            rows.append((*base, "StateTransition", f'GoID={gid} {old}->{new} Reason="{reason}"',
                         stack, tstack))
        elif k == Kind.GO_STATUS:
            gid, _m, status = e.args[:3]
            old = gstate.get(gid, "Undetermined")
            gstate[gid] = _GO_STATE[status]
            rows.append((*base, "StateTransition",
                         f'GoID={gid} {old}->{_GO_STATE[status]} Reason=""', st, st))
        elif k == Kind.PROC_STATUS:
            old = pstate.get(e.args[0], "Undetermined")
            pstate[e.args[0]] = _P_STATE[e.args[1]]
            p_raw[e.args[0]] = e.args[1]
            rows.append((*base, "StateTransition",
                         f'ProcID={e.args[0]} {old}->{_P_STATE[e.args[1]]} Reason=""', (), ()))
        elif k == Kind.PROC_START:
            pstate[e.args[0]] = "Running"
            p_raw[e.args[0]] = 1
            rows.append((*base, "StateTransition", f'ProcID={e.args[0]} Idle->Running Reason=""',
                         (), ()))
        elif k == Kind.PROC_STOP:
            pstate[e.p] = "Idle"
            rows.append((*base, "StateTransition", f'ProcID={e.p} Running->Idle Reason=""', (),
                         ()))
        elif k == Kind.PROC_STEAL:
            # a P first seen as SyscallAbandoned is reported Idle->Idle, otherwise Running->Idle
            before = "Idle" if p_raw.get(e.args[0]) == 4 else "Running"
            pstate[e.args[0]] = "Idle"
            p_raw[e.args[0]] = 2
            rows.append((*base, "StateTransition",
                         f'ProcID={e.args[0]} {before}->Idle Reason=""', (), ()))
        elif k in _METRIC:
            rows.append((*base, "Metric", f'Name="{_METRIC[k]}" Value=Value{{Uint64({e.args[0]})}}',
                         st, ()))
        elif k == Kind.STW_BEGIN:
            stw = e.strings[0]
            rows.append((*base, "RangeBegin",
                         f'Name="stop-the-world ({stw})" Scope=Goroutine({e.g})', st, ()))
        elif k == Kind.STW_END:
            rows.append((*base, "RangeEnd",
                         f'Name="stop-the-world ({stw})" Scope=Goroutine({e.g}) Attributes=[]',
                         st, ()))
        elif k in _RANGES:
            what, name, scope = _RANGES[k]
            sc = {"g": f"Goroutine({e.g})", "p": f"Proc({e.p})", "-": "None"}[scope]
            if what == "RangeEnd":
                attrs = ""
                if k == Kind.GC_SWEEP_END:
                    attrs = (f'"bytes swept"=Value{{Uint64({e.args[0]})}} '
                             f'"bytes reclaimed"=Value{{Uint64({e.args[1]})}}')
                rows.append((*base, what, f'Name="{name}" Scope={sc} Attributes=[{attrs}]', st,
                             ()))
            else:
                rows.append((*base, what, f'Name="{name}" Scope={sc}', st, ()))
        elif k == Kind.USER_TASK_BEGIN:
            task, parent = e.args[0], e.args[1] or NO_TASK
            tasks[task] = (parent, e.strings[0])
            rows.append((*base, "TaskBegin", f'ID={task} Parent={parent} Type="{e.strings[0]}"',
                         st, ()))
        elif k == Kind.USER_TASK_END:
            parent, typ = tasks.get(e.args[0], (NO_TASK, ""))
            rows.append((*base, "TaskEnd", f'ID={e.args[0]} Parent={parent} Type="{typ}"', st,
                         ()))
        elif k in (Kind.USER_REGION_BEGIN, Kind.USER_REGION_END):
            what = "RegionBegin" if k == Kind.USER_REGION_BEGIN else "RegionEnd"
            rows.append((*base, what, f'Task={e.args[0]} Type="{e.strings[0]}"', st, ()))
        elif k == Kind.USER_LOG:
            rows.append((*base, "Log",
                         f'Task={e.args[0]} Category="{e.strings[0]}" Message="{e.strings[1]}"',
                         st, ()))
        elif k == Kind.GO_LABEL:
            rows.append((*base, "Label", f'Label="{e.strings[0]}" Resource=Goroutine({e.g})', st,
                         ()))
        else:
            rows.append((*base, e.wire_name, str(e.args), st, ()))
    return rows


def compare_rows(ours: list[Row], theirs: list[Row], tick: int = 1) -> list[str]:
    """Differences as readable lines (empty: equal as multisets).

    ``tick`` > 1 compares times floored to that many ns (a diagnostic aid: both readers bump
    an event that is not after the one before by +1 ns, so a tie-break difference shows up
    as a 1 ns shift).
    """
    from collections import Counter

    def norm(rows: list[Row]) -> Counter[Row]:
        return Counter((r[0] - r[0] % tick, *r[1:]) for r in rows)  # type: ignore[operator]

    a = norm(ours)
    b = norm(theirs)
    only_ours = sorted((a - b).elements(), key=lambda r: r[0])  # type: ignore[arg-type,return-value]
    only_go = sorted((b - a).elements(), key=lambda r: r[0])  # type: ignore[arg-type,return-value]
    return [f"ours only: {r}" for r in only_ours[:20]] + [f"go only:   {r}" for r in only_go[:20]]


os.environ.setdefault("GOTOOLCHAIN", "local")


# ---- Go 1.19: `go tool trace -d` ----------------------------------------------------------

_V1_PRINTED = {"GoStartLocal": "GoStart", "GoUnblockLocal": "GoUnblock",
               "GoSysExitLocal": "GoSysExit"}
_V1_ARGS = {"GoStart": ("g", "seq"), "GoUnblock": ("g", "seq"), "GoSysExit": ("g", "seq", "ts")}
_V1_SARGS = {"GoStartLabel": ("label",), "GCSTWStart": ("kind",), "UserTaskCreate": ("name",),
             "UserRegion": ("name",), "UserLog": ("category", "message")}


def parse_go_v1(text: str) -> list[str]:
    """The event lines of Go 1.19's `go tool trace -d` (log lines dropped)."""
    return [ln for ln in text.splitlines() if ln and ln[0].isdigit() and " off=" in ln]


def render_v1(events: Iterable[Event]) -> list[str]:
    """Our Go 1.19 events printed the way Go 1.19's internal/trace prints its events."""
    from kubewire.gotrace.events import ARG_NAMES_V1 as ARG_NAMES

    out = []
    for e in events:
        name = _V1_PRINTED.get(e.wire_name, e.wire_name)
        names = _V1_ARGS.get(name, ARG_NAMES[e.wire_name])
        vals = dict(zip(ARG_NAMES[e.wire_name], e.args, strict=True))
        if e.wire_name == "GoSysExitLocal":
            vals["seq"] = 0
        parts = [f"{e.ts} {name} p={e.p} g={e.g} off={e.offset}"]
        parts += [f"{n}={vals.get(n, 0)}" for n in names]
        sargs = _V1_SARGS.get(name, ())
        if name == "GCSTWStart":
            parts.append(f"kind={e.strings[0]}")
        elif sargs:
            parts += [f"{n}={v}" for n, v in zip(sargs, e.strings, strict=True)]
        out.append(" ".join(parts))
    return out
