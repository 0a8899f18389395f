"""A validating fake of the policy table, and a packet evaluator over it (pure).

``check_ruleset`` reads every rule and element back with a parser for exactly the subset
of nft the compiler writes (anything else is a compiler bug) and lists what the kernel
would refuse: a missing set or chain, a lookup whose key does not fit the set's type, a
range in a set without ``flags interval``, overlapping intervals (nft refuses them), a
verdict map pointing at a missing or base chain, names or comments that are too long.

``evaluate`` runs a new connection's first packet through the base chains of one hook and
returns the verdict with the rules it passed; ``cluster_verdict`` does that on the
source pod's node and then on the destination pod's node, as the packet travels. That is
the model half of "real packets and the model must agree": tests compare it with the
oracle in ``evaluate.py``, and lab tests compare both with real connections.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

from kubewire.policy import names
from kubewire.policy.errors import RulesetError
from kubewire.policy.model import NftSet, Ruleset
from kubewire.policy.views import Endpoint, PodView

_FIELD_TYPES = {("ip", "saddr"): "ipv4_addr", ("ip", "daddr"): "ipv4_addr",
                ("meta", "l4proto"): "inet_proto", ("th", "dport"): "inet_service"}
_PROTOCOLS = ("tcp", "udp", "sctp", "icmp")
_VERDICTS = ("accept", "drop", "return")
_COMMENT = re.compile(r'\s+comment "([^"]*)"$')


# ---------------------------------------------------------------- rule statements


@dataclass(frozen=True, slots=True)
class CtState:
    states: frozenset[str]


@dataclass(frozen=True, slots=True)
class CtStatus:
    status: str  # dnat


@dataclass(frozen=True, slots=True)
class Lookup:
    """``f1 . f2 @set`` or ``f vmap @map``; fields as ("ip", "saddr")..."""

    fields: tuple[tuple[str, str], ...]
    set_name: str
    vmap: bool = False


@dataclass(frozen=True, slots=True)
class Match:
    field: tuple[str, str]
    value: str


@dataclass(frozen=True, slots=True)
class Reject:
    how: str  # "tcp reset" | "icmp type admin-prohibited"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # accept | drop | return | jump | goto
    target: str | None = None


Statement = CtState | CtStatus | Lookup | Match | Reject | Verdict


@dataclass(frozen=True, slots=True)
class Rule:
    statements: tuple[Statement, ...]
    comment: str | None


@lru_cache(maxsize=4096)
def parse_rule(text: str) -> Rule:
    """Parse one rule of the compiler's subset; RulesetError for anything else."""
    comment = None
    m = _COMMENT.search(text)
    if m:
        comment = m.group(1)
        text = text[: m.start()]
    tokens = text.split()
    out: list[Statement] = []
    i = 0

    def fail(why: str) -> RulesetError:
        return RulesetError(f"rule outside the compiler's subset ({why}): {text}")

    while i < len(tokens):
        tok = tokens[i]
        if tok == "ct":
            if tokens[i + 1: i + 3] == ["status", "dnat"]:
                out.append(CtStatus("dnat"))
                i += 3
                continue
            if tokens[i + 1: i + 2] != ["state"] or i + 2 >= len(tokens):
                raise fail("ct")
            out.append(CtState(frozenset(tokens[i + 2].split(","))))
            i += 3
        elif (tok, tokens[i + 1] if i + 1 < len(tokens) else "") in _FIELD_TYPES:
            fields = [(tok, tokens[i + 1])]
            i += 2
            while i < len(tokens) and tokens[i] == ".":
                pair = (tokens[i + 1], tokens[i + 2]) if i + 2 < len(tokens) else ("", "")
                if pair not in _FIELD_TYPES:
                    raise fail(f"field {pair}")
                fields.append(pair)
                i += 3
            if i >= len(tokens):
                raise fail("expression without a set or value")
            if tokens[i] == "vmap":
                if len(fields) != 1 or i + 1 >= len(tokens) or not tokens[i + 1].startswith("@"):
                    raise fail("vmap")
                out.append(Lookup(tuple(fields), tokens[i + 1][1:], vmap=True))
                i += 2
            elif tokens[i].startswith("@"):
                out.append(Lookup(tuple(fields), tokens[i][1:]))
                i += 1
            elif len(fields) == 1 and fields[0] == ("meta", "l4proto") \
                    and tokens[i] in _PROTOCOLS:
                out.append(Match(fields[0], tokens[i]))
                i += 1
            else:
                raise fail(f"value {tokens[i]}")
        elif tok == "reject":
            rest = " ".join(tokens[i + 1:])
            if rest not in ("with tcp reset", "with icmp type admin-prohibited"):
                raise fail("reject")
            out.append(Reject(rest.removeprefix("with ")))
            i = len(tokens)
        elif tok in _VERDICTS:
            out.append(Verdict(tok))
            i += 1
        elif tok in ("jump", "goto"):
            if i + 1 >= len(tokens):
                raise fail(tok)
            out.append(Verdict(tok, tokens[i + 1]))
            i += 2
        else:
            raise fail(f"token {tok!r}")
    return Rule(tuple(out), comment)


