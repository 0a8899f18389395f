"""Container lifecycle as the kubelet reports it: states, restarts, readiness, pod phase.

The node agent owns the processes; this module holds each container's state and turns it
into the Pod status kubectl shows (containerStatuses, conditions, phase). Restarts follow
the pod's restartPolicy with a doubling back-off, shown as CrashLoopBackOff. The back-off
starts at 1 s and stops growing at 60 s (the kubelet uses 10 s and 5 min): a lab should
show a crash loop within seconds, not minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kubewire.workload.readiness import ReadinessCheck
from kubewire.workload.runner import RunningProcess

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0

Kind = Literal["builtin", "exec"]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def restart_delay(restarts: int) -> float:
    return min(BACKOFF_START * 2.0 ** min(restarts, 16), BACKOFF_MAX)


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


@dataclass
class Container:
    name: str
    spec: dict[str, Any]
    kind: Kind
    log: Path
    pid_file: Path | None = None
    checks: tuple[ReadinessCheck, ...] = ()
    process: RunningProcess | None = None
    state: Literal["waiting", "running", "terminated"] = "waiting"
    reason: str = "ContainerCreating"
    ready: bool = False
    restarts: int = 0
    started_at: str = ""
    exit_code: int | None = None
    finished_at: str = ""
    restart_at: float = 0.0  # monotonic time of the next restart while in back-off
    last_state: dict[str, Any] = field(default_factory=dict)
    argv: tuple[str, ...] | None = None  # replaces command + args (an image kubewire implements)

    def running(self, ready: bool) -> None:
        self.state, self.reason, self.ready = "running", "", ready
        self.started_at = now_rfc3339()

    def exited(self, code: int, restart: bool, now: float) -> None:
        """Record an exit; with `restart`, wait out the back-off (CrashLoopBackOff)."""
        self.exit_code, self.ready, self.process = code, False, None
        self.finished_at = now_rfc3339()
        reason = "Completed" if code == 0 else "Error"
        terminated = {"exitCode": code, "reason": reason, "startedAt": self.started_at,
                      "finishedAt": self.finished_at}
        if restart:
            self.state, self.reason = "waiting", "CrashLoopBackOff"
            self.last_state = {"terminated": terminated}
            self.restart_at = now + restart_delay(self.restarts)
        else:
            self.state, self.reason = "terminated", reason

    def status(self) -> dict[str, Any]:
        if self.state == "running":
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": {"exitCode": self.exit_code, "reason": self.reason,
                                    "startedAt": self.started_at,
                                    "finishedAt": self.finished_at}}
        else:
            state = {"waiting": {"reason": self.reason}}
        out = {"name": self.name, "image": self.spec.get("image", ""), "ready": self.ready,
               "started": self.state == "running", "restartCount": self.restarts,
               "state": state}
        if self.last_state:
            out["lastState"] = self.last_state
        return out


def pod_phase(policy: str, containers: list[Container]) -> str:
    if containers and all(c.state == "terminated" for c in containers):
        return "Succeeded" if all(c.exit_code == 0 for c in containers) else "Failed"
    if any(c.state == "running" or c.restarts or c.last_state for c in containers):
        return "Running"
    return "Pending"


def pod_status(pod: dict[str, Any], containers: list[Container], host_ip: str, pod_ip: str,
               start_time: str) -> dict[str, Any]:
    policy = pod["spec"].get("restartPolicy", "Always")
    ready = bool(containers) and all(c.ready for c in containers)
    cond = "True" if ready else "False"
    status: dict[str, Any] = {
        "phase": pod_phase(policy, containers),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": cond},
            {"type": "Ready", "status": cond},
        ],
        "containerStatuses": [c.status() for c in containers],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status
