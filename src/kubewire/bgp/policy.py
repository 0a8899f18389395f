"""Import/export policies: ordered terms of match conditions and attribute changes.

A ``RoutePolicy`` is a callable ``Path -> Path | None`` (the ``Policy`` type ``Rib`` takes).
Terms are tried in order; the first whose match holds applies its changes and then accepts,
rejects, or (``NEXT``) carries the changed path on to the following terms. A path no term
decides gets the policy's default. Prefix lists follow the usual ge/le reading: without
either, the length must be exact; ``ge`` alone means up to the family maximum; ``le`` alone
means from the entry's own length.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from ipaddress import IPv4Network, IPv6Network, ip_network

from kubewire.bgp.attributes import LargeCommunity
from kubewire.bgp.errors import BgpError
from kubewire.bgp.nlri import IPAddress, Prefix
from kubewire.bgp.path import Path


class PolicyError(BgpError, ValueError):
    """A policy that cannot work as written (a ge/le outside the prefix's family, a bad
    prefix list line). The message names the entry; fix the configuration."""


@dataclass(frozen=True, slots=True)
class PrefixEntry:
    prefix: Prefix
    ge: int | None = None
    le: int | None = None
    permit: bool = True

    def __post_init__(self) -> None:
        maxlen = self.prefix.max_prefixlen
        lo, hi = self.bounds()
        if not self.prefix.prefixlen <= lo <= hi <= maxlen:
            raise PolicyError(
                f"prefix list entry {self.prefix} ge {self.ge} le {self.le}: need "
                f"{self.prefix.prefixlen} <= ge <= le <= {maxlen}"
            )

    def bounds(self) -> tuple[int, int]:
        if self.ge is None and self.le is None:
            return self.prefix.prefixlen, self.prefix.prefixlen
        lo = self.ge if self.ge is not None else self.prefix.prefixlen
        hi = self.le if self.le is not None else self.prefix.max_prefixlen
        return lo, hi

    def matches(self, p: Prefix) -> bool:
        if p.version != self.prefix.version:
            return False
        lo, hi = self.bounds()
        if not lo <= p.prefixlen <= hi:
            return False
        if isinstance(p, IPv4Network) and isinstance(self.prefix, IPv4Network):
            return p.subnet_of(self.prefix)
        if isinstance(p, IPv6Network) and isinstance(self.prefix, IPv6Network):
            return p.subnet_of(self.prefix)
        return False

    @classmethod
    def parse(cls, text: str) -> PrefixEntry:
        """``[permit|deny] PREFIX [ge N] [le M]``."""
        words = text.split()
        permit = True
        if words and words[0] in ("permit", "deny"):
            permit = words.pop(0) == "permit"
        if not words:
            raise PolicyError(f"prefix list entry {text!r}: no prefix")
        try:
            prefix = ip_network(words.pop(0))
            opts: dict[str, int] = {}
            while words:
                key, value = words.pop(0), words.pop(0)
                if key not in ("ge", "le") or key in opts:
                    raise PolicyError(f"prefix list entry {text!r}: unexpected {key!r}")
                opts[key] = int(value)
        except (ValueError, IndexError) as e:
            if isinstance(e, PolicyError):
                raise
            raise PolicyError(f"prefix list entry {text!r}: {e}") from None
        return cls(prefix, opts.get("ge"), opts.get("le"), permit)


@dataclass(frozen=True, slots=True)
class PrefixList:
    """First matching entry decides; no match denies."""

    entries: tuple[PrefixEntry, ...]

    @classmethod
    def parse(cls, *lines: str) -> PrefixList:
        return cls(tuple(PrefixEntry.parse(line) for line in lines))

    def permits(self, p: Prefix) -> bool:
        for e in self.entries:
            if e.matches(p):
                return e.permit
        return False


@dataclass(frozen=True, slots=True)
class Match:
    """Every condition given must hold (an empty Match matches everything)."""

    prefix_list: PrefixList | None = None
    community_any: tuple[int, ...] = ()
    large_community_any: tuple[LargeCommunity, ...] = ()
    as_path_contains: int | None = None
    neighbor_as: int | None = None
    peer_address: IPAddress | None = None
    local: bool | None = None

    def __call__(self, path: Path) -> bool:
        a = path.attrs
        if self.prefix_list is not None and not self.prefix_list.permits(path.prefix):
            return False
        if self.community_any and not set(self.community_any) & set(a.communities):
            return False
        if self.large_community_any and not (
            set(self.large_community_any) & set(a.large_communities)
        ):
            return False
        if self.as_path_contains is not None and self.as_path_contains not in a.as_path.all_asns():
            return False
        if self.neighbor_as is not None and a.as_path.first_as() != self.neighbor_as:
            return False
        if self.peer_address is not None and (
            path.peer is None or path.peer.address != self.peer_address
        ):
            return False
        return self.local is None or path.local == self.local


@dataclass(frozen=True, slots=True)
class SetActions:
    local_pref: int | None = None
    med: int | None = None
    weight: int | None = None
    next_hop: IPAddress | None = None
    prepend_as: int | None = None
    prepend_times: int = 1
    communities: tuple[int, ...] | None = None  # replace the whole list
    add_communities: tuple[int, ...] = ()
    remove_communities: tuple[int, ...] = ()
    add_large_communities: tuple[LargeCommunity, ...] = ()

    def __call__(self, path: Path) -> Path:
        a = path.attrs
        comms = list(self.communities if self.communities is not None else a.communities)
        comms = [c for c in comms if c not in self.remove_communities]
        comms += [c for c in self.add_communities if c not in comms]
        large = list(a.large_communities)
        large += [c for c in self.add_large_communities if c not in large]
        attrs = replace(
            a,
            local_pref=self.local_pref if self.local_pref is not None else a.local_pref,
            med=self.med if self.med is not None else a.med,
            next_hop=self.next_hop if self.next_hop is not None else a.next_hop,
            as_path=a.as_path.prepend(self.prepend_as, self.prepend_times)
            if self.prepend_as is not None
            else a.as_path,
            communities=tuple(comms),
            large_communities=tuple(large),
        )
        weight = self.weight if self.weight is not None else path.weight
        return replace(path, attrs=attrs, weight=weight)


class Verdict(Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    NEXT = "next"


@dataclass(frozen=True, slots=True)
class Term:
    name: str
    match: Match = field(default_factory=Match)
    set: SetActions = field(default_factory=SetActions)
    verdict: Verdict = Verdict.ACCEPT


@dataclass(frozen=True, slots=True)
class PolicyResult:
    path: Path | None
    term: str | None  # the term that decided; None for the default


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    terms: tuple[Term, ...] = ()
    default: Verdict = Verdict.REJECT

    def __post_init__(self) -> None:
        if self.default == Verdict.NEXT:
            raise PolicyError("a policy's default must be accept or reject")

    def evaluate(self, path: Path) -> PolicyResult:
        for t in self.terms:
            if not t.match(path):
                continue
            if t.verdict == Verdict.REJECT:
                return PolicyResult(None, t.name)
            path = t.set(path)
            if t.verdict == Verdict.ACCEPT:
                return PolicyResult(path, t.name)
        return PolicyResult(path if self.default == Verdict.ACCEPT else None, None)

    def __call__(self, path: Path) -> Path | None:
        return self.evaluate(path).path


ACCEPT_ALL = RoutePolicy(default=Verdict.ACCEPT)
REJECT_ALL = RoutePolicy()
