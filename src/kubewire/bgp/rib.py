"""Adj-RIB-In, Loc-RIB and Adj-RIB-Out (RFC 4271 3.2 and 9), with the export rules of
RFC 4271 5 and RFC 4456 (route reflection).

``Rib`` is plain state driven by method calls: ``receive`` (an RFC 7606-processed UPDATE from
a peer), ``peer_down``, ``originate``/``withdraw_local``. Each returns the Loc-RIB changes
(the ``*_batch`` forms return them compactly; see README.md for the data layout).
``AdjRibOut.sync`` turns the routes a peer should have into the UPDATEs that get it there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from itertools import compress

from kubewire.bgp.attributes import Attribute
from kubewire.bgp.constants import Afi, WellKnownCommunity
from kubewire.bgp.decision import Decision, DecisionConfig, DecisionReason, decide
from kubewire.bgp.nlri import KEY_V6, IPAddress, Prefix, key_prefix, prefix_key
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
    next-hop-self for iBGP, our cluster ID when we reflect routes (RFC 4456), and
    ``keep_next_hop`` for eBGP: pass a learned route's next hop on unchanged (a "third
    party" next hop, RFC 4271 5.1.3; Calico's keepOriginalNextHop), so a ToR sends traffic
    for a node's pods straight to that node instead of through whichever node told it."""

    local_address: IPAddress
    next_hop_self: bool = False
    cluster_id: IPv4Address | None = None
    keep_next_hop: bool = False


def _rejected_on_import(path: Path, config: DecisionConfig, cluster_id: IPv4Address | None) -> bool:
    return path.peer is not None and _rejected(path.attrs, path.peer, config, cluster_id)


def _rejected(
    a: PathAttributes, peer: Peer, config: DecisionConfig, cluster_id: IPv4Address | None
) -> bool:
    asn = config.local_as
    if any(asn in s.asns for s in a.as_path.segments):
        return True  # RFC 4271 9.1.2: AS loop
    # (``None == IPv4Address`` goes through IPv4Address.__eq__ and an AttributeError)
    if a.originator_id is not None and a.originator_id == config.router_id:
        return True  # RFC 4456 8: our own route reflected back
    return cluster_id is not None and cluster_id in a.cluster_list  # RFC 4456 8: cluster loop


class _Src:
    """A received path without its prefix: one per UPDATE and address family, shared by
    every prefix of it in the Adj-RIB-In and (while it is the only candidate) the Loc-RIB.
    ``rejected``: the import checks (loops) failed; they depend only on what is here."""

    __slots__ = ("attrs", "igp_cost", "peer", "received", "rejected")

    def __init__(self, attrs: PathAttributes, peer: Peer, igp_cost: int | None, received: int,
                 rejected: bool) -> None:
        self.attrs = attrs
        self.peer = peer
        self.igp_cost = igp_cost
        self.received = received
        self.rejected = rejected

    def path(self, prefix: Prefix) -> Path:
        return Path(prefix, self.attrs, self.peer, 0, self.igp_cost, self.received)


class _Pick:
    """A decision among shared entries only (no local route, no import policy): the same
    for every prefix whose candidates are exactly these entries, so one object serves all
    the prefixes two UPDATEs (two full tables) have in common, and ``decide()`` runs once
    per combination instead of once per prefix. ``cands`` in ``decide()``'s order."""

    __slots__ = ("best", "cands", "multipath", "reason", "steps")

    def __init__(self, d: Decision, srcs: dict[int, _Src]) -> None:
        self.cands = tuple(srcs[id(p)] for p in d.candidates)
        index = {id(p): i for i, p in enumerate(d.candidates)}
        self.best = index[id(d.best)]
        self.multipath = tuple(index[id(p)] for p in d.multipath)
        self.reason = d.reason
        self.steps = d.steps

    @property
    def peer(self) -> Peer:
        return self.cands[self.best].peer

    def same(self, other: object) -> bool:
        return isinstance(other, _Pick) and len(self.cands) == len(other.cands) and all(
            a is b for a, b in zip(self.cands, other.cands, strict=True)) and (
            self.best, self.multipath, self.reason, self.steps) == (
            other.best, other.multipath, other.reason, other.steps)

    def decision(self, prefix: Prefix) -> Decision:
        paths = tuple(_fast_path(prefix, s) for s in self.cands)
        return Decision(paths[self.best], self.reason,
                        tuple(paths[i] for i in self.multipath), paths, self.steps)


