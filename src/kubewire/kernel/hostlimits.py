"""Machine-wide kernel limits that every namespace shares.

The IPv4 neighbour (ARP) table is one table for the whole machine: its garbage-collection
thresholds (net.ipv4.neigh.default.gc_thresh1/2/3) exist only in the initial namespace, and
every pod and node namespace draws on the same 1,024 hard-limit entries. A lab of 1,000
pods needs about three entries per pod (the pod's gateway, the node's entry for the pod,
pod-to-pod neighbours on the same node), so past ~300 pods new neighbours fail with
"neighbor table overflow" and packets are silently dropped — the same limit large real
clusters hit. kubewire raises the thresholds while a lab runs and restores the saved
values when the last lab is removed. This changes no address, route or rule of the
machine's own namespace; it sizes a table that only the lab's namespaces fill.
"""

from __future__ import annotations

import json
from pathlib import Path

THRESHOLDS = {
    "net.ipv4.neigh.default.gc_thresh1": 4096,
    "net.ipv4.neigh.default.gc_thresh2": 16384,
    "net.ipv4.neigh.default.gc_thresh3": 32768,
}
SAVED_FILE = "host-sysctls.json"


def _path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read(key: str) -> int:
    return int(_path(key).read_text().split()[0])


def ensure_neighbour_capacity(state_root: Path) -> dict[str, tuple[int, int]]:
    """Raise the thresholds where they are lower; returns {key: (old, new)} for changes.

    The original values are saved once (by the first lab) so they can be restored.
    """
    saved = state_root / SAVED_FILE
    changed: dict[str, tuple[int, int]] = {}
    originals = json.loads(saved.read_text()) if saved.exists() else {}
    for key, wanted in THRESHOLDS.items():
        current = read(key)
        if current < wanted:
            originals.setdefault(key, current)
            _path(key).write_text(str(wanted))
            changed[key] = (current, wanted)
    if changed:
        state_root.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(originals, indent=2, sort_keys=True))
    return changed


def restore(state_root: Path) -> dict[str, int]:
    """Put back the values saved by ensure_neighbour_capacity (when no lab is left)."""
    saved = state_root / SAVED_FILE
    if not saved.exists():
        return {}
    originals: dict[str, int] = json.loads(saved.read_text())
    # Lower gc_thresh3 last so the thresholds stay ordered at every step.
    for key in sorted(originals):
        _path(key).write_text(str(originals[key]))
    saved.unlink()
    return originals
