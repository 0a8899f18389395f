"""A lab's state directory: everything separate CLI invocations need to find the lab.

    /run/kubewire/<lab>/
        lab.json          the Cluster spec and when the lab was made
        daemon.sock       the lab daemon's control socket
        daemon.log        the daemon's own log
        pids/*.json       every process the lab started (pid + start time), so cleanup
                          can kill exactly those even after the daemon was SIGKILLed
        logs/             container logs
        uts/              per-pod UTS namespace files (hostnames)
        nodes/<node>/     per-node CNI config (net.d), IPAM data and CNI result cache
        bin/              CNI plugin executables (the lab's CNI_PATH)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubewire.lab import names


@dataclass(frozen=True, slots=True)
class LabDirs:
    root: Path

    @classmethod
    def of(cls, lab: str) -> LabDirs:
        return cls(names.lab_dir(lab))

    @property
    def spec_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def socket(self) -> Path:
        return self.root / "daemon.sock"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def uts(self) -> Path:
        return self.root / "uts"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def node(self, node: str) -> Path:
        return self.root / "nodes" / node

    def make(self) -> None:
        for d in (self.root, self.pids, self.logs, self.uts, self.bin):
            d.mkdir(parents=True, exist_ok=True)

    def write_spec(self, data: dict[str, Any]) -> None:
        tmp = self.spec_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.spec_file)

    def read_spec(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.spec_file.read_text())
        return data


def list_labs() -> list[str]:
    root = names.state_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "lab.json").exists())
