"""Make a node namespace's routing objects equal to a `DesiredNodeNetwork` (the applier).

Ownership, so that nothing else in the namespace is touched:
- links: those whose alias (IFLA_IFALIAS) is `OWNER_ALIAS`, plus any link carrying a
  name the desired state wants (adopted, and recreated if its kind or attributes differ);
- routes: main-table IPv4 routes with protocol RTPROT_KUBEWIRE (75);
- neighbours: permanent entries on owned links; FDB: entries with a remote on owned links.

Each sync reads five netlink dumps, then sends its changes in at most a few batches
(stale objects; each link change; new objects), one datagram per batch with one ack per
message, through the hand-written codec in `kubewire.kernel.rtnl`.

Netlink has no transactions. The whole plan is computed and validated before the first
change, so bad input changes nothing; if the kernel refuses a step half-way, the next
sync converges from wherever it stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from kubewire.kernel import rtnl
from kubewire.kernel.rtnl import Builder, Mode, Rtnl
from kubewire.routing.model import (
    RTPROT_KUBEWIRE,
    AttrValue,
    DesiredNodeNetwork,
    FdbEntry,
    Link,
    Neighbour,
    Route,
    SyncError,
    kernel_support_error,
)
from kubewire.routing.plan import ActualState, Op, SyncReport, Verb, plan_sync

#: Alias set on every link the routing package creates (`ip -d link` shows "alias ...").
OWNER_ALIAS = "kubewire-routing"

_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)


class RoutingKernel(Protocol):
    """The kernel boundary of the applier: a real netlink one and a validating fake."""

    def read_state(self, wanted_links: frozenset[str]) -> ActualState: ...

    def apply(self, ops: Sequence[Op]) -> None: ...


def sync_with(kernel: RoutingKernel, desired: DesiredNodeNetwork) -> SyncReport:
    """Read, diff, apply. Returns what changed; a second call returns zero changes."""
    started = time.perf_counter()
    actual = kernel.read_state(frozenset(link.name for link in desired.links))
    plan = plan_sync(actual, desired)
    kernel.apply(plan.ops)
    return plan.report(time.perf_counter() - started)


def sync_node_network(netns_path: Path | str, desired: DesiredNodeNetwork) -> SyncReport:
    """Program the node namespace at `netns_path` (e.g. /run/netns/NODE) to `desired`.

    Blocking; safe to call from any thread (the thread enters the namespace only to open
    a socket). Run at most one sync per node at a time.
    """
    try:
        with NetlinkKernel.open(netns_path) as kernel:
            return sync_with(kernel, desired)
    except OSError as exc:
        raise SyncError(f"cannot program node namespace {netns_path}: {exc}") from exc


def read_node_network(netns_path: Path | str) -> ActualState:
    """The routing objects currently owned in a node namespace (for check/trace tools)."""
    try:
        with NetlinkKernel.open(netns_path) as kernel:
            return kernel.read_state(frozenset())
    except OSError as exc:
        raise SyncError(f"cannot read node namespace {netns_path}: {exc}") from exc


class NetlinkKernel:
    """RoutingKernel over a netlink socket opened inside one network namespace."""

    def __init__(self, sock: Rtnl) -> None:
        self._sock = sock
        self._index: dict[str, int] = {}
        self._addresses: dict[str, tuple[str, ...]] = {}

    @classmethod
    @contextlib.contextmanager
    def open(cls, netns_path: Path | str) -> Iterator[NetlinkKernel]:
        if not os.path.exists(netns_path):
            raise SyncError(f"node namespace {netns_path} does not exist")
        with Rtnl.open(netns_path) as sock:
            yield cls(sock)

    # -- reading ---------------------------------------------------------------------

    def _dump(self, msg_type: int, family: int = socket.AF_UNSPEC) -> list[rtnl.NlMsg]:
        try:
            return self._sock.dump(msg_type, family)
        except rtnl.DumpInterruptedError:
            raise SyncError(
                "netlink dumps kept being interrupted by concurrent changes; retry"
            ) from None
        except rtnl.NetlinkError as exc:
            raise SyncError(f"netlink dump failed: {os.strerror(exc.errno or 0)}") from None

    def _read_links(self) -> list[rtnl.LinkInfo]:
        links = [rtnl.decode_link(m) for m in self._dump(rtnl.RTM_GETLINK)]
        self._index = {link.name: link.index for link in links}
        return links

    def read_state(self, wanted_links: frozenset[str]) -> ActualState:
        raw_links = self._read_links()
        names = {link.index: link.name for link in raw_links}
        nets: dict[int, list[str]] = {index: [] for index in names}
        for msg in self._dump(rtnl.RTM_GETADDR, socket.AF_INET):
            addr = rtnl.decode_addr(msg)
            if addr.address is not None and addr.index in nets:
                nets[addr.index].append(f"{addr.address}/{addr.prefixlen}")

        links: list[Link] = []
        unready: set[str] = set()
        owned_index: dict[int, str] = {}
        vxlan_index: set[int] = set()
        for raw in raw_links:
            if raw.alias != OWNER_ALIAS and raw.name not in wanted_links:
                continue
            links.append(
                Link(
                    name=raw.name,
                    kind=raw.kind or "unknown",
                    mtu=raw.mtu,
                    attrs=_link_attrs(raw, names),
                    mac=raw.mac,
                    addresses=tuple(nets[raw.index]),
                )
            )
            if not raw.up or raw.alias != OWNER_ALIAS:
                unready.add(raw.name)  # an adopted link gets its alias set by the update
            owned_index[raw.index] = raw.name
            if raw.kind == "vxlan":
                vxlan_index.add(raw.index)
        self._addresses = {link.name: link.addresses for link in links}

        routes: list[Route] = []
        for msg in self._dump(rtnl.RTM_GETROUTE, socket.AF_INET):
            route = rtnl.decode_route(msg)
            if route.proto != RTPROT_KUBEWIRE or route.table != rtnl.RT_TABLE_MAIN:
                continue
            routes.append(
                Route(
                    dst=f"{route.dst}/{route.dst_len}",
                    gateway=route.gateway,
                    dev=names.get(route.oif or 0, "?"),
                    onlink=bool(route.flags & rtnl.RTNH_F_ONLINK),
                )
            )

        neighbours: list[Neighbour] = []
        fdb: list[FdbEntry] = []
        if owned_index:
            for msg in self._dump(rtnl.RTM_GETNEIGH, socket.AF_INET):
                neigh = rtnl.decode_neigh(msg)
                if (
                    neigh.ifindex in owned_index
                    and neigh.state & rtnl.NUD_PERMANENT
                    and neigh.dst is not None
                ):
                    neighbours.append(
                        Neighbour(
                            ip=neigh.dst,
                            mac=neigh.lladdr or "00:00:00:00:00:00",
                            dev=owned_index[neigh.ifindex],
                        )
                    )
        if vxlan_index:
            for msg in self._dump(rtnl.RTM_GETNEIGH, socket.AF_BRIDGE):
                entry = rtnl.decode_neigh(msg)
                # IPv4 remotes only: the VTEPs this package creates have an IPv4 underlay.
                if entry.ifindex in vxlan_index and entry.dst and "." in entry.dst and entry.lladdr:
                    fdb.append(
                        FdbEntry(mac=entry.lladdr, dst_ip=entry.dst, dev=owned_index[entry.ifindex])
                    )

        return ActualState(
            links=tuple(links),
            unready=frozenset(unready),
            devices={names[index]: tuple(found) for index, found in nets.items()},
            routes=tuple(routes),
            neighbours=tuple(neighbours),
            fdb=tuple(fdb),
        )

    # -- writing ---------------------------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> None:
        batch: list[Op] = []
        for op in ops:
            if isinstance(op.obj, Link):
                self._apply_batch(batch)
                batch = []
                self._apply_link(op.verb, op.obj)
            else:
                batch.append(op)
        self._apply_batch(batch)

    def _ifindex(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            raise SyncError(f"device {name} vanished from the node namespace during sync")
        return index

    def _encode(self, op: Op) -> Builder:
        obj = op.obj
        keep = op.verb is not Verb.DELETE
        if isinstance(obj, Route):
            oif = self._ifindex(obj.dev)
            mode = Mode.REPLACE if keep else Mode.DELETE
            return lambda seq: rtnl.route_message(
                seq, mode, obj.dst, oif, obj.gateway, onlink=obj.onlink, proto=RTPROT_KUBEWIRE
            )
        if isinstance(obj, Neighbour):
            index = self._ifindex(obj.dev)
            mode = Mode.REPLACE if keep else Mode.DELETE
            return lambda seq: rtnl.neigh_message(seq, mode, index, obj.ip, obj.mac)
        if isinstance(obj, FdbEntry):
            index = self._ifindex(obj.dev)
            mode = Mode.APPEND if keep else Mode.DELETE
            return lambda seq: rtnl.fdb_message(seq, mode, index, obj.mac, obj.dst_ip)
        raise TypeError(f"links are not batched: {op}")

    def _apply_batch(self, batch: Sequence[Op]) -> None:
        if not batch:
            return
        acks = self._sock.transact([self._encode(op) for op in batch])
        failed = [(op, ack) for op, ack in zip(batch, acks, strict=True) if ack.error]
        if any(op.verb is Verb.DELETE and ack.error in _GONE for op, ack in failed):
            # Someone else removed it meanwhile: fine, unless it is in fact still there.
            state = self.read_state(frozenset())
            present = {*state.routes, *state.neighbours, *state.fdb}
            failed = [
                (op, ack)
                for op, ack in failed
                if not (op.verb is Verb.DELETE and ack.error in _GONE and op.obj not in present)
            ]
        if failed:
            op, ack = failed[0]
            raise SyncError(
                f"the kernel refused {len(failed)} of {len(batch)} changes; first: {op}: "
                f"{ack.describe()} (the node is partly synced; fix the cause and sync again)"
            )

    def _check(self, what: str, acks: Sequence[rtnl.Ack]) -> None:
        for ack in acks:
            if ack.error:
                raise SyncError(f"the kernel refused to {what}: {ack.describe()}")

    def _apply_link(self, verb: Verb, link: Link) -> None:
        if verb is Verb.DELETE:
            index = self._ifindex(link.name)
            (ack,) = self._sock.transact([lambda seq: rtnl.del_link(seq, index)])
            if ack.error and ack.error not in _GONE:
                self._check(f"delete link {link.name}", [ack])
            self._index.pop(link.name, None)
            return
        if verb is Verb.ADD:
            self._create_link(link)
            self._read_links()
            self._addresses[link.name] = ()
        self._converge_link(link)

    def _create_link(self, link: Link) -> None:
        vxlan = None
        if link.kind == "vxlan":
            vxlan = rtnl.VxlanInfo(
                vni=int(link.attr("vni") or 0),
                link=self._ifindex(str(link.attr("dev"))),
                local=str(link.attr("local")),
                learning=bool(link.attr("learning")),
                port=int(link.attr("dstport") or 0),
            )
        elif link.attrs:
            raise SyncError(f"the applier cannot create {link.kind} links with attributes")
        (ack,) = self._sock.transact(
            [
                lambda seq: rtnl.new_link(
                    seq, link.name, link.kind, mtu=link.mtu, mac=link.mac, vxlan=vxlan
                )
            ]
        )
        if ack.error in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT):
            raise kernel_support_error(link.kind)
        self._check(f"create link {link.name} ({link.kind})", [ack])

    def _converge_link(self, link: Link) -> None:
        index = self._ifindex(link.name)
        have = set(self._addresses.get(link.name, ()))
        builders: list[Builder] = [
            lambda seq: rtnl.set_link(
                seq, index, up=True, mtu=link.mtu, mac=link.mac, alias=OWNER_ALIAS
            )
        ]
        for cidr, add in [
            *((c, False) for c in sorted(have - set(link.addresses))),
            *((c, True) for c in link.addresses if c not in have),
        ]:
            builders.append(_addr_builder(add, index, cidr))
        self._check(f"configure link {link.name}", self._sock.transact(builders))
        self._addresses[link.name] = link.addresses


def _addr_builder(add: bool, index: int, cidr: str) -> Builder:
    mode = Mode.REPLACE if add else Mode.DELETE
    return lambda seq: rtnl.addr_message(seq, mode, index, cidr)


def _link_attrs(raw: rtnl.LinkInfo, names: dict[int, str]) -> tuple[tuple[str, AttrValue], ...]:
    if raw.vxlan is None:
        return ()
    return (
        ("dev", names.get(raw.vxlan.link, "")),
        ("dstport", raw.vxlan.port),
        ("learning", raw.vxlan.learning),
        ("local", raw.vxlan.local),
        ("vni", raw.vxlan.vni),
    )