# ---------------------------------------------------------------- set elements

FieldValue = tuple[int, int] | str  # numeric interval, or a protocol name


def _parse_field(kind: str, text: str) -> FieldValue:
    if kind == "inet_proto":
        if text not in _PROTOCOLS:
            raise RulesetError(f"{text!r} is not a protocol")
        return text
    if kind == "inet_service":
        lo, _, hi = text.partition("-")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b <= 65535:
            raise RulesetError(f"{text!r} is not a port or port range")
        return (a, b)
    if "/" in text:
        net = ipaddress.IPv4Network(text)  # strict: host bits set is an nft error too
        return (int(net.network_address), int(net.broadcast_address))
    lo, _, hi = text.partition("-")
    a, b = int(ipaddress.IPv4Address(lo)), int(ipaddress.IPv4Address(hi or lo))
    if a > b:
        raise RulesetError(f"{text!r}: empty range")
    return (a, b)


def _is_range(value: FieldValue) -> bool:
    return not isinstance(value, str) and value[0] != value[1]


@lru_cache(maxsize=512)
def _parsed(nft_set: NftSet) -> tuple[tuple[tuple[FieldValue, ...], str | None], ...]:
    kinds = nft_set.key_type.split(" . ")
    out = []
    for key, value in nft_set.elements:
        parts = key.split(" . ")
        if len(parts) != len(kinds):
            raise RulesetError(f"{nft_set.kind} {nft_set.name}: element {key} does not fit "
                               f"type {nft_set.key_type}")
        out.append((tuple(_parse_field(k, p) for k, p in zip(kinds, parts, strict=True)),
                    value))
    return tuple(out)


def _overlaps(a: FieldValue, b: FieldValue) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a[0] <= b[1] and b[0] <= a[1]


def _set_problems(s: NftSet, chains: Mapping[str, bool]) -> list[str]:
    where = f"{s.kind} {s.name}"
    try:
        elements = _parsed(s)
    except (RulesetError, ValueError) as exc:
        return [f"{where}: {exc}"]
    problems = []
    if not s.interval and any(_is_range(v) for key, _ in elements for v in key):
        problems.append(f"{where}: ranges or prefixes need flags interval")
    # Group by every field but the last (the compiler only puts ranges last, except in
    # one-field sets), then look for overlaps in the last field within a group.
    groups: dict[tuple[FieldValue, ...], list[FieldValue]] = {}
    for key, _ in elements:
        if any(_is_range(v) for v in key[:-1]):
            problems.append(f"{where}: range outside the last field: {key}")
        groups.setdefault(key[:-1], []).append(key[-1])
    for head, lasts in groups.items():
        ordered = sorted(lasts, key=lambda v: (0, 0) if isinstance(v, str) else v)
        for a, b in pairwise(ordered):
            if _overlaps(a, b):
                problems.append(f"{where}: elements overlap ({head} {a} / {b}); nft refuses "
                                "overlapping intervals")
    if s.data_type == "verdict":
        for text, value in s.elements:
            verb, _, target = (value or "").partition(" ")
            if verb not in ("jump", "goto") or target not in chains:
                problems.append(f"{where}: element {text} : {value} jumps to a missing chain")
            elif chains[target]:
                problems.append(f"{where}: element {text} jumps to base chain {target}")
    elif s.data_type is not None:
        problems.append(f"{where}: only verdict maps are written")
    return problems


