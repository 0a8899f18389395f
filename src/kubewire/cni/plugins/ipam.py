"""kubewire-ipam: host-local style IP address management, backed by files.

State lives in `<dataDir>/<network name>/`: one file per allocated address, named
after the address and holding "<container id>\\r\\n<ifname>" (the layout the reference
host-local plugin uses, so either plugin can read the other's directory), plus
`last_reserved_ip.<range set index>` so allocation continues where it left off
rather than immediately reusing a just-released address. Every operation holds an
flock on `<dir>/lock`. flock locks belong to the open file description and each call
opens the lock file afresh, so the lock excludes other threads of the same process
as well as other processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubewire.cni.invoke import NsRef
from kubewire.cni.plugins.skel import Handler, PluginRequest, dispatch, plugin_main
from kubewire.cni.protocol import (
    DNS,
    Attachment,
    CniError,
    Command,
    ConfigError,
    ErrorCode,
    IPConfig,
    Result,
    Route,
    is_valid_name,
    valid_attachments,
)

PLUGIN = "kubewire-ipam"
DEFAULT_DATA_DIR = Path("/var/lib/cni/networks")
LAST_RESERVED = "last_reserved_ip"
LINE_BREAK = "\r\n"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Range:
    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress | None

    def __contains__(self, ip: object) -> bool:
        return (
            isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and ip.version == self.start.version
            and int(self.start) <= int(ip) <= int(self.end)
        )

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"

    def usable(self, ip: IPAddress) -> bool:
        if ip == self.gateway or ip == self.subnet.network_address:
            return False
        return ip.version == 6 or ip != self.subnet.broadcast_address

    def capacity(self) -> int:
        specials = {self.gateway, self.subnet.network_address}
        if self.subnet.version == 4:
            specials.add(self.subnet.broadcast_address)
        inside = sum(1 for ip in specials if ip in self)
        return int(self.end) - int(self.start) + 1 - inside


@dataclass(frozen=True, slots=True)
class RangeSet:
    """Ranges of one address family; ADD takes one address from each range set."""

    ranges: tuple[Range, ...]

    def __contains__(self, ip: object) -> bool:
        return any(ip in r for r in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)

    def range_of(self, ip: IPAddress) -> Range | None:
        return next((r for r in self.ranges if ip in r), None)

    def candidates(self, last: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
        """Every address once, starting just after `last` and wrapping around."""
        ranges = self.ranges
        first, offset = 0, 0
        for i, rng in enumerate(ranges):
            if last is not None and last in rng:
                if int(last) < int(rng.end):
                    first, offset = i, int(last) - int(rng.start) + 1
                else:
                    first = (i + 1) % len(ranges)
                break
        order = [*ranges[first:], *ranges[:first]]
        make = type(ranges[0].start)
        for n, rng in enumerate(order):
            begin = int(rng.start) + (offset if n == 0 else 0)
            for value in range(begin, int(rng.end) + 1):
                yield make(value), rng
        if offset:
            rng = order[0]
            for value in range(int(rng.start), int(rng.start) + offset):
                yield make(value), rng


@dataclass(frozen=True, slots=True)
class IpamConfig:
    network: str
    range_sets: tuple[RangeSet, ...]
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)
    data_dir: Path = DEFAULT_DATA_DIR

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> IpamConfig:
        network = config.get("name")
        if not is_valid_name(network):
            raise ConfigError(f"network name {network!r} is invalid")
        assert isinstance(network, str)
        ipam = config.get("ipam")
        if not isinstance(ipam, Mapping):
            raise ConfigError("'ipam' must be an object")
        raw_sets = ipam.get("ranges")
        if raw_sets is None and "subnet" in ipam:  # the pre-"ranges" single-range form
            raw_sets = [[{k: ipam[k] for k in _RANGE_KEYS if k in ipam}]]
        if not isinstance(raw_sets, list) or not raw_sets:
            raise ConfigError("ipam.ranges must be a non-empty list of lists of ranges")
        range_sets = tuple(_range_set(rs, i) for i, rs in enumerate(raw_sets))
        _check_overlaps(range_sets)
        routes = ipam.get("routes", [])
        if not isinstance(routes, list):
            raise ConfigError("ipam.routes must be a list of {dst, gw} objects")
        data_dir = ipam.get("dataDir", str(DEFAULT_DATA_DIR))
        if not isinstance(data_dir, str) or not data_dir:
            raise ConfigError("ipam.dataDir must be a directory path")
        try:
            parsed_routes = tuple(Route.from_wire(r) for r in routes)
            dns = DNS.from_wire(ipam.get("dns"))
        except CniError as exc:
            raise ConfigError(f"ipam: {exc.msg}") from None
        return cls(network, range_sets, parsed_routes, dns, Path(data_dir))


_RANGE_KEYS = ("subnet", "rangeStart", "rangeEnd", "gateway")


def _range_set(raw: Any, index: int) -> RangeSet:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"ipam.ranges[{index}] must be a non-empty list of ranges")
    ranges = tuple(_range(r, f"ipam.ranges[{index}][{j}]") for j, r in enumerate(raw))
    if len({r.subnet.version for r in ranges}) != 1:
        raise ConfigError(f"ipam.ranges[{index}] mixes IPv4 and IPv6 ranges")
    return RangeSet(ranges)


def _range(raw: Any, where: str) -> Range:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object with a subnet")
    try:
        subnet = ipaddress.ip_network(str(raw.get("subnet")), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{where}.subnet {raw.get('subnet')!r} is invalid: {exc}") from None
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise ConfigError(f"{where}.subnet {subnet} is too small to allocate from")
    last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
    start = _address(raw, "rangeStart", where, subnet.network_address + 1)
    end = _address(raw, "rangeEnd", where, last)
    gateway = _address(raw, "gateway", where, subnet.network_address + 1)
    for key, ip in (("rangeStart", start), ("rangeEnd", end), ("gateway", gateway)):
        if ip not in subnet:
            raise ConfigError(f"{where}.{key} {ip} is outside {subnet}")
    if start.version != end.version or int(start) > int(end):
        raise ConfigError(f"{where}: rangeStart {start} is after rangeEnd {end}")
    return Range(subnet, start, end, gateway)


def _address(raw: Mapping[str, Any], key: str, where: str, default: IPAddress) -> IPAddress:
    value = raw.get(key)
    if value is None:
        return default
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise ConfigError(f"{where}.{key} {value!r} is not an IP address") from None


def _check_overlaps(range_sets: tuple[RangeSet, ...]) -> None:
    seen: list[Range] = []
    for rs in range_sets:
        for rng in rs.ranges:
            for other in seen:
                if rng.start in other or rng.end in other or other.start in rng:
                    raise ConfigError(f"ipam ranges {other} and {rng} overlap")
            seen.append(rng)


# --- the store ------------------------------------------------------------------------


class Store:
    """The allocation files of one network. Call the methods with the lock held."""

    def __init__(self, data_dir: Path, network: str):
        self.dir = data_dir / network

    @contextlib.contextmanager
    def locked(self) -> Iterator[Store]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)  # closing the last fd of the description drops the lock

    def reserve(self, ip: IPAddress, container_id: str, ifname: str) -> bool:
        try:
            fd = os.open(self.dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, f"{container_id}{LINE_BREAK}{ifname}".encode())
        finally:
            os.close(fd)
        return True

    def owner(self, ip: IPAddress) -> Attachment | None:
        try:
            text = (self.dir / str(ip)).read_text()
        except FileNotFoundError:
            return None
        return _parse_owner(text)

    def release(self, ip: IPAddress) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / str(ip)).unlink()

    def last_reserved(self, index: int) -> IPAddress | None:
        try:
            return ipaddress.ip_address((self.dir / f"{LAST_RESERVED}.{index}").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def set_last_reserved(self, index: int, ip: IPAddress) -> None:
        (self.dir / f"{LAST_RESERVED}.{index}").write_text(str(ip))

    def allocations(self) -> Iterator[tuple[IPAddress, Attachment]]:
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                ip = ipaddress.ip_address(entry.name)
            except ValueError:
                continue  # lock, last_reserved_ip.N
            owner = self.owner(ip)
            if owner is not None:
                yield ip, owner


def _parse_owner(text: str) -> Attachment:
    lines = text.strip().splitlines()
    container_id = lines[0].strip() if lines else ""
    ifname = lines[1].strip() if len(lines) > 1 else ""
    return Attachment(container_id, ifname)


def _owned_by(owner: Attachment, container_id: str, ifname: str) -> bool:
    # Files written by old host-local versions hold only the container ID.
    return owner.container_id == container_id and owner.ifname in (ifname, "")


# --- operations ------------------------------------------------------------------------


def allocate(cfg: IpamConfig, container_id: str, ifname: str, cni_version: str = "1.1.0") -> Result:
    """Reserve one address from each range set, sequentially after the last reserved."""
    store = Store(cfg.data_dir, cfg.network)
    ips: list[IPConfig] = []
    with store.locked():
        taken: list[IPAddress] = []
        try:
            for index, range_set in enumerate(cfg.range_sets):
                ip, rng = _allocate_one(store, index, range_set, container_id, ifname)
                taken.append(ip)
                ips.append(
                    IPConfig(
                        address=f"{ip}/{rng.subnet.prefixlen}",
                        gateway=str(rng.gateway) if rng.gateway is not None else None,
                    )
                )
        except BaseException:
            for ip in taken:
                store.release(ip)
            raise
    return Result(cni_version=cni_version, ips=tuple(ips), routes=cfg.routes, dns=cfg.dns)


def _allocate_one(
    store: Store, index: int, range_set: RangeSet, container_id: str, ifname: str
) -> tuple[IPAddress, Range]:
    for ip, rng in range_set.candidates(store.last_reserved(index)):
        if rng.usable(ip) and store.reserve(ip, container_id, ifname):
            store.set_last_reserved(index, ip)
            return ip, rng
    raise CniError(
        ErrorCode.NO_ADDRESSES,
        f"failed to allocate for range {index}: no IP addresses available in range set: "
        f"{range_set}",
        "release addresses (delete pods) or give the network a larger range",
    )


def release(
    cfg: IpamConfig, container_id: str, ifname: str, hints: tuple[IPAddress, ...] = ()
) -> list[IPAddress]:
    """Release what (container_id, ifname) holds; nothing held is fine (DEL is idempotent).

    `hints` (the addresses in prevResult) are tried first so the usual DEL does not
    have to read every allocation file; without a hit it scans them all.
    """
    store = Store(cfg.data_dir, cfg.network)
    if not store.dir.exists():
        return []
    released: list[IPAddress] = []
    with store.locked():
        for ip in hints:
            owner = store.owner(ip)
            if owner is not None and _owned_by(owner, container_id, ifname):
                store.release(ip)
                released.append(ip)
        if not released:
            for ip, owner in list(store.allocations()):
                if _owned_by(owner, container_id, ifname):
                    store.release(ip)
                    released.append(ip)
    return released


def reserved_by(cfg: IpamConfig, container_id: str, ifname: str) -> list[IPAddress]:
    store = Store(cfg.data_dir, cfg.network)
    with store.locked():
        return sorted(
            (ip for ip, owner in store.allocations() if _owned_by(owner, container_id, ifname)),
            key=lambda ip: (ip.version, int(ip)),
        )


def check(
    cfg: IpamConfig, container_id: str, ifname: str, expected: tuple[IPAddress, ...] = ()
) -> None:
    store = Store(cfg.data_dir, cfg.network)
    with store.locked():
        for ip in expected:
            owner = store.owner(ip)
            if owner is None or not _owned_by(owner, container_id, ifname):
                raise CniError(
                    ErrorCode.CHECK_FAILED,
                    f"{PLUGIN}: {ip} is not reserved for container {container_id} "
                    f"interface {ifname} in network {cfg.network}",
                )
        if expected:
            return
        if not any(_owned_by(o, container_id, ifname) for _, o in store.allocations()):
            raise CniError(
                ErrorCode.CHECK_FAILED,
                f"{PLUGIN}: no address reserved for container {container_id} interface "
                f"{ifname} in network {cfg.network}",
            )


def gc(cfg: IpamConfig, valid: frozenset[Attachment]) -> list[IPAddress]:
    """Release every allocation whose attachment is not in `valid`."""
    store = Store(cfg.data_dir, cfg.network)
    if not store.dir.exists():
        return []
    keep_ids = {a.container_id for a in valid}
    released = []
    with store.locked():
        for ip, owner in list(store.allocations()):
            still_valid = owner in valid or (owner.ifname == "" and owner.container_id in keep_ids)
            if not still_valid:
                store.release(ip)
                released.append(ip)
    return released


def free_counts(cfg: IpamConfig) -> list[int]:
    """Free addresses per range set."""
    store = Store(cfg.data_dir, cfg.network)
    allocated = [0] * len(cfg.range_sets)
    if store.dir.exists():
        with store.locked():
            for ip, _owner in store.allocations():
                for i, range_set in enumerate(cfg.range_sets):
                    rng = range_set.range_of(ip)
                    if rng is not None and rng.usable(ip):
                        allocated[i] += 1
    return [
        sum(r.capacity() for r in rs.ranges) - used
        for rs, used in zip(cfg.range_sets, allocated, strict=True)
    ]


# --- command handlers ---------------------------------------------------------------


def _hints(request: PluginRequest, cfg: IpamConfig) -> tuple[IPAddress, ...]:
    prev = request.prev_result
    if prev is None:
        return ()
    ips = (ipaddress.ip_interface(ip.address).ip for ip in prev.ips)
    return tuple(ip for ip in ips if any(ip in rs for rs in cfg.range_sets))


def cmd_add(request: PluginRequest) -> Result:
    cfg = IpamConfig.from_config(request.config)
    return allocate(cfg, request.env.container_id, request.env.ifname, request.cni_version)


def cmd_del(request: PluginRequest) -> None:
    cfg = IpamConfig.from_config(request.config)
    release(cfg, request.env.container_id, request.env.ifname, _hints(request, cfg))


def cmd_check(request: PluginRequest) -> None:
    cfg = IpamConfig.from_config(request.config)
    check(cfg, request.env.container_id, request.env.ifname, _hints(request, cfg))


def cmd_gc(request: PluginRequest) -> None:
    cfg = IpamConfig.from_config(request.config)
    valid = valid_attachments(request.config)
    if valid is None:
        # Releasing everything would be the literal reading; refuse instead.
        raise ConfigError("GC needs cni.dev/valid-attachments in the configuration")
    gc(cfg, valid)


def cmd_status(request: PluginRequest) -> None:
    cfg = IpamConfig.from_config(request.config)
    for range_set, free in zip(cfg.range_sets, free_counts(cfg), strict=True):
        if free <= 0:
            raise CniError(
                ErrorCode.PLUGIN_NOT_AVAILABLE,
                f"no free addresses in range set {range_set} of network {cfg.network}",
            )


HANDLERS: dict[Command, Handler] = {
    Command.ADD: cmd_add,
    Command.DEL: cmd_del,
    Command.CHECK: cmd_check,
    Command.GC: cmd_gc,
    Command.STATUS: cmd_status,
}


def run(command: str, env: Mapping[str, str], stdin: bytes, host_netns: NsRef) -> tuple[int, bytes]:
    return dispatch(HANDLERS, command, env, stdin, host_netns)


def main() -> int:
    return plugin_main(run)
