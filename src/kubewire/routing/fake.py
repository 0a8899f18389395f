"""A validating in-memory RoutingKernel for tests without root.

It enforces the kernel rules the applier relies on instead of accepting anything:
creating an existing link fails, unsupported link kinds fail like a kernel without the
driver, routes need an existing, up device and (unless onlink) a gateway on its subnet,
FDB entries need a vxlan device, deleting something absent fails (the real applier
tolerates that for races; a plan must never do it), and deleting a link takes its
routes, neighbours and FDB entries with it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from kubewire.routing.apply import OWNER_ALIAS
from kubewire.routing.model import (
    FdbEntry,
    Link,
    Neighbour,
    Route,
    SyncError,
    kernel_support_error,
)
from kubewire.routing.plan import ActualState, Op, Verb

DEFAULT_KINDS = frozenset({"vxlan", "bridge", "veth"})


@dataclass(slots=True)
class FakeDevice:
    link: Link
    up: bool = True
    alias: str = ""


@dataclass(slots=True)
class FakeKernel:
    """One fake node namespace. `devices` pre-creates foreign links: name -> addresses."""

    devices: Mapping[str, Iterable[str]] = field(default_factory=dict)
    supported_kinds: frozenset[str] = DEFAULT_KINDS
    links: dict[str, FakeDevice] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)  # kubewire routes by dst
    foreign_routes: dict[str, Route] = field(default_factory=dict)
    neighbours: dict[tuple[str, str], Neighbour] = field(default_factory=dict)
    fdb: set[FdbEntry] = field(default_factory=set)
    executed: list[Op] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, addresses in self.devices.items():
            self.links[name] = FakeDevice(Link(name, "veth", 1500, addresses=tuple(addresses)))

    # -- RoutingKernel ---------------------------------------------------------------

    def read_state(self, wanted_links: frozenset[str]) -> ActualState:
        owned = {
            name: dev
            for name, dev in self.links.items()
            if dev.alias == OWNER_ALIAS or name in wanted_links
        }
        return ActualState(
            links=tuple(dev.link for dev in owned.values()),
            unready=frozenset(
                name for name, dev in owned.items() if not dev.up or dev.alias != OWNER_ALIAS
            ),
            devices={name: dev.link.addresses for name, dev in self.links.items()},
            routes=tuple(self.routes.values()),
            neighbours=tuple(n for n in self.neighbours.values() if n.dev in owned),
            fdb=tuple(f for f in self.fdb if f.dev in owned),
        )

    def apply(self, ops: Sequence[Op]) -> None:
        for op in ops:
            self.execute(op)

    def execute(self, op: Op) -> None:
        self.executed.append(op)
        obj = op.obj
        if isinstance(obj, Link):
            self._link(op.verb, obj)
        elif isinstance(obj, Route):
            self._route(op.verb, obj)
        elif isinstance(obj, Neighbour):
            self._need_dev(obj.dev)
            key = (obj.dev, obj.ip)
            if op.verb is Verb.DELETE:
                self._remove(self.neighbours, key, f"neighbour {obj.ip} dev {obj.dev}")
            else:
                self.neighbours[key] = obj
        else:
            if self._need_dev(obj.dev).link.kind != "vxlan":
                raise SyncError(f"fake kernel: {obj.dev} is not a vxlan device")
            if op.verb is Verb.DELETE:
                if obj not in self.fdb:
                    raise SyncError(f"fake kernel: no FDB entry {obj}")
                self.fdb.discard(obj)
            elif obj in self.fdb:
                raise SyncError(f"fake kernel: FDB entry {obj} exists")
            else:
                self.fdb.add(obj)

    # -- helpers ---------------------------------------------------------------------

    def _need_dev(self, name: str) -> FakeDevice:
        dev = self.links.get(name)
        if dev is None:
            raise SyncError(f"fake kernel: no device {name}")
        return dev

    @staticmethod
    def _remove(table: dict[tuple[str, str], Neighbour], key: tuple[str, str], what: str) -> None:
        if key not in table:
            raise SyncError(f"fake kernel: no {what}")
        del table[key]

    def _link(self, verb: Verb, link: Link) -> None:
        if verb is Verb.DELETE:
            self._need_dev(link.name)
            del self.links[link.name]
            self.routes = {k: r for k, r in self.routes.items() if r.dev != link.name}
            self.neighbours = {k: n for k, n in self.neighbours.items() if n.dev != link.name}
            self.fdb = {f for f in self.fdb if f.dev != link.name}
            return
        if verb is Verb.ADD:
            if link.name in self.links:
                raise SyncError(f"fake kernel: link {link.name} exists")
            if link.kind not in self.supported_kinds:
                raise kernel_support_error(link.kind)
            lower = link.attr("dev")
            if isinstance(lower, str):
                self._need_dev(lower)
            mac = link.mac or "02:00:00:00:00:01"
            self.links[link.name] = FakeDevice(replace(link, mac=mac), alias=OWNER_ALIAS)
            return
        dev = self._need_dev(link.name)
        if (dev.link.kind, dev.link.attrs) != (link.kind, link.attrs):
            raise SyncError(f"fake kernel: cannot change kind/attributes of {link.name}")
        if link.mac is not None and link.mac != dev.link.mac:
            self._flush_neighbours(link.name)  # as the kernel does on a MAC change
        dev.link = replace(link, mac=link.mac or dev.link.mac)
        dev.up = True
        dev.alias = OWNER_ALIAS

    def _route(self, verb: Verb, route: Route) -> None:
        if verb is Verb.DELETE:
            if self.routes.get(route.dst) != route:
                raise SyncError(f"fake kernel: no route {route}")
            del self.routes[route.dst]
            return
        dev = self._need_dev(route.dev)
        if not dev.up:
            raise SyncError(f"fake kernel: {route.dev} is down")
        if route.gateway and not route.onlink:
            gateway = ipaddress.IPv4Address(route.gateway)
            if not any(gateway in ipaddress.IPv4Interface(a).network for a in dev.link.addresses):
                raise SyncError(f"fake kernel: gateway {route.gateway} unreachable")
        self.foreign_routes.pop(route.dst, None)  # replace takes over a same-dst route
        self.routes[route.dst] = route

    # -- test conveniences -----------------------------------------------------------

    def _flush_neighbours(self, name: str) -> None:
        self.neighbours = {k: n for k, n in self.neighbours.items() if n.dev != name}

    def set_down(self, name: str) -> None:
        """Like `ip link set NAME down`: routes and neighbours via the device go too."""
        self._need_dev(name).up = False
        self.routes = {k: r for k, r in self.routes.items() if r.dev != name}
        self._flush_neighbours(name)

    def set_mac(self, name: str, mac: str) -> None:
        dev = self._need_dev(name)
        dev.link = replace(dev.link, mac=mac)
        self._flush_neighbours(name)
