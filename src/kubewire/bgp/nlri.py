"""Prefixes in the NLRI encoding (RFC 4271 4.3, RFC 4760 5): a length octet, then just enough
octets to hold that many bits."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

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


def decode_prefixes(data: bytes, afi: Afi = Afi.IPV4) -> tuple[Prefix, ...]:
    """Parse a prefix list; raise NlriFormatError on a bad length or an overrun.

    Bits past the prefix length are ignored (RFC 4271 4.3: trailing bits are irrelevant)."""
    width = 4 if afi == Afi.IPV4 else 16
    maxlen = width * 8
    out: list[Prefix] = []
    i = 0
    end = len(data)
    while i < end:
        plen = data[i]
        if plen > maxlen:
            raise NlriFormatError(f"prefix length {plen} exceeds {maxlen}")
        n = (plen + 7) // 8
        if i + 1 + n > end:
            raise NlriFormatError(f"prefix /{plen} overruns the field by {i + 1 + n - end} octets")
        raw = bytearray(data[i + 1 : i + 1 + n])
        if plen % 8 and n:
            raw[-1] &= (0xFF << (8 - plen % 8)) & 0xFF
        raw += bytes(width - n)
        addr = int.from_bytes(raw, "big")
        out.append(IPv4Network((addr, plen)) if width == 4 else IPv6Network((addr, plen)))
        i += 1 + n
    return tuple(out)
