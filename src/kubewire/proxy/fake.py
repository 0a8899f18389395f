"""A validating fake of nftables for the proxy, and a packet evaluator (pure).

``FakeNft`` applies the same ``Transaction`` objects the real syncer sends to ``nft -f``,
atomically, checking what the kernel checks as each command is applied: the table, chain
or set exists; every ``jump``/``goto`` target and every ``@set`` a rule or verdict-map
element names exists (and is of the right kind); a chain or set is not deleted while a
rule or element still refers to it; an element is not added twice with different values
or deleted when absent; ``dnat``/``masquerade`` only run from nat chains and ``reject``
never from one. A refused transaction raises ``FakeNftError`` and changes nothing.

``check_ruleset`` runs the same checks on a compiled ``Ruleset``. ``evaluate`` follows a
new connection's first packet through the hooks of a table (a ``Ruleset`` or the fake's
current state) and returns every possible outcome with its probability: the model half
of "real packets and the model must agree".
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from kubewire.proxy import names
from kubewire.proxy.errors import FakeNftError, ProxyError
from kubewire.proxy.model import Hook, NftSet, Ruleset, StaleFlow
from kubewire.proxy.nftrules import (
    Dnat,
    DnatMap,
    FibLocal,
    Lookup,
    MarkSet,
    Masquerade,
    Match,
    Numgen,
    Reject,
    RuleSyntaxError,
    Statement,
    Update,
    Verdict,
    chain_refs,
    parse_rule,
    set_refs,
    verdict_target,
)
from kubewire.proxy.plan import Op, Transaction

_PRIORITIES = {"dstnat": -100, "filter": 0, "srcnat": 100}


def _priority(hook: Hook) -> int:
    known = _PRIORITIES.get(hook.priority)
    return int(hook.priority) if known is None else known


@dataclass
class FakeChain:
    hook: Hook | None = None
    rules: list[str] = field(default_factory=list)


@dataclass
class FakeSet:
    spec: NftSet  # definition (name, types, flags, timeout); its elements are ignored
    elements: dict[str, str | None] = field(default_factory=dict)


@dataclass
class FakeTable:
    chains: dict[str, FakeChain] = field(default_factory=dict)
    sets: dict[str, FakeSet] = field(default_factory=dict)

    @classmethod
    def from_ruleset(cls, ruleset: Ruleset) -> FakeTable:
        return cls(
            chains={c.name: FakeChain(c.hook, list(c.rules)) for c in ruleset.chains},
            sets={s.name: FakeSet(replace(s, elements=()), dict(s.elements))
                  for s in ruleset.sets},
        )


# ---------------------------------------------------------------------------- checks


def _rule_problems(table: FakeTable, chain: str, rule: str) -> list[str]:
    try:
        stmts = parse_rule(rule)
    except RuleSyntaxError as exc:
        return [f"chain {chain}: {exc}"]
    problems = []
    for target in chain_refs(stmts):
        if target not in table.chains:
            problems.append(f"chain {chain}: rule jumps to missing chain {target}: {rule}")
        elif table.chains[target].hook is not None:
            problems.append(f"chain {chain}: rule jumps to base chain {target}: {rule}")
    for name, use in set_refs(stmts):
        s = table.sets.get(name)
        if s is None:
            problems.append(f"chain {chain}: rule uses missing set @{name}: {rule}")
        elif use == "vmap" and s.spec.data_type != "verdict":
            problems.append(f"chain {chain}: vmap @{name} is not a verdict map: {rule}")
        elif use == "lookup" and s.spec.is_map:
            problems.append(f"chain {chain}: @{name} is a map, used as a set: {rule}")
        elif use == "update" and not s.spec.dynamic:
            problems.append(f"chain {chain}: update @{name} needs a dynamic set: {rule}")
        elif use == "map" and (not s.spec.is_map or s.spec.data_type == "verdict"):
            problems.append(f"chain {chain}: dnat needs a data map, @{name} is not: {rule}")
    for st in stmts:
        if isinstance(st, DnatMap) and st.set_name in table.sets:
            spec = table.sets[st.set_name].spec
            if not spec.typeof:
                # nft refuses numgen's plain integer in a `type` key; only `typeof` works.
                problems.append(f"chain {chain}: @{st.set_name} must be declared with "
                                f"typeof for a numgen key: {rule}")
            elif _arity(spec.key_type) != len(st.fields) + 1 \
                    or _arity(spec.data_type) != 2:
                problems.append(f"chain {chain}: key/value of @{st.set_name} do not fit "
                                f"the dnat map: {rule}")
            elif not (spec.data_type or "").startswith("ip daddr . ") \
                    or any(isinstance(m, Match) and m.field == "l4proto" and not m.negate
                           and spec.data_type != f"ip daddr . {m.value} dport"
                           for m in stmts):
                # nft 1.0.6: a `th dport` value cannot be read back from the kernel, and
                # a value of another protocol than the rule's is refused.
                problems.append(f"chain {chain}: @{st.set_name} value must be declared "
                                f"`ip daddr . <the rule's protocol> dport`: {rule}")
    return problems


def _arity(expr: str | None) -> int:
    """Components of a concatenated type or typeof expression (``a . b . c``: 3)."""
    return 0 if expr is None else len(expr.split(" . "))


def _element_problems(table: FakeTable, s: FakeSet, key: str, value: str | None) -> list[str]:
    if s.spec.typeof and value is not None and (
            _arity(key) != _arity(s.spec.key_type)
            or _arity(value) != _arity(s.spec.data_type)):
        return [f"map {s.spec.name}: element {key} : {value} does not fit "
                f"{s.spec.declaration()}"]
    if s.spec.is_map and value is None:
        return [f"map {s.spec.name}: element {key} has no value"]
    if not s.spec.is_map and value is not None:
        return [f"set {s.spec.name}: element {key} has a value"]
    target = verdict_target(value)
    if s.spec.data_type == "verdict":
        if target is None and value not in ("drop", "accept", "return"):
            return [f"map {s.spec.name}: {value!r} is not a verdict"]
        if target is not None and target not in table.chains:
            return [f"map {s.spec.name}: element {key} jumps to missing chain {target}"]
    return []


def _references(table: FakeTable) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Who refers to each chain / set: {name: {"chain X" | "map M"}}."""
    chain_users: dict[str, set[str]] = {}
    set_users: dict[str, set[str]] = {}
    for cname, chain in table.chains.items():
        for rule in chain.rules:
            try:
                stmts = parse_rule(rule)
            except RuleSyntaxError:
                continue
            for target in chain_refs(stmts):
                chain_users.setdefault(target, set()).add(f"chain {cname}")
            for sname, _ in set_refs(stmts):
                set_users.setdefault(sname, set()).add(f"chain {cname}")
    for sname, s in table.sets.items():
        for value in s.elements.values():
            jumps_to = verdict_target(value)
            if jumps_to is not None:
                chain_users.setdefault(jumps_to, set()).add(f"map {sname}")
    return chain_users, set_users


