"""Pure container rules: builtin or exec, argv, env, ports, readiness checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kubewire.workload.containers import (
    DEFAULT_BUILTIN_PORT,
    builtin_ports,
    container_argv,
    container_env,
    decide,
    expand_vars,
    find_executable,
)
from kubewire.workload.errors import ContainerSpecError
from kubewire.workload.protocol import PortSpec
from kubewire.workload.readiness import ReadinessCheck, readiness_checks


@pytest.mark.parametrize(
    ("container", "kind"),
    [
        ({"name": "web", "image": "nginx"}, "builtin"),
        (
            {
                "name": "a",
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.45",
                "command": ["agnhost", "netexec"],
            },
            "builtin",
        ),
        ({"name": "a", "image": "agnhost", "args": ["netexec", "--http-port=8080"]}, "builtin"),
        ({"name": "a", "image": "busybox", "args": ["sh", "-c", "sleep 1"]}, "builtin"),
        ({"name": "s", "image": "busybox", "command": ["sh", "-c", "sleep 1"]}, "exec"),
        ({"name": "s", "image": "busybox", "command": ["/bin/sh"], "args": ["-c", "x"]}, "exec"),
        ({"name": "s", "image": "x", "command": ["/no/such/program"]}, "builtin"),
        ({"name": "s", "image": "x", "command": []}, "builtin"),
    ],
)
def test_decide(container: dict[str, object], kind: str) -> None:
    assert decide(container) == kind


def test_decide_uses_the_given_path(tmp_path: Path) -> None:
    program = tmp_path / "myserver"
    program.write_text("#!/bin/sh\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    container = {"name": "c", "command": ["myserver"]}
    assert decide(container, path=str(tmp_path)) == "exec"
    assert decide(container, path="/nonexistent") == "builtin"
    not_executable = tmp_path / "plain"
    not_executable.write_text("data")
    assert find_executable(str(not_executable)) is None
    assert find_executable(str(program)) == str(program)


def test_decide_rejects_a_command_string() -> None:
    with pytest.raises(ContainerSpecError, match="list of strings"):
        decide({"name": "c", "command": "sh -c true"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x$(A)y$(B)z", "x1y2z"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$A", "$A"),
        ("$(A", "$(A"),
    ],
)
def test_expand_vars(text: str, expected: str) -> None:
    assert expand_vars(text, {"A": "1", "B": "2"}) == expected


def test_container_env_order_and_references() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "GREETING", "value": "hello"},
            {"name": "MESSAGE", "value": "$(GREETING) world"},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "EMPTY"},
            {"name": "HOSTNAME", "value": "overridden"},
        ],
    }
    env = container_env(container, hostname="pod-1")
    assert env["GREETING"] == "hello"
    assert env["MESSAGE"] == "hello world"
    assert env["EMPTY"] == ""
    assert "SECRET" not in env
    assert env["HOSTNAME"] == "pod-1"
    assert env["PATH"] == os.environ.get("PATH", env["PATH"])
    assert env["HOME"] == "/root"


def test_container_env_rejects_nameless_entries() -> None:
    with pytest.raises(ContainerSpecError, match="name"):
        container_env({"env": [{"value": "x"}]}, hostname="p")


def test_container_argv() -> None:
    container = {"name": "c", "command": ["sh", "-c"], "args": ["echo $(WHO) $$(WHO)"]}
    assert container_argv(container, {"WHO": "me"}) == ["sh", "-c", "echo me $(WHO)"]
    with pytest.raises(ContainerSpecError, match="no command"):
        container_argv({"name": "c"}, {})


def test_builtin_ports() -> None:
    assert builtin_ports({"name": "c"}) == (DEFAULT_BUILTIN_PORT,)
    declared = {
        "name": "c",
        "ports": [
            {"containerPort": 8080},
            {"containerPort": 53, "protocol": "UDP", "name": "dns"},
            {"containerPort": 8080},
        ],
    }
    assert builtin_ports(declared) == (PortSpec(8080), PortSpec(53, "UDP"))
    netexec = {"name": "a", "command": ["agnhost", "netexec"]}
    assert builtin_ports(netexec) == (PortSpec(8080), PortSpec(8081, "UDP"))
    custom = {"name": "a", "args": ["netexec", "--http-port=9000", "--udp-port", "9001"]}
    assert builtin_ports(custom) == (PortSpec(9000), PortSpec(9001, "UDP"))
    with pytest.raises(ContainerSpecError):
        builtin_ports({"ports": [{"containerPort": 70000}]})


def test_readiness_checks_from_ports() -> None:
    container = {
        "name": "c",
        "ports": [
            {"containerPort": 80},
            {"containerPort": 53, "protocol": "UDP"},
            {"containerPort": 9090, "protocol": "TCP"},
        ],
    }
    assert readiness_checks(container) == (ReadinessCheck(80), ReadinessCheck(9090))
    assert readiness_checks({"name": "c"}) == ()


def test_readiness_checks_from_probe() -> None:
    ports = [{"containerPort": 8080, "name": "http"}]
    tcp = {"name": "c", "ports": ports, "readinessProbe": {"tcpSocket": {"port": "http"}}}
    assert readiness_checks(tcp) == (ReadinessCheck(8080),)
    http = {
        "name": "c",
        "ports": ports,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8081}},
    }
    assert readiness_checks(http) == (ReadinessCheck(8081, "/ready"),)
    https = {"name": "c", "readinessProbe": {"httpGet": {"port": 443, "scheme": "HTTPS"}}}
    assert readiness_checks(https) == (ReadinessCheck(443),)
    default_path = {"name": "c", "readinessProbe": {"httpGet": {"port": "8000"}}}
    assert readiness_checks(default_path) == (ReadinessCheck(8000, "/"),)
    exec_probe = {"name": "c", "ports": ports, "readinessProbe": {"exec": {"command": ["x"]}}}
    assert readiness_checks(exec_probe) == (ReadinessCheck(8080),)
    unknown = {"name": "c", "readinessProbe": {"tcpSocket": {"port": "nope"}}}
    with pytest.raises(ContainerSpecError, match="nope"):
        readiness_checks(unknown)
