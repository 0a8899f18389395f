"""Adj-RIB-In, Loc-RIB and Adj-RIB-Out (RFC 4271 3.2 and 9), with the export rules of
RFC 4271 5 and RFC 4456 (route reflection).

``Rib`` is plain state driven by method calls: ``receive`` (an RFC 7606-processed UPDATE from
a peer), ``peer_down``, ``originate``/``withdraw_local``. Each returns the Loc-RIB changes.
``AdjRibOut.sync`` turns the routes a peer should have into the UPDATEs that get it there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from kubewire.bgp.constants import Afi, WellKnownCommunity
from kubewire.bgp.decision import Decision, DecisionConfig, DecisionReason, decide
from kubewire.bgp.nlri import IPAddress, Prefix
from kubewire.bgp.path import Path, PathAttributes, Peer, withdraw_update
from kubewire.bgp.update import Update, UpdateResult

Policy = Callable[[Path], Path | None]
"""An import or export policy: the path to use (maybe modified), or None to reject it."""


@dataclass(frozen=True, slots=True)
class RibChange:
    prefix: Prefix
    old: Decision | None
    new: Decision | None


@dataclass(frozen=True, slots=True)
class ExportContext:
    """How we speak to one peer: our address on that session (the next hop we announce),
    next-hop-self for iBGP, and our cluster ID when we reflect routes (RFC 4456)."""

    local_address: IPAddress
    next_hop_self: bool = False
    cluster_id: IPv4Address | None = None


def _rejected_on_import(path: Path, config: DecisionConfig, cluster_id: IPv4Address | None) -> bool:
    a = path.attrs
    if path.peer is None:
        return False
    if config.local_as in a.as_path.all_asns():
        return True  # RFC 4271 9.1.2: AS loop
    if a.originator_id == config.router_id:
        return True  # RFC 4456 8: our own route reflected back
    return cluster_id is not None and cluster_id in a.cluster_list  # RFC 4456 8: cluster loop


@dataclass
class Rib:
    """The RIBs of one speaker. ``igp_cost`` resolves a next hop (None: unreachable)."""

    config: DecisionConfig
    igp_cost: Callable[[IPAddress | None], int | None] = lambda nh: 0
    import_policy: Policy | None = None
    cluster_id: IPv4Address | None = None
    adj_in: dict[Peer, dict[Prefix, Path]] = field(default_factory=dict)
    local: dict[Prefix, Path] = field(default_factory=dict)
    loc: dict[Prefix, Decision] = field(default_factory=dict)
    _clock: int = 0

    # -- input --

    def receive(self, peer: Peer, result: UpdateResult) -> list[RibChange]:
        """Apply one UPDATE (after RFC 7606: treat-as-withdraw withdraws everything in it).

        All prefixes of one family in an UPDATE share one ``PathAttributes`` (and one next-hop
        resolution): a full-table feed packs hundreds of prefixes per UPDATE."""
        table = self.adj_in.setdefault(peer, {})
        touched: list[Prefix] = []
        pop = table.pop
        for p in result.withdraw():
            if pop(p, None) is not None:
                touched.append(p)
        announce = result.announce()
        if announce:
            self._clock += 1
            clock = self._clock
            by_family: dict[int, tuple[PathAttributes, int | None]] = {}
            for p in announce:
                v = p.version
                got = by_family.get(v)
                if got is None:
                    afi = Afi.IPV4 if v == 4 else Afi.IPV6
                    attrs = PathAttributes.from_update(result.update, afi)
                    got = by_family[v] = (attrs, self.igp_cost(attrs.next_hop))
                table[p] = Path(p, got[0], peer, 0, got[1], clock)
            touched.extend(announce)
        return self._recompute(touched)

    def peer_down(self, peer: Peer) -> list[RibChange]:
        table = self.adj_in.pop(peer, {})
        return self._recompute(list(table))

    def originate(
        self, prefix: Prefix, attrs: PathAttributes, weight: int = 32768
    ) -> list[RibChange]:
        """A locally originated route (network statement/redistribution); vendors give such
        routes weight 32768, which we copy so they win the weight step too."""
        self._clock += 1
        self.local[prefix] = Path(prefix, attrs, None, weight, 0, self._clock)
        return self._recompute([prefix])

    def withdraw_local(self, prefix: Prefix) -> list[RibChange]:
        if self.local.pop(prefix, None) is None:
            return []
        return self._recompute([prefix])

    def reresolve(self) -> list[RibChange]:
        """Re-run next-hop resolution after the IGP changed."""
        for table in self.adj_in.values():
            for p, path in list(table.items()):
                table[p] = replace(path, igp_cost=self.igp_cost(path.attrs.next_hop))
        return self._recompute({p for t in self.adj_in.values() for p in t})

    # -- Loc-RIB --

    def candidates(self, prefix: Prefix) -> list[Path]:
        out: list[Path] = []
        if prefix in self.local:
            out.append(self.local[prefix])
        for table in self.adj_in.values():
            path = table.get(prefix)
            if path is None or _rejected_on_import(path, self.config, self.cluster_id):
                continue
            if self.import_policy is not None:
                got = self.import_policy(path)
                if got is None:
                    continue
                path = got
            out.append(path)
        return out

    def _recompute(self, prefixes: Iterable[Prefix]) -> list[RibChange]:
        # ``candidates`` and ``decide`` inlined: this runs once per prefix per UPDATE.
        # The import checks depend only on a path's attributes and peer, which all prefixes
        # of an UPDATE share, so they are made once per (attributes, peer).
        changes: list[RibChange] = []
        loc, local, config, cluster_id = self.loc, self.local, self.config, self.cluster_id
        tables = list(self.adj_in.values())
        policy = self.import_policy
        rejected: dict[tuple[int, int], bool] = {}
        for p in dict.fromkeys(prefixes):  # message order: sorting networks is slow
            old = loc.get(p)
            cands: list[Path] = []
            if local:  # most speakers originate little: spare the lookup
                lp = local.get(p)
                if lp is not None:
                    cands.append(lp)
            for table in tables:
                path = table.get(p)
                if path is None:
                    continue
                key = (id(path.attrs), id(path.peer))
                bad = rejected.get(key)
                if bad is None:
                    bad = rejected[key] = _rejected_on_import(path, config, cluster_id)
                if bad:
                    continue
                if policy is not None:
                    got = policy(path)
                    if got is None:
                        continue
                    path = got
                cands.append(path)
            if len(cands) == 1:  # the common case, without decide()'s set-up
                only = cands[0]
                one = (only,)
                new = None if only.igp_cost is None else Decision(
                    only, DecisionReason.ONLY_PATH, one, one, ()
                )
            else:
                new = decide(cands, config)
            if new is None:
                if old is not None:
                    del loc[p]
                    changes.append(RibChange(p, old, None))
                continue
            loc[p] = new
            if old is None or old != new:
                changes.append(RibChange(p, old, new))
        return changes

    def best(self, prefix: Prefix) -> Decision | None:
        return self.loc.get(prefix)

    # -- output --

    def export(
        self, to: Peer, ctx: ExportContext, policy: Policy | None = None
    ) -> dict[Prefix, PathAttributes]:
        """What ``to`` should hold: every Loc-RIB best path the export rules let through."""
        out: dict[Prefix, PathAttributes] = {}
        for prefix, d in self.loc.items():
            path = d.best
            if policy is not None:
                got = policy(path)
                if got is None:
                    continue
                path = got
            attrs = export_path(path, to, self.config, ctx)
            if attrs is not None:
                out[prefix] = attrs
        return out


def export_path(
    path: Path, to: Peer, config: DecisionConfig, ctx: ExportContext
) -> PathAttributes | None:
    """The attributes ``path`` goes to ``to`` with, or None if it must not go there."""
    a = path.attrs
    src = path.peer
    if src is not None and src == to:
        return None  # never echo a route to the peer it came from
    if a.has_community(WellKnownCommunity.NO_ADVERTISE):
        return None  # RFC 1997
    if to.ebgp and (
        a.has_community(WellKnownCommunity.NO_EXPORT)
        or a.has_community(WellKnownCommunity.NO_EXPORT_SUBCONFED)
    ):
        return None  # RFC 1997 (no confederations here, so SUBCONFED acts like NO_EXPORT)
    unknown = tuple(u for u in (x.forwarded() for x in a.unknown) if u is not None)
    if src is None:
        unknown = a.unknown  # our own attributes go out as we made them
    if to.ebgp:
        return replace(
            a,
            as_path=a.as_path.prepend(config.local_as),
            next_hop=ctx.local_address,  # RFC 4271 5.1.3: next hop self towards eBGP
            next_hop_link_local=None,
            med=a.med if src is None else None,  # 5.1.4: MED stays in the AS it came to
            local_pref=None,
            originator_id=None,
            cluster_list=(),
            unknown=unknown,
        )
    # to an internal peer
    reflect = src is not None and not src.ebgp
    originator, clusters = a.originator_id, a.cluster_list
    if reflect:
        assert src is not None
        if ctx.cluster_id is None:
            return None  # RFC 4271 9.2: no iBGP to iBGP without reflection
        if not src.rr_client and not to.rr_client:
            return None  # RFC 4456 6: non-client routes go to clients only
        originator = originator or src.router_id
        if originator == to.router_id:
            return None  # it would be reflected straight back to its originator
        clusters = (ctx.cluster_id, *clusters)
    next_hop = a.next_hop
    if src is None or (ctx.next_hop_self and not reflect):
        next_hop = ctx.local_address
    return replace(
        a,
        next_hop=next_hop,
        local_pref=a.local_pref if a.local_pref is not None else config.default_local_pref,
        originator_id=originator,
        cluster_list=clusters,
        unknown=unknown,
    )


@dataclass
class AdjRibOut:
    """What we last advertised to one peer; ``sync`` diffs a new desired table against it."""

    table: dict[Prefix, PathAttributes] = field(default_factory=dict)

    def sync(self, desired: dict[Prefix, PathAttributes]) -> list[Update]:
        withdraw = sorted((p for p in self.table if p not in desired), key=lambda x: (x.version, x))
        changed: dict[tuple[int, PathAttributes], list[Prefix]] = {}
        for p in sorted(desired, key=lambda x: (x.version, x)):
            if self.table.get(p) != desired[p]:
                changed.setdefault((p.version, desired[p]), []).append(p)
        out: list[Update] = []
        for version in (4, 6):
            w = tuple(p for p in withdraw if p.version == version)
            if w:
                out.append(withdraw_update(w))
        for (_, attrs), prefixes in changed.items():
            out.append(attrs.to_update(tuple(prefixes)))
        self.table = dict(desired)
        return out

