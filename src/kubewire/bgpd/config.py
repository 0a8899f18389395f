"""Speaker and neighbour configuration: frozen views, checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from kubewire.bgp.decision import DecisionConfig
from kubewire.bgp.nlri import IPAddress, Prefix
from kubewire.bgp.path import PathAttributes
from kubewire.bgp.rib import Policy
from kubewire.bgpd.errors import ConfigError

BGP_PORT = 179


@dataclass(frozen=True, slots=True)
class NeighborConfig:
    """One peer. ``passive`` never connects, only accepts. ``connect_retry_time`` is the
    RFC 4271 ConnectRetryTimer; ``idle_hold_time`` how long a session rests in Idle after
    an error before it is started again (doubling on each failure up to
    ``connect_retry_time``). ``password`` turns on TCP MD5 (RFC 2385); ``ttl_security``
    is the GTSM hop count (RFC 5082: we send TTL 255 and accept only >= 256 - hops).
    ``keep_next_hop`` (eBGP only) passes learned routes on with their next hop unchanged
    instead of our own address (Calico's keepOriginalNextHop)."""

    address: IPAddress
    asn: int
    passive: bool = False
    hold_time: int = 90
    connect_retry_time: int = 30
    idle_hold_time: float = 1.0
    port: int = BGP_PORT
    local_address: IPAddress | None = None
    import_policy: Policy | None = None
    export_policy: Policy | None = None
    next_hop_self: bool = False
    rr_client: bool = False
    password: str | None = field(default=None, repr=False)  # never in a log line
    ttl_security: int | None = None
    keep_next_hop: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.asn <= 0xFFFFFFFF:
            raise ConfigError(f"neighbour {self.address}: AS {self.asn} is not 1..4294967295")
        if self.hold_time in (1, 2) or not 0 <= self.hold_time <= 0xFFFF:
            raise ConfigError(
                f"neighbour {self.address}: hold time {self.hold_time}; use 0 or 3..65535"
            )
        if self.connect_retry_time < 1:
            raise ConfigError(f"neighbour {self.address}: connect retry time must be >= 1 s")
        if self.password is not None and not 0 < len(self.password.encode()) <= 80:
            raise ConfigError(f"neighbour {self.address}: a TCP MD5 key has 1..80 octets")
        if self.ttl_security is not None and not 1 <= self.ttl_security <= 254:
            raise ConfigError(f"neighbour {self.address}: ttl_security hops must be 1..254")
        if self.local_address is not None and self.local_address.version != self.address.version:
            raise ConfigError(
                f"neighbour {self.address}: local address {self.local_address} is of the"
                " other address family"
            )


@dataclass(frozen=True, slots=True)
class Origination:
    """A prefix this speaker originates (a ``network`` statement), with its attributes;
    the next hop is filled in per session."""

    prefix: Prefix
    attrs: PathAttributes = field(default_factory=PathAttributes)


@dataclass(frozen=True, slots=True)
class SpeakerConfig:
    """``listen`` addresses accept connections on ``port`` (empty: never listen, every
    neighbour must then be active)."""

    asn: int
    router_id: IPv4Address
    neighbors: tuple[NeighborConfig, ...] = ()
    listen: tuple[IPAddress, ...] = (IPv4Address("0.0.0.0"),)
    port: int = BGP_PORT
    originate: tuple[Origination, ...] = ()
    cluster_id: IPv4Address | None = None
    always_compare_med: bool = False
    multipath: int = 1
    as_path_relax: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.asn <= 0xFFFFFFFF:
            raise ConfigError(f"local AS {self.asn} is not 1..4294967295")
        if int(self.router_id) == 0:
            raise ConfigError("router id 0.0.0.0 is not allowed (RFC 6286)")
        seen: set[IPAddress] = set()
        for n in self.neighbors:
            if n.address in seen:
                raise ConfigError(f"neighbour {n.address} is configured twice")
            seen.add(n.address)
        if not self.listen and any(n.passive for n in self.neighbors):
            raise ConfigError("a passive neighbour needs a listen address")

    def decision(self) -> DecisionConfig:
        return DecisionConfig(
            router_id=self.router_id,
            local_as=self.asn,
            always_compare_med=self.always_compare_med,
            multipath=self.multipath,
            as_path_relax=self.as_path_relax,
        )

    def neighbor(self, address: IPAddress | str) -> NeighborConfig | None:
        addr = ip_address(address) if isinstance(address, str) else address
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # an IPv4 peer reaching a dual-stack listener
        for n in self.neighbors:
            if n.address == addr:
                return n
        return None


def originations(*prefixes: str | Prefix) -> tuple[Origination, ...]:
    """Originations with default attributes (origin IGP, empty AS_PATH) for ``prefixes``."""
    out = []
    for p in prefixes:
        net = p if isinstance(p, IPv4Network | IPv6Network) else _network(p)
        out.append(Origination(net))
    return tuple(out)


def _network(text: str) -> Prefix:
    from ipaddress import ip_network

    try:
        return ip_network(text)
    except ValueError as e:
        raise ConfigError(f"prefix {text!r}: {e}") from None
