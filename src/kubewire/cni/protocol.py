"""CNI 1.1.0 protocol: versions, errors, results, network configuration.

Pure: no I/O. Runtime and plugins share these types, so both sides agree on
what a valid config, environment and result look like. Wire forms follow the
spec (https://github.com/containernetworking/cni/blob/main/SPEC.md); results
are held version-neutral and rendered per version in `to_wire`.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"

# libcni injects both keys: the spec first named the field one way, then the other.
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
LEGACY_ATTACHMENTS_KEY = "cni.dev/attachments"

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


class Command(enum.StrEnum):
    ADD = "ADD"
    DEL = "DEL"
    CHECK = "CHECK"
    VERSION = "VERSION"
    STATUS = "STATUS"
    GC = "GC"


class ErrorCode(enum.IntEnum):
    """Well-known error codes (spec section "Error"); 100+ are plugin-specific."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODE_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    PLUGIN_NOT_AVAILABLE_LIMITED = 51
    # kubewire plugin-specific codes.
    NO_ADDRESSES = 101
    CHECK_FAILED = 102
    KERNEL = 103
    # What Go's skel reports for an unclassified error; libcni uses it too.
    INTERNAL = 999


class CniError(Exception):
    """A CNI error result, raised by plugins and by the runtime.

    `plugin` names the plugin type that reported it, when the runtime knows.
    """

    def __init__(self, code: int, msg: str, details: str = "", plugin: str | None = None):
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details
        self.plugin = plugin

    def __str__(self) -> str:
        where = f"{self.plugin}: " if self.plugin else ""
        tail = f" ({self.details})" if self.details else ""
        return f"{where}{self.msg}{tail} [CNI error {self.code}]"

    def to_wire(self, cni_version: str = CURRENT_VERSION) -> dict[str, Any]:
        wire: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            wire["details"] = self.details
        return wire

    def to_json(self, cni_version: str = CURRENT_VERSION) -> bytes:
        return _dumps(self.to_wire(cni_version))

    @classmethod
    def from_wire(
        cls, data: bytes | str | Mapping[str, Any], plugin: str | None = None
    ) -> CniError:
        obj = loads_object(data, "error result") if not isinstance(data, Mapping) else data
        code = obj.get("code")
        msg = obj.get("msg")
        if not isinstance(code, int) or not isinstance(msg, str):
            raise CniError(ErrorCode.DECODE_FAILURE, "error result lacks an integer code and msg")
        details = obj.get("details", "")
        return cls(code, msg, details if isinstance(details, str) else str(details), plugin)


class ConfigError(CniError):
    """A network configuration (list) is malformed or invalid."""

    def __init__(self, msg: str, details: str = "", code: int = ErrorCode.INVALID_NETWORK_CONFIG):
        super().__init__(code, msg, details)


