"""Real commands in pod namespaces, and killing them safely later (needs root)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubewire.kernel.netns import create_netns, delete_netns, delete_ns_file, list_netns
from kubewire.workload.runner import (
    KillResult,
    ProcessRecord,
    is_running,
    kill_record,
    kill_recorded,
    read_record,
    start_process,
    write_record,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces"),
]

PREFIX = f"kwtest-wl-r{os.getpid()}-"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def session_members(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != b"Z":
            found.append(int(entry))
    return found


class Pod:
    def __init__(self, netns: Path, uts: Path, name: str) -> None:
        self.netns = netns
        self.uts = uts
        self.name = name


@pytest.fixture(scope="module", autouse=True)
def no_leaked_namespaces() -> Iterator[None]:
    yield
    assert list_netns(PREFIX) == []


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    name = f"{PREFIX}{tmp_path.name[-20:]}"
    uts = tmp_path / "uts"
    netns = create_netns(name, uts_path=uts, hostname="web-7f9c")
    try:
        yield Pod(netns, uts, "web-7f9c")
    finally:
        delete_ns_file(uts)
        delete_netns(name)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started: SIGKILLed by PID (whole session) and reaped at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            for pid in session_members(proc.pid):
                os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_real_command_sees_pod_hostname_and_is_killed_by_group(
    pod: Pod, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    container = {"name": "app", "command": ["sh", "-c", "hostname; echo hi; sleep 30"]}
    log, pid_file = tmp_path / "app.log", tmp_path / "app.pid"
    running = start_process(
        container, pod=pod.name, netns=pod.netns, uts=pod.uts, log=log, pid_file=pid_file
    )
    started.append(running.popen)
    record = running.record
    assert read_record(pid_file) == record
    assert record.argv == ("sh", "-c", "hostname; echo hi; sleep 30")
    assert record.log == str(log)
    wait_for(lambda: log.read_text().splitlines() == ["web-7f9c", "hi"])
    # The process really sits in the pod's network namespace, in its own session.
    assert os.stat(f"/proc/{record.pid}/ns/net").st_ino == os.stat(pod.netns).st_ino
    assert os.getsid(record.pid) == record.pid
    wait_for(lambda: len(session_members(record.pid)) == 2)  # sh and its sleep
    assert is_running(record)
    assert kill_recorded(pid_file) is KillResult.TERMINATED
    assert not pid_file.exists()
    assert session_members(record.pid) == []
    assert running.popen.wait(timeout=5) == -signal.SIGTERM
    assert not is_running(record)


def test_env_hostname_and_workdir(
    pod: Pod, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    container = {
        "name": "env",
        "command": ["sh", "-c"],
        "args": ['echo "$HOSTNAME|$GREETING|$(GREETING)|$PWD"'],
        "env": [{"name": "GREETING", "value": "hello"}],
        "workingDir": "/tmp",
    }
    log = tmp_path / "env.log"
    running = start_process(container, pod="web-7f9c", netns=pod.netns, uts=pod.uts, log=log)
    started.append(running.popen)
    assert running.popen.wait(timeout=10) == 0
    assert log.read_text() == "web-7f9c|hello|hello|/tmp\n"
    assert kill_record(running.record) is KillResult.GONE  # a zombie or reaped: nothing to do


def test_log_is_appended(pod: Pod, tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    log = tmp_path / "append.log"
    log.write_text("earlier\n")
    for word in ("one", "two"):
        running = start_process(
            {"name": "c", "command": ["sh", "-c", f"echo {word}; echo err-{word} >&2"]},
            pod=pod.name,
            netns=pod.netns,
            log=log,
        )
        started.append(running.popen)
        running.popen.wait(timeout=10)
    assert log.read_text() == "earlier\none\nerr-one\ntwo\nerr-two\n"


def test_stale_pid_file_is_refused(
    pod: Pod, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    running = start_process(
        {"name": "c", "command": ["sleep", "30"]},
        pod=pod.name,
        netns=pod.netns,
        uts=pod.uts,
        log=tmp_path / "s.log",
    )
    started.append(running.popen)
    real = running.record
    stale = ProcessRecord(real.pid, real.start_time_ticks - 1, real.argv, real.log)
    pid_file = tmp_path / "stale.pid"
    write_record(stale, pid_file)
    assert kill_recorded(pid_file, remove=False) is KillResult.STALE
    assert not kill_recorded(pid_file, remove=False)  # falsy: nothing was stopped
    time.sleep(0.1)
    assert running.popen.poll() is None, "a process with another start time was signalled"
    assert is_running(real)
    write_record(real, pid_file)
    assert kill_recorded(pid_file) is KillResult.TERMINATED
    assert running.popen.wait(timeout=5) == -signal.SIGTERM


def test_sigterm_ignored_escalates_to_sigkill(
    pod: Pod, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "stubborn.log"
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    running = start_process(
        {"name": "c", "command": ["sh", "-c", script]}, pod=pod.name, netns=pod.netns, log=log
    )
    started.append(running.popen)
    wait_for(lambda: log.read_text() == "ready\n")
    began = time.monotonic()
    assert kill_record(running.record, grace=0.3) is KillResult.KILLED
    assert time.monotonic() - began < 3
    assert running.popen.wait(timeout=5) == -signal.SIGKILL
    assert session_members(running.record.pid) == []


def test_orphaned_session_members_are_found(
    pod: Pod, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "orphan.log"
    running = start_process(
        {"name": "c", "command": ["sh", "-c", "sleep 30 & echo $!"]},
        pod=pod.name,
        netns=pod.netns,
        log=log,
    )
    started.append(running.popen)
    assert running.popen.wait(timeout=5) == 0  # the leader is gone (reaped) ...
    wait_for(lambda: log.read_text().strip().isdigit())
    orphan = int(log.read_text())
    assert session_members(running.record.pid) == [orphan]  # ... its child is not
    assert kill_record(running.record) is KillResult.TERMINATED
    assert session_members(running.record.pid) == []


def test_process_survives_its_parent(pod: Pod, tmp_path: Path) -> None:
    pid_file = tmp_path / "survivor.pid"
    script = (
        "import sys\n"
        "from kubewire.workload.runner import start_process\n"
        "start_process({'name': 'c', 'command': ['sleep', '30']}, pod='p',"
        " netns=sys.argv[1], log=sys.argv[2], pid_file=sys.argv[3])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(pod.netns), str(tmp_path / "log"), str(pid_file)],
        check=True,
        timeout=30,
    )
    record = read_record(pid_file)
    try:
        time.sleep(0.1)
        assert is_running(record), "the process died with the process that started it"
        assert kill_recorded(pid_file) is KillResult.TERMINATED
        assert not is_running(record)
    finally:
        if is_running(record):
            os.killpg(record.pid, signal.SIGKILL)


def test_missing_pid_file_is_gone(tmp_path: Path) -> None:
    assert kill_recorded(tmp_path / "never-written.pid") is KillResult.GONE
