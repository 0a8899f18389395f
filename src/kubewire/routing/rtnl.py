"""A small sans-I/O rtnetlink codec: exactly the messages the routing applier needs.

Why not pyroute2 here: its generic message machinery costs ~0.5 ms per request and
~0.1 ms per dumped object, which made a no-op sync of one node in a 50-node cluster take
~25 ms. Packing a dozen fixed structs by hand costs microseconds, and lets the applier
send a whole phase of a sync as one netlink batch and collect the acks afterwards.

Layouts follow the kernel UAPI headers (linux/netlink.h, rtnetlink.h, if_link.h,
neighbour.h, if_addr.h). All integers are host byte order (little endian on the
machines we run on) except addresses and IFLA_VXLAN_PORT, which are network order.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

# rtnetlink.h message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

# rtmsg
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
RTN_UNSPEC, RTN_UNICAST = 0, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RT_TABLE_MAIN = 254
RTNH_F_ONLINK = 0x4

# ndmsg
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x02

# ifinfomsg
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 4, 18, 20
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL = 1, 3, 4
IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 7, 15
IFF_UP = 0x1

# ifaddrmsg
IFA_ADDRESS, IFA_LOCAL = 1, 2

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BBHiHBB")
_IFINFOMSG = struct.Struct("=BBHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_NLATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")


def _align(length: int) -> int:
    return (length + 3) & ~3


# -- attributes ----------------------------------------------------------------------------


def nla(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def nla_u32(kind: int, value: int) -> bytes:
    return nla(kind, _U32.pack(value))


def nla_str(kind: int, value: str) -> bytes:
    return nla(kind, value.encode() + b"\0")


def nla_ipv4(kind: int, value: str) -> bytes:
    return nla(kind, ipaddress.IPv4Address(value).packed)


def nla_mac(kind: int, value: str) -> bytes:
    return nla(kind, bytes.fromhex(value.replace(":", "")))


def nla_nested(kind: int, children: Iterable[bytes]) -> bytes:
    return nla(kind | NLA_F_NESTED, b"".join(children))


def parse_attrs(data: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    """Attribute type -> payload (flags masked off; a repeated type keeps the last)."""
    attrs: dict[int, bytes] = {}
    view = memoryview(data)
    while offset + _NLATTR.size <= len(view):
        length, kind = _NLATTR.unpack_from(view, offset)
        if length < _NLATTR.size or offset + length > len(view):
            break
        attrs[kind & NLA_TYPE_MASK] = bytes(view[offset + _NLATTR.size : offset + length])
        offset += _align(length)
    return attrs


def _u32(raw: bytes | None) -> int | None:
    return None if raw is None else int(_U32.unpack(raw[:4])[0])


def _ipv4(raw: bytes | None) -> str | None:
    return None if raw is None or len(raw) != 4 else socket.inet_ntoa(raw)


def _mac(raw: bytes | None) -> str | None:
    return None if raw is None else ":".join(f"{b:02x}" for b in raw)


def _str(raw: bytes | None) -> str | None:
    return None if raw is None else raw.split(b"\0", 1)[0].decode(errors="replace")


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NlMsg:
    type: int
    flags: int
    seq: int
    payload: bytes


def message(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags, seq, 0) + body


def parse_messages(data: bytes | memoryview) -> Iterator[NlMsg]:
    view = memoryview(data)
    offset = 0
    while offset + _NLMSGHDR.size <= len(view):
        length, msg_type, flags, seq, _pid = _NLMSGHDR.unpack_from(view, offset)
        if length < _NLMSGHDR.size or offset + length > len(view):
            raise ValueError(f"truncated netlink message at offset {offset}")
        yield NlMsg(msg_type, flags, seq, bytes(view[offset + _NLMSGHDR.size : offset + length]))
        offset += _align(length)


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    error: int  # a positive errno, 0 for success
    text: str | None = None  # the kernel's extended ack message, if any


def parse_ack(msg: NlMsg) -> Ack:
    (error,) = _I32.unpack_from(msg.payload, 0)
    text = None
    if msg.flags & NLM_F_ACK_TLVS:
        # With NETLINK_CAP_ACK the echoed request is only its header; TLVs follow it.
        orig_len = _NLMSGHDR.size
        if not msg.flags & NLM_F_CAPPED and len(msg.payload) >= 4 + _NLMSGHDR.size:
            orig_len = _NLMSGHDR.unpack_from(msg.payload, 4)[0]
        text = _str(parse_attrs(msg.payload, 4 + _align(orig_len)).get(NLMSGERR_ATTR_MSG))
    return Ack(msg.seq, -error, text)


def dump_request(msg_type: int, family: int, seq: int) -> bytes:
    fixed = {
        RTM_GETLINK: _IFINFOMSG.pack(family, 0, 0, 0, 0, 0),
        RTM_GETADDR: _IFADDRMSG.pack(family, 0, 0, 0, 0),
        RTM_GETROUTE: _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
        RTM_GETNEIGH: _NDMSG.pack(family, 0, 0, 0, 0, 0, 0),
    }[msg_type]
    return message(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, fixed)


# -- links ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VxlanInfo:
    vni: int
    link: int  # ifindex of the underlay device
    local: str
    learning: bool
    port: int


@dataclass(frozen=True, slots=True)
class LinkInfo:
    index: int
    up: bool
    name: str
    mtu: int
    mac: str | None
    alias: str | None
    kind: str | None
    vxlan: VxlanInfo | None


def decode_link(msg: NlMsg) -> LinkInfo:
    _family, _pad, _type, index, flags, _change = _IFINFOMSG.unpack_from(msg.payload)
    attrs = parse_attrs(msg.payload, _IFINFOMSG.size)
    kind = None
    vxlan = None
    if IFLA_LINKINFO in attrs:
        info = parse_attrs(attrs[IFLA_LINKINFO])
        kind = _str(info.get(IFLA_INFO_KIND))
        if kind == "vxlan" and IFLA_INFO_DATA in info:
            data = parse_attrs(info[IFLA_INFO_DATA])
            port = data.get(IFLA_VXLAN_PORT)
            vxlan = VxlanInfo(
                vni=_u32(data.get(IFLA_VXLAN_ID)) or 0,
                link=_u32(data.get(IFLA_VXLAN_LINK)) or 0,
                local=_ipv4(data.get(IFLA_VXLAN_LOCAL)) or "",
                learning=bool(data.get(IFLA_VXLAN_LEARNING, b"\0")[0]),
                port=struct.unpack("!H", port)[0] if port else 0,
            )
    return LinkInfo(
        index=index,
        up=bool(flags & IFF_UP),
        name=_str(attrs.get(IFLA_IFNAME)) or "",
        mtu=_u32(attrs.get(IFLA_MTU)) or 0,
        mac=_mac(attrs.get(IFLA_ADDRESS)),
        alias=_str(attrs.get(IFLA_IFALIAS)),
        kind=kind,
        vxlan=vxlan,
    )


def new_link(
    seq: int, name: str, kind: str, mtu: int, mac: str | None, vxlan: VxlanInfo | None
) -> bytes:
    data: list[bytes] = []
    if vxlan is not None:
        data = [
            nla_u32(IFLA_VXLAN_ID, vxlan.vni),
            nla_u32(IFLA_VXLAN_LINK, vxlan.link),
            nla_ipv4(IFLA_VXLAN_LOCAL, vxlan.local),
            nla(IFLA_VXLAN_LEARNING, bytes([1 if vxlan.learning else 0])),
            nla(IFLA_VXLAN_PORT, struct.pack("!H", vxlan.port)),
        ]
    info = [nla_str(IFLA_INFO_KIND, kind)]
    if data:
        info.append(nla_nested(IFLA_INFO_DATA, data))
    attrs = [nla_str(IFLA_IFNAME, name), nla_u32(IFLA_MTU, mtu), nla_nested(IFLA_LINKINFO, info)]
    if mac:
        attrs.append(nla_mac(IFLA_ADDRESS, mac))
    body = _IFINFOMSG.pack(0, 0, 0, 0, 0, 0) + b"".join(attrs)
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, body)


def set_link(
    seq: int, index: int, *, up: bool, mtu: int, mac: str | None, alias: str | None
) -> bytes:
    attrs = [nla_u32(IFLA_MTU, mtu)]
    if mac:
        attrs.append(nla_mac(IFLA_ADDRESS, mac))
    if alias is not None:
        attrs.append(nla_str(IFLA_IFALIAS, alias))
    body = _IFINFOMSG.pack(0, 0, 0, index, IFF_UP if up else 0, IFF_UP) + b"".join(attrs)
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def del_link(seq: int, index: int) -> bytes:
    body = _IFINFOMSG.pack(0, 0, 0, index, 0, 0)
    return message(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


# -- addresses -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddrInfo:
    index: int
    family: int
    prefixlen: int
    address: str | None


def decode_addr(msg: NlMsg) -> AddrInfo:
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(msg.payload)
    attrs = parse_attrs(msg.payload, _IFADDRMSG.size)
    address = _ipv4(attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS))
    return AddrInfo(index, family, prefixlen, address)


def addr_message(add: bool, seq: int, index: int, address: str, prefixlen: int) -> bytes:
    body = _IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index) + b"".join(
        (nla_ipv4(IFA_LOCAL, address), nla_ipv4(IFA_ADDRESS, address))
    )
    if add:
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        return message(RTM_NEWADDR, flags, seq, body)
    return message(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq, body)


# -- routes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteInfo:
    family: int
    dst: str
    dst_len: int
    tos: int
    table: int
    proto: int
    scope: int
    type: int
    flags: int
    gateway: str | None
    oif: int | None
    priority: int
    multipath: bool


def decode_route(msg: NlMsg) -> RouteInfo:
    family, dst_len, _src_len, tos, table, proto, scope, rtype, flags = _RTMSG.unpack_from(
        msg.payload
    )
    attrs = parse_attrs(msg.payload, _RTMSG.size)
    return RouteInfo(
        family=family,
        dst=_ipv4(attrs.get(RTA_DST)) or "0.0.0.0",
        dst_len=dst_len,
        tos=tos,
        table=_u32(attrs.get(RTA_TABLE)) or table,
        proto=proto,
        scope=scope,
        type=rtype,
        flags=flags,
        gateway=_ipv4(attrs.get(RTA_GATEWAY)),
        oif=_u32(attrs.get(RTA_OIF)),
        priority=_u32(attrs.get(RTA_PRIORITY)) or 0,
        multipath=RTA_MULTIPATH in attrs,
    )


def route_message(
    replace: bool,
    seq: int,
    *,
    dst: str,
    oif: int,
    gateway: str | None,
    onlink: bool,
    proto: int,
    table: int = RT_TABLE_MAIN,
) -> bytes:
    """RTM_NEWROUTE (create or replace) or RTM_DELROUTE for one IPv4 unicast route.

    Deletes use scope NOWHERE and type UNSPEC, the kernel's wildcards, so a route is
    found whatever scope it was created with (`ip route add ... dev X` makes scope link).
    """
    net = ipaddress.IPv4Network(dst)
    if replace:
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        rtype = RTN_UNICAST
    else:
        scope, rtype = RT_SCOPE_NOWHERE, RTN_UNSPEC
    header = _RTMSG.pack(
        socket.AF_INET,
        net.prefixlen,
        0,
        0,
        table if table < 256 else 252,  # RT_TABLE_COMPAT; RTA_TABLE carries the real id
        proto,
        scope,
        rtype,
        RTNH_F_ONLINK if onlink else 0,
    )
    attrs = [nla_ipv4(RTA_DST, str(net.network_address)), nla_u32(RTA_OIF, oif)]
    attrs.append(nla_u32(RTA_TABLE, table))
    if gateway:
        attrs.append(nla_ipv4(RTA_GATEWAY, gateway))
    if replace:
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        return message(RTM_NEWROUTE, flags, seq, header + b"".join(attrs))
    return message(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, seq, header + b"".join(attrs))


# -- neighbours and FDB --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeighInfo:
    family: int
    ifindex: int
    state: int
    flags: int
    dst: str | None
    lladdr: str | None


def decode_neigh(msg: NlMsg) -> NeighInfo:
    family, _pad1, _pad2, ifindex, state, flags, _ntype = _NDMSG.unpack_from(msg.payload)
    attrs = parse_attrs(msg.payload, _NDMSG.size)
    return NeighInfo(
        family=family,
        ifindex=ifindex,
        state=state,
        flags=flags,
        dst=_ipv4(attrs.get(NDA_DST)),
        lladdr=_mac(attrs.get(NDA_LLADDR)),
    )


def neigh_message(replace: bool, seq: int, *, ifindex: int, ip: str, mac: str) -> bytes:
    """A permanent IPv4 neighbour (ARP) entry: `ip neigh replace IP lladdr MAC nud permanent`."""
    body = _NDMSG.pack(socket.AF_INET, 0, 0, ifindex, NUD_PERMANENT, 0, 0)
    if replace:
        attrs = nla_ipv4(NDA_DST, ip) + nla_mac(NDA_LLADDR, mac)
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        return message(RTM_NEWNEIGH, flags, seq, body + attrs)
    return message(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, seq, body + nla_ipv4(NDA_DST, ip))


def fdb_message(add: bool, seq: int, *, ifindex: int, mac: str, dst: str) -> bytes:
    """A static VXLAN FDB entry: `bridge fdb append MAC dev VTEP dst DST`."""
    body = _NDMSG.pack(socket.AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT | NUD_NOARP, NTF_SELF, 0)
    attrs = nla_mac(NDA_LLADDR, mac) + nla_ipv4(NDA_DST, dst)
    if add:
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND
        return message(RTM_NEWNEIGH, flags, seq, body + attrs)
    return message(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, seq, body + attrs)
