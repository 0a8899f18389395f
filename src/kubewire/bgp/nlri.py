"""Prefixes in the NLRI encoding (RFC 4271 4.3, RFC 4760 5): a length octet, then just enough
octets to hold that many bits."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from kubewire.bgp.constants import Afi
from kubewire.bgp.errors import BgpError, EncodeError

Prefix = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address


class NlriFormatError(BgpError, ValueError):
    """Internal: a prefix list that does not parse. Callers turn it into the RFC reaction."""


def afi_of(prefix: Prefix) -> Afi:
    return Afi.IPV4 if prefix.version == 4 else Afi.IPV6


def encode_prefixes(prefixes: Iterable[Prefix], afi: Afi = Afi.IPV4) -> bytes:
    out = bytearray()
    for p in prefixes:
        if (p.version == 4) != (afi == Afi.IPV4):
            raise EncodeError(f"prefix {p} is not in address family {afi.name}")
        n = (p.prefixlen + 7) // 8
        out.append(p.prefixlen)
        out += p.network_address.packed[:n]
    return bytes(out)


class _Net4(IPv4Network):
    """An ``IPv4Network`` (equal to, and hashing like, one built the usual way) that is
    built from an int without parsing and computes its hash once. The RIBs hash a prefix
    some ten times per received route, and ``ipaddress`` recomputes the hash every time:
    that and the parsing were most of the receive path's time (see docs/benchmarks.md)."""

    _kw_hash: int

    def __hash__(self) -> int:
        try:
            return self._kw_hash
        except AttributeError:  # built the usual way (copy, pickle)
            h = self._kw_hash = IPv4Network.__hash__(self)
            return h

    def __repr__(self) -> str:
        return f"IPv4Network('{self}')"


class _Net6(IPv6Network):
    """The IPv6 counterpart of ``_Net4``."""

    _kw_hash: int

    def __hash__(self) -> int:
        try:
            return self._kw_hash
        except AttributeError:  # built the usual way (copy, pickle)
            h = self._kw_hash = IPv6Network.__hash__(self)
            return h

    def __repr__(self) -> str:
        return f"IPv6Network('{self}')"


_new = object.__new__
_MASKS4 = [IPv4Network._make_netmask(n) for n in range(33)]  # type: ignore[attr-defined]
_MASKS6 = [IPv6Network._make_netmask(n) for n in range(129)]  # type: ignore[attr-defined]
_MASK_INTS4 = [int(m) for m, _ in _MASKS4]
_MASK_INTS6 = [int(m) for m, _ in _MASKS6]


def _network(addr: int, plen: int, v4: bool) -> Prefix:
    """What ``IPv4Network((addr, plen))`` builds (``addr`` already masked), ten times faster."""
    net: Any  # ipaddress objects filled in by hand: typing cannot follow
    a: Any
    if v4:
        a = _new(IPv4Address)
        net, (mask, _) = _new(_Net4), _MASKS4[plen]
        mask_int = _MASK_INTS4[plen]
    else:
        a = _new(IPv6Address)
        a._scope_id = None
        net, (mask, _) = _new(_Net6), _MASKS6[plen]
        mask_int = _MASK_INTS6[plen]
    a._ip = addr
    # plain attribute stores keep the instance's values inline (no separate __dict__)
    net.network_address = a
    net.netmask = mask
    net._prefixlen = plen
    net._kw_hash = hash(addr ^ mask_int)
    maxlen = 32 if v4 else 128
    if plen == maxlen - 1:
        net.hosts = net.__iter__
    elif plen == maxlen:
        net.hosts = lambda: [a]
    out: Prefix = net
    return out


def decode_prefixes(data: bytes, afi: Afi = Afi.IPV4) -> tuple[Prefix, ...]:
    """Parse a prefix list; raise NlriFormatError on a bad length or an overrun.

    Bits past the prefix length are ignored (RFC 4271 4.3: trailing bits are irrelevant)."""
    v4 = afi == Afi.IPV4
    width = 4 if v4 else 16
    maxlen = width * 8
    masks = _MASK_INTS4 if v4 else _MASK_INTS6
    from_bytes = int.from_bytes
    out: list[Prefix] = []
    append = out.append
    i = 0
    end = len(data)
    while i < end:
        plen = data[i]
        if plen > maxlen:
            raise NlriFormatError(f"prefix length {plen} exceeds {maxlen}")
        n = (plen + 7) >> 3
        j = i + 1 + n
        if j > end:
            raise NlriFormatError(f"prefix /{plen} overruns the field by {j - end} octets")
        addr = (from_bytes(data[i + 1 : j], "big") << ((width - n) << 3)) & masks[plen]
        append(_network(addr, plen, v4))
        i = j
    return tuple(out)
