"""BGP-learned routes into a node's kernel routing table: the job BIRD's kernel protocol
and FRR's zebra do for their BGP daemons, for the `bgp` routing backend.

Two halves. `routes_from_changes` is pure: it turns the speaker's Loc-RIB changes
(`kubewire.bgp.rib.RibChange`) into one `BgpRoute` (or None: withdraw) per prefix.
`BgpRouteProgrammer` owns one netlink socket in the node namespace and writes those routes
into the main table, batched (up to 256 requests per datagram, one ack each), through the
hand-written codec in `kubewire.kernel.rtnl`.

Ownership: main-table IPv4 routes with protocol RTPROT_BGP (186, "proto bgp" in
`ip route`). Nothing else is ever replaced or deleted: deletes name protocol 186, and a
prefix we have not installed is added with NLM_F_EXCL, so a route of another protocol at
the same metric makes the kernel refuse (EEXIST) instead of being overwritten. Routes go in
at metric 20 (FRR's zebra also shows "proto bgp metric 20"): the kernel keys a route by
(prefix, tos, metric), so the routing package's own metric-0 routes (proto 75), connected
routes and pod routes for the same prefix coexist with ours and win while present.

ECMP is one route with RTA_MULTIPATH (`nexthop via A dev eth0 weight 1 nexthop via B ...`),
never several routes: the kernel hashes flows over the members (fib_multipath_hash_policy).
Replacing an ECMP route by a single-path one, or back, is one NLM_F_REPLACE.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from kubewire.bgp.decision import Decision
from kubewire.bgp.nlri import Prefix
from kubewire.bgp.rib import RibChange
from kubewire.kernel import rtnl
from kubewire.kernel.rtnl import Mode, NextHop, Rtnl
from kubewire.routing.model import RoutingError

__all__ = [
    "DEFAULT_METRIC",
    "RTPROT_BGP",
    "ApplyReport",
    "BgpRoute",
    "BgpRouteError",
    "BgpRouteProgrammer",
    "route_of",
    "routes_from_changes",
    "routes_from_loc_rib",
]

#: "proto bgp" in iproute2's rt_protos; every route this module installs carries it.
RTPROT_BGP = rtnl.RTPROT_BGP
#: The route metric (priority) BGP routes are installed with, as FRR's zebra does.
DEFAULT_METRIC = 20

_GONE = (errno.ESRCH, errno.ENOENT)
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg (linux/rtnetlink.h)
_U32 = struct.Struct("=I")
# struct rtnexthop (len, flags, hops, ifindex) followed by one nlattr header (len, type)
_OUR_RTNH = struct.Struct("=HBBiHH")
_RTA_GW = rtnl.RTA_GATEWAY


class BgpRouteError(RoutingError):
    """The programmer cannot work at all (namespace or device missing, socket failure)."""


@dataclass(frozen=True, slots=True)
class BgpRoute:
    """A kernel route for one BGP prefix; more than one next hop means ECMP.

    The next hops are kept sorted and without duplicates, so two routes with the same
    members compare equal whatever order the decision process listed them in."""

    dst: IPv4Network
    nexthops: tuple[IPv4Address, ...]

    def __post_init__(self) -> None:
        hops = tuple(sorted(set(self.nexthops)))
        if not hops:
            raise ValueError(f"a BGP route to {self.dst} needs at least one next hop")
        object.__setattr__(self, "nexthops", hops)

    @property
    def ecmp(self) -> bool:
        return len(self.nexthops) > 1

    def to_command(self, device: str = "eth0", metric: int = DEFAULT_METRIC) -> str:
        """The equivalent `ip route replace` line (docs, traces, the benchmark's peer)."""
        head = f"ip route replace {self.dst}"
        if not self.ecmp:
            return f"{head} via {self.nexthops[0]} dev {device} proto bgp metric {metric}"
        hops = " ".join(f"nexthop via {h} dev {device} weight 1" for h in self.nexthops)
        return f"{head} proto bgp metric {metric} {hops}"


# -- pure: Loc-RIB changes -> routes -----------------------------------------------------------


def route_of(
    dst: IPv4Network, decision: Decision | None, own: Collection[IPv4Address] = ()
) -> BgpRoute | None:
    """The kernel route for one Loc-RIB entry, or None when nothing should be installed.

    The next hops are those of the best path and of its ECMP (`multipath`) members. Paths
    we originate ourselves (peer None) are reached locally and are never installed; a next
    hop that is one of `own` (this node's addresses: e.g. a reflected copy of our own route
    whose next hop was left unchanged) is skipped: the kernel accepts such a route and the
    node would then send the packets to itself. A missing or IPv6 next hop is skipped too.
    No next hop left: None, which withdraws the prefix.
    """
    if decision is None or decision.best.peer is None:
        return None
    hops = set()
    for path in (decision.best, *decision.multipath):
        nh = path.attrs.next_hop
        if path.peer is None or not isinstance(nh, IPv4Address) or nh in own:
            continue
        hops.add(nh)
    return BgpRoute(dst, tuple(hops)) if hops else None


def routes_from_changes(
    changes: Iterable[RibChange], own: Collection[IPv4Address] = ()
) -> dict[IPv4Network, BgpRoute | None]:
    """Prefix -> route to install (None: withdraw) for a batch of speaker changes.

    IPv4 prefixes only (the lab's pod network is IPv4). A prefix changed twice in the batch
    gets its last state. Pass `own` as a set: it is tested once per path.
    """
    out: dict[IPv4Network, BgpRoute | None] = {}
    for change in changes:
        if isinstance(change.prefix, IPv4Network):
            out[change.prefix] = route_of(change.prefix, change.new, own)
    return out


def routes_from_loc_rib(
    loc: Mapping[Prefix, Decision], own: Collection[IPv4Address] = ()
) -> dict[IPv4Network, BgpRoute]:
    """Every route the whole Loc-RIB (`Rib.loc`) asks for: what `resync` takes."""
    out: dict[IPv4Network, BgpRoute] = {}
    for prefix, decision in loc.items():
        if isinstance(prefix, IPv4Network):
            route = route_of(prefix, decision, own)
            if route is not None:
                out[prefix] = route
    return out


# -- kernel --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What one `apply` or `resync` did. `failed` holds the routes the kernel refused
    (prefix, reason); the rest of the batch was applied all the same, as BIRD does."""

    added: int = 0
    replaced: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: tuple[tuple[IPv4Network, str], ...] = ()
    messages: int = 0  # netlink requests sent
    seconds: float = 0.0

    @property
    def changes(self) -> int:
        return self.added + self.replaced + self.deleted

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class _Tally:
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: list[tuple[IPv4Network, str]] = field(default_factory=list)
    messages: int = 0

    def report(self, started: float) -> ApplyReport:
        return ApplyReport(
            self.added,
            self.replaced,
            self.deleted,
            self.unchanged,
            tuple(sorted(self.failed)),
            self.messages,
            time.perf_counter() - started,
        )


@dataclass
class _Table:
    """The main table's IPv4 unicast routes (tos 0) that matter to the programmer."""

    #: proto 186 at our metric; None for one we would never make (another device, a
    #: weight, no gateway): replaced or deleted.
    ours: dict[IPv4Network, BgpRoute | None] = field(default_factory=dict)
    #: proto 186 at other metrics (prefix, metric): always deleted by a resync.
    elsewhere: list[tuple[IPv4Network, int]] = field(default_factory=list)
    #: prefix -> protocol of other protocols' routes at our metric: they block an add.
    foreign: dict[IPv4Network, int] = field(default_factory=dict)


# One planned request: (prefix, mode, route to install or None, metric to match).
_Op = tuple[IPv4Network, Mode, BgpRoute | None, int]


class BgpRouteProgrammer:
    """Installs BGP routes in the main table of the namespace at `netns_path`, next hops
    on `device`. Keeps its netlink socket open (close it, or use `with`: an open socket
    pins the namespace) and remembers what it installed, so an `apply` whose route is
    already in place sends nothing. Blocking and single-threaded: call it from one thread
    at a time (e.g. the speaker's `on_change` on its loop, or an executor fed in order).

    Call `resync(full)` first (at start-up, and to repair drift: it reads the table), then
    `apply(updates)` for each batch of changes.
    """

    def __init__(
        self, netns_path: Path | str, device: str = "eth0", *, metric: int = DEFAULT_METRIC
    ) -> None:
        self.netns_path = str(netns_path)
        self.device = device
        self.metric = metric
        self._sock: Rtnl | None = None
        self._installed: dict[IPv4Network, BgpRoute] = {}

    def __enter__(self) -> BgpRouteProgrammer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def installed(self) -> Mapping[IPv4Network, BgpRoute]:
        """What the programmer last put in (or, after `resync`, found in) the kernel."""
        return dict(self._installed)

    # -- the socket and the device -------------------------------------------------

    def _socket(self) -> Rtnl:
        if self._sock is None:
            if not os.path.exists(self.netns_path):
                raise BgpRouteError(f"node namespace {self.netns_path} does not exist")
            try:
                self._sock = Rtnl.open(self.netns_path)
            except OSError as exc:
                raise BgpRouteError(f"cannot open netlink in {self.netns_path}: {exc}") from exc
        return self._sock

    def _oif(self, sock: Rtnl) -> int:
        # Looked up on every call (one request): a recreated device gets a new ifindex.
        link = sock.link(self.device)
        if link is None:
            raise BgpRouteError(
                f"device {self.device} does not exist in {self.netns_path}; BGP next hops "
                f"must be reachable on it (create the node's underlay link first)"
            )
        return link.index

    def _broken(self, exc: OSError) -> BgpRouteError:
        # The socket may still hold replies of the failed batch, and what we believe is
        # installed may be wrong: start afresh (a later `resync` or EEXIST sorts it out).
        self.close()
        self._installed.clear()
        return BgpRouteError(f"netlink failed in {self.netns_path}: {exc}; apply or resync again")

    # -- changes ---------------------------------------------------------------------

    def apply(self, updates: Mapping[IPv4Network, BgpRoute | None]) -> ApplyReport:
        """Install, replace or delete (None) the given prefixes' routes; others untouched."""
        started = time.perf_counter()
        tally = _Tally()
        sock = self._socket()
        try:
            oif = self._oif(sock)
            ops: list[_Op] = []
            for dst, route in updates.items():
                have = self._installed.get(dst)
                if route is not None and route.dst is not dst and route.dst != dst:
                    raise ValueError(f"route {route} was given for prefix {dst}")
                if route is None:
                    ops.append((dst, Mode.DELETE, None, self.metric))
                elif have is not None and have.nexthops == route.nexthops:
                    tally.unchanged += 1
                else:
                    # EXCL for prefixes we have not installed: never overwrite a route of
                    # another protocol that happens to sit at our metric.
                    mode = Mode.ADD if have is None else Mode.REPLACE
                    ops.append((dst, mode, route, self.metric))
            collided = self._send(sock, oif, ops, tally)
            if collided:
                self._settle_collisions(sock, oif, collided, tally)
        except OSError as exc:
            raise self._broken(exc) from exc
        return tally.report(started)

    def resync(self, full: Mapping[IPv4Network, BgpRoute]) -> ApplyReport:
        """Make the table's proto-186 routes exactly `full`: read them, replace those that
        differ, add the missing ones and delete every other proto-186 route (stale ones,
        or ours at another metric). Routes of other protocols are only read."""
        started = time.perf_counter()
        tally = _Tally()
        sock = self._socket()
        try:
            oif = self._oif(sock)
            table = self._read(sock, oif)
            ops: list[_Op] = [(dst, Mode.DELETE, None, metric) for dst, metric in table.elsewhere]
            found: dict[IPv4Network, BgpRoute] = {}
            for dst, route in table.ours.items():
                want = full.get(dst)
                if want is None:
                    ops.append((dst, Mode.DELETE, None, self.metric))
                elif route is not None and route.nexthops == want.nexthops:
                    found[dst] = route
                    tally.unchanged += 1
                else:
                    ops.append((dst, Mode.REPLACE, want, self.metric))
            for dst, want in full.items():
                if dst in table.ours:
                    continue
                proto = table.foreign.get(dst)
                if proto is not None:
                    tally.failed.append((dst, _foreign_reason(dst, self.metric, proto)))
                else:
                    ops.append((dst, Mode.ADD, want, self.metric))
            # Deletes go first: one of them may free the prefix/metric key an add needs.
            ops.sort(key=lambda op: op[1] is not Mode.DELETE)
            self._installed = found
            collided = self._send(sock, oif, ops, tally)
            if collided:
                self._settle_collisions(sock, oif, collided, tally)
        except OSError as exc:
            raise self._broken(exc) from exc
        return tally.report(started)

    def read(self) -> dict[IPv4Network, BgpRoute]:
        """The proto-186 routes at our metric whose next hops all leave by `device`."""
        sock = self._socket()
        try:
            table = self._read(sock, self._oif(sock))
        except OSError as exc:
            raise self._broken(exc) from exc
        return {dst: route for dst, route in table.ours.items() if route is not None}

    # -- internals -------------------------------------------------------------------

    def _read(self, sock: Rtnl, oif: int) -> _Table:
        """The main table as far as the programmer cares (see `_Table`).

        Reads the dump's messages directly instead of through `rtnl.decode_route`: a
        resync of 100k routes spent more time building RouteInfo views and parsing dotted
        strings back into addresses than the kernel took to dump them."""
        table = _Table()
        gateways: dict[bytes, IPv4Address] = {}  # a table has few distinct next hops
        unpack_rtmsg = _RTMSG.unpack_from
        parse_attrs = rtnl.parse_attrs
        for msg in sock.dump(rtnl.RTM_GETROUTE, socket.AF_INET):
            _family, dst_len, _src, tos, table_id, proto, _scope, rtype, _flags = unpack_rtmsg(
                msg.payload
            )
            # Main-table routes carry 254 in the header itself (ids >= 256 say 252 there).
            if rtype != rtnl.RTN_UNICAST or table_id != rtnl.RT_TABLE_MAIN or tos:
                continue
            attrs = parse_attrs(msg.payload, _RTMSG.size)
            raw_priority = attrs.get(rtnl.RTA_PRIORITY)
            priority = _U32.unpack(raw_priority)[0] if raw_priority else 0
            raw_dst = attrs.get(rtnl.RTA_DST)
            dst = IPv4Network((int.from_bytes(raw_dst) if raw_dst else 0, dst_len))
            if priority != self.metric:
                if proto == RTPROT_BGP:
                    table.elsewhere.append((dst, priority))
            elif proto == RTPROT_BGP:
                table.ours[dst] = _as_route(dst, attrs, oif, gateways)
            else:
                table.foreign[dst] = proto
        return table

    def _encode(self, oif: int, ops: list[_Op]) -> list[bytes]:
        # Routes share a handful of next-hop sets: each set's attributes are encoded once,
        # and per route only the header and destination are packed.
        tails: dict[tuple[tuple[IPv4Address, ...], int], bytes] = {}
        messages: list[bytes] = []
        encode = rtnl.prefix_route_message
        for dst, mode, route, metric in ops:
            hops = route.nexthops if route is not None else ()
            tail = tails.get((hops, metric))
            if tail is None:
                members = [NextHop(str(h), oif) for h in hops]
                tail = tails[(hops, metric)] = rtnl.route_tail(members, priority=metric)
            messages.append(encode(0, mode, dst, tail, proto=RTPROT_BGP))
        return messages

    def _send(self, sock: Rtnl, oif: int, ops: list[_Op], tally: _Tally) -> list[_Op]:
        """Send the requests; count the outcomes; return the adds refused with EEXIST."""
        if not ops:
            return []
        acks = sock.transact_packed(self._encode(oif, ops))
        tally.messages += len(ops)
        collided: list[_Op] = []
        for op, ack in zip(ops, acks, strict=True):
            dst, mode, route, metric = op
            if mode is Mode.DELETE:
                if not ack.error:
                    tally.deleted += 1
                elif ack.error not in _GONE:  # already gone is what we wanted
                    tally.failed.append((dst, f"delete: {ack.describe()}"))
                if metric == self.metric:
                    self._installed.pop(dst, None)
                continue
            assert route is not None
            if ack.error == errno.EEXIST and mode is Mode.ADD:
                collided.append(op)
            elif ack.error:
                tally.failed.append((dst, _refusal(route, ack)))
                self._installed.pop(dst, None)
            else:
                if mode is Mode.ADD:
                    tally.added += 1
                else:
                    tally.replaced += 1
                self._installed[dst] = route
        return collided

    def _settle_collisions(self, sock: Rtnl, oif: int, collided: list[_Op], tally: _Tally) -> None:
        """An add met a route at our prefix and metric. If it is proto 186 (left by an
        earlier run, or added behind our back) it is ours to replace; otherwise it belongs
        to someone else and the prefix is reported as failed."""
        table = self._read(sock, oif)
        retry: list[_Op] = []
        for dst, _mode, route, metric in collided:
            if dst in table.ours:
                retry.append((dst, Mode.REPLACE, route, metric))
            else:
                proto = table.foreign.get(dst)
                reason = "add: the kernel says it exists, yet no route at that metric was read"
                if proto is not None:
                    reason = _foreign_reason(dst, metric, proto)
                tally.failed.append((dst, reason))
        for dst, _mode, _route, _metric in self._send(sock, oif, retry, tally):
            tally.failed.append((dst, "replace: refused with EEXIST"))


def _as_route(
    dst: IPv4Network, attrs: dict[int, bytes], oif: int, gateways: dict[bytes, IPv4Address]
) -> BgpRoute | None:
    """The BgpRoute a dumped proto-186 route equals, or None if we would never make it
    (another device, a weight, no gateway, any other per-hop attribute): such a route is
    replaced or deleted."""
    packed: list[bytes] = []
    multipath = attrs.get(rtnl.RTA_MULTIPATH)
    if multipath is not None:
        # Each member as we write it: a 16-byte rtnexthop (flags 0 or kernel-set state
        # flags, hops 0 = weight 1, our device) holding exactly one IPv4 RTA_GATEWAY.
        for offset in range(0, len(multipath), 16):
            if offset + 16 > len(multipath):
                return None
            length, _flags, extra, hop_oif, attr_len, attr_type = _OUR_RTNH.unpack_from(
                multipath, offset
            )
            if (length, extra, hop_oif, attr_len, attr_type) != (16, 0, oif, 8, _RTA_GW):
                return None
            packed.append(multipath[offset + 12 : offset + 16])
    else:
        raw_oif, gateway = attrs.get(rtnl.RTA_OIF), attrs.get(rtnl.RTA_GATEWAY)
        if raw_oif is None or _U32.unpack(raw_oif)[0] != oif or gateway is None:
            return None
        packed.append(gateway)
    addresses = []
    for raw in packed:
        address = gateways.get(raw)
        if address is None:
            if len(raw) != 4:
                return None
            address = gateways[raw] = IPv4Address(raw)
        addresses.append(address)
    if not addresses:
        return None
    route = BgpRoute(dst, tuple(addresses))
    return route if len(route.nexthops) == len(addresses) else None


def _foreign_reason(dst: IPv4Network, metric: int, proto: int) -> str:
    return (
        f"a route to {dst} of protocol {proto} already uses metric {metric}; the BGP route "
        f"programmer replaces only protocol {RTPROT_BGP} routes (remove that route or run the "
        f"programmer with another metric)"
    )


def _refusal(route: BgpRoute, ack: rtnl.Ack) -> str:
    text = ack.describe()
    if ack.error in (errno.ENETUNREACH, errno.EINVAL):
        text += " (each BGP next hop must be on a subnet of the programmer's device)"
    return f"{route.to_command()}: {text}"
