"""Make a node namespace's routing objects equal to a `DesiredNodeNetwork` (the applier).

Ownership, so that nothing else in the namespace is touched:
- links: those whose alias (IFLA_IFALIAS) is `OWNER_ALIAS`, plus any link carrying a
  name the desired state wants (adopted, and recreated if its kind or attributes differ);
- routes: main-table IPv4 routes with protocol RTPROT_KUBEWIRE (75);
- neighbours: permanent entries on owned links; FDB: entries with a remote on owned links.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kubewire.kernel.netns import entered
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

_MAIN_TABLE = 254
_NUD_PERMANENT = 0x80
_RTNH_F_ONLINK = 0x4
_IFF_UP = 0x1


class RoutingKernel(Protocol):
    """The kernel boundary of the applier: a real netlink one and a validating fake."""

    def read_state(self, wanted_links: frozenset[str]) -> ActualState: ...

    def execute(self, op: Op) -> None: ...


def sync_with(kernel: RoutingKernel, desired: DesiredNodeNetwork) -> SyncReport:
    """Read, diff, apply. Returns what changed; a second call returns zero changes."""
    started = time.perf_counter()
    actual = kernel.read_state(frozenset(link.name for link in desired.links))
    plan = plan_sync(actual, desired)
    for op in plan.ops:
        kernel.execute(op)
    return plan.report(time.perf_counter() - started)


def sync_node_network(netns_path: Path | str, desired: DesiredNodeNetwork) -> SyncReport:
    """Program the node namespace at `netns_path` (e.g. /run/netns/NODE) to `desired`."""
    with NetlinkKernel.open(netns_path) as kernel:
        return sync_with(kernel, desired)


def read_node_network(netns_path: Path | str) -> ActualState:
    """The routing objects currently owned in a node namespace (for check/trace tools)."""
    with NetlinkKernel.open(netns_path) as kernel:
        return kernel.read_state(frozenset())


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


class NetlinkKernel:
    """RoutingKernel over a pyroute2 socket opened inside one network namespace."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr
        self._index: dict[str, int] = {}

    @classmethod
    @contextlib.contextmanager
    def open(cls, netns_path: Path | str) -> Iterator[NetlinkKernel]:
        if not os.path.exists(netns_path):
            raise SyncError(f"node namespace {netns_path} does not exist")
        with entered(netns_path):
            ipr = IPRoute()
        try:
            yield cls(ipr)
        finally:
            # An open socket pins the namespace: close it, or deleting the node leaks it.
            ipr.close()

    # -- reading ---------------------------------------------------------------------

    def read_state(self, wanted_links: frozenset[str]) -> ActualState:
        ipr = self._ipr
        raw_links = list(ipr.link("dump"))
        names = {msg["index"]: _attr(msg, "IFLA_IFNAME") for msg in raw_links}
        self._index = {name: index for index, name in names.items()}

        nets: dict[int, list[str]] = {index: [] for index in names}
        for msg in ipr.addr("dump", family=socket.AF_INET):
            address = _attr(msg, "IFA_LOCAL") or _attr(msg, "IFA_ADDRESS")
            nets.setdefault(msg["index"], []).append(f"{address}/{msg['prefixlen']}")

        links: list[Link] = []
        unready: set[str] = set()
        owned_index: dict[int, str] = {}
        vxlan_index: set[int] = set()
        for msg in raw_links:
            name = names[msg["index"]]
            if _attr(msg, "IFLA_IFALIAS") != OWNER_ALIAS and name not in wanted_links:
                continue
            kind, attrs = self._link_kind(msg, names)
            links.append(
                Link(
                    name=name,
                    kind=kind,
                    mtu=_attr(msg, "IFLA_MTU"),
                    attrs=attrs,
                    mac=_attr(msg, "IFLA_ADDRESS"),
                    addresses=tuple(nets.get(msg["index"], ())),
                )
            )
            if not msg["flags"] & _IFF_UP or _attr(msg, "IFLA_IFALIAS") != OWNER_ALIAS:
                unready.add(name)  # an adopted link gets its alias set by the update
            owned_index[msg["index"]] = name
            if kind == "vxlan":
                vxlan_index.add(msg["index"])

        routes: list[Route] = []
        for msg in ipr.route("dump", family=socket.AF_INET):
            table = _attr(msg, "RTA_TABLE") or msg["table"]
            if msg["proto"] != RTPROT_KUBEWIRE or table != _MAIN_TABLE:
                continue
            dst = _attr(msg, "RTA_DST") or "0.0.0.0"
            routes.append(
                Route(
                    dst=f"{dst}/{msg['dst_len']}",
                    gateway=_attr(msg, "RTA_GATEWAY"),
                    dev=names.get(_attr(msg, "RTA_OIF"), "?"),
                    onlink=bool(msg["flags"] & _RTNH_F_ONLINK),
                )
            )

        neighbours: list[Neighbour] = []
        if owned_index:
            for msg in ipr.neigh("dump", family=socket.AF_INET):
                if msg["ifindex"] in owned_index and msg["state"] & _NUD_PERMANENT:
                    neighbours.append(
                        Neighbour(
                            ip=_attr(msg, "NDA_DST"),
                            mac=_attr(msg, "NDA_LLADDR") or "00:00:00:00:00:00",
                            dev=owned_index[msg["ifindex"]],
                        )
                    )
        fdb: list[FdbEntry] = []
        if vxlan_index:
            for msg in ipr.fdb("dump"):
                remote = _attr(msg, "NDA_DST")
                if msg["ifindex"] in vxlan_index and remote:
                    fdb.append(
                        FdbEntry(
                            mac=_attr(msg, "NDA_LLADDR"),
                            dst_ip=remote,
                            dev=owned_index[msg["ifindex"]],
                        )
                    )

        return ActualState(
            links=tuple(links),
            unready=frozenset(unready),
            devices={names[index]: tuple(found) for index, found in nets.items()},
            routes=tuple(routes),
            neighbours=tuple(neighbours),
            fdb=tuple(fdb),
        )

    @staticmethod
    def _link_kind(
        msg: Any, names: dict[int, str]
    ) -> tuple[str, tuple[tuple[str, AttrValue], ...]]:
        info = _attr(msg, "IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if kind != "vxlan":
            return kind or "unknown", ()
        data = info.get_attr("IFLA_INFO_DATA")
        return kind, (
            ("dev", names.get(data.get_attr("IFLA_VXLAN_LINK"), "")),
            ("dstport", data.get_attr("IFLA_VXLAN_PORT")),
            ("learning", bool(data.get_attr("IFLA_VXLAN_LEARNING"))),
            ("local", data.get_attr("IFLA_VXLAN_LOCAL") or ""),
            ("vni", data.get_attr("IFLA_VXLAN_ID")),
        )

    # -- writing ---------------------------------------------------------------------

    def execute(self, op: Op) -> None:
        try:
            self._execute(op)
        except NetlinkError as exc:
            if op.verb is Verb.DELETE and exc.code in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
                return  # already gone (e.g. removed together with its link)
            if (
                op.verb is Verb.ADD
                and isinstance(op.obj, Link)
                and exc.code in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT)
            ):
                raise kernel_support_error(op.obj.kind) from None
            raise SyncError(
                f"the kernel refused to {op}: {os.strerror(exc.code)} "
                "(the node is partly synced; fix the cause and sync again)"
            ) from None

    def _ifindex(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            found = self._ipr.link_lookup(ifname=name)
            if not found:
                raise SyncError(f"device {name} vanished from the node namespace during sync")
            index = found[0]
            self._index[name] = index
        return index

    def _execute(self, op: Op) -> None:
        obj = op.obj
        ipr = self._ipr
        if isinstance(obj, Link):
            if op.verb is Verb.ADD:
                self._add_link(obj)
            elif op.verb is Verb.DELETE:
                ipr.link("del", index=self._ifindex(obj.name))
                self._index.pop(obj.name, None)
            else:
                self._update_link(obj)
        elif isinstance(obj, Route):
            spec: dict[str, Any] = {
                "dst": obj.dst,
                "oif": self._ifindex(obj.dev),
                "proto": RTPROT_KUBEWIRE,
                "table": _MAIN_TABLE,
            }
            if obj.gateway:
                spec["gateway"] = obj.gateway
            if obj.onlink:
                spec["flags"] = _RTNH_F_ONLINK
            ipr.route("del" if op.verb is Verb.DELETE else "replace", **spec)
        elif isinstance(obj, Neighbour):
            if op.verb is Verb.DELETE:
                ipr.neigh("del", dst=obj.ip, ifindex=self._ifindex(obj.dev))
            else:
                ipr.neigh(
                    "replace",
                    dst=obj.ip,
                    lladdr=obj.mac,
                    ifindex=self._ifindex(obj.dev),
                    state=_NUD_PERMANENT,
                )
        else:
            ipr.fdb(
                "del" if op.verb is Verb.DELETE else "append",
                ifindex=self._ifindex(obj.dev),
                lladdr=obj.mac,
                dst=obj.dst_ip,
            )

    def _add_link(self, link: Link) -> None:
        spec: dict[str, Any] = {"ifname": link.name, "kind": link.kind, "mtu": link.mtu}
        if link.mac:
            spec["address"] = link.mac
        if link.kind == "vxlan":
            spec.update(
                vxlan_id=link.attr("vni"),
                vxlan_port=link.attr("dstport"),
                vxlan_learning=1 if link.attr("learning") else 0,
                vxlan_local=link.attr("local"),
                vxlan_link=self._ifindex(str(link.attr("dev"))),
            )
        elif link.attrs:
            raise SyncError(f"the applier cannot create {link.kind} links with attributes")
        self._ipr.link("add", **spec)
        self._index.pop(link.name, None)
        self._update_link(link)

    def _update_link(self, link: Link) -> None:
        index = self._ifindex(link.name)
        spec: dict[str, Any] = {"mtu": link.mtu, "ifalias": OWNER_ALIAS}
        if link.mac:
            spec["address"] = link.mac
        self._ipr.link("set", index=index, **spec)
        self._ipr.link("set", index=index, state="up")
        have = {
            f"{_attr(msg, 'IFA_LOCAL') or _attr(msg, 'IFA_ADDRESS')}/{msg['prefixlen']}"
            for msg in self._ipr.addr("dump", family=socket.AF_INET)
            if msg["index"] == index
        }
        for cidr in have - set(link.addresses):
            address, prefixlen = cidr.split("/")
            self._ipr.addr("del", index=index, address=address, prefixlen=int(prefixlen))
        for cidr in link.addresses:
            if cidr not in have:
                address, prefixlen = cidr.split("/")
                self._ipr.addr("add", index=index, address=address, prefixlen=int(prefixlen))
