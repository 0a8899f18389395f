"""Turn (last applied ruleset, desired ruleset) into one nft transaction (pure).

The syncer never lists the table: it diffs against the ruleset it last applied
successfully, which it holds in memory, the way kube-proxy's nftables mode does.

Full transaction (first sync, after a failure, ``resync()``)::

    add table; flush table            # rules gone; chains, sets and maps stay (and with
                                      # them the affinity sets' client addresses)
    add+flush every static set/map    # elements replaced wholesale
    add+delete stale chains and sets  # known from the last applied ruleset; the add makes
                                      # the delete safe if someone removed them by hand
    table ip kubewire-proxy { ... }   # everything, as one declarative block

or, when nothing is known about the table (first sync of a process, or after a full sync
failed), ``add table; delete table; table ... { ... }``: a clean slate.

Incremental transaction, in an order the kernel accepts (it checks references as each
command is applied)::

    add new sets/maps; add new chains
    delete map/set elements that went away or changed value
    flush changed chains, then add the rules of changed and new chains
    add new and changed elements
    flush, then delete, removed chains; delete removed sets

A change to a base chain's hook or a set's type/flags/timeout cannot be made in place:
``plan_incremental`` returns None and the syncer does a full transaction instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from kubewire.proxy.model import (
    Chain,
    Hook,
    NftSet,
    Ruleset,
    RulesetDelta,
    gc_paused,
    render_element,
)

Element = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Op:
    """One nft command. ``obj`` is table, chain, rule, set, element or block (a whole
    ``table { ... }`` definition holding ``ruleset``)."""

    verb: str  # add | delete | flush
    obj: str
    name: str = ""  # chain or set name
    rule: str = ""
    hook: Hook | None = None
    nft_set: NftSet | None = None  # for add/flush/delete set (carries kind and spec)
    elements: tuple[Element, ...] = ()
    ruleset: Ruleset | None = None

    def render(self, family: str, table: str) -> str:
        t = f"{family} {table}"
        if self.obj == "table":
            return f"{self.verb} table {t}"
        if self.obj == "chain":
            spec = f" {{ {self.hook.render()} }}" if self.hook and self.verb == "add" else ""
            return f"{self.verb} chain {t} {self.name}{spec}"
        if self.obj == "rule":
            return f"add rule {t} {self.name} {self.rule}"
        if self.obj == "set":
            assert self.nft_set is not None
            kind = self.nft_set.kind
            spec = f" {self.nft_set.render_spec()}" if self.verb == "add" else ""
            return f"{self.verb} {kind} {t} {self.name}{spec}"
        if self.obj == "element":
            if self.verb == "delete":
                items = ", ".join(k for k, _ in self.elements)
            else:
                items = ", ".join(render_element(k, v) for k, v in self.elements)
            return f"{self.verb} element {t} {self.name} {{ {items} }}"
        if self.obj == "block":
            assert self.ruleset is not None
            return self.ruleset.render().rstrip("\n")
        raise ValueError(f"unknown nft object {self.obj!r}")


@dataclass(frozen=True, slots=True)
class Transaction:
    """The commands of one sync, applied by ``nft -f -`` as one atomic batch."""

    ops: tuple[Op, ...]
    full: bool
    family: str
    table: str
    chains_added: tuple[str, ...] = ()
    chains_changed: tuple[str, ...] = ()
    chains_removed: tuple[str, ...] = ()
    sets_added: tuple[str, ...] = ()
    sets_removed: tuple[str, ...] = ()
    elements_added: int = 0
    elements_removed: int = 0
    _text: list[str] = field(default_factory=list, init=False, compare=False, repr=False)

    def render(self) -> str:
        if not self._text:
            self._text.append("\n".join(op.render(self.family, self.table)
                                        for op in self.ops) + "\n")
        return self._text[0]

    @property
    def empty(self) -> bool:
        return not self.ops


def plan_full(desired: Ruleset, previous: Ruleset | None, recreate: bool = False) -> Transaction:
    """Replace the whole table's contents. ``recreate`` (implied without ``previous``)
    deletes the table first instead of flushing it, which also drops objects nobody knows
    about and the affinity sets' state."""
    ops: list[Op] = [Op("add", "table")]
    if recreate or previous is None:
        ops.append(Op("delete", "table"))
    else:
        ops.append(Op("flush", "table"))
        for s in desired.sets:
            if not s.dynamic:
                ops += [Op("add", "set", s.name, nft_set=s), Op("flush", "set", s.name, nft_set=s)]
        desired_chains = desired.chains_by_name()
        desired_sets = desired.sets_by_name()
        for c in previous.chains:
            if c.name not in desired_chains:
                ops += [Op("add", "chain", c.name, hook=c.hook), Op("delete", "chain", c.name)]
        for s in previous.sets:
            if s.name not in desired_sets:
                ops += [Op("add", "set", s.name, nft_set=s), Op("delete", "set", s.name, nft_set=s)]
    ops.append(Op("add", "block", ruleset=desired))
    return Transaction(
        ops=tuple(ops), full=True, family=desired.family, table=desired.table,
        chains_added=tuple(c.name for c in desired.chains),
        chains_removed=tuple(sorted(set(previous.chains_by_name())
                                    - set(desired.chains_by_name()))) if previous else (),
        sets_added=tuple(s.name for s in desired.sets),
        sets_removed=tuple(sorted(set(previous.sets_by_name())
                                  - set(desired.sets_by_name()))) if previous else (),
        elements_added=sum(len(s.elements) for s in desired.sets),
    )


