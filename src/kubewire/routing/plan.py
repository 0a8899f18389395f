"""Diff observed against desired state into an ordered list of kernel operations (pure).

The applier reads the node's current objects into an `ActualState`, `plan_sync` checks
that the desired state can be built there and returns the operations, in an order the
kernel accepts:

1. delete stale routes, neighbours and FDB entries;
2. delete links nobody wants, recreate links whose immutable attributes changed, create
   new links, fix MTU/MAC/addresses/up in place;
3. add or replace neighbours, then FDB entries, then routes (routes last: an onlink route
   via flannel.1 needs the device up, and the neighbour entry in place so the first
   packet is not dropped).

Validation happens before the first operation, so bad input changes nothing.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubewire.routing.model import (
    DesiredNodeNetwork,
    FdbEntry,
    Link,
    Neighbour,
    Route,
    SyncError,
)


@dataclass(frozen=True, slots=True)
class ActualState:
    """The routing-owned objects found in a node namespace, plus what validation needs.

    `links` are only the links the routing package owns (or that carry a desired name);
    `unready` names those among them that are down or not yet marked as owned;
    `devices` maps *every* link name in the namespace to its IPv4 interface networks;
    `routes` are only routes tagged RTPROT_KUBEWIRE in the main table; neighbours are the
    permanent ones on owned links, `fdb` the remote entries on owned vxlan links.
    """

    links: tuple[Link, ...] = ()
    unready: frozenset[str] = frozenset()
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()

    def as_desired(self) -> DesiredNodeNetwork:
        """The owned objects in desired-state form: equal to the desired state after a sync."""
        return DesiredNodeNetwork(self.links, self.routes, self.neighbours, self.fdb)


class Verb(enum.Enum):
    ADD = "add"
    UPDATE = "update"
    DELETE = "delete"


KernelObject = Link | Route | Neighbour | FdbEntry


@dataclass(frozen=True, slots=True)
class Op:
    verb: Verb
    obj: KernelObject

    def __str__(self) -> str:
        return f"{self.verb.value} {type(self.obj).__name__.lower()} {self.obj}"


@dataclass(frozen=True, slots=True)
class Delta:
    added: int = 0
    updated: int = 0
    removed: int = 0

    @property
    def changes(self) -> int:
        return self.added + self.updated + self.removed

    def __str__(self) -> str:
        return f"+{self.added} ~{self.updated} -{self.removed}"


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync changed. A link recreated in place counts as removed and added."""

    links: Delta = Delta()
    routes: Delta = Delta()
    neighbours: Delta = Delta()
    fdb: Delta = Delta()
    seconds: float = 0.0

    @property
    def changes(self) -> int:
        return sum(d.changes for d in (self.links, self.routes, self.neighbours, self.fdb))

    @property
    def changed(self) -> bool:
        return self.changes > 0

    def __str__(self) -> str:
        return (
            f"links {self.links}, routes {self.routes}, neighbours {self.neighbours}, "
            f"fdb {self.fdb} ({self.seconds * 1000:.1f} ms)"
        )


@dataclass(frozen=True, slots=True)
class SyncPlan:
    ops: tuple[Op, ...]

    def report(self, seconds: float = 0.0) -> SyncReport:
        counts: dict[type, dict[Verb, int]] = {
            kind: dict.fromkeys(Verb, 0) for kind in (Link, Route, Neighbour, FdbEntry)
        }
        for op in self.ops:
            counts[type(op.obj)][op.verb] += 1

        def delta(kind: type) -> Delta:
            c = counts[kind]
            return Delta(added=c[Verb.ADD], updated=c[Verb.UPDATE], removed=c[Verb.DELETE])

        return SyncReport(
            links=delta(Link),
            routes=delta(Route),
            neighbours=delta(Neighbour),
            fdb=delta(FdbEntry),
            seconds=seconds,
        )


def _immutable(link: Link) -> tuple[str, tuple[tuple[str, object], ...]]:
    return (link.kind, link.attrs)


def _link_matches(current: Link, want: Link) -> bool:
    """Equal, except that a desired MAC of None accepts whatever the kernel chose."""
    if want.mac is None:
        current = Link(
            current.name, current.kind, current.mtu, current.attrs, None, current.addresses
        )
    return current == want


