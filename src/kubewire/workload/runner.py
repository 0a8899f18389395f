"""Real commands in pods: run, record and later kill a process inside a pod's namespaces.

A process is started through `nsenter --net=... --uts=... -- command...` (nsenter execs the
command in place, so the PID we get is the command's), in its own session, so it survives
its parent and its whole group can be signalled. Its PID alone is not enough to find it
again later: PIDs are reused. The record therefore also keeps the process start time
(field 22 of /proc/PID/stat, in clock ticks since boot), and nothing is ever signalled
unless that start time still matches.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubewire.workload.containers import (
    container_argv,
    container_env,
    decide,
    find_executable,
)
from kubewire.workload.errors import ProcessRecordError, ProcessStartError

__all__ = [
    "KillResult",
    "ProcessRecord",
    "RunningProcess",
    "decide",
    "is_running",
    "kill_record",
    "kill_recorded",
    "kill_records",
    "process_start_ticks",
    "read_record",
    "record_process",
    "start_process",
    "write_record",
]

POLL_INTERVAL = 0.02
KILL_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    pid: int
    start_time_ticks: int
    argv: tuple[str, ...]
    log: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "start_time_ticks": self.start_time_ticks,
            "argv": list(self.argv),
            "log": self.log,
        }

    @classmethod
    def from_wire(cls, raw: object) -> ProcessRecord:
        if not isinstance(raw, Mapping):
            raise ProcessRecordError("a process record must be a JSON object")
        pid, ticks, argv = raw.get("pid"), raw.get("start_time_ticks"), raw.get("argv", [])
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
            raise ProcessRecordError(f"process record has an invalid pid {pid!r}")
        if not isinstance(ticks, int) or isinstance(ticks, bool) or ticks < 0:
            raise ProcessRecordError(f"process record has an invalid start_time_ticks {ticks!r}")
        if not isinstance(argv, list):
            raise ProcessRecordError("process record field 'argv' must be a list")
        return cls(pid, ticks, tuple(str(a) for a in argv), str(raw.get("log", "")))


@dataclass(frozen=True, slots=True)
class RunningProcess:
    """A process this caller started: its record plus the handle to reap it with."""

    record: ProcessRecord
    popen: subprocess.Popen[bytes]


class KillResult(enum.Enum):
    GONE = "gone"  # nothing of ours was running any more
    STALE = "stale"  # the PID belongs to another process now: nothing was signalled
    TERMINATED = "terminated"  # the group ended after SIGTERM
    KILLED = "killed"  # the group needed SIGKILL

    def __bool__(self) -> bool:
        """True if something was stopped (`if kill_recorded(f): count += 1`)."""
        return self in (KillResult.TERMINATED, KillResult.KILLED)


@dataclass(frozen=True, slots=True)
class _Stat:
    state: str
    pgid: int
    sid: int
    start_ticks: int


def _read_stat(pid: int | str) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return _Stat(fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None if there is no such process."""
    stat = _read_stat(pid)
    return None if stat is None else stat.start_ticks


def record_process(pid: int, argv: Iterable[str], log: str | Path = "") -> ProcessRecord:
    """A record for a process started by other means (e.g. the pod server)."""
    ticks = process_start_ticks(pid)
    if ticks is None:
        raise ProcessRecordError(f"process {pid} does not exist")
    return ProcessRecord(pid, ticks, tuple(argv), str(log))


def write_record(
    record: ProcessRecord | int,
    pid_file: str | Path,
    argv: Iterable[str] = (),
    log: str | Path = "",
) -> ProcessRecord:
    """Write a record as JSON, atomically (a reader never sees half a record).

    `record` may also be a PID: the record is then made by record_process(pid, argv, log).
    """
    if not isinstance(record, ProcessRecord):
        record = record_process(record, argv, log)
    path = Path(pid_file)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record.to_wire()) + "\n")
    os.replace(tmp, path)
    return record


def read_record(pid_file: str | Path) -> ProcessRecord:
    try:
        text = Path(pid_file).read_text()
    except OSError as exc:
        raise ProcessRecordError(f"cannot read pid file {pid_file}: {exc.strerror}") from exc
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ProcessRecordError(f"pid file {pid_file} is not JSON: {exc}") from exc
    return ProcessRecord.from_wire(raw)


def is_running(record: ProcessRecord) -> bool:
    """True if the recorded process still exists (and is not a zombie)."""
    stat = _read_stat(record.pid)
    return stat is not None and stat.start_ticks == record.start_time_ticks and stat.state != "Z"


# Bind-mounts each (source, target) pair given before "--", then execs the rest. It runs
# as the first process of a fresh mount namespace, so the mounts are the process's own.
_MOUNT_THEN_EXEC = ('while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 126; '
                    'shift 2; done; shift; exec "$@"')


def pod_command(argv: Sequence[str], *, netns: str | Path, uts: str | Path | None = None,
                files: Mapping[str, str | Path] | None = None,
                nsenter: str = "nsenter") -> list[str]:
    """The command line that runs ``argv`` inside a pod: its network and UTS namespaces
    and, when ``files`` ({path in the pod: file on the host}) is given, a private mount
    namespace in which those files are bind-mounted over their paths (the pod's
    /etc/resolv.conf and /etc/hosts, as the kubelet mounts them into containers).

    The mount namespace is a slave of the host's: mounts made here never leak out, while
    namespace files unmounted on the host (a deleted pod's netns) vanish here too, so a
    long-running pod process never pins another pod's network namespace.
    """
    cmd = [nsenter, f"--net={netns}"]
    if uts is not None:
        cmd.append(f"--uts={uts}")
    cmd.append("--")
    if files:
        cmd += ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c",
                _MOUNT_THEN_EXEC, "kubewire-pod"]
        for target, source in sorted(files.items()):
            cmd += [str(source), target]
        cmd.append("--")
    return cmd + list(argv)


