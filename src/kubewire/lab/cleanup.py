"""Remove every trace of a lab, relying on nothing but the naming scheme and pid files.

This is the single teardown path: `down` uses it too, so it is exercised on every run and
works the same after any kubewire process was killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubewire.kernel import hostlimits, netns
from kubewire.lab import names
from kubewire.lab.state import LabDirs, list_labs
from kubewire.workload.runner import kill_recorded


@dataclass
class CleanupReport:
    processes: int = 0
    namespaces: int = 0
    directories: list[str] = field(default_factory=list)


def _kill_netns_processes(path: Path) -> int:
    """Kill what runs inside a lab namespace: it can only have been started by the lab."""
    pids = netns.pids_in_netns(path)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _unmount_tree(root: Path) -> None:
    """Detach namespace bind mounts (UTS files) under the state dir before deleting it."""
    if not root.is_dir():
        return
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if os.path.ismount(p) or Path(dirpath).name == "uts":
                netns.delete_ns_file(p)


def cleanup_lab(lab: str) -> CleanupReport:
    report = CleanupReport()
    dirs = LabDirs.of(lab)
    if dirs.pids.is_dir():
        # The daemon first, so it cannot start anything new while we clean up.
        records = sorted(dirs.pids.glob("*.json"), key=lambda p: p.name != "daemon.json")
        for pid_file in records:
            if kill_recorded(pid_file):
                report.processes += 1
    for name in netns.list_netns(names.lab_prefix(lab)):
        report.processes += _kill_netns_processes(netns.netns_path(name))
        netns.delete_netns(name)
        report.namespaces += 1
    if dirs.root.exists():
        _unmount_tree(dirs.root)
        shutil.rmtree(dirs.root, ignore_errors=True)
        report.directories.append(str(dirs.root))
    restore_host_limits_if_idle()
    return report


def all_lab_names() -> list[str]:
    """Labs known by a state dir or by a namespace name (state may already be gone)."""
    labs = set(list_labs())
    for name in netns.list_netns(names.PREFIX):
        rest = name[len(names.PREFIX):]
        for marker in ("-underlay", "-node-", "-pod-", "-host-"):
            if marker in rest:
                labs.add(rest.split(marker, 1)[0])
                break
    root = names.state_root()
    if root.is_dir():
        labs.update(p.name for p in root.iterdir() if p.is_dir())
    return sorted(labs)


def cleanup_all() -> CleanupReport:
    total = CleanupReport()
    for lab in all_lab_names():
        r = cleanup_lab(lab)
        total.processes += r.processes
        total.namespaces += r.namespaces
        total.directories += r.directories
    restore_host_limits_if_idle()
    return total


def restore_host_limits_if_idle() -> None:
    """Once no lab is left, put the machine-wide neighbour-table limits back."""
    if not all_lab_names():
        hostlimits.restore(names.state_root())


def wait_gone(paths: list[Path], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(p.exists() for p in paths):
            return True
        time.sleep(0.02)
    return False