def _hook_problems(table: FakeTable) -> list[str]:
    """nat statements only under nat base chains; reject never under one (the kernel
    refuses such a table with EOPNOTSUPP)."""
    problems = []
    for base, chain in sorted(table.chains.items()):
        if chain.hook is None:
            continue
        seen: set[str] = set()
        todo = [base]
        while todo:
            name = todo.pop()
            if name in seen or name not in table.chains:
                continue
            seen.add(name)
            for rule in table.chains[name].rules:
                try:
                    stmts = parse_rule(rule)
                except RuleSyntaxError:
                    continue
                for st in stmts:
                    nat_only = isinstance(st, Dnat | DnatMap | Masquerade)
                    if nat_only and chain.hook.type != "nat":
                        problems.append(f"{type(st).__name__.lower()} in {name} is reachable "
                                        f"from {chain.hook.type} chain {base}")
                    if isinstance(st, Reject) and (chain.hook.type == "nat"
                                                   or chain.hook.hook == "prerouting"):
                        problems.append(f"reject in {name} is reachable from {base}")
                    if isinstance(st, Lookup) and st.vmap and st.set_name in table.sets:
                        todo.extend(t for v in table.sets[st.set_name].elements.values()
                                    if (t := verdict_target(v)) is not None)
                todo.extend(chain_refs(stmts))
    return problems


def table_problems(table: FakeTable) -> list[str]:
    problems = []
    for cname, chain in sorted(table.chains.items()):
        for rule in chain.rules:
            problems += _rule_problems(table, cname, rule)
    for s in sorted(table.sets.values(), key=lambda s: s.spec.name):
        for key, value in s.elements.items():
            problems += _element_problems(table, s, key, value)
    return problems + _hook_problems(table)