def start_process(
    container: Mapping[str, Any],
    *,
    pod: str,
    netns: str | Path,
    log: str | Path,
    uts: str | Path | None = None,
    files: Mapping[str, str | Path] | None = None,
    pid_file: str | Path | None = None,
    nsenter: str = "nsenter",
    argv: Sequence[str] | None = None,
) -> RunningProcess:
    """Run the container's command + args inside the pod's namespaces (``pod_command``).

    ``argv`` replaces the container's own command line (a container whose image kubewire
    implements itself, e.g. CoreDNS).

    stdout and stderr are appended to `log`; stdin is /dev/null; the working directory is
    the container's `workingDir` if it exists here, else /. The caller must keep (and
    eventually wait on) `popen`; the process is not killed when the caller exits.
    """
    nsenter_path = find_executable(nsenter)
    if nsenter_path is None:
        raise ProcessStartError("nsenter not found: install util-linux")
    env = container_env(container, hostname=pod)
    argv = list(argv) if argv is not None else container_argv(container, env)
    if find_executable(argv[0], env.get("PATH")) is None:
        raise ProcessStartError(
            f"container {container.get('name', '?')}: command {argv[0]!r} is not an"
            " executable on this machine (decide() would pick the built-in server)"
        )
    cmd = pod_command(argv, netns=netns, uts=uts, files=files, nsenter=nsenter_path)
    workdir = container.get("workingDir")
    cwd = workdir if isinstance(workdir, str) and os.path.isdir(workdir) else "/"
    try:
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        raise ProcessStartError(f"cannot start {argv[0]}: {exc}") from exc
    # Unreaped, the child keeps its /proc entry even if it has already exited.
    ticks = process_start_ticks(popen.pid)
    if ticks is None:  # pragma: no cover - only if someone else reaped our child
        raise ProcessStartError(f"process {popen.pid} vanished before it could be recorded")
    record = ProcessRecord(popen.pid, ticks, tuple(argv), str(log))
    if pid_file is not None:
        write_record(record, pid_file)
    return RunningProcess(record, popen)




def _live_sessions() -> dict[int, list[int]]:
    """Session id -> PIDs of its processes that are not zombies."""
    sessions: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read_stat(entry.name)
        if stat is not None and stat.state != "Z":
            sessions.setdefault(stat.sid, []).append(int(entry.name))
    return sessions


def _signal_session(leader: int, members: Iterable[int], signum: int) -> None:
    # The leader itself (it may not lead a group if recorded by record_process), its
    # group (covers members forked from now on) and listed members that moved to another
    # group of the same session.
    for target in (leader, -leader, *members):
        try:
            if target < 0:
                os.killpg(-target, signum)
            else:
                os.kill(target, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(records: dict[int, ProcessRecord], deadline: float) -> set[int]:
    """Leaders whose process or session is still alive when the deadline passes."""
    remaining = set(records)
    while remaining:
        sessions = _live_sessions()
        remaining = {pid for pid in remaining if sessions.get(pid) or is_running(records[pid])}
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    return remaining


def kill_records(records: Iterable[ProcessRecord], grace: float = 2.0) -> list[KillResult]:
    """Stop many recorded processes at once: SIGTERM every verified process and its
    session, wait up to `grace` seconds for all of them, SIGKILL what is left.
    Results are in input order."""
    records = list(records)
    results: list[KillResult | None] = [None] * len(records)
    sessions = _live_sessions()
    targets: dict[int, ProcessRecord] = {}
    index: dict[int, int] = {}
    for i, record in enumerate(records):
        stat = _read_stat(record.pid)
        if stat is not None and stat.start_ticks != record.start_time_ticks:
            results[i] = KillResult.STALE
        elif (stat is None or stat.state == "Z") and not sessions.get(record.pid):
            results[i] = KillResult.GONE
        else:
            # Ours: the process matches, or it is gone but its session lives on (a PID
            # is never reused while a session or group still carries its number).
            targets[record.pid] = record
            index[record.pid] = i
    for leader in targets:
        _signal_session(leader, sessions.get(leader, []), signal.SIGTERM)
    left = _wait_gone(targets, time.monotonic() + grace)
    for leader in set(targets) - left:
        results[index[leader]] = KillResult.TERMINATED
    if left:
        sessions = _live_sessions()
        for leader in left:
            _signal_session(leader, sessions.get(leader, []), signal.SIGKILL)
        _wait_gone({pid: targets[pid] for pid in left}, time.monotonic() + KILL_WAIT)
        for leader in left:
            results[index[leader]] = KillResult.KILLED
    return [r if r is not None else KillResult.GONE for r in results]


def kill_record(record: ProcessRecord, grace: float = 2.0) -> KillResult:
    return kill_records([record], grace)[0]


def kill_recorded(pid_file: str | Path, grace: float = 2.0, *, remove: bool = True) -> KillResult:
    """Stop the process group recorded in `pid_file` (never a PID whose start time differs).

    A missing pid file means nothing to stop (GONE); an unreadable one raises
    ProcessRecordError and signals nothing. Afterwards the recorded process is not
    running in any case (STALE means it ended long ago), so the pid file is removed
    unless `remove` is false.
    """
    if not os.path.lexists(pid_file):
        return KillResult.GONE
    result = kill_record(read_record(pid_file), grace)
    if remove:
        Path(pid_file).unlink(missing_ok=True)
    return result