def validate(actual: ActualState, desired: DesiredNodeNetwork) -> None:
    """Raise SyncError if `desired` cannot be built in the namespace `actual` describes."""
    desired_links = {link.name: link for link in desired.links}
    if len(desired_links) != len(desired.links):
        raise SyncError("desired state names the same link twice")
    owned = {link.name for link in actual.links}
    foreign = {name: nets for name, nets in actual.devices.items() if name not in owned}

    for link in desired.links:
        lower = link.attr("dev")
        if isinstance(lower, str) and lower not in foreign:
            raise SyncError(
                f"link {link.name} needs underlay device {lower}, which does not exist in "
                "the node namespace; create the node's underlay interface first"
            )

    dsts = [route.dst for route in desired.routes]
    if len(set(dsts)) != len(dsts):
        raise SyncError("desired state has two routes for the same destination")
    subnets: dict[str, list[ipaddress.IPv4Network]] = {}
    for route in desired.routes:
        if route.dev in desired_links:
            nets = desired_links[route.dev].addresses
        elif route.dev in foreign:
            nets = foreign[route.dev]
        else:
            raise SyncError(f"route {route.dst} uses device {route.dev}, which does not exist")
        if route.gateway is None or route.onlink:
            continue
        if route.dev not in subnets:
            interfaces = (ipaddress.IPv4Interface(net) for net in nets)
            subnets[route.dev] = [i.network for i in interfaces if i.network.prefixlen < 32]
        gateway = ipaddress.IPv4Address(route.gateway)
        if not any(gateway in subnet for subnet in subnets[route.dev]):
            raise SyncError(
                f"gateway {route.gateway} for {route.dst} is not on {route.dev}'s subnet "
                f"({', '.join(nets) or 'no IPv4 address'}); host-gw needs every node on one "
                "L2 segment, use the vxlan backend otherwise"
            )

    for entry in desired.neighbours:
        if entry.dev not in desired_links:
            raise SyncError(f"neighbour {entry.ip} is on {entry.dev}, which this backend lacks")
    for fdb in desired.fdb:
        vtep = desired_links.get(fdb.dev)
        if vtep is None or vtep.kind != "vxlan":
            raise SyncError(f"FDB entry {fdb.mac} needs a vxlan device, {fdb.dev} is not one")


def plan_sync(actual: ActualState, desired: DesiredNodeNetwork) -> SyncPlan:
    validate(actual, desired)
    desired_links = {link.name: link for link in desired.links}
    actual_links = {link.name: link for link in actual.links}

    # Links that will disappear (deleted or recreated) take their routes, neighbours and
    # FDB entries with them; objects on them that are still wanted must be added again.
    recreated = {
        name
        for name, link in actual_links.items()
        if name in desired_links and _immutable(link) != _immutable(desired_links[name])
    }
    deleted = set(actual_links) - set(desired_links)
    vanishing = recreated | deleted
    # A new MAC makes the kernel flush the device's neighbour table, permanent entries too.
    remac = {
        name
        for name, link in actual_links.items()
        if name in desired_links
        and desired_links[name].mac is not None
        and desired_links[name].mac != link.mac
    }

    ops: list[Op] = []

    # 1. stale objects.
    want_routes = {route.dst: route for route in desired.routes}
    keep_routes: dict[str, Route] = {}
    seen_dsts: set[str] = set()
    for route in actual.routes:
        if route.dst not in want_routes or route.dst in seen_dsts:
            ops.append(Op(Verb.DELETE, route))  # unwanted, or a duplicate
        elif route.dev not in vanishing:
            keep_routes[route.dst] = route
        seen_dsts.add(route.dst)
    want_neigh = {(n.dev, n.ip): n for n in desired.neighbours}
    keep_neigh: dict[tuple[str, str], Neighbour] = {}
    for entry in actual.neighbours:
        if (entry.dev, entry.ip) not in want_neigh:
            ops.append(Op(Verb.DELETE, entry))
        elif entry.dev not in vanishing and entry.dev not in remac:
            keep_neigh[(entry.dev, entry.ip)] = entry
    want_fdb = set(desired.fdb)
    keep_fdb: set[FdbEntry] = set()
    for fdb in actual.fdb:
        if fdb not in want_fdb:
            ops.append(Op(Verb.DELETE, fdb))
        elif fdb.dev not in vanishing:
            keep_fdb.add(fdb)

    # 2. links.
    for name in sorted(deleted):
        ops.append(Op(Verb.DELETE, actual_links[name]))
    for link in desired.links:
        current = actual_links.get(link.name)
        if current is None:
            ops.append(Op(Verb.ADD, link))
        elif link.name in recreated:
            ops.append(Op(Verb.DELETE, current))
            ops.append(Op(Verb.ADD, link))
        elif not _link_matches(current, link) or link.name in actual.unready:
            ops.append(Op(Verb.UPDATE, link))

    # 3. wanted objects.
    for entry in desired.neighbours:
        kept = keep_neigh.get((entry.dev, entry.ip))
        if kept is None:
            ops.append(Op(Verb.ADD, entry))
        elif kept != entry:
            ops.append(Op(Verb.UPDATE, entry))
    ops.extend(Op(Verb.ADD, fdb) for fdb in desired.fdb if fdb not in keep_fdb)
    for route in desired.routes:
        kept_route = keep_routes.get(route.dst)
        if kept_route is None:
            # A route for this dst that lived on a vanishing link is replaced, not new.
            ops.append(Op(Verb.UPDATE if route.dst in seen_dsts else Verb.ADD, route))
        elif kept_route != route:
            ops.append(Op(Verb.UPDATE, route))
    return SyncPlan(tuple(ops))
