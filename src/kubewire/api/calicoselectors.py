"""Calico selector expressions, as BGPPeer, IPPool and Calico policies write them.

The language (Calico's ``selector`` strings)::

    all()                       every object ("" means the same)
    has(k)   !has(k)            label present / absent
    k == "v"   k != "v"         equal / not equal (true when k is absent)
    k in {"a", "b"}             present and one of the values
    k not in {"a", "b"}         absent or none of the values
    k starts with "v"   k ends with "v"   k contains "v"
    !e   e && e   e || e   (e)  negation binds tightest, then &&, then ||

Strings are quoted with ``"`` or ``'`` and have no escapes. :func:`parse_calico_selector` parses
once to a frozen tree whose ``matches(labels)`` evaluates it and whose ``str()`` is a canonical
spelling that parses back to an equal tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from kubewire.api.errors import ApiError

__all__ = [
    "All",
    "And",
    "CalicoSelector",
    "CalicoSelectorError",
    "Has",
    "In",
    "Not",
    "Or",
    "StringMatch",
    "parse_calico_selector",
]

# Calico's label-key characters: a DNS subdomain prefix and a name, written loosely.
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
_STRING_OPS = ("==", "!=", "starts with", "ends with", "contains")


class CalicoSelectorError(ApiError, ValueError):
    """A selector Calico would reject; ``column`` is 1-based in the selector text."""

    def __init__(self, text: str, column: int, message: str) -> None:
        self.text = text
        self.column = column
        self.message = message
        super().__init__(f"column {column}: {message}")


def _quote(value: str) -> str:
    # No escapes exist, so a value holding a double quote can only be single-quoted.
    return f"'{value}'" if '"' in value else f'"{value}"'


@dataclass(frozen=True, slots=True)
class All:
    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True, slots=True)
class Has:
    key: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels

    def __str__(self) -> str:
        return f"has({self.key})"


@dataclass(frozen=True, slots=True)
class StringMatch:
    """``key OP "value"`` for ==, !=, starts with, ends with, contains."""

    key: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.key)
        if self.op == "!=":
            return actual != self.value
        if actual is None:
            return False
        if self.op == "==":
            return actual == self.value
        if self.op == "starts with":
            return actual.startswith(self.value)
        if self.op == "ends with":
            return actual.endswith(self.value)
        return self.value in actual

    def __str__(self) -> str:
        return f"{self.key} {self.op} {_quote(self.value)}"


@dataclass(frozen=True, slots=True)
class In:
    """``key in {...}`` or, ``negated``, ``key not in {...}``; values kept sorted."""

    key: str
    values: tuple[str, ...]
    negated: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.key)
        inside = actual is not None and actual in self.values
        return not inside if self.negated else inside

    def __str__(self) -> str:
        op = "not in" if self.negated else "in"
        return f"{self.key} {op} {{{', '.join(_quote(v) for v in self.values)}}}"


@dataclass(frozen=True, slots=True)
class Not:
    operand: CalicoSelector

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.matches(labels)

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"!{inner}" if isinstance(self.operand, All | Has | Not) else f"!({inner})"


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[CalicoSelector, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(o.matches(labels) for o in self.operands)

    def __str__(self) -> str:
        return " && ".join(f"({o})" if isinstance(o, Or) else str(o) for o in self.operands)


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[CalicoSelector, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(o.matches(labels) for o in self.operands)

    def __str__(self) -> str:
        return " || ".join(str(o) for o in self.operands)


CalicoSelector: TypeAlias = All | Has | StringMatch | In | Not | And | Or


def _flat(kind: type[And] | type[Or], items: list[CalicoSelector]) -> list[CalicoSelector]:
    """``(a && b) && c`` is ``a && b && c``: flattening keeps str() a canonical form."""
    out: list[CalicoSelector] = []
    for item in items:
        out.extend(item.operands if isinstance(item, kind) else (item,))
    return out


class _Parser:
    """Recursive descent over the raw text; ``pos`` is a 0-based index into it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str, pos: int | None = None) -> CalicoSelectorError:
        return CalicoSelectorError(self.text, (self.pos if pos is None else pos) + 1, message)

    def found(self) -> str:
        self.skip()
        if self.pos >= len(self.text):
            return "the end of the selector"
        return f'"{self.text[self.pos:self.pos + 12]}"'

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip()
        if not self.text.startswith(token, self.pos):
            return False
        # Word operators must end at a word boundary (`in` is not the start of `index`).
        end = self.pos + len(token)
        return not (token[-1].isalpha() and end < len(self.text)
                    and self.text[end] in _KEY_CHARS)

    def take(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str, what: str) -> None:
        if not self.take(token):
            raise self.fail(f"expected {what}, found {self.found()}")

    def parse(self) -> CalicoSelector:
        self.skip()
        if self.pos == len(self.text):
            return All()
        tree = self.disjunction()
        self.skip()
        if self.pos != len(self.text):
            raise self.fail(f'expected "&&", "||" or the end of the selector, found {self.found()}')
        return tree

    def disjunction(self) -> CalicoSelector:
        operands = _flat(Or, [self.conjunction()])
        while self.take("||"):
            operands += _flat(Or, [self.conjunction()])
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def conjunction(self) -> CalicoSelector:
        operands = _flat(And, [self.unary()])
        while self.take("&&"):
            operands += _flat(And, [self.unary()])
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self) -> CalicoSelector:
        if self.peek("!="):
            raise self.fail('expected a label key, "!", "(", "all()" or "has(" before "!="')
        if self.take("!"):
            return Not(self.unary())
        if self.take("("):
            inner = self.disjunction()
            self.expect(")", 'a closing ")"')
            return inner
        start = self.pos
        # A label may itself be called "all" or "has": only a "(" makes them functions.
        if self.take("all") and self.take("("):
            self.expect(")", '")": all() takes no argument')
            return All()
        self.pos = start
        if self.take("has") and self.take("("):
            key = self.key()
            self.expect(")", f'")" after has({key}')
            return Has(key)
        self.pos = start
        return self.comparison()

    def key(self) -> str:
        self.skip()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _KEY_CHARS:
            self.pos += 1
        if self.pos == start:
            raise self.fail(f"expected a label key, found {self.found()}")
        return self.text[start:self.pos]

    def string(self, after: str) -> str:
        self.skip()
        quote = self.text[self.pos] if self.pos < len(self.text) else ""
        if quote not in ('"', "'"):
            raise self.fail(f'expected a quoted string after "{after}", found {self.found()}')
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise self.fail(f"this string has no closing {quote}")
        value = self.text[self.pos + 1:end]
        self.pos = end + 1
        return value

    def comparison(self) -> CalicoSelector:
        key = self.key()
        for op in _STRING_OPS:
            if self.take(op):
                return StringMatch(key, op, self.string(op))
        if self.take("not"):
            self.expect("in", '"in" after "not"')
            return In(key, self.value_set("not in"), negated=True)
        if self.take("in"):
            return In(key, self.value_set("in"))
        raise self.fail(
            f'expected an operator after "{key}" (==, !=, in, not in, starts with, ends with, '
            f"contains), found {self.found()}"
        )

    def value_set(self, after: str) -> tuple[str, ...]:
        self.expect("{", f'"{{" after "{after}"')
        values: set[str] = set()
        if not self.take("}"):
            values.add(self.string("{" if not values else ","))
            while self.take(","):
                values.add(self.string(","))
            self.expect("}", '"," or "}"')
        return tuple(sorted(values))


def parse_calico_selector(text: str) -> CalicoSelector:
    """Parse a Calico selector; "" and all() select everything.

    Raises CalicoSelectorError naming the column and what was expected there.
    """
    return _Parser(text).parse()
