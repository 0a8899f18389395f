"""The compiled policy table as plain, sorted, frozen data, and its ``nft -f`` text.

A deliberately small model of its own rather than ``kubewire.proxy.model``: policy may
import only ``api`` (the pure core stays a leaf next to proxy), and this table needs far
less (no deltas, no lazily sorted indexes). If a third nft user appears, the shared part
(Hook, Chain, a set with elements, render) is the piece to move into a leaf package.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kubewire.policy import names


@dataclass(frozen=True, slots=True)
class Hook:
    """A base chain's attachment: ``type {type} hook {hook} priority {priority}``."""

    type: str  # filter
    hook: str  # forward | input
    priority: int

    def render(self) -> str:
        return f"type {self.type} hook {self.hook} priority {self.priority}; policy accept;"


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    rules: tuple[str, ...] = ()
    hook: Hook | None = None


@dataclass(frozen=True, slots=True)
class NftSet:
    """A named set (``data_type`` None) or verdict map (``data_type`` "verdict").

    ``key_type`` is an nft type name or a concatenation (``ipv4_addr . inet_proto .
    inet_service``); ``elements`` are (key, value) pairs in the compiler's order (sorted by
    the numeric value of the key), value None for sets. ``interval``: keys may be ranges
    or prefixes; the compiler never writes two elements that overlap.
    """

    name: str
    key_type: str
    elements: tuple[tuple[str, str | None], ...] = ()
    data_type: str | None = None
    interval: bool = False

    @property
    def kind(self) -> str:
        return "map" if self.data_type else "set"


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything in table ``ip kubewire-policy`` for one node, sorted by name."""

    chains: tuple[Chain, ...] = ()
    sets: tuple[NftSet, ...] = ()
    warnings: tuple[str, ...] = ()  # policies left out, and why
    family: str = names.FAMILY
    table: str = names.TABLE

    def chain(self, name: str) -> Chain:
        return next(c for c in self.chains if c.name == name)

    def set(self, name: str) -> NftSet:
        return next(s for s in self.sets if s.name == name)

    def render(self) -> str:
        """The whole table as one ``nft -f`` block."""
        return "".join(self._lines()) + "\n"

    def transaction(self) -> str:
        """What a node agent sends as one ``nft -f -`` run: the table replaced atomically
        (``add`` first, so that ``delete`` never fails on a fresh node)."""
        return (f"add table {self.family} {self.table}\n"
                f"delete table {self.family} {self.table}\n" + self.render())

    def _lines(self) -> Iterator[str]:
        yield f"table {self.family} {self.table} {{"
        for s in self.sets:
            data = f" : {s.data_type}" if s.data_type else ""
            yield f"\n\t{s.kind} {s.name} {{\n\t\ttype {s.key_type}{data}"
            if s.interval:
                yield "\n\t\tflags interval"
            if s.elements:
                yield "\n\t\telements = { "
                yield ",\n\t\t\t     ".join(k if v is None else f"{k} : {v}"
                                            for k, v in s.elements)
                yield " }"
            yield "\n\t}\n"
        for c in self.chains:
            yield f"\n\tchain {c.name} {{"
            if c.hook is not None:
                yield f"\n\t\t{c.hook.render()}"
            for rule in c.rules:
                yield f"\n\t\t{rule}"
            yield "\n\t}\n"
        yield "}"
