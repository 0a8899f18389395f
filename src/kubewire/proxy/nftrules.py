"""A parser for the nft statements the proxy writes (pure).

The compiler emits a small, closed subset of nft's rule language; this turns each rule
into typed statements so that the validating fake can check references and the evaluator
can run packets through a ruleset without trusting any text. Anything outside the subset
raises ``RuleSyntaxError``: a rule the fake cannot read is a bug in the compiler.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from kubewire.proxy.errors import ProxyError


class RuleSyntaxError(ProxyError, ValueError):
    """A rule outside the subset of nft the proxy writes."""


#: Selectors the subset uses, as nft spells them, to the field names used below.
_SELECTORS = {
    ("ip", "saddr"): "saddr",
    ("ip", "daddr"): "daddr",
    ("meta", "l4proto"): "l4proto",
    ("meta", "mark"): "mark",
    ("th", "dport"): "dport",
    ("ct", "state"): "ct_state",
    ("ct", "status"): "ct_status",
}
L4PROTOS = ("tcp", "udp", "sctp")


@dataclass(frozen=True, slots=True)
class Match:
    """``field [& mask] (==|!=) value``; value may be a literal (address, CIDR, number,
    protocol, keyword) or ``@set``."""

    field: str
    value: str
    negate: bool = False
    mask: int | None = None

    @property
    def set_name(self) -> str | None:
        return self.value[1:] if self.value.startswith("@") else None


@dataclass(frozen=True, slots=True)
class Lookup:
    """``a . b . c @set`` (membership) or ``a . b vmap @map`` (verdict dispatch)."""

    fields: tuple[str, ...]
    set_name: str
    vmap: bool


@dataclass(frozen=True, slots=True)
class Numgen:
    """``numgen random mod N == value``: true for 1 packet in N."""

    modulus: int
    value: int


@dataclass(frozen=True, slots=True)
class FibLocal:
    """``fib saddr type local``: the source is one of this namespace's addresses."""


@dataclass(frozen=True, slots=True)
class Update:
    """``update @set { ip saddr }``: add the source (refreshing its timeout)."""

    set_name: str
    field: str


@dataclass(frozen=True, slots=True)
class MarkSet:
    """``meta mark set meta mark or|xor V``."""

    op: str
    value: int


@dataclass(frozen=True, slots=True)
class Dnat:
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class DnatMap:
    """``dnat ip to a . b . numgen random mod N [offset K] map @m``: the key is the
    fields' values then a random number in [K, K + N); the map's value ``ip . port`` is
    the target. No element for the key: the rule does not match (nft breaks out of it)."""

    fields: tuple[str, ...]
    modulus: int
    offset: int
    set_name: str


@dataclass(frozen=True, slots=True)
class Masquerade:
    fully_random: bool


@dataclass(frozen=True, slots=True)
class Reject:
    kind: str  # "tcp reset" | "icmp port-unreachable"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # jump | goto | return | drop | accept
    target: str | None = None


Statement = Match | Lookup | Numgen | FibLocal | Update | MarkSet | Dnat | DnatMap | \
    Masquerade | Reject | Verdict


class _Tokens:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = text.split()
        self.i = 0

    def peek(self, ahead: int = 0) -> str | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            want = f"'{expected}'" if expected else "more"
            raise RuleSyntaxError(f"expected {want} at word {self.i + 1} of rule: {self.text}")
        self.i += 1
        return tok

    def fail(self, why: str) -> RuleSyntaxError:
        return RuleSyntaxError(f"{why} at word {self.i + 1} of rule: {self.text}")


def _selector(t: _Tokens) -> str | None:
    """Read one selector if the next words are one; l4 protocols return e.g. 'tcp:dport'."""
    a, b = t.peek(), t.peek(1)
    if (a, b) in _SELECTORS:
        t.i += 2
        return _SELECTORS[(str(a), str(b))]
    if a in L4PROTOS and b == "dport":
        t.i += 2
        return f"{a}:dport"
    return None


def _int(t: _Tokens, tok: str) -> int:
    try:
        return int(tok, 0)
    except ValueError:
        raise t.fail(f"not a number: {tok!r}") from None


def _parse_relation(t: _Tokens, field: str, out: list[Statement]) -> None:
    if field.endswith(":dport"):  # "tcp dport 80" = l4proto tcp and dport 80
        out.append(Match("l4proto", field.split(":")[0]))
        field = "dport"
    mask = None
    if t.peek() == "&":
        t.take()
        mask = _int(t, t.take())
    negate = False
    if t.peek() in ("==", "!="):
        negate = t.take() == "!="
    value = t.take()
    if field == "mark" and value == "set":
        raise t.fail("misplaced 'set'")
    out.append(Match(field, value, negate, mask))