# --- versions -----------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int]:
    parts = text.split(".") if isinstance(text, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniError(ErrorCode.INCOMPATIBLE_VERSION, f"invalid CNI version {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_at_least(version: str, minimum: str) -> bool:
    return parse_version(version) >= parse_version(minimum)


def negotiate_version(
    cni_version: str | None,
    cni_versions: Sequence[str] = (),
    supported: Sequence[str] = SUPPORTED_VERSIONS,
) -> str:
    """The version to speak: the highest of `cniVersions` we support, else `cniVersion`.

    Spec 1.1.0 lets a config list several versions so that runtimes of different ages
    can share it; each picks the highest one it understands.
    """
    common = [v for v in cni_versions if v in supported]
    if common:
        return max(common, key=parse_version)
    if cni_version is not None and cni_version in supported:
        return cni_version
    offered = list(cni_versions) or [str(cni_version)]
    raise CniError(
        ErrorCode.INCOMPATIBLE_VERSION,
        "incompatible CNI versions",
        f"config offers {offered}, supported: {list(supported)}",
    )


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """Result of the VERSION command."""

    cni_version: str
    supported_versions: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"cniVersion": self.cni_version, "supportedVersions": list(self.supported_versions)}

    def to_json(self) -> bytes:
        return _dumps(self.to_wire())

    @classmethod
    def from_wire(cls, data: bytes | str | Mapping[str, Any]) -> VersionInfo:
        obj = loads_object(data, "version result") if not isinstance(data, Mapping) else data
        versions = obj.get("supportedVersions")
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise CniError(ErrorCode.DECODE_FAILURE, "version result lacks supportedVersions")
        return cls(str(obj.get("cniVersion", "")), tuple(versions))


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None  # 1.1.0
    socket_path: str = ""  # 1.1.0
    pci_id: str = ""  # 1.1.0

    def to_wire(self, version: str) -> dict[str, Any]:
        wire: dict[str, Any] = {"name": self.name}
        if self.mac:
            wire["mac"] = self.mac
        if version_at_least(version, "1.1.0") and self.mtu is not None:
            wire["mtu"] = self.mtu
        if self.sandbox:
            wire["sandbox"] = self.sandbox
        if version_at_least(version, "1.1.0"):
            if self.socket_path:
                wire["socketPath"] = self.socket_path
            if self.pci_id:
                wire["pciID"] = self.pci_id
        return wire

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Interface:
        return cls(
            name=_str(obj, "name", required=True),
            mac=_str(obj, "mac"),
            sandbox=_str(obj, "sandbox"),
            mtu=_opt_int(obj, "mtu"),
            socket_path=_str(obj, "socketPath"),
            pci_id=_str(obj, "pciID"),
        )


@dataclass(frozen=True, slots=True)
class IPConfig:
    address: str  # CIDR with the host address: "10.244.1.5/24"
    gateway: str | None = None
    interface: int | None = None  # index into Result.interfaces

    @property
    def family(self) -> int:
        return ipaddress.ip_interface(self.address).version

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    def to_wire(self, version: str) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        if not version_at_least(version, "1.0.0"):
            wire["version"] = str(self.family)
        if self.interface is not None:
            wire["interface"] = self.interface
        wire["address"] = self.address
        if self.gateway:
            wire["gateway"] = self.gateway
        return wire

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> IPConfig:
        address = _str(obj, "address", required=True)
        _check_cidr(address, "ips[].address", host_ok=True)
        gateway = _str(obj, "gateway") or None
        if gateway is not None:
            _check_ip(gateway, "ips[].gateway")
        return cls(address=address, gateway=gateway, interface=_opt_int(obj, "interface"))


@dataclass(frozen=True, slots=True)
class Route:
    dst: str
    gw: str | None = None
    mtu: int | None = None  # the rest: 1.1.0
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    def to_wire(self, version: str) -> dict[str, Any]:
        wire: dict[str, Any] = {"dst": self.dst}
        if self.gw:
            wire["gw"] = self.gw
        if version_at_least(version, "1.1.0"):
            for key, value in (
                ("mtu", self.mtu),
                ("advmss", self.advmss),
                ("priority", self.priority),
                ("table", self.table),
                ("scope", self.scope),
            ):
                if value is not None:
                    wire[key] = value
        return wire

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Route:
        dst = _str(obj, "dst", required=True)
        _check_cidr(dst, "routes[].dst", host_ok=True)
        gw = _str(obj, "gw") or None
        if gw is not None:
            _check_ip(gw, "routes[].gw")
        return cls(
            dst=dst,
            gw=gw,
            mtu=_opt_int(obj, "mtu"),
            advmss=_opt_int(obj, "advmss"),
            priority=_opt_int(obj, "priority"),
            table=_opt_int(obj, "table"),
            scope=_opt_int(obj, "scope"),
        )


@dataclass(frozen=True, slots=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        if self.nameservers:
            wire["nameservers"] = list(self.nameservers)
        if self.domain:
            wire["domain"] = self.domain
        if self.search:
            wire["search"] = list(self.search)
        if self.options:
            wire["options"] = list(self.options)
        return wire

    @classmethod
    def from_wire(cls, obj: Any) -> DNS:
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise CniError(ErrorCode.DECODE_FAILURE, "dns must be an object")
        return cls(
            nameservers=_str_tuple(obj, "nameservers"),
            domain=_str(obj, "domain"),
            search=_str_tuple(obj, "search"),
            options=_str_tuple(obj, "options"),
        )


@dataclass(frozen=True, slots=True)
class Result:
    """An ADD result (or an IPAM plugin's abbreviated one: no interfaces)."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)

    def to_wire(self, version: str | None = None) -> dict[str, Any]:
        """The JSON object for `version` (default: the result's own)."""
        version = version or self.cni_version
        if version not in SUPPORTED_VERSIONS:
            raise CniError(ErrorCode.INCOMPATIBLE_VERSION, f"cannot convert result to {version}")
        wire: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            wire["interfaces"] = [i.to_wire(version) for i in self.interfaces]
        if self.ips:
            wire["ips"] = [i.to_wire(version) for i in self.ips]
        if self.routes:
            wire["routes"] = [r.to_wire(version) for r in self.routes]
        wire["dns"] = self.dns.to_wire()
        return wire

    def to_json(self, version: str | None = None) -> bytes:
        return _dumps(self.to_wire(version))

    @classmethod
    def from_wire(
        cls, data: bytes | str | Mapping[str, Any], default_version: str | None = None
    ) -> Result:
        obj = loads_object(data, "result") if not isinstance(data, Mapping) else data
        version = obj.get("cniVersion") or default_version
        if not isinstance(version, str) or not version:
            raise CniError(ErrorCode.DECODE_FAILURE, "result lacks cniVersion")
        if parse_version(version) < (0, 3, 0):
            raise CniError(
                ErrorCode.INCOMPATIBLE_VERSION, f"result version {version} is older than 0.3.0"
            )
        result = cls(
            cni_version=version,
            interfaces=tuple(Interface.from_wire(i) for i in _list(obj, "interfaces")),
            ips=tuple(IPConfig.from_wire(i) for i in _list(obj, "ips")),
            routes=tuple(Route.from_wire(r) for r in _list(obj, "routes")),
            dns=DNS.from_wire(obj.get("dns")),
        )
        for ip in result.ips:
            if ip.interface is not None and not 0 <= ip.interface < len(result.interfaces):
                raise CniError(
                    ErrorCode.DECODE_FAILURE,
                    f"ips[].interface {ip.interface} points past the interfaces list",
                )
        return result


# --- environment ----------------------------------------------------------------------

# Which CNI_* variables each command must have (spec "Parameters").
_REQUIRED_ENV: dict[Command, tuple[str, ...]] = {
    Command.ADD: ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    Command.CHECK: ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    Command.DEL: ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    Command.GC: ("CNI_PATH",),
    Command.STATUS: (),
    Command.VERSION: (),
}


def parse_command(text: str) -> Command:
    try:
        return Command(text)
    except ValueError:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"CNI_COMMAND {text!r} is not one of {', '.join(c.value for c in Command)}",
        ) from None


def validate_container_id(container_id: str) -> None:
    if not _NAME_RE.match(container_id):
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"CNI_CONTAINERID {container_id!r} is invalid: must start with a letter or digit "
            "and contain only letters, digits, '_', '.' and '-'",
        )


def validate_ifname(ifname: str) -> None:
    bad = (
        not ifname
        or ifname in (".", "..")
        or len(ifname) >= 16
        or any(c in "/:" or c.isspace() for c in ifname)
    )
    if bad:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"CNI_IFNAME {ifname!r} is invalid: 1-15 characters, not '.' or '..', "
            "no '/', ':' or whitespace",
        )