def check_ruleset(ruleset: Ruleset) -> list[str]:
    """Everything the kernel would refuse in this ruleset (empty when it is valid)."""
    problems = []
    chain_names = [c.name for c in ruleset.chains]
    set_names = [s.name for s in ruleset.sets]
    for kind, listed in (("chain", chain_names), ("set", set_names)):
        if listed != sorted(listed):
            problems.append(f"{kind}s are not sorted by name")
        if len(set(listed)) != len(listed):
            problems.append(f"duplicate {kind} names")
        problems += [f"{kind} name longer than {names.MAX_NAME_LENGTH}: {n}"
                     for n in listed if len(n) > names.MAX_NAME_LENGTH]
    for s in ruleset.sets:
        keys = [k for k, _ in s.elements]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            problems.append(f"{s.kind} {s.name}: elements not sorted or not unique")
    return problems + table_problems(FakeTable.from_ruleset(ruleset))


# ---------------------------------------------------------------------------- the fake


class FakeNft:
    """An in-memory nftables with the kernel's checks; usable wherever the syncer's
    ``NftBackend`` is expected. ``transactions`` records the text of every transaction
    it accepted, ``refused`` the ones it refused."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.transactions: list[str] = []
        self.refused: list[str] = []
        self.fail_next: str | None = None  # make the next transaction fail (tests)

    def table(self, family: str = names.FAMILY, name: str = names.TABLE) -> FakeTable:
        return self.tables[(family, name)]

    def run(self, transaction: Transaction) -> None:
        text = transaction.render()
        if self.fail_next is not None:
            message, self.fail_next = self.fail_next, None
            self.refused.append(text)
            raise FakeNftError(message, stderr=message, transaction=text)
        work = copy.deepcopy(self.tables)
        key = (transaction.family, transaction.table)
        try:
            for op in transaction.ops:
                _apply(work, key, op)
            if key in work:
                problems = table_problems(work[key])
                if problems:
                    raise FakeNftError("; ".join(problems[:5]))
        except FakeNftError as exc:
            self.refused.append(text)
            raise FakeNftError(str(exc), stderr=str(exc), transaction=text) from None
        self.tables = work
        self.transactions.append(text)

    # Hand edits, as an administrator with `nft` would make them (tests of resync).
    def delete_rule(self, chain: str, index: int = 0) -> None:
        del self.table().chains[chain].rules[index]

    def delete_element(self, set_name: str, key: str) -> None:
        del self.table().sets[set_name].elements[key]


class FakeConntrack:
    """Records the stale flows the syncer asks to delete; ``fail`` makes deletes fail."""

    def __init__(self) -> None:
        self.deleted: list[StaleFlow] = []
        self.fail: str | None = None

    def delete(self, flow: StaleFlow) -> int:
        if self.fail is not None:
            raise ProxyError(self.fail)
        self.deleted.append(flow)
        return 1


def _err(message: str) -> FakeNftError:
    return FakeNftError(message)


def _apply(tables: dict[tuple[str, str], FakeTable], key: tuple[str, str], op: Op) -> None:
    if op.obj == "table":
        if op.verb == "add":
            tables.setdefault(key, FakeTable())
        elif key not in tables:
            raise _err(f"{op.verb} table {key[1]}: No such file or directory")
        elif op.verb == "delete":
            del tables[key]
        else:  # flush: rules go, chains, sets and elements stay (as in the kernel)
            for chain in tables[key].chains.values():
                chain.rules.clear()
        return
    if op.obj == "block":  # `table ip X { ... }` creates the table if needed
        tables.setdefault(key, FakeTable())
    table = tables.get(key)
    if table is None:
        raise _err(f"{op.verb} {op.obj} {op.name}: table {key[1]}: No such file or directory")
    if op.obj == "block":
        assert op.ruleset is not None
        _apply_block(table, op.ruleset)
    elif op.obj == "chain":
        _apply_chain(table, op)
    elif op.obj == "rule":
        if op.name not in table.chains:
            raise _err(f"add rule {op.name}: chain: No such file or directory")
        problems = _rule_problems(table, op.name, op.rule)
        if problems:
            raise _err(problems[0])
        table.chains[op.name].rules.append(op.rule)
    elif op.obj == "set":
        _apply_set(table, op)
    elif op.obj == "element":
        _apply_elements(table, op.verb, op.name, op.elements)
    else:
        raise _err(f"unknown object {op.obj}")


def _apply_chain(table: FakeTable, op: Op) -> None:
    chain = table.chains.get(op.name)
    if op.verb == "add":
        if chain is None:
            table.chains[op.name] = FakeChain(op.hook)
        elif op.hook is not None and chain.hook != op.hook:
            raise _err(f"add chain {op.name}: cannot change the hook of an existing chain")
        return
    if chain is None:
        raise _err(f"{op.verb} chain {op.name}: No such file or directory")
    if op.verb == "flush":
        chain.rules.clear()
        return
    users, _ = _references(table)
    others = sorted(u for u in users.get(op.name, set()) if u != f"chain {op.name}")
    if others:
        raise _err(f"delete chain {op.name}: Device or resource busy (used by "
                   f"{', '.join(others)})")
    del table.chains[op.name]


def _apply_set(table: FakeTable, op: Op) -> None:
    assert op.nft_set is not None
    existing = table.sets.get(op.name)
    if op.verb == "add":
        spec = replace(op.nft_set, elements=())
        if existing is None:
            table.sets[op.name] = FakeSet(spec)
        elif (existing.spec.key_type, existing.spec.data_type) != (spec.key_type,
                                                                   spec.data_type):
            raise _err(f"add {spec.kind} {op.name}: File exists (with another type)")
        else:
            existing.spec = spec  # flags/timeout are updated in place, as nft does
        return
    if existing is None:
        raise _err(f"{op.verb} set {op.name}: No such file or directory")
    if op.verb == "flush":
        existing.elements.clear()
        return
    _, users = _references(table)
    if users.get(op.name):
        raise _err(f"delete set {op.name}: Device or resource busy (used by "
                   f"{', '.join(sorted(users[op.name]))})")
    del table.sets[op.name]


def _apply_elements(table: FakeTable, verb: str, name: str,
                    elements: Iterable[tuple[str, str | None]]) -> None:
    s = table.sets.get(name)
    if s is None:
        raise _err(f"{verb} element {name}: No such file or directory")
    for key, value in elements:
        if verb == "delete":
            if key not in s.elements:
                raise _err(f"delete element {name} {{ {key} }}: No such file or directory")
            del s.elements[key]
            continue
        problems = _element_problems(table, s, key, value)
        if problems:
            raise _err(problems[0])
        if key in s.elements and s.elements[key] != value:
            raise _err(f"add element {name} {{ {key} }}: File exists")
        s.elements[key] = value


def _apply_block(table: FakeTable, ruleset: Ruleset) -> None:
    """``table ip X { ... }``: declares chains, then sets and their elements, then
    appends rules (nft orders a block's contents this way)."""
    for c in ruleset.chains:
        _apply_chain(table, Op("add", "chain", c.name, hook=c.hook))
    for s in ruleset.sets:
        _apply_set(table, Op("add", "set", s.name, nft_set=s))
        _apply_elements(table, "add", s.name, s.elements)
    for c in ruleset.chains:
        for rule in c.rules:
            problems = _rule_problems(table, c.name, rule)
            if problems:
                raise _err(problems[0])
            table.chains[c.name].rules.append(rule)


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class Packet:
    """The first packet of a new connection."""

    saddr: str
    daddr: str
    proto: str  # tcp | udp | sctp
    dport: int
    mark: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One way the packet can go. ``verdict`` is accept, drop or reject; ``dnat`` the
    (address, port) it was translated to; ``masquerade`` whether its source is rewritten;
    ``updates`` the (set, address) entries added on the way (affinity)."""

    verdict: str
    probability: float
    dnat: tuple[str, int] | None = None
    masquerade: bool = False
    updates: tuple[tuple[str, str], ...] = ()
    trace: tuple[str, ...] = ()


@dataclass
class _State:
    packet: Packet
    probability: float = 1.0
    dnat: tuple[str, int] | None = None
    masquerade: bool = False
    updates: tuple[tuple[str, str], ...] = ()
    trace: tuple[str, ...] = ()


class _Stop(Exception):
    pass


def _in_prefix(addr: str, value: str) -> bool:
    try:
        return ipaddress.IPv4Address(addr) in ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        return False


class _Evaluator:
    def __init__(self, table: FakeTable, local_addrs: Iterable[str],
                 dynamic: Mapping[str, Iterable[str]]) -> None:
        self.table = table
        self.local = set(local_addrs)
        self.dynamic = {k: set(v) for k, v in dynamic.items()}

    def _field(self, st: _State, name: str) -> str:
        p = st.packet
        # After DNAT the later hooks see the translated destination, as in the kernel.
        daddr, dport = st.dnat if st.dnat else (p.daddr, p.dport)
        values = {"saddr": p.saddr, "daddr": daddr, "l4proto": p.proto,
                  "dport": str(dport), "ct_state": "new",
                  "ct_status": "dnat" if st.dnat else "", "mark": str(p.mark)}
        return values[name]

    def _members(self, st: _State, name: str) -> dict[str, str | None]:
        s = self.table.sets[name]
        members = dict(s.elements)
        members.update(dict.fromkeys(self.dynamic.get(name, ())))
        members.update((a, None) for n, a in st.updates if n == name)
        return members

    def _match(self, st: _State, m: Match) -> bool:
        value = self._field(st, m.field)
        if m.mask is not None:
            ok = (int(value) & m.mask) == int(m.value, 0)
        elif m.set_name is not None:
            ok = value in self._members(st, m.set_name)
        elif "/" in m.value:
            ok = _in_prefix(value, m.value)
        else:
            ok = value == m.value
        return ok != m.negate

    def run_chain(self, name: str, st: _State) -> list[tuple[_State, str]]:
        """Outcomes of running a chain: (state, "continue" | "accept" | "drop" | ...)."""
        results: list[tuple[_State, str]] = []
        self._rules(name, 0, replace(st, trace=(*st.trace, name)), results)
        return results

    def _rules(self, chain: str, index: int, st: _State,
               results: list[tuple[_State, str]]) -> None:
        rules = self.table.chains[chain].rules
        if index >= len(rules):
            results.append((st, "continue"))
            return
        self._statements(chain, index, parse_rule(rules[index]), 0, st, results)

    def _statements(self, chain: str, index: int, stmts: tuple[Statement, ...], k: int,
                    st: _State, results: list[tuple[_State, str]]) -> None:
        next_rule = (chain, index + 1)
        while k < len(stmts):
            s = stmts[k]
            k += 1
            if isinstance(s, Match):
                if not self._match(st, s):
                    return self._rules(*next_rule, st, results)
            elif isinstance(s, FibLocal):
                if st.packet.saddr not in self.local:
                    return self._rules(*next_rule, st, results)
            elif isinstance(s, Numgen):
                hit = replace(st, probability=st.probability / s.modulus)
                miss = replace(st, probability=st.probability * (s.modulus - 1) / s.modulus)
                if s.modulus > 1:
                    self._rules(*next_rule, miss, results)
                if s.value != 0:
                    return None
                st = hit
            elif isinstance(s, Lookup):
                key = " . ".join(self._field(st, f) for f in s.fields)
                members = self._members(st, s.set_name)
                if key not in members:
                    return self._rules(*next_rule, st, results)
                if s.vmap:
                    value = members[key] or ""
                    return self._verdict(chain, index, value.split(), st, results)
            elif isinstance(s, Update):
                st = replace(st, updates=(*st.updates, (s.set_name, self._field(st, s.field))))
            elif isinstance(s, MarkSet):
                mark = st.packet.mark | s.value if s.op == "or" else st.packet.mark ^ s.value
                st = replace(st, packet=replace(st.packet, mark=mark))
            elif isinstance(s, DnatMap):
                prefix = " . ".join(self._field(st, f) for f in s.fields)
                members = self._members(st, s.set_name)
                share = st.probability / s.modulus
                missed = 0.0
                for n in range(s.offset, s.offset + s.modulus):
                    target = members.get(f"{prefix} . {n}")
                    if target is None:
                        missed += share
                        continue
                    ip, _, port = target.partition(" . ")
                    results.append((replace(st, probability=share, dnat=(ip, int(port)),
                                            packet=replace(st.packet, daddr=ip,
                                                           dport=int(port))), "accept"))
                if missed:
                    self._rules(*next_rule, replace(st, probability=missed), results)
                return None
            elif isinstance(s, Dnat):
                st = replace(st, dnat=(s.ip, s.port),
                             packet=replace(st.packet, daddr=s.ip, dport=s.port))
                results.append((st, "accept"))
                return None
            elif isinstance(s, Masquerade):
                results.append((replace(st, masquerade=True), "accept"))
                return None
            elif isinstance(s, Reject):
                results.append((st, "reject"))
                return None
            elif isinstance(s, Verdict):
                return self._verdict(chain, index, [s.kind, s.target or ""], st, results)
        return self._rules(*next_rule, st, results)

    def _verdict(self, chain: str, index: int, words: list[str], st: _State,
                 results: list[tuple[_State, str]]) -> None:
        kind = words[0]
        if kind in ("drop", "accept"):
            results.append((st, kind))
        elif kind == "return":
            results.append((st, "continue"))
        elif kind == "goto":
            results.extend(self.run_chain(words[1], st))
        elif kind == "jump":
            for sub, verdict in self.run_chain(words[1], st):
                if verdict == "continue":
                    self._rules(chain, index + 1, sub, results)
                else:
                    results.append((sub, verdict))

    def hook(self, hook: str, kind: str, states: list[_State]) -> list[tuple[_State, str]]:
        bases = sorted(((c.hook, n) for n, c in self.table.chains.items()
                        if c.hook is not None and c.hook.hook == hook and c.hook.type == kind),
                       key=lambda hn: _priority(hn[0]))
        out = [(st, "accept") for st in states]
        for _hook, name in bases:
            nxt: list[tuple[_State, str]] = []
            for st, verdict in out:
                if verdict != "accept":
                    nxt.append((st, verdict))
                    continue
                for sub, v in self.run_chain(name, st):
                    nxt.append((sub, "accept" if v == "continue" else v))
            out = nxt
        return out


def evaluate(
    table: Ruleset | FakeTable,
    packet: Packet,
    path: str = "prerouting",
    local_addrs: Iterable[str] = (),
    dynamic: Mapping[str, Iterable[str]] | None = None,
) -> list[Outcome]:
    """Every outcome of a new connection's first packet, most likely first.

    ``path``: "prerouting" for a packet arriving at the node (from a pod or another host),
    "output" for one sent by a process on the node. ``local_addrs``: the node's own
    addresses (decides input vs forward after DNAT, and ``fib saddr type local``).
    ``dynamic``: contents of dynamic sets, e.g. {affinity set name: [client ip]}.
    """
    t = table if isinstance(table, FakeTable) else FakeTable.from_ruleset(table)
    ev = _Evaluator(t, local_addrs, dynamic or {})
    first = "prerouting" if path == "prerouting" else "output"
    states = [_State(packet)]
    outcomes: list[Outcome] = []
    for st, verdict in ev.hook(first, "nat", states):
        if verdict != "accept":
            outcomes.append(_outcome(st, verdict))
            continue
        if path == "prerouting":
            filter_hook = "input" if st.packet.daddr in ev.local else "forward"
        else:
            filter_hook = "output"
        for st2, v2 in ev.hook(filter_hook, "filter", [st]):
            if v2 != "accept":
                outcomes.append(_outcome(st2, v2))
                continue
            if path == "prerouting" and filter_hook == "input":
                outcomes.append(_outcome(st2, "accept"))
                continue
            for st3, v3 in ev.hook("postrouting", "nat", [st2]):
                outcomes.append(_outcome(st3, v3))
    merged: dict[tuple[object, ...], Outcome] = {}
    for o in outcomes:
        k = (o.verdict, o.dnat, o.masquerade, o.updates)
        if k in merged:
            merged[k] = replace(merged[k], probability=merged[k].probability + o.probability)
        else:
            merged[k] = o
    return sorted(merged.values(), key=lambda o: (-o.probability, o.verdict, o.dnat or ("", 0)))


def _outcome(st: _State, verdict: str) -> Outcome:
    return Outcome(verdict, st.probability, st.dnat, st.masquerade, st.updates, st.trace)


def verdicts(outcomes: Iterable[Outcome]) -> dict[str, float]:
    """{"10.244.0.5:8080" | "DROP" | "REJECT" | "ACCEPT": probability} - handy in tests."""
    out: dict[str, float] = {}
    for o in outcomes:
        if o.verdict == "accept" and o.dnat is not None:
            key = f"{o.dnat[0]}:{o.dnat[1]}"
        else:
            key = o.verdict.upper()
        out[key] = round(out.get(key, 0.0) + o.probability, 9)
    return out
