"""Routes as the RIBs and the decision process see them: a prefix, its attributes as typed
fields (not wire order), and where it came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from operator import attrgetter
from typing import Any

from kubewire.bgp.attributes import (
    Aggregator,
    AsPath,
    AtomicAggregate,
    Attribute,
    ClusterList,
    Communities,
    ExtendedCommunities,
    LargeCommunities,
    LargeCommunity,
    LocalPref,
    MpReachNlri,
    MpUnreachNlri,
    MultiExitDisc,
    NextHop,
    OriginatorId,
    OriginAttr,
    UnknownAttribute,
)
from kubewire.bgp.constants import Afi, Origin, Safi
from kubewire.bgp.nlri import IPAddress, Prefix
from kubewire.bgp.update import Update


@dataclass(frozen=True, slots=True)
class PathAttributes:
    """The attributes of one path. ``med``/``local_pref`` are None when absent."""

    origin: Origin = Origin.IGP
    as_path: AsPath = field(default_factory=AsPath)
    next_hop: IPAddress | None = None
    next_hop_link_local: IPv6Address | None = None
    med: int | None = None
    local_pref: int | None = None
    atomic_aggregate: bool = False
    aggregator: Aggregator | None = None
    communities: tuple[int, ...] = ()
    extended_communities: tuple[int, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    originator_id: IPv4Address | None = None
    cluster_list: tuple[IPv4Address, ...] = ()
    unknown: tuple[UnknownAttribute, ...] = ()

    @classmethod
    def from_update(cls, update: Update, afi: Afi = Afi.IPV4) -> PathAttributes:
        return cls.from_attributes(update.attributes, afi)

    @classmethod
    def from_attributes(
        cls, attributes: tuple[Attribute, ...], afi: Afi = Afi.IPV4
    ) -> PathAttributes:
        if cls is PathAttributes and afi is Afi.IPV4:
            fast = _from_common(attributes)
            if fast is not None:
                return fast
        kw: dict[str, object] = {}
        unknown: list[UnknownAttribute] = []
        for a in attributes:
            if isinstance(a, OriginAttr):
                kw["origin"] = a.origin
            elif isinstance(a, AsPath):
                kw["as_path"] = a
            elif isinstance(a, NextHop) and afi == Afi.IPV4:
                kw["next_hop"] = a.address
            elif isinstance(a, MultiExitDisc):
                kw["med"] = a.value
            elif isinstance(a, LocalPref):
                kw["local_pref"] = a.value
            elif isinstance(a, AtomicAggregate):
                kw["atomic_aggregate"] = True
            elif isinstance(a, Aggregator):
                kw["aggregator"] = a
            elif isinstance(a, Communities):
                kw["communities"] = a.values
            elif isinstance(a, ExtendedCommunities):
                kw["extended_communities"] = a.values
            elif isinstance(a, LargeCommunities):
                kw["large_communities"] = a.values
            elif isinstance(a, OriginatorId):
                kw["originator_id"] = a.router_id
            elif isinstance(a, ClusterList):
                kw["cluster_list"] = a.cluster_ids
            elif isinstance(a, MpReachNlri) and a.afi == afi:
                kw["next_hop"] = a.next_hops[0]
                if len(a.next_hops) > 1 and isinstance(a.next_hops[1], IPv6Address):
                    kw["next_hop_link_local"] = a.next_hops[1]
            elif isinstance(a, UnknownAttribute):
                unknown.append(a)
        kw["unknown"] = tuple(unknown)
        return cls(**kw)  # type: ignore[arg-type]

    def to_attributes(self) -> tuple[Attribute, ...]:
        """Path attributes in type-code order, without NEXT_HOP and MP_REACH_NLRI (those
        depend on the address family: see ``to_update``)."""
        out: list[Attribute] = [OriginAttr(self.origin), self.as_path]
        if self.med is not None:
            out.append(MultiExitDisc(self.med))
        if self.local_pref is not None:
            out.append(LocalPref(self.local_pref))
        if self.atomic_aggregate:
            out.append(AtomicAggregate())
        if self.aggregator is not None:
            out.append(self.aggregator)
        if self.communities:
            out.append(Communities(self.communities))
        if self.originator_id is not None:
            out.append(OriginatorId(self.originator_id))
        if self.cluster_list:
            out.append(ClusterList(self.cluster_list))
        if self.extended_communities:
            out.append(ExtendedCommunities(self.extended_communities))
        if self.large_communities:
            out.append(LargeCommunities(self.large_communities))
        out.extend(self.unknown)
        return tuple(out)

    def to_update(self, prefixes: tuple[Prefix, ...]) -> Update:
        """One UPDATE announcing ``prefixes`` (all of one family) with these attributes."""
        if not prefixes:
            return Update(attributes=self.to_attributes())
        if prefixes[0].version == 4 and (self.next_hop is None or self.next_hop.version == 4):
            nh = self.next_hop or IPv4Address(0)
            assert isinstance(nh, IPv4Address)
            attrs = (*self.to_attributes()[:2], NextHop(nh), *self.to_attributes()[2:])
            return Update(attributes=attrs, nlri=prefixes)  # type: ignore[arg-type]
        afi = Afi.IPV4 if prefixes[0].version == 4 else Afi.IPV6
        hops: tuple[IPAddress, ...] = (self.next_hop or ip_address("::"),)
        if self.next_hop_link_local is not None:
            hops += (self.next_hop_link_local,)
        mp = MpReachNlri(afi, Safi.UNICAST, hops, prefixes)
        return Update(attributes=(mp, *self.to_attributes()))

    def has_community(self, value: int) -> bool:
        return value in self.communities

    def with_(self, **changes: object) -> PathAttributes:
        return replace(self, **changes)  # type: ignore[arg-type]


_FIELDS = [f.name for f in fields(PathAttributes)]
_INDEX = {name: i for i, name in enumerate(_FIELDS)}
_DEFAULTS = [getattr(PathAttributes(), name) for name in _FIELDS]
_SETTERS = [getattr(PathAttributes, name).__set__ for name in _FIELDS]
# the IPv4 fields the attributes a full table carries fill, by the attribute's exact type
# (isinstance against these ABC subclasses goes through ABCMeta.__instancecheck__)
_COMMON: dict[type, tuple[int, Callable[[Any], object]]] = {
    OriginAttr: (_INDEX["origin"], attrgetter("origin")),
    AsPath: (_INDEX["as_path"], lambda a: a),
    NextHop: (_INDEX["next_hop"], attrgetter("address")),
    MultiExitDisc: (_INDEX["med"], attrgetter("value")),
    LocalPref: (_INDEX["local_pref"], attrgetter("value")),
    Communities: (_INDEX["communities"], attrgetter("values")),
}


def _from_common(attributes: tuple[Attribute, ...]) -> PathAttributes | None:
    """``PathAttributes.from_attributes(attributes)`` (IPv4) when every attribute is of a
    ``_COMMON`` type, else None; built through the slot descriptors, as the dataclass
    __init__ would set the fields through object.__setattr__ one by one."""
    values = _DEFAULTS.copy()
    for a in attributes:
        how = _COMMON.get(type(a))
        if how is None:
            return None
        values[how[0]] = how[1](a)
    out = object.__new__(PathAttributes)
    for put, v in zip(_SETTERS, values, strict=True):
        put(out, v)
    return out


def withdraw_update(prefixes: tuple[Prefix, ...]) -> Update:
    if prefixes and prefixes[0].version == 6:
        return Update(attributes=(MpUnreachNlri(Afi.IPV6, Safi.UNICAST, prefixes),))
    return Update(withdrawn=prefixes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Peer:
    """A neighbour as the RIB sees it. ``router_id`` is the BGP Identifier from its OPEN."""

    address: IPAddress
    asn: int
    router_id: IPv4Address
    local_as: int
    rr_client: bool = False

    @property
    def ebgp(self) -> bool:
        return self.asn != self.local_as


@dataclass(frozen=True, slots=True)
class Path:
    """One candidate route. ``peer`` None means locally originated.

    ``weight`` is the local, vendor-style preference (never sent); ``igp_cost`` the cost to
    reach the next hop (None: unresolvable, the path cannot be used, RFC 4271 9.1.2);
    ``received`` orders arrival (for the optional oldest-eBGP step)."""

    prefix: Prefix
    attrs: PathAttributes
    peer: Peer | None = None
    weight: int = 0
    igp_cost: int | None = 0
    received: int = 0

    @property
    def local(self) -> bool:
        return self.peer is None

    @property
    def ebgp(self) -> bool:
        return self.peer is not None and self.peer.ebgp

    def describe(self) -> str:
        src = "local" if self.peer is None else f"{self.peer.address} (AS {self.peer.asn})"
        return f"{self.prefix} via {self.attrs.next_hop} from {src}"
