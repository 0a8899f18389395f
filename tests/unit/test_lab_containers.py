from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubewire.lab.containers import (
    BACKOFF_MAX,
    Container,
    pod_phase,
    pod_status,
    restart_delay,
    should_restart,
)


def container(name: str = "c") -> Container:
    return Container(name, {"name": name, "image": "busybox"}, "exec", Path("/dev/null"))


@pytest.mark.parametrize(("policy", "code", "restart"), [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False),
    ("OnFailure", 2, True), ("Never", 0, False), ("Never", 1, False)])
def test_restart_policy(policy: str, code: int, restart: bool) -> None:
    assert should_restart(policy, code) is restart


def test_back_off_doubles_and_stops_growing() -> None:
    assert [restart_delay(n) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert restart_delay(50) == BACKOFF_MAX


def test_a_crashing_container_waits_in_crash_loop_back_off() -> None:
    c = container()
    c.running(ready=True)
    c.exited(3, restart=True, now=100.0)
    st = c.status()
    assert st["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}
    assert st["lastState"]["terminated"]["exitCode"] == 3
    assert st["lastState"]["terminated"]["reason"] == "Error"
    assert not st["ready"] and c.restart_at == 101.0
    assert pod_phase("Always", [c]) == "Running"


def test_finished_containers_give_succeeded_or_failed() -> None:
    ok, bad = container("a"), container("b")
    for c in (ok, bad):
        c.running(ready=True)
    ok.exited(0, restart=False, now=0)
    assert pod_phase("Never", [ok]) == "Succeeded"
    bad.exited(1, restart=False, now=0)
    assert pod_phase("Never", [ok, bad]) == "Failed"
    assert ok.status()["state"]["terminated"]["reason"] == "Completed"


def test_pod_is_ready_only_when_every_container_is() -> None:
    pod: dict[str, Any] = {"spec": {"containers": []}}
    a, b = container("a"), container("b")
    a.running(ready=True)
    b.running(ready=False)
    st = pod_status(pod, [a, b], "172.18.0.2", "10.244.0.5", "t")
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "False"
    b.ready = True
    st = pod_status(pod, [a, b], "172.18.0.2", "10.244.0.5", "t")
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    assert st["podIP"] == "10.244.0.5" and st["phase"] == "Running"