_Entry = _Src | _Pick | Decision
"""A Loc-RIB entry: a ``_Src`` when it is the prefix's only usable path (the Decision,
"only path", is built when someone asks), a ``_Pick`` among shared entries, else the
``Decision``."""
_NO_ROUTE = object()  # an explicit Loc-RIB entry: held, but no usable path
_MISSING = object()


def _decision(prefix: Prefix, entry: _Entry) -> Decision:
    if isinstance(entry, _Src):
        return _only_path(prefix, entry)
    return entry.decision(prefix) if isinstance(entry, _Pick) else entry


def _entry_peer(entry: _Entry) -> Peer | None:
    return entry.best.peer if isinstance(entry, Decision) else entry.peer


def _slot_setters(cls: type, names: str) -> list[Callable[[object, object], None]]:
    return [getattr(cls, n).__set__ for n in names.split()]


# ``changes()`` builds a Path, a Decision and a RibChange per changed prefix for on_change
# listeners. The frozen dataclasses' __init__ sets each field through object.__setattr__;
# storing through the slot descriptors makes the same objects (equal, hashable, frozen) in
# about half the time.
_PATH_SET = _slot_setters(Path, "prefix attrs peer weight igp_cost received")
_DECISION_SET = _slot_setters(Decision, "best reason multipath candidates steps")
_CHANGE_SET = _slot_setters(RibChange, "prefix old new")


def _fast_path(prefix: Prefix, src: _Src) -> Path:
    """``src.path(prefix)``, built as described above."""
    path = _new(Path)
    a, b, c, d, e, f = _PATH_SET
    a(path, prefix)
    b(path, src.attrs)
    c(path, src.peer)
    d(path, 0)
    e(path, src.igp_cost)
    f(path, src.received)
    return path


def _only_path(prefix: Prefix, src: _Src) -> Decision:
    """The "only path" Decision for a ``_Src``, built as described above."""
    path = _fast_path(prefix, src)
    one = (path,)
    dec = _new(Decision)
    a, b, c, d, e = _DECISION_SET
    a(dec, path)
    b(dec, DecisionReason.ONLY_PATH)
    c(dec, one)
    d(dec, one)
    e(dec, ())
    return dec


_new = object.__new__


class ChangePart:
    """Loc-RIB changes of one kind: ``keys[i]`` went from ``olds[i]`` to ``news[i]``, or,
    when ``news`` is None, every key to ``new`` (a bulk change: one UPDATE's prefixes)."""

    __slots__ = ("keys", "new", "news", "olds")

    def __init__(self, keys: list[int], olds: list[_Entry | None],
                 news: list[_Entry | None] | None, new: _Entry | None = None) -> None:
        self.keys = keys
        self.olds = olds
        self.news = news
        self.new = new

    def best_peer(self) -> Peer | bool | None:
        """The peer every new best path of a bulk change came from (None: local), False
        when they differ or were withdrawn."""
        if self.news is not None or self.new is None:
            return False
        return _entry_peer(self.new)


@dataclass(slots=True)
class ChangeBatch:
    """Loc-RIB changes in compact form (prefix keys, entries); ``Rib.changes()`` turns them
    into ``RibChange``s. Drivers that only need the changed prefixes read ``keys()``."""

    parts: list[ChangePart] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(p.keys) for p in self.parts)

    def __bool__(self) -> bool:
        return bool(self.parts)

    def keys(self) -> list[int]:
        if len(self.parts) == 1:
            return self.parts[0].keys
        return [k for p in self.parts for k in p.keys]


class LocRib(Mapping[Prefix, Decision]):
    """The Loc-RIB as a read-only mapping prefix -> Decision (built on access)."""

    __slots__ = ("_rib",)

    def __init__(self, rib: Rib) -> None:
        self._rib = rib

    def __getitem__(self, prefix: Prefix) -> Decision:
        e = self._rib._best(prefix_key(prefix))
        if e is None:
            raise KeyError(prefix)
        return _decision(prefix, e)

    def __contains__(self, prefix: object) -> bool:
        return isinstance(prefix, IPv4Network | IPv6Network) and \
            self._rib._best(prefix_key(prefix)) is not None

    def __iter__(self) -> Iterator[Prefix]:
        return map(key_prefix, self._rib.best_keys())

    def __len__(self) -> int:
        return self._rib._count