def check_ruleset(ruleset: Ruleset) -> list[str]:
    """Everything the kernel would refuse in this ruleset (empty when it is valid)."""
    problems = []
    for kind, listed in (("chain", [c.name for c in ruleset.chains]),
                         ("set", [s.name for s in ruleset.sets])):
        if listed != sorted(listed) or len(set(listed)) != len(listed):
            problems.append(f"{kind}s are not sorted by name or not unique")
        problems += [f"{kind} name longer than {names.MAX_NAME_LENGTH}: {n}"
                     for n in listed if len(n) > names.MAX_NAME_LENGTH]
    chains = {c.name: c.hook is not None for c in ruleset.chains}
    sets = {s.name: s for s in ruleset.sets}
    for s in ruleset.sets:
        problems += _set_problems(s, chains)
    for chain in ruleset.chains:
        for text in chain.rules:
            where = f"chain {chain.name}"
            try:
                rule = parse_rule(text)
            except RulesetError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if rule.comment is not None and len(rule.comment.encode()) >= \
                    names.MAX_COMMENT_LENGTH:
                problems.append(f"{where}: comment longer than {names.MAX_COMMENT_LENGTH}")
            for st in rule.statements:
                if isinstance(st, Verdict) and st.target is not None:
                    if st.target not in chains:
                        problems.append(f"{where}: {st.kind} to missing chain {st.target}")
                    elif chains[st.target]:
                        problems.append(f"{where}: {st.kind} to base chain {st.target}")
                if isinstance(st, Lookup):
                    target = sets.get(st.set_name)
                    want = " . ".join(_FIELD_TYPES[f] for f in st.fields)
                    if target is None:
                        problems.append(f"{where}: missing set @{st.set_name}: {text}")
                    elif st.vmap != (target.data_type == "verdict"):
                        problems.append(f"{where}: @{st.set_name} used as the wrong kind")
                    elif target.key_type != want:
                        problems.append(f"{where}: key {want} does not fit @{st.set_name} "
                                        f"({target.key_type}): {text}")
    return problems


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class Packet:
    """The first packet of a new connection (``ct_state`` "new")."""

    saddr: str
    daddr: str
    protocol: str  # tcp | udp | sctp | icmp
    dport: int = 0
    ct_state: str = "new"
    dnat: bool = False  # the proxy translated its destination (ct status dnat)


@dataclass(frozen=True, slots=True)
class Outcome:
    """``verdict``: accept, drop or reject; ``trace``: chains entered and rules that
    decided (their comments), in order."""

    verdict: str
    trace: tuple[str, ...] = ()


class _Stop(Exception):
    def __init__(self, verdict: str) -> None:
        self.verdict = verdict


PacketValue = int | str  # an address or port as a number, or a protocol name


def _value(packet: Packet, f: tuple[str, str]) -> PacketValue:
    if f == ("ip", "saddr"):
        return int(ipaddress.IPv4Address(packet.saddr))
    if f == ("ip", "daddr"):
        return int(ipaddress.IPv4Address(packet.daddr))
    if f == ("meta", "l4proto"):
        return packet.protocol
    return packet.dport


def _field_matches(f: FieldValue, k: PacketValue) -> bool:
    if isinstance(f, str) or isinstance(k, str):
        return f == k
    return f[0] <= k <= f[1]


