"""Prefixes in the NLRI encoding (RFC 4271 4.3, RFC 4760 5): a length octet, then just enough
octets to hold that many bits."""

from __future__ import annotations

import struct
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


# --- compact prefix keys ------------------------------------------------------------------
#
# The RIBs key their tables by one int per prefix and make ``IPv4Network``/``IPv6Network``
# objects only at the API edge: an ``ipaddress`` network costs ~1 us and ~350 bytes to
# build, an int 28-32 bytes, and its hash is free. The key is the prefix's NLRI encoding
# read as a big-endian number (length octet, then the octets that hold the prefix, bits past
# the length cleared), IPv6 keys with ``KEY_V6`` added: distinct for distinct prefixes (the
# length octet is never 0 once there are address octets, so the number of octets shows),
# read straight off the wire with ``struct``, and its low bits are the last address octet,
# which varies from prefix to prefix: a dict spreads them well. (``address << 8 | length``
# would give every /24 the same low 16 bits and make dict inserts probe and probe.)

KEY_V6 = 1 << 136  # above any IPv4 key (< 2**40) and any IPv6 encoding (17 octets)


def prefix_key(prefix: Prefix) -> int:
    plen = prefix.prefixlen
    n = (plen + 7) >> 3
    width = 32 if prefix.version == 4 else 128
    k = (plen << (n << 3)) | (int(prefix.network_address) >> (width - (n << 3)))
    return k if prefix.version == 4 else k | KEY_V6


def key_prefix(key: int) -> Prefix:
    """The network a key stands for (built without parsing, like decoded NLRI)."""
    v4 = key < KEY_V6
    if not v4:
        key ^= KEY_V6
    n = (key.bit_length() - 1) >> 3 if key else 0
    bits = n << 3
    plen = key >> bits
    width = 32 if v4 else 128
    return _network((key & ((1 << bits) - 1)) << (width - bits), plen, v4)


# Per encoded size of one IPv4 prefix (length octet and address octets): the struct code
# that reads it as one unsigned number, where there is one.
_RUN4 = {1: "B", 2: "H", 4: "I"}


def _key_masks(plen: int, width: int) -> int:
    """The bits of a key that a prefix of ``plen`` keeps: length octet and prefix bits."""
    n = (plen + 7) >> 3
    return (0xFF << (n << 3)) | (((1 << plen) - 1) << ((n << 3) - plen))


_KEY_MASKS4 = [_key_masks(n, 32) for n in range(33)]
_KEY_MASKS6 = [_key_masks(n, 128) for n in range(129)]


def decode_prefix_keys(data: bytes, afi: Afi = Afi.IPV4) -> list[int]:
    """``decode_prefixes`` as keys (see ``prefix_key``); raises NlriFormatError likewise.

    A run of IPv4 prefixes of one length of 0 to 1 or 3 octets (a full table sends many /24s)
    is checked with one slice comparison and read with one ``struct.unpack``; anything
    else goes prefix by prefix."""
    end = len(data)
    if not end:
        return []
    if afi == Afi.IPV4:
        plen = data[0]
        n = (plen + 7) >> 3
        code = _RUN4.get(n + 1)
        count = end // (n + 1)
        if (code is not None and plen <= 32 and count * (n + 1) == end
                and data[:: n + 1] == bytes((plen,)) * count):
            words = struct.unpack(f">{count}{code}", data)
            if plen & 7 == 0:
                return list(words)
            mask = _KEY_MASKS4[plen]
            return [w & mask for w in words]
    v4 = afi == Afi.IPV4
    maxlen = 32 if v4 else 128
    masks = _KEY_MASKS4 if v4 else _KEY_MASKS6
    flag = 0 if v4 else KEY_V6
    from_bytes = int.from_bytes
    out: list[int] = []
    append = out.append
    i = 0
    while i < end:
        plen = data[i]
        if plen > maxlen:
            raise NlriFormatError(f"prefix length {plen} exceeds {maxlen}")
        j = i + 1 + ((plen + 7) >> 3)
        if j > end:
            raise NlriFormatError(f"prefix /{plen} overruns the field by {j - end} octets")
        append((from_bytes(data[i:j], "big") & masks[plen]) | flag)
        i = j
    return out