class AdjRibInTable(Mapping[Prefix, Path]):
    """One peer's Adj-RIB-In as a read-only mapping prefix -> Path (built on access)."""

    __slots__ = ("_table",)

    def __init__(self, table: dict[int, _Src]) -> None:
        self._table = table

    def __getitem__(self, prefix: Prefix) -> Path:
        return self._table[prefix_key(prefix)].path(prefix)

    def __contains__(self, prefix: object) -> bool:
        return isinstance(prefix, IPv4Network | IPv6Network) and prefix_key(prefix) in self._table

    def __iter__(self) -> Iterator[Prefix]:
        return map(key_prefix, list(self._table))

    def __len__(self) -> int:
        return len(self._table)


class Rib:
    """The RIBs of one speaker. ``igp_cost`` resolves a next hop (None: unreachable).

    Tables are keyed by prefix keys (``nlri.prefix_key``) and hold one shared entry per
    UPDATE (see ``_Src``): a prefix costs its key and two dict slots. ``adj_in`` and ``loc``
    are read-only views that build ``Path``s/``Decision``s on access. A prefix no other
    peer (or local route) has is placed in bulk: the only path is the best, "only path"."""

    def __init__(
        self,
        config: DecisionConfig,
        igp_cost: Callable[[IPAddress | None], int | None] = lambda nh: 0,
        import_policy: Policy | None = None,
        cluster_id: IPv4Address | None = None,
    ) -> None:
        self.config = config
        self.igp_cost = igp_cost
        self.import_policy = import_policy
        self.cluster_id = cluster_id
        self.local: dict[Prefix, Path] = {}  # few: kept by prefix too, for the API
        self._local: dict[int, Path] = {}
        self._in: dict[Peer, dict[int, _Src]] = {}
        self._loc: dict[int, _Entry | object] = {}  # explicit entries only: see _best
        self._count = 0  # prefixes with a best path
        # ids of a candidate combination -> (the entries, kept so the ids stay theirs, pick)
        self._picks: dict[tuple[int, ...], tuple[tuple[_Src, ...], _Pick | None]] = {}
        self._clock = 0
        # id(attribute tuple), IPv6?, id(peer) -> (the tuple and the peer, kept so the ids
        # stay theirs, the PathAttributes, rejected on import)
        self._memo: dict[tuple[int, bool, int], tuple[tuple[Attribute, ...], PathAttributes,
                                                      bool, Peer]] = {}
        self._tables: dict[int, tuple[Peer, dict[int, _Src]]] = {}  # id(peer) -> its _in

    @property
    def loc(self) -> LocRib:
        return LocRib(self)

    def best_keys(self) -> list[int]:
        """The prefix keys that have a best path (explicit entries, then implicit ones)."""
        loc = self._loc
        out = [k for k, e in loc.items() if e is not _NO_ROUTE]
        for table in self._in.values():
            for k, s in table.items():
                if k not in loc and not s.rejected and s.igp_cost is not None:
                    out.append(k)
        return out

    @property
    def adj_in(self) -> dict[Peer, AdjRibInTable]:
        return {peer: AdjRibInTable(t) for peer, t in self._in.items()}

    # -- input --

    def receive(self, peer: Peer, result: UpdateResult) -> list[RibChange]:
        """Apply one UPDATE (after RFC 7606: treat-as-withdraw withdraws everything in it)."""
        return self.changes(self.receive_batch(peer, result))

    def receive_batch(self, peer: Peer, result: UpdateResult) -> ChangeBatch:
        """``receive`` with the changes in compact form. All prefixes of one family in an
        UPDATE share one ``_Src`` (attributes, next-hop resolution, import checks)."""
        out = ChangeBatch()
        # By identity first: hashing a Peer hashes its IPv4Addresses in Python (~2 us)
        hit = self._tables.get(id(peer))
        if hit is not None and hit[0] is peer:
            table = hit[1]
        else:
            table = self._in.setdefault(peer, {})
            self._tables[id(peer)] = (peer, table)
        announce = result.announce_keys()
        withdraw = result.withdraw_keys()
        if withdraw:
            if announce:
                again = set(announce)
                withdraw = [k for k in withdraw if k not in again]
            pop = table.pop
            was = [pop(k, None) for k in withdraw]
            if any(was):
                gone = list(compress(withdraw, was))
                self._place(dict.fromkeys(gone), list(filter(None, was)), None, peer, out)
        if announce:
            self._clock += 1
            # MP_REACH_NLRI of IPv6 (alone or beside IPv4); a "plain" result has none
            if not result._plain and max(announce) >= KEY_V6:
                fams = [(Afi.IPV4, [k for k in announce if k < KEY_V6]),
                        (Afi.IPV6, [k for k in announce if k >= KEY_V6])]
            else:
                fams = [(Afi.IPV4, announce)]
            for afi, keys in fams:
                if not keys:
                    continue
                attrs, rejected = self._attributes(result.attributes, afi, peer)
                src = _Src(attrs, peer, self.igp_cost(attrs.next_hop), self._clock, rejected)
                fresh: dict[int, _Src | None] = dict.fromkeys(keys, src)
                ordered = keys if len(keys) == len(fresh) else list(fresh)
                was = list(map(table.get, ordered))
                table.update(fresh)  # type: ignore[arg-type]
                self._place(fresh, was, src, peer, out, ordered)
        return out

    def _attributes(
        self, attributes: tuple[Attribute, ...], afi: Afi, peer: Peer
    ) -> tuple[PathAttributes, bool]:
        """``PathAttributes`` and the import loop checks, once per attribute set: the codec
        hands out the same tuple for UPDATEs with the same attribute octets."""
        key = (id(attributes), afi is Afi.IPV6, id(peer))
        got = self._memo.get(key)
        if got is None or got[0] is not attributes or got[3] is not peer:
            if len(self._memo) >= 4096:
                self._memo.clear()
            attrs = PathAttributes.from_attributes(attributes, afi)
            got = (attributes, attrs, _rejected(attrs, peer, self.config, self.cluster_id), peer)
            self._memo[key] = got
        return got[1], got[2]

    def peer_down(self, peer: Peer) -> list[RibChange]:
        return self.changes(self.peer_down_batch(peer))

    def peer_down_batch(self, peer: Peer) -> ChangeBatch:
        out = ChangeBatch()
        table = self._in.pop(peer, None)
        self._tables.clear()
        if table:
            self._place(table, list(table.values()), None, peer, out)  # type: ignore[arg-type]
        return out

    def originate(
        self, prefix: Prefix, attrs: PathAttributes, weight: int = 32768
    ) -> list[RibChange]:
        """A locally originated route (network statement/redistribution); vendors give such
        routes weight 32768, which we copy so they win the weight step too."""
        return self.changes(self.originate_batch(prefix, attrs, weight))

    def originate_batch(
        self, prefix: Prefix, attrs: PathAttributes, weight: int = 32768
    ) -> ChangeBatch:
        self._clock += 1
        path = Path(prefix, attrs, None, weight, 0, self._clock)
        self.local[prefix] = path
        k = prefix_key(prefix)
        self._local[k] = path
        out = ChangeBatch()
        self._recompute([k], out)
        return out

    def withdraw_local(self, prefix: Prefix) -> list[RibChange]:
        return self.changes(self.withdraw_local_batch(prefix))

    def withdraw_local_batch(self, prefix: Prefix) -> ChangeBatch:
        out = ChangeBatch()
        if self.local.pop(prefix, None) is not None:
            k = prefix_key(prefix)
            del self._local[k]
            self._recompute([k], out)
        return out

    def reresolve(self) -> list[RibChange]:
        """Re-run next-hop resolution after the IGP changed."""
        every: dict[int, None] = dict.fromkeys(self._local)
        for table in self._in.values():
            every.update(dict.fromkeys(table))
        prev = {k: self._best(k) for k in every}
        for table in self._in.values():
            moved: dict[int, _Src] = {}  # each shared entry re-resolved once
            for k, s in table.items():
                n = moved.get(id(s))
                if n is None:
                    n = moved[id(s)] = _Src(s.attrs, s.peer, self.igp_cost(s.attrs.next_hop),
                                            s.received, s.rejected)
                table[k] = n
        out = ChangeBatch()
        self._recompute(list(every), out, prev=prev)
        return self.changes(out)

    # -- Loc-RIB --

    def _place(self, keys: dict[int, _Src | None], was: list[_Src | None], src: _Src | None,
               peer: Peer, out: ChangeBatch, ordered: list[int] | None = None) -> None:
        """Bring the Loc-RIB up to date for ``keys``, whose path from ``peer`` was ``was``
        (in key order) and is now ``src`` (None: withdrawn), the Adj-RIB-In already
        changed; ``ordered``: the keys as a list, if at hand. Prefixes nobody else has are
        done in bulk and stay implicit (see ``_best``)."""
        others = [t for p, t in self._in.items() if p is not peer and t]
        if self._local:
            others.append(self._local)  # type: ignore[arg-type]
        if self.import_policy is not None:
            self._recompute(list(keys), out, peer)  # per prefix: a policy sees each one
            return
        ks = ordered if ordered is not None else list(keys)
        if others:
            contested: set[int] = set()
            for t in others:
                contested |= t.keys() & keys.keys()
            if contested:
                self._recompute([k for k in ks if k in contested], out, peer)
                keep = [k not in contested for k in ks]
                ks = list(compress(ks, keep))
                was = list(compress(was, keep))
                if not ks:
                    return
        loc = self._loc
        new = src if src is not None and not src.rejected and src.igp_cost is not None else None
        # The old best of an uncontested prefix: its explicit entry if it has one (dropped
        # now: the prefix goes implicit), else the path ``peer`` had, if usable.
        explicit = loc.keys() & ks if loc else ()
        olds: list[_Entry | None]
        if explicit:
            olds = []
            for k, o in zip(ks, was, strict=True):
                if k in explicit:
                    e = loc.pop(k)
                    olds.append(None if e is _NO_ROUTE else e)  # type: ignore[arg-type]
                else:
                    olds.append(o if o is not None and not o.rejected and o.igp_cost is not None
                                else None)
            held = len(olds) - olds.count(None)
        elif any(was):  # replaced or withdrawn: the old paths were the best where usable
            olds = [o if o is not None and not o.rejected and o.igp_cost is not None else None
                    for o in was]
            held = len(olds) - olds.count(None)
        else:
            olds = [None] * len(ks)
            held = 0
        if new is not None:
            self._count += len(ks) - held
            out.parts.append(ChangePart(ks, olds, None, new))
        elif held:
            self._count -= held
            keep = [o is not None for o in olds]
            out.parts.append(ChangePart(list(compress(ks, keep)), list(filter(None, olds)),
                                        None))

    def _best(self, key: int, exclude: Peer | None = None) -> _Entry | None:
        """The Loc-RIB entry for a prefix key. Explicit entries (``_loc``) are kept for
        prefixes with more than one source, with an import policy, or decided per prefix;
        a prefix only one peer has and that went in in bulk is implicit: its best path is
        that peer's, if usable. ``exclude``: ignore that peer's table (it just changed)."""
        e = self._loc.get(key, _MISSING)
        if e is not _MISSING:
            return None if e is _NO_ROUTE else e  # type: ignore[return-value]
        for p, table in self._in.items():
            s = table.get(key)
            if s is not None and p is not exclude:
                return s if not s.rejected and s.igp_cost is not None else None
        return None

    def _recompute(self, keys: Iterable[int], out: ChangeBatch,
                   changed: Peer | None = None,
                   prev: dict[int, _Entry | None] | None = None) -> None:
        """The decision process for each of ``keys`` over every candidate; the result is
        stored explicitly. ``changed``: the peer whose table changed (the implicit old best
        was not its entry then); ``prev``: the old entries, when taken beforehand."""
        loc, local, config, picks = self._loc, self._local, self.config, self._picks
        tables = list(self._in.values())
        policy = self.import_policy
        ks: list[int] = []
        olds: list[_Entry | None] = []
        news: list[_Entry | None] = []
        for k in keys:
            prefix: Prefix | None = None
            cands: list[_Src | Path] = []
            holders = 0
            if local:
                lp = local.get(k)
                if lp is not None:
                    cands.append(lp)
                    holders += 1
            for table in tables:
                s = table.get(k)
                if s is None:
                    continue
                holders += 1
                if s.rejected:
                    continue
                if policy is not None:
                    if prefix is None:
                        prefix = key_prefix(k)
                    got = policy(s.path(prefix))
                    if got is not None:
                        cands.append(got)
                else:
                    cands.append(s)
            new: _Entry | None
            if not cands:
                new = None
            elif len(cands) == 1:
                c = cands[0]
                if c.igp_cost is None:
                    new = None
                elif isinstance(c, _Src):
                    new = c
                else:
                    one = (c,)
                    new = Decision(c, DecisionReason.ONLY_PATH, one, one, ())
            elif policy is None and (not local or k not in local):
                # shared entries only: one decide() per combination of them
                ids = tuple(map(id, cands))
                hit = picks.get(ids)
                if hit is not None and all(a is b for a, b in zip(hit[0], cands, strict=True)):
                    new = hit[1]
                else:
                    if prefix is None:
                        prefix = key_prefix(k)
                    p = prefix
                    srcs = {}
                    paths = []
                    for c in cands:
                        path = c.path(p)  # type: ignore[union-attr]
                        srcs[id(path)] = c
                        paths.append(path)
                    d = decide(paths, config)
                    new = None if d is None else _Pick(d, srcs)  # type: ignore[arg-type]
                    if len(picks) >= 65536:
                        picks.clear()
                    picks[ids] = (tuple(cands), new)  # type: ignore[arg-type]
            else:
                if prefix is None:
                    prefix = key_prefix(k)
                p = prefix
                new = decide([c.path(p) if isinstance(c, _Src) else c for c in cands], config)
            old = self._best(k, changed) if prev is None else prev.get(k)
            if holders:
                loc[k] = _NO_ROUTE if new is None else new
            else:
                loc.pop(k, None)
            if old is new or (
                isinstance(old, Decision) and isinstance(new, Decision) and old == new
            ) or (isinstance(old, _Pick) and old.same(new)):
                continue
            self._count += (new is not None) - (old is not None)
            ks.append(k)
            olds.append(old)
            news.append(new)
        if ks:
            out.parts.append(ChangePart(ks, olds, news))

    def changes(self, batch: ChangeBatch) -> list[RibChange]:
        """``batch`` as ``RibChange``s (prefix objects and Decisions built here)."""
        out: list[RibChange] = []
        append = out.append
        set_prefix, set_old, set_new = _CHANGE_SET
        for part in batch.parts:
            news = part.news
            if news is None:
                news = [part.new] * len(part.keys)
            for k, old, new in zip(part.keys, part.olds, news, strict=True):
                prefix = key_prefix(k)
                c = _new(RibChange)
                set_prefix(c, prefix)
                set_old(c, None if old is None else _decision(prefix, old))
                set_new(c, None if new is None else _decision(prefix, new))
                append(c)
        return out

    def candidates(self, prefix: Prefix) -> list[Path]:
        k = prefix_key(prefix)
        out: list[Path] = []
        lp = self._local.get(k)
        if lp is not None:
            out.append(lp)
        for table in self._in.values():
            s = table.get(k)
            if s is None or s.rejected:
                continue
            path: Path | None = s.path(prefix)
            if self.import_policy is not None:
                path = self.import_policy(path)  # type: ignore[arg-type]
            if path is not None:
                out.append(path)
        return out

    def best(self, prefix: Prefix) -> Decision | None:
        e = self._best(prefix_key(prefix))
        return None if e is None else _decision(prefix, e)

    def entry_best_peer(self, key: int) -> Peer | bool | None:
        """Where the best path for a prefix key came from (None: local; False: no route)."""
        e = self._best(key)
        return False if e is None else _entry_peer(e)

    def received(self, peer: Peer) -> int:
        return len(self._in.get(peer, ()))

    def accepted(self, peer: Peer) -> int:
        """How many of ``peer``'s prefixes pass import (loop checks, then the policy)."""
        table = self._in.get(peer)
        if not table:
            return 0
        if self.import_policy is None:
            ok = {id(s): not s.rejected for s in table.values()}
            return sum(ok[id(s)] for s in table.values())
        n = 0
        for k, s in table.items():
            if not s.rejected and self.import_policy(s.path(key_prefix(k))) is not None:
                n += 1
        return n

    def paths(self, prefix: Prefix) -> list[Path]:
        """Every path held for ``prefix`` (local first, then per peer), before import."""
        k = prefix_key(prefix)
        out: list[Path] = []
        lp = self._local.get(k)
        if lp is not None:
            out.append(lp)
        for table in self._in.values():
            s = table.get(k)
            if s is not None:
                out.append(s.path(prefix))
        return out

    def prefixes(self) -> list[Prefix]:
        """Every prefix with a local or received path."""
        keys: dict[int, None] = dict.fromkeys(self._local)
        for table in self._in.values():
            keys.update(dict.fromkeys(table))
        return [key_prefix(k) for k in keys]

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
        keep = ctx.keep_next_hop and src is not None and a.next_hop is not None
        return replace(
            a,
            as_path=a.as_path.prepend(config.local_as),
            # RFC 4271 5.1.3: next hop self towards eBGP, unless told to keep a learned one
            next_hop=a.next_hop if keep else ctx.local_address,
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

