"""Pure rules about a manifest's container: builtin or exec, its argv, env and ports.

`container` is the raw dict of one entry of a pod's `spec.containers`.

The rule (`decide`): a container runs as a real process ("exec") when it has a non-empty
`command` whose first word is an executable on this machine (a PATH lookup, or an
executable file for a path with a slash). Everything else is served by the built-in test
server ("builtin"): no `command` means the image's entrypoint, which does not exist here,
even when `args` are given.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kubewire.workload.errors import ContainerSpecError
from kubewire.workload.protocol import PortSpec

Kind = Literal["builtin", "exec"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_BUILTIN_PORT = PortSpec(80, "TCP")
NETEXEC_HTTP_PORT = 8080
NETEXEC_UDP_PORT = 8081

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def _strings(container: Mapping[str, Any], field: str) -> list[str]:
    value = container.get(field) or []
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ContainerSpecError(f"container field {field!r} must be a list of strings")
    return [str(item) for item in value]


def find_executable(name: str, path: str | None = None) -> str | None:
    """Where `name` would be executed from, or None."""
    if not name:
        return None
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(
        name, path=path if path is not None else os.environ.get("PATH", DEFAULT_PATH)
    )


def decide(container: Mapping[str, Any], path: str | None = None) -> Kind:
    """Return "exec" if command[0] is an executable on this machine, else "builtin"."""
    command = _strings(container, "command")
    if command and find_executable(command[0], path) is not None:
        return "exec"
    return "builtin"


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`,
    undefined references stay as written."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


def container_env(container: Mapping[str, Any], hostname: str) -> dict[str, str]:
    """The environment of a real process: PATH and HOME defaults, the container's
    name/value env entries in order (each may reference earlier ones), then HOSTNAME.

    `valueFrom` entries (secrets, field refs) are skipped: there is no API server to ask.
    """
    env: dict[str, str] = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "HOME": "/root"}
    entries = container.get("env") or []
    if not isinstance(entries, list):
        raise ContainerSpecError("container field 'env' must be a list")
    declared: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ContainerSpecError(f"env entry {entry!r} has no string 'name'")
        if "value" not in entry and "valueFrom" in entry:
            continue
        value = entry.get("value")
        declared[entry["name"]] = expand_vars("" if value is None else str(value), declared)
    env.update(declared)
    env["HOSTNAME"] = hostname
    return env


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args with `$(VAR)` references to the container's env expanded."""
    words = _strings(container, "command") + _strings(container, "args")
    if not words:
        raise ContainerSpecError(f"container {container.get('name', '?')} has no command to run")
    return [expand_vars(word, env) for word in words]


def _flag_port(words: Sequence[str], flag: str, default: int) -> int:
    for i, word in enumerate(words):
        if word.startswith(flag + "="):
            text = word.split("=", 1)[1]
        elif word == flag and i + 1 < len(words):
            text = words[i + 1]
        else:
            continue
        if text.isdigit() and 0 < int(text) < 65536:
            return int(text)
    return default


def builtin_ports(container: Mapping[str, Any]) -> tuple[PortSpec, ...]:
    """The ports the built-in server should serve for a container.

    Declared `ports[].containerPort` first; for `agnhost netexec` also its HTTP and UDP
    ports (flags `--http-port`, `--udp-port`, defaults 8080 and 8081); if that leaves
    nothing, 80/TCP (what an `nginx`-like image would listen on). In Kubernetes
    `containerPort` is informational, so Services often target undeclared ports: the
    default keeps the common case working.
    """
    found: list[PortSpec] = []
    for entry in container.get("ports") or []:
        if not isinstance(entry, Mapping):
            raise ContainerSpecError(f"port entry {entry!r} is not an object")
        port = PortSpec(entry.get("containerPort"), str(entry.get("protocol", "TCP")))  # type: ignore[arg-type]
        if port not in found:
            found.append(port)
    words = _strings(container, "command") + _strings(container, "args")
    if "netexec" in words:
        extra = [
            PortSpec(_flag_port(words, "--http-port", NETEXEC_HTTP_PORT), "TCP"),
            PortSpec(_flag_port(words, "--udp-port", NETEXEC_UDP_PORT), "UDP"),
        ]
        found += [p for p in extra if p not in found]
    return tuple(found) if found else (DEFAULT_BUILTIN_PORT,)
