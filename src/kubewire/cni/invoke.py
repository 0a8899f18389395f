"""Executing a CNI plugin binary, as the spec prescribes (libcni's pkg/invoke).

Shared by the runtime and by plugins that delegate (bridge -> IPAM). The child is
forked from the calling thread, so `host_netns` is entered by that thread only and
the child simply inherits it: no nsenter, no extra process.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubewire.cni.protocol import CniError, ErrorCode
from kubewire.kernel.netns import entered

NsRef = str | os.PathLike[str] | int
"""A network namespace: a path (/run/netns/x, /proc/.../ns/net) or an open fd."""


def ns_path(ref: NsRef) -> str:
    """A path `entered()` can open for a namespace given as a path or an fd."""
    if isinstance(ref, int):
        return f"/proc/self/fd/{ref}"
    return os.fspath(ref)


class PluginNotFoundError(CniError):
    def __init__(self, plugin: str, dirs: Sequence[str]):
        super().__init__(
            ErrorCode.INTERNAL,
            f"CNI plugin {plugin!r} not found in CNI_PATH {':'.join(dirs) or '(empty)'}",
            "install the plugin there (kubewire.cni.shim.install_plugins for kubewire-*) "
            "or fix the plugin directories",
            plugin=plugin,
        )


def find_plugin(plugin: str, dirs: Sequence[str | os.PathLike[str]]) -> Path:
    for directory in dirs:
        candidate = Path(directory) / plugin
        if os.access(candidate, os.X_OK) and candidate.is_file():
            return candidate
    raise PluginNotFoundError(plugin, [os.fspath(d) for d in dirs])


@dataclass(frozen=True, slots=True)
class Execution:
    returncode: int
    stdout: bytes
    stderr: bytes


def exec_plugin(
    executable: Path,
    env: Mapping[str, str],
    stdin: bytes,
    host_netns: NsRef | None = None,
    timeout: float | None = 120.0,
) -> Execution:
    """Run a plugin with CNI_* `env` (added to ours) in `host_netns`; never raises on exit code."""
    full_env = dict(os.environ)
    full_env.update(env)
    try:
        if host_netns is None:
            proc = _run(executable, full_env, stdin, timeout)
        else:
            with entered(ns_path(host_netns)):
                proc = _run(executable, full_env, stdin, timeout)
    except subprocess.TimeoutExpired:
        raise CniError(
            ErrorCode.TRY_AGAIN_LATER,
            f"CNI plugin {executable} did not finish within {timeout} s",
            plugin=executable.name,
        ) from None
    except OSError as exc:
        raise CniError(
            ErrorCode.IO_FAILURE, f"cannot execute {executable}: {exc}", plugin=executable.name
        ) from None
    return Execution(proc.returncode, proc.stdout, proc.stderr)


def _run(
    executable: Path, env: dict[str, str], stdin: bytes, timeout: float | None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(executable)], input=stdin, env=env, capture_output=True, timeout=timeout, check=False
    )


def raise_for_failure(execution: Execution, plugin: str) -> None:
    """Turn a failed execution into the plugin's CniError (or a descriptive one)."""
    if execution.returncode == 0:
        return
    try:
        error = CniError.from_wire(execution.stdout, plugin=plugin)
    except CniError:
        stderr = execution.stderr.decode(errors="replace").strip()
        stdout = execution.stdout.decode(errors="replace").strip()
        raise CniError(
            ErrorCode.INTERNAL,
            f"plugin exited with status {execution.returncode} without a CNI error result",
            stderr or stdout,
            plugin=plugin,
        ) from None
    raise error