def _lookup(nft_set: NftSet, key: tuple[PacketValue, ...]) -> tuple[bool, str | None]:
    for fields, value in _parsed(nft_set):
        if all(_field_matches(f, k) for f, k in zip(fields, key, strict=True)):
            return True, value
    return False, None


class _Run:
    def __init__(self, ruleset: Ruleset, packet: Packet) -> None:
        self.chains = {c.name: c for c in ruleset.chains}
        self.sets = {s.name: s for s in ruleset.sets}
        self.packet = packet
        self.trace: list[str] = []

    def chain(self, name: str) -> bool:
        """Run a chain; True when it falls through or returns (the caller continues)."""
        self.trace.append(name)
        for text in self.chains[name].rules:
            rule = parse_rule(text)
            result = self.rule(rule)
            if result == "return":
                return True
        return True

    def rule(self, rule: Rule) -> str:
        for st in rule.statements:
            if isinstance(st, CtState):
                if self.packet.ct_state not in st.states:
                    return "next"
            elif isinstance(st, CtStatus):
                if not self.packet.dnat:
                    return "next"
            elif isinstance(st, Match):
                if self.packet.protocol != st.value:
                    return "next"
            elif isinstance(st, Lookup):
                key = tuple(_value(self.packet, f) for f in st.fields)
                found, value = _lookup(self.sets[st.set_name], key)
                if not found:
                    return "next"
                if st.vmap:
                    verb, _, target = (value or "").partition(" ")
                    return self.verdict(Verdict(verb, target), rule)
            elif isinstance(st, Reject):
                self.note(rule)
                raise _Stop("reject")
            else:
                return self.verdict(st, rule)
        return "next"

    def note(self, rule: Rule) -> None:
        if rule.comment:
            self.trace.append(rule.comment)

    def verdict(self, v: Verdict, rule: Rule) -> str:
        if v.kind in ("accept", "drop"):
            self.note(rule)
            raise _Stop(v.kind)
        if v.kind == "return":
            self.note(rule)
            return "return"
        assert v.target is not None
        if v.kind == "goto":
            self.chain(v.target)
            return "return"  # a goto'd chain that falls through returns past the caller
        self.chain(v.target)
        return "next"


def evaluate(ruleset: Ruleset, packet: Packet, hook: str = "forward") -> Outcome:
    """The verdict of this table's base chains on ``hook`` for ``packet``."""
    run = _Run(ruleset, packet)
    bases = sorted((c for c in ruleset.chains if c.hook is not None and c.hook.hook == hook),
                   key=lambda c: (c.hook.priority if c.hook else 0, c.name))
    try:
        for base in bases:
            run.chain(base.name)
    except _Stop as stop:
        return Outcome(stop.verdict, tuple(run.trace))
    return Outcome("accept", tuple(run.trace))


def cluster_verdict(rulesets: Mapping[str, Ruleset], src: Endpoint, dst: Endpoint,
                    protocol: str, port: int) -> Outcome:
    """A new connection's fate across the nodes it passes: the forward hook of the source
    pod's node, then of the destination pod's node (one node when they share it). A node
    without a ruleset has no policy table. Addresses outside the pod network pass no
    policy node of their own."""
    if src.ip is None or dst.ip is None:
        raise RulesetError("both ends need an address")
    packet = Packet(src.ip, dst.ip, protocol.lower(), port)
    nodes: list[str] = []
    for end in (src, dst):
        if isinstance(end, PodView) and end.node is not None and end.node not in nodes:
            nodes.append(end.node)
    trace: list[str] = []
    for node in nodes:
        ruleset = rulesets.get(node)
        if ruleset is None:
            continue
        outcome = evaluate(ruleset, packet)
        trace += [f"{node}: {t}" for t in outcome.trace]
        if outcome.verdict != "accept":
            return Outcome(outcome.verdict, tuple(trace))
    return Outcome("accept", tuple(trace))