def is_valid_name(name: object) -> bool:
    """Network names and container IDs share one rule (spec "Parameters")."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None


def parse_cni_args(text: str) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS "K1=V1;K2=V2" -> pairs."""
    pairs = []
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"CNI_ARGS item {item!r} is not K=V")
        pairs.append((key, value))
    return tuple(pairs)


def format_cni_args(args: Iterable[tuple[str, str]] | Mapping[str, str]) -> str:
    items = args.items() if isinstance(args, Mapping) else args
    out = []
    for key, value in items:
        if not key or any(c in key + value for c in ";="):
            raise CniError(ErrorCode.INVALID_ENVIRONMENT, f"CNI_ARGS {key}={value} contains ; or =")
        out.append(f"{key}={value}")
    return ";".join(out)


@dataclass(frozen=True, slots=True)
class PluginEnv:
    """The CNI_* parameters of one plugin invocation."""

    command: Command
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: tuple[tuple[str, str], ...] = ()
    path: tuple[str, ...] = ()

    def to_env(self) -> dict[str, str]:
        env = {"CNI_COMMAND": self.command.value}
        if self.command is not Command.VERSION:
            env["CNI_PATH"] = ":".join(self.path)
        if self.command in (Command.ADD, Command.DEL, Command.CHECK):
            env["CNI_CONTAINERID"] = self.container_id
            env["CNI_NETNS"] = self.netns
            env["CNI_IFNAME"] = self.ifname
            env["CNI_ARGS"] = format_cni_args(self.args)
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str], command: str | None = None) -> PluginEnv:
        cmd = parse_command(command if command is not None else env.get("CNI_COMMAND", ""))
        missing = [k for k in _REQUIRED_ENV[cmd] if not env.get(k)]
        if missing:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f"required env variables [{','.join(missing)}] missing for {cmd.value}",
            )
        container_id = env.get("CNI_CONTAINERID", "")
        ifname = env.get("CNI_IFNAME", "")
        if cmd in (Command.ADD, Command.DEL, Command.CHECK):
            validate_container_id(container_id)
            validate_ifname(ifname)
        path = tuple(p for p in env.get("CNI_PATH", "").split(":") if p)
        return cls(
            command=cmd,
            container_id=container_id,
            netns=env.get("CNI_NETNS", ""),
            ifname=ifname,
            args=parse_cni_args(env.get("CNI_ARGS", "")),
            path=path,
        )


