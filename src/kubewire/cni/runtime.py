"""The CNI runtime side (what libcni does for containerd and CRI-O).

`CniRuntime` executes plugin binaries exactly as the spec says (CNI_* env, config on
stdin, result or error on stdout, exit status). The plugin is forked from the calling
thread while that thread sits in the node's network namespace, so the plugin's
"host" namespace is the node's without an nsenter hop, and many threads may call the
runtime at once (for different containers, as the spec requires).

libcni behaviour kept: ADD chains the list's plugins in order passing `prevResult`
and caches the final result; DEL runs them in reverse with the cached result and
then drops the cache; CHECK replays the cached result (skipped when `disableCheck`);
GC first DELs cached attachments not in the valid set, then (spec >= 1.1.0, unless
`disableGC`) sends GC with `cni.dev/valid-attachments`; STATUS asks every plugin
(spec >= 1.1.0). Like libcni, a failed ADD is not rolled back here: the caller
(node agent) must DEL, as kubelet does.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubewire.cni.invoke import NsRef, exec_plugin, find_plugin, raise_for_failure
from kubewire.cni.protocol import (
    CURRENT_VERSION,
    Attachment,
    CniError,
    Command,
    ConfigError,
    ErrorCode,
    NetworkConfigList,
    PluginEnv,
    Result,
    VersionInfo,
    format_cni_args,
    gc_extra,
    parse_conflist,
    plugin_config,
    validate_container_id,
    validate_ifname,
    version_at_least,
)

CONFIG_EXTENSIONS = (".conflist", ".conf", ".json")
CACHE_KIND = "cniCacheV1"

Args = Mapping[str, str] | Sequence[tuple[str, str]]
ConfList = NetworkConfigList | Mapping[str, Any]
"""A parsed list, or the raw conflist JSON object (parsed and validated on each call)."""


def as_conflist(conflist: ConfList) -> NetworkConfigList:
    if isinstance(conflist, NetworkConfigList):
        return conflist
    return parse_conflist(conflist)


def load_conflist_file(path: Path) -> NetworkConfigList:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", code=ErrorCode.IO_FAILURE
        ) from None
    return parse_conflist(data, source=str(path))


def load_conflist(directory: Path) -> NetworkConfigList:
    """The first config file by name in `directory` (*.conflist, *.conf, *.json).

    The choice containerd and CRI-O make; a .conf/.json holding a single plugin is
    turned into a one-plugin list.
    """
    try:
        names = sorted(
            e.name
            for e in os.scandir(directory)
            if e.is_file() and e.name.endswith(CONFIG_EXTENSIONS)
        )
    except FileNotFoundError:
        names = []
    if not names:
        raise ConfigError(
            f"no network configuration in {directory}",
            f"expected a file ending in {', '.join(CONFIG_EXTENSIONS)}",
            code=ErrorCode.IO_FAILURE,
        )
    return load_conflist_file(directory / names[0])


@dataclass(frozen=True, slots=True)
class CachedAttachment:
    """What the cache remembers about one ADD (enough to DEL it later)."""

    network: str
    container_id: str
    ifname: str
    netns: str
    args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]
    config: Mapping[str, Any]
    result: Result | None


class CniRuntime:
    def __init__(self, plugin_dirs: Sequence[Path], cache_dir: Path, exec_timeout: float = 120.0):
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self.cache_dir = Path(cache_dir)
        self.exec_timeout = exec_timeout

    # --- commands ------------------------------------------------------------------

    def add(
        self,
        conflist: ConfList,
        container_id: str,
        netns: str | os.PathLike[str],
        ifname: str,
        args: Args = (),
        host_netns: NsRef | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> Result:
        conflist = as_conflist(conflist)
        env = self._env(Command.ADD, container_id, netns, ifname, args)
        result: Result | None = None
        for plugin in conflist.plugins:
            stdin = plugin_config(
                conflist, plugin, prev_result=result, capability_args=capability_args
            )
            out = self._invoke(plugin.type, env, stdin, host_netns)
            result = Result.from_wire(out, default_version=conflist.cni_version)
        assert result is not None  # parse_conflist guarantees at least one plugin
        self._cache_write(conflist, env, capability_args, result)
        return result

    def delete(
        self,
        conflist: ConfList,
        container_id: str,
        netns: str | os.PathLike[str] | None,
        ifname: str,
        args: Args = (),
        host_netns: NsRef | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        conflist = as_conflist(conflist)
        env = self._env(Command.DEL, container_id, netns or "", ifname, args)
        cached: Result | None = None
        if version_at_least(conflist.cni_version, "0.4.0"):
            entry = self._cache_read(conflist.name, container_id, ifname)
            cached = entry.result if entry is not None else None
        for plugin in reversed(conflist.plugins):
            stdin = plugin_config(
                conflist, plugin, prev_result=cached, capability_args=capability_args
            )
            self._invoke(plugin.type, env, stdin, host_netns)
        with contextlib.suppress(FileNotFoundError):
            self._cache_path(conflist.name, container_id, ifname).unlink()

    def check(
        self,
        conflist: ConfList,
        container_id: str,
        netns: str | os.PathLike[str],
        ifname: str,
        args: Args = (),
        host_netns: NsRef | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        conflist = as_conflist(conflist)
        if not version_at_least(conflist.cni_version, "0.4.0"):
            raise CniError(
                ErrorCode.INCOMPATIBLE_VERSION,
                f"configuration version {conflist.cni_version} does not support CHECK",
            )
        if conflist.disable_check:
            return
        entry = self._cache_read(conflist.name, container_id, ifname)
        if entry is None or entry.result is None:
            raise CniError(
                ErrorCode.UNKNOWN_CONTAINER,
                f"network {conflist.name}: no cached result for {container_id}/{ifname}",
                "CHECK only works after a successful ADD through this runtime",
            )
        env = self._env(Command.CHECK, container_id, netns, ifname, args)
        for plugin in conflist.plugins:
            stdin = plugin_config(
                conflist, plugin, prev_result=entry.result, capability_args=capability_args
            )
            self._invoke(plugin.type, env, stdin, host_netns)

    def status(self, conflist: ConfList, host_netns: NsRef | None = None) -> None:
        """Raise the first plugin's CniError if the network cannot take ADDs now."""
        conflist = as_conflist(conflist)
        if not version_at_least(conflist.cni_version, "1.1.0"):
            return  # STATUS does not exist before 1.1.0: assume ready, like libcni
        env = PluginEnv(Command.STATUS, path=self._path())
        for plugin in conflist.plugins:
            self._invoke(plugin.type, env, plugin_config(conflist, plugin), host_netns)

    def gc(
        self,
        conflist: ConfList,
        valid_attachments: Iterable[Attachment | tuple[str, str]],
        host_netns: NsRef | None = None,
    ) -> None:
        conflist = as_conflist(conflist)
        valid = {a if isinstance(a, Attachment) else Attachment(*a) for a in valid_attachments}
        errors: list[CniError] = []
        for entry in self.cached_attachments(conflist.name):
            if Attachment(entry.container_id, entry.ifname) in valid:
                continue
            stale_list = _cached_conflist(entry, conflist)
            try:
                self.delete(
                    stale_list,
                    entry.container_id,
                    entry.netns,
                    entry.ifname,
                    entry.args,
                    host_netns,
                    entry.capability_args,
                )
            except CniError as exc:
                errors.append(exc)
        if version_at_least(conflist.cni_version, "1.1.0") and not conflist.disable_gc:
            env = PluginEnv(Command.GC, path=self._path())
            ordered = sorted(valid, key=lambda a: (a.container_id, a.ifname))
            for plugin in conflist.plugins:
                stdin = plugin_config(conflist, plugin, extra=gc_extra(ordered))
                try:
                    self._invoke(plugin.type, env, stdin, host_netns)
                except CniError as exc:
                    errors.append(exc)
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise CniError(
                errors[0].code,
                f"GC of network {conflist.name} hit {len(errors)} errors",
                "; ".join(str(e) for e in errors),
            )

    def version(self, plugin: str, host_netns: NsRef | None = None) -> VersionInfo:
        stdin = json.dumps({"cniVersion": CURRENT_VERSION}).encode()
        out = self._invoke(plugin, PluginEnv(Command.VERSION), stdin, host_netns)
        return VersionInfo.from_wire(out)

    # --- cache ---------------------------------------------------------------------

    def cached_result(self, network: str, container_id: str, ifname: str) -> Result | None:
        entry = self._cache_read(network, container_id, ifname)
        return entry.result if entry is not None else None

    def cached_attachments(self, network: str | None = None) -> list[CachedAttachment]:
        directory = self.cache_dir / "results"
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        entries = []
        for name in names:
            entry = _parse_cache(directory / name)
            if entry is not None and (network is None or entry.network == network):
                entries.append(entry)
        return entries

    def _cache_path(self, network: str, container_id: str, ifname: str) -> Path:
        return self.cache_dir / "results" / f"{network}-{container_id}-{ifname}"

    def _cache_read(self, network: str, container_id: str, ifname: str) -> CachedAttachment | None:
        return _parse_cache(self._cache_path(network, container_id, ifname))

    def _cache_write(
        self,
        conflist: NetworkConfigList,
        env: PluginEnv,
        capability_args: Mapping[str, Any] | None,
        result: Result,
    ) -> None:
        path = self._cache_path(conflist.name, env.container_id, env.ifname)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "kind": CACHE_KIND,
            "networkName": conflist.name,
            "containerId": env.container_id,
            "ifName": env.ifname,
            "netns": env.netns,
            "cniArgs": [list(pair) for pair in env.args],
            "capabilityArgs": dict(capability_args or {}),
            "config": dict(conflist.raw),
            "result": result.to_wire(conflist.cni_version),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(record, out)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # --- invocation ----------------------------------------------------------------

    def _path(self) -> tuple[str, ...]:
        return tuple(str(d) for d in self.plugin_dirs)

    def _env(
        self,
        command: Command,
        container_id: str,
        netns: str | os.PathLike[str],
        ifname: str,
        args: Args,
    ) -> PluginEnv:
        validate_container_id(container_id)
        validate_ifname(ifname)
        pairs = tuple(args.items()) if isinstance(args, Mapping) else tuple(args)
        format_cni_args(pairs)  # validates
        return PluginEnv(command, container_id, os.fspath(netns), ifname, pairs, self._path())

    def _invoke(self, plugin: str, env: PluginEnv, stdin: bytes, host_netns: NsRef | None) -> bytes:
        executable = find_plugin(plugin, self.plugin_dirs)
        execution = exec_plugin(executable, env.to_env(), stdin, host_netns, self.exec_timeout)
        raise_for_failure(execution, plugin)
        return execution.stdout


def _parse_cache(path: Path) -> CachedAttachment | None:
    try:
        record = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("kind") != CACHE_KIND:
        return None
    raw_result = record.get("result")
    try:
        result = Result.from_wire(raw_result) if isinstance(raw_result, dict) else None
    except CniError:
        result = None
    return CachedAttachment(
        network=str(record.get("networkName", "")),
        container_id=str(record.get("containerId", "")),
        ifname=str(record.get("ifName", "")),
        netns=str(record.get("netns", "")),
        args=tuple((str(k), str(v)) for k, v in record.get("cniArgs") or ()),
        capability_args=dict(record.get("capabilityArgs") or {}),
        config=dict(record.get("config") or {}),
        result=result,
    )


def _cached_conflist(entry: CachedAttachment, current: NetworkConfigList) -> NetworkConfigList:
    """The config the attachment was added with (libcni DELs stale ones with it)."""
    if entry.config:
        with contextlib.suppress(CniError):
            return parse_conflist(entry.config, source=f"cache of {entry.container_id}")
    return current
