"""Plugin skeleton: env + stdin in, (exit code, stdout bytes) out.

Every kubewire plugin is a table of command handlers run through `dispatch`, so the
same code serves the plugin server (in a worker thread, with the shim's netns fd as
the host namespace) and the shim's in-process fallback (`plugin_main`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubewire.cni.invoke import NsRef, exec_plugin, find_plugin, ns_path, raise_for_failure
from kubewire.cni.protocol import (
    CURRENT_VERSION,
    SUPPORTED_VERSIONS,
    CniError,
    Command,
    ErrorCode,
    PluginEnv,
    Result,
    VersionInfo,
    loads_object,
    parse_command,
    parse_version,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PluginRequest:
    """One parsed invocation: the CNI parameters, the config, and the host namespace."""

    env: PluginEnv
    config: Mapping[str, Any]
    stdin: bytes
    raw_env: Mapping[str, str]
    host_netns: str  # a path for kernel.netns.entered()

    @property
    def command(self) -> Command:
        return self.env.command

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion", CURRENT_VERSION))

    @property
    def network(self) -> str:
        return str(self.config.get("name", ""))

    @property
    def prev_result(self) -> Result | None:
        raw = self.config.get("prevResult")
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise CniError(ErrorCode.DECODE_FAILURE, "prevResult must be an object")
        return Result.from_wire(raw, default_version=self.cni_version)


Handler = Callable[[PluginRequest], Result | None]
RunFn = Callable[[str, Mapping[str, str], bytes, NsRef], tuple[int, bytes]]


def dispatch(
    handlers: Mapping[Command, Handler],
    command: str,
    env: Mapping[str, str],
    stdin: bytes,
    host_netns: NsRef,
    supported: tuple[str, ...] = SUPPORTED_VERSIONS,
) -> tuple[int, bytes]:
    """Run one CNI command; errors become error results, never exceptions."""
    version = CURRENT_VERSION
    try:
        cmd = parse_command(command)
        if cmd is Command.VERSION:
            return 0, _version_result(stdin, supported)
        request = parse_request(cmd, env, stdin, host_netns, supported)
        version = request.cni_version
        handler = handlers.get(cmd)
        if handler is None:
            raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"command {cmd.value} not supported")
        result = handler(request)
        if result is None:
            return 0, b""
        return 0, result.to_json(version)
    except CniError as exc:
        return 1, exc.to_json(version)
    except Exception as exc:  # a plugin must answer with an error result, whatever happened
        log.exception("CNI plugin failed unexpectedly")
        return 1, CniError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}").to_json(version)


def parse_request(
    command: Command,
    env: Mapping[str, str],
    stdin: bytes,
    host_netns: NsRef,
    supported: tuple[str, ...] = SUPPORTED_VERSIONS,
) -> PluginRequest:
    cni_env = PluginEnv.from_env(env, command.value)
    config = loads_object(stdin, "network configuration")
    version = config.get("cniVersion")
    if not isinstance(version, str) or version not in supported:
        raise CniError(
            ErrorCode.INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {list(supported)}",
        )
    return PluginRequest(cni_env, config, stdin, env, ns_path(host_netns))


def _version_result(stdin: bytes, supported: tuple[str, ...]) -> bytes:
    # The runtime sends {"cniVersion": ...}; answer in that version when we speak it.
    version = CURRENT_VERSION
    try:
        requested = loads_object(stdin, "version request").get("cniVersion")
        if isinstance(requested, str) and requested in supported:
            version = requested
    except CniError:
        pass
    return VersionInfo(version, supported).to_json()


def plugin_main(run: RunFn) -> int:
    """Entry point for the shim fallback: a plugin process talking over stdin/stdout."""
    stdin = sys.stdin.buffer.read()
    code, out = run(os.environ.get("CNI_COMMAND", ""), os.environ, stdin, _own_netns())
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return code


def _own_netns() -> str:
    return "/proc/thread-self/ns/net"


# --- delegation ----------------------------------------------------------------------


def delegate(
    plugin: str,
    request: PluginRequest,
    in_process: Mapping[str, Mapping[Command, Handler]],
) -> Result | None:
    """Run a delegated plugin (IPAM) with the caller's env and config, per the spec.

    The executable must exist in CNI_PATH either way. If `plugin` is one of ours
    (`in_process`), its handler runs right here instead of in a new process: same code,
    same state on disk, one fork and interpreter start saved per call.
    """
    if not request.env.path:
        raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"CNI_PATH is empty; cannot find {plugin}")
    executable = find_plugin(plugin, request.env.path)
    handlers = in_process.get(plugin)
    if handlers is not None:
        handler = handlers.get(request.command)
        if handler is None:
            raise CniError(ErrorCode.INTERNAL, f"{plugin} does not handle {request.command}")
        return handler(request)
    env = dict(request.raw_env)
    env["CNI_COMMAND"] = request.command.value
    execution = exec_plugin(executable, env, request.stdin, request.host_netns)
    raise_for_failure(execution, plugin)
    if request.command is not Command.ADD:
        return None
    return Result.from_wire(execution.stdout, default_version=request.cni_version)


def at_least(request: PluginRequest, version: str) -> bool:
    return parse_version(request.cni_version) >= parse_version(version)