# --- network configuration ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PluginConf:
    """One plugin's entry in a configuration list (the raw object, type included)."""

    type: str
    config: Mapping[str, Any]

    @property
    def capabilities(self) -> frozenset[str]:
        caps = self.config.get("capabilities")
        if not isinstance(caps, Mapping):
            return frozenset()
        return frozenset(k for k, v in caps.items() if v is True)


@dataclass(frozen=True, slots=True)
class NetworkConfigList:
    name: str
    cni_version: str  # the negotiated version we speak for this list
    plugins: tuple[PluginConf, ...]
    cni_versions: tuple[str, ...] = ()
    disable_check: bool = False
    disable_gc: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<conflist>"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A (container, interface) pair still in use, for GC."""

    container_id: str
    ifname: str

    def to_wire(self) -> dict[str, str]:
        return {"containerID": self.container_id, "ifname": self.ifname}


def parse_conflist(
    data: bytes | str | Mapping[str, Any], source: str = "<conflist>"
) -> NetworkConfigList:
    """Parse and validate a network configuration list (or a single-plugin config)."""
    obj = loads_object(data, source) if not isinstance(data, Mapping) else dict(data)
    if "plugins" not in obj:
        return _conflist_from_conf(obj, source)
    name = _config_name(obj, source)
    version = _config_version(obj, source)
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ConfigError(f"{source}: 'plugins' must be a non-empty list of plugin objects")
    parsed = tuple(_plugin_conf(p, f"{source}: plugins[{i}]") for i, p in enumerate(plugins))
    for key in ("disableCheck", "disableGC"):
        if not isinstance(obj.get(key, False), bool):
            raise ConfigError(f"{source}: '{key}' must be true or false")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=parsed,
        cni_versions=tuple(obj.get("cniVersions") or ()),
        disable_check=bool(obj.get("disableCheck", False)),
        disable_gc=bool(obj.get("disableGC", False)),
        raw=obj,
        source=source,
    )


def _conflist_from_conf(obj: dict[str, Any], source: str) -> NetworkConfigList:
    # libcni's ConfListFromConf: a lone plugin config becomes a one-entry list.
    name = _config_name(obj, source)
    version = _config_version(obj, source)
    plugin = _plugin_conf(obj, source)
    raw = {"cniVersion": obj.get("cniVersion"), "name": name, "plugins": [obj]}
    return NetworkConfigList(
        name=name, cni_version=version, plugins=(plugin,), raw=raw, source=source
    )


def _config_name(obj: Mapping[str, Any], source: str) -> str:
    name = obj.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"{source}: 'name' is {name!r}; it must be a string starting with a letter or digit, "
            "then letters, digits, '_', '.' or '-'"
        )
    return name