def _rules(chain: Chain) -> Iterator[Op]:
    for rule in chain.rules:
        yield Op("add", "rule", chain.name, rule=rule)


def _element_ops(verb: str, s: NftSet, elements: Iterable[Element]) -> list[Op]:
    items = tuple(elements)
    return [Op(verb, "element", s.name, nft_set=s, elements=items)] if items else []


def plan_incremental(previous: Ruleset, desired: Ruleset) -> Transaction | None:
    """Only what changed, or None when the change needs a full transaction.

    When ``desired.delta`` was computed against ``previous`` (``ProxyCompiler`` output
    synced in order) the plan comes from it, in time proportional to the change; else the
    two rulesets are compared. Both give the same transaction."""
    delta = desired.delta
    if delta is not None and delta.base is previous.token \
            and (previous.family, previous.table) == (desired.family, desired.table):
        return _plan_from_delta(previous, desired, delta)
    with gc_paused():
        return _plan_incremental(previous, desired)


def _plan_from_delta(previous: Ruleset, desired: Ruleset,
                     delta: RulesetDelta) -> Transaction | None:
    if delta.needs_full:
        return None
    old_s, new_s = previous.sets_by_name(), desired.sets_by_name()
    new_c = desired.chains_by_name()
    ops: list[Op] = [Op("add", "set", n, nft_set=new_s[n]) for n in delta.sets_added]
    ops += [Op("add", "chain", n, hook=new_c[n].hook) for n in delta.chains_added]
    adds: list[Op] = []
    n_del = n_add = 0
    for name, gone in delta.elements_gone:
        ops += _element_ops("delete", old_s[name], gone)
        n_del += len(gone)
    for name, came in delta.elements_came:
        adds += _element_ops("add", new_s[name], came)
        n_add += len(came)
    for name in delta.sets_added:
        adds += _element_ops("add", new_s[name], new_s[name].elements)
        n_add += len(new_s[name].elements)
    ops += [Op("flush", "chain", n) for n in delta.chains_changed]
    for n in [*delta.chains_changed, *delta.chains_added]:
        ops += _rules(new_c[n])
    ops += adds
    ops += [Op("flush", "chain", n) for n in delta.chains_removed]
    ops += [Op("delete", "chain", n) for n in delta.chains_removed]
    ops += [Op("delete", "set", n, nft_set=old_s[n]) for n in delta.sets_removed]
    return Transaction(
        ops=tuple(ops), full=False, family=desired.family, table=desired.table,
        chains_added=delta.chains_added, chains_changed=delta.chains_changed,
        chains_removed=delta.chains_removed, sets_added=delta.sets_added,
        sets_removed=delta.sets_removed, elements_added=n_add, elements_removed=n_del,
    )


def _plan_incremental(previous: Ruleset, desired: Ruleset) -> Transaction | None:
    if (previous.family, previous.table) != (desired.family, desired.table):
        return None
    old_c, new_c = previous.chains_by_name(), desired.chains_by_name()
    old_s, new_s = previous.sets_by_name(), desired.sets_by_name()
    changed_c = []
    for name, new_chain in new_c.items():
        old_chain = old_c.get(name)
        if old_chain is None or old_chain is new_chain:
            continue
        if old_chain.hook != new_chain.hook:
            return None
        if old_chain.rules != new_chain.rules:
            changed_c.append(name)
    changed_c.sort()
    for name in old_s.keys() & new_s.keys():
        if old_s[name].definition() != new_s[name].definition():
            return None

    added_c = sorted(new_c.keys() - old_c.keys())
    removed_c = sorted(old_c.keys() - new_c.keys())
    added_s = sorted(new_s.keys() - old_s.keys())
    removed_s = sorted(old_s.keys() - new_s.keys())

    ops: list[Op] = []
    ops += [Op("add", "set", n, nft_set=new_s[n]) for n in added_s]
    ops += [Op("add", "chain", n, hook=new_c[n].hook) for n in added_c]

    deletes: list[Op] = []
    adds: list[Op] = []
    n_del = n_add = 0
    for name in sorted(old_s.keys() & new_s.keys()):
        old, new = old_s[name], new_s[name]
        if old.dynamic or old.elements == new.elements:
            continue  # dynamic sets are the packet path's to fill
        before, after = old.element_set(), new.element_set()
        # A key whose value changed is in both: deleted with its old value, then added.
        gone = sorted(before - after)
        came = sorted(after - before)
        deletes += _element_ops("delete", old, gone)
        adds += _element_ops("add", new, came)
        n_del += len(gone)
        n_add += len(came)
    for name in added_s:
        adds += _element_ops("add", new_s[name], new_s[name].elements)
        n_add += len(new_s[name].elements)

    ops += deletes
    ops += [Op("flush", "chain", n) for n in changed_c]
    for n in [*changed_c, *added_c]:
        ops += _rules(new_c[n])
    ops += adds
    ops += [Op("flush", "chain", n) for n in removed_c]
    ops += [Op("delete", "chain", n) for n in removed_c]
    ops += [Op("delete", "set", n, nft_set=old_s[n]) for n in removed_s]
    return Transaction(
        ops=tuple(ops), full=False, family=desired.family, table=desired.table,
        chains_added=tuple(added_c), chains_changed=tuple(changed_c),
        chains_removed=tuple(removed_c), sets_added=tuple(added_s),
        sets_removed=tuple(removed_s), elements_added=n_add, elements_removed=n_del,
    )