def _dnat_map(t: _Tokens) -> DnatMap:
    for word in ("dnat", "ip", "to"):
        t.take(word)
    fields: list[str] = []
    while t.peek() != "numgen":
        field = _selector(t)
        if field is None or ":" in field:
            raise t.fail("expected a selector in the dnat map key")
        fields.append(field)
        t.take(".")
    for word in ("numgen", "random", "mod"):
        t.take(word)
    modulus = _int(t, t.take())
    offset = 0
    if t.peek() == "offset":
        t.take()
        offset = _int(t, t.take())
    t.take("map")
    name = t.take()
    if not name.startswith("@") or modulus < 1:
        raise t.fail("dnat map needs mod N >= 1 and a named @map")
    return DnatMap(tuple(fields), modulus, offset, name[1:])


@functools.lru_cache(maxsize=65536)
def parse_rule(text: str) -> tuple[Statement, ...]:
    """The statements of one rule, in order."""
    t = _Tokens(text)
    out: list[Statement] = []
    while t.peek() is not None:
        tok = t.peek()
        if tok == "meta" and t.peek(1) == "mark" and t.peek(2) == "set":
            t.i += 3
            t.take("meta")
            t.take("mark")
            op = t.take()
            if op not in ("or", "xor"):
                raise t.fail(f"unsupported mark operation {op!r}")
            out.append(MarkSet(op, _int(t, t.take())))
        elif tok == "numgen":
            t.take()
            t.take("random")
            t.take("mod")
            modulus = _int(t, t.take())
            t.take("==")
            out.append(Numgen(modulus, _int(t, t.take())))
        elif tok == "fib":
            for word in ("fib", "saddr", "type", "local"):
                t.take(word)
            out.append(FibLocal())
        elif tok == "update":
            t.take()
            name = t.take()
            if not name.startswith("@"):
                raise t.fail("update needs @set")
            t.take("{")
            field = _selector(t)
            if field is None:
                raise t.fail("update needs a selector")
            t.take("}")
            out.append(Update(name[1:], field))
        elif tok == "dnat" and t.peek(1) == "ip":
            out.append(_dnat_map(t))
        elif tok == "dnat":
            t.take()
            t.take("to")
            ip, sep, port = t.take().rpartition(":")
            if not sep:
                raise t.fail("dnat needs address:port")
            out.append(Dnat(ip, _int(t, port)))
        elif tok == "masquerade":
            t.take()
            fully = t.peek() == "fully-random"
            if fully:
                t.take()
            out.append(Masquerade(fully))
        elif tok == "reject":
            t.take()
            if t.peek() is None:
                out.append(Reject("icmp port-unreachable"))
            else:
                t.take("with")
                rest = []
                while t.peek() is not None:
                    rest.append(t.take())
                spec = " ".join(rest)
                kinds = {"tcp reset": "tcp reset",
                         "icmp type port-unreachable": "icmp port-unreachable"}
                if spec not in kinds:
                    raise t.fail(f"unsupported reject {spec!r}")
                out.append(Reject(kinds[spec]))
        elif tok in ("jump", "goto"):
            t.take()
            out.append(Verdict(str(tok), t.take()))
        elif tok in ("return", "drop", "accept"):
            t.take()
            out.append(Verdict(str(tok)))
        else:
            field = _selector(t)
            if field is None:
                raise t.fail(f"unknown word {tok!r}")
            if t.peek() == "." or t.peek() == "vmap":
                fields = [field]
                while t.peek() == ".":
                    t.take()
                    nxt = _selector(t)
                    if nxt is None:
                        raise t.fail("expected a selector after '.'")
                    fields.append(nxt)
                vmap = t.peek() == "vmap"
                if vmap:
                    t.take()
                name = t.take()
                if not name.startswith("@"):
                    raise t.fail("concatenations are only looked up in named sets")
                out.append(Lookup(tuple(fields), name[1:], vmap))
            else:
                _parse_relation(t, field, out)
        if out and isinstance(out[-1], Verdict | Dnat | DnatMap | Masquerade | Reject) \
                and t.peek() is not None:
            raise t.fail("a terminal statement must end the rule")
    if not out:
        raise RuleSyntaxError("empty rule")
    return tuple(out)


def chain_refs(statements: tuple[Statement, ...]) -> list[str]:
    return [s.target for s in statements
            if isinstance(s, Verdict) and s.target is not None]


def set_refs(statements: tuple[Statement, ...]) -> list[tuple[str, str]]:
    """(set name, how it is used: "lookup" | "vmap" | "update" | "map")."""
    out: list[tuple[str, str]] = []
    for s in statements:
        if isinstance(s, Match) and s.set_name is not None:
            out.append((s.set_name, "lookup"))
        elif isinstance(s, Lookup):
            out.append((s.set_name, "vmap" if s.vmap else "lookup"))
        elif isinstance(s, Update):
            out.append((s.set_name, "update"))
        elif isinstance(s, DnatMap):
            out.append((s.set_name, "map"))
    return out


def verdict_target(value: str | None) -> str | None:
    """The chain a verdict-map value jumps to ("goto X" -> X), if any."""
    if value is None:
        return None
    parts = value.split()
    if len(parts) == 2 and parts[0] in ("jump", "goto"):
        return parts[1]
    return None