def _config_version(obj: Mapping[str, Any], source: str) -> str:
    version = obj.get("cniVersion")
    versions = obj.get("cniVersions", [])
    if version is not None and not isinstance(version, str):
        raise ConfigError(f"{source}: 'cniVersion' must be a string")
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise ConfigError(f"{source}: 'cniVersions' must be a list of strings")
    if version is None and not versions:
        raise ConfigError(f"{source}: 'cniVersion' is missing")
    try:
        return negotiate_version(version, versions)
    except CniError as exc:
        raise ConfigError(
            f"{source}: {exc.msg}", exc.details, code=ErrorCode.INCOMPATIBLE_VERSION
        ) from None


def _plugin_conf(obj: Any, where: str) -> PluginConf:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: must be an object")
    ptype = obj.get("type")
    if not isinstance(ptype, str) or not ptype or "/" in ptype:
        raise ConfigError(f"{where}: 'type' must name a plugin executable, got {ptype!r}")
    caps = obj.get("capabilities", {})
    if not isinstance(caps, Mapping):
        raise ConfigError(f"{where}: 'capabilities' must be an object")
    return PluginConf(type=ptype, config=dict(obj))


def plugin_config(
    conflist: NetworkConfigList,
    plugin: PluginConf,
    *,
    prev_result: Result | None = None,
    capability_args: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The stdin for one plugin of a list, as libcni builds it.

    Injects `name` and `cniVersion` from the list, `prevResult` (converted to the list's
    version) when chaining, and `runtimeConfig` holding only the capability args the
    plugin declared in its `capabilities`.
    """
    conf: dict[str, Any] = dict(plugin.config)
    conf["name"] = conflist.name
    conf["cniVersion"] = conflist.cni_version
    conf.pop("prevResult", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result.to_wire(conflist.cni_version)
    if capability_args:
        runtime = {k: v for k, v in capability_args.items() if k in plugin.capabilities}
        if runtime:
            conf["runtimeConfig"] = runtime
    if extra:
        conf.update(extra)
    return _dumps(conf)


def gc_extra(valid: Iterable[Attachment]) -> dict[str, Any]:
    attachments = [a.to_wire() for a in valid]
    return {VALID_ATTACHMENTS_KEY: attachments, LEGACY_ATTACHMENTS_KEY: attachments}


def valid_attachments(config: Mapping[str, Any]) -> frozenset[Attachment] | None:
    """The GC keep-list from a plugin config, or None when the runtime sent none."""
    raw = config.get(VALID_ATTACHMENTS_KEY, config.get(LEGACY_ATTACHMENTS_KEY))
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError(f"'{VALID_ATTACHMENTS_KEY}' must be a list")
    out = set()
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("containerID"), str):
            raise ConfigError(f"'{VALID_ATTACHMENTS_KEY}' entries need a containerID")
        out.add(Attachment(item["containerID"], str(item.get("ifname", ""))))
    return frozenset(out)


# --- helpers ----------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def loads_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(ErrorCode.DECODE_FAILURE, f"{what}: not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CniError(ErrorCode.DECODE_FAILURE, f"{what}: expected a JSON object")
    return obj


def _str(obj: Mapping[str, Any], key: str, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise CniError(ErrorCode.DECODE_FAILURE, f"'{key}' is required")
        return ""
    if not isinstance(value, str):
        raise CniError(ErrorCode.DECODE_FAILURE, f"'{key}' must be a string, got {value!r}")
    return value


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise CniError(ErrorCode.DECODE_FAILURE, f"'{key}' must be an integer, got {value!r}")
    return value


def _list(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise CniError(ErrorCode.DECODE_FAILURE, f"'{key}' must be a list of objects")
    return value


def _str_tuple(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CniError(ErrorCode.DECODE_FAILURE, f"'{key}' must be a list of strings")
    return tuple(value)


def _check_cidr(text: str, what: str, host_ok: bool) -> None:
    try:
        if host_ok:
            ipaddress.ip_interface(text)
        else:
            ipaddress.ip_network(text)
        if "/" not in text:
            raise ValueError("prefix length missing")
    except ValueError as exc:
        raise CniError(ErrorCode.DECODE_FAILURE, f"{what} {text!r} is not a CIDR: {exc}") from None


def _check_ip(text: str, what: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise CniError(ErrorCode.DECODE_FAILURE, f"{what} {text!r} is not an IP address") from None
