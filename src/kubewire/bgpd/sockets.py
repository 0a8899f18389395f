"""Sockets for BGP sessions: creation through a factory (so a caller can make them inside a
network namespace), TCP MD5 signatures (RFC 2385) and GTSM (RFC 5082)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address

from kubewire.bgp.nlri import IPAddress
from kubewire.bgpd.errors import ConfigError

SocketFactory = Callable[[int], socket.socket]
"""Returns a new, unbound TCP socket of the given family (AF_INET or AF_INET6)."""

TCP_MD5SIG = 14  # linux/tcp.h
IP_MINTTL = 21  # linux/in.h
IPV6_MINHOPCOUNT = 73  # linux/in6.h
_MD5_MAXKEYLEN = 80


def default_socket(family: int) -> socket.socket:
    return socket.socket(family, socket.SOCK_STREAM)


def family_of(address: IPAddress) -> int:
    return socket.AF_INET if isinstance(address, IPv4Address) else socket.AF_INET6


def set_md5(sock: socket.socket, peer: IPAddress, key: str | None) -> None:
    """Install (or with ``key`` None remove) the RFC 2385 key for ``peer`` on ``sock``: on a
    listener it covers connections from that peer, on a client socket set it before
    connecting. Raises ConfigError when the kernel has no TCP_MD5SIG."""
    raw = (key or "").encode()
    if len(raw) > _MD5_MAXKEYLEN:
        raise ConfigError(f"TCP MD5 key for {peer} is longer than 80 octets")
    if isinstance(peer, IPv4Address):
        addr = struct.pack("=HH4s", socket.AF_INET, 0, peer.packed)
    else:
        addr = struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, peer.packed, 0)
    # struct tcp_md5sig: sockaddr_storage (128), flags, prefixlen, keylen, ifindex, key[80]
    blob = addr.ljust(128, b"\0") + struct.pack("=BBHi", 0, 0, len(raw), 0) + raw.ljust(80, b"\0")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, blob)
    except OSError as e:
        raise ConfigError(
            f"cannot set the TCP MD5 key for {peer}: {e.strerror} (does this kernel have"
            " CONFIG_TCP_MD5SIG?)"
        ) from None


def set_ttl_255(sock: socket.socket) -> None:
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)


def set_gtsm(sock: socket.socket, hops: int) -> None:
    """RFC 5082: send with TTL 255, accept only packets with TTL >= 256 - hops."""
    set_ttl_255(sock)
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_MINTTL, 256 - hops)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MINHOPCOUNT, 256 - hops)
