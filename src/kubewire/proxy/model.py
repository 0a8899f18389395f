"""The compiled ruleset: the proxy table as plain, sorted, frozen data.

A ``Ruleset`` is the one source of truth for a node's service rules: the syncer programs
the kernel from it, the validating fake (``fake.py``) checks and evaluates it, and
``render()`` prints it as ``nft -f`` input. Rules are nft statement strings in the exact
form the compiler writes them (nft may print some back differently, e.g. ``0x4000`` as
``0x00004000``; nothing here ever reads the kernel's version back).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from kubewire.proxy import names


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around allocation-heavy pure work.

    Compiling 10k Services allocates ~10^6 acyclic objects; with a large heap alive
    (the previous ruleset, the memo), each full collection that allocation triggers walks
    all of it, which made timings swing between 40 and 400 ms. Nothing here makes cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class Hook:
    """A base chain's attachment: ``type {type} hook {hook} priority {priority}``."""

    type: str  # nat | filter
    hook: str  # prerouting | input | forward | output | postrouting
    priority: str  # a keyword (dstnat, srcnat, filter) or a number

    def render(self) -> str:
        return f"type {self.type} hook {self.hook} priority {self.priority}; policy accept;"


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    rules: tuple[str, ...] = ()
    hook: Hook | None = None


@dataclass(frozen=True, slots=True)
class NftSet:
    """A named set (``data_type`` None) or map (``data_type`` e.g. "verdict").

    ``elements`` are (key, value) pairs sorted by key; value is None for sets. Dynamic sets
    (``"dynamic" in flags``) are filled by the packet path (``update @set``); their
    contents survive full syncs of an existing table.
    """

    name: str
    key_type: str
    data_type: str | None = None
    flags: tuple[str, ...] = ()
    timeout: int | None = None  # seconds
    elements: tuple[tuple[str, str | None], ...] = ()
    #: ``key_type``/``data_type`` are nft expressions (``typeof ...``), not type names.
    typeof: bool = False
    _element_set: list[frozenset[tuple[str, str | None]]] = field(
        default_factory=list, init=False, compare=False, repr=False)
    _source: Mapping[str, str | None] | None = field(default=None, init=False, compare=False,
                                                     repr=False)

    @classmethod
    def from_dict(cls, name: str, key_type: str, elements: Mapping[str, str | None],
                  data_type: str | None = None, typeof: bool = False) -> NftSet:
        """A static set/map whose sorted ``elements`` are computed from ``elements`` (which
        the caller must never change afterwards) only when first read: a compiler that
        updates 10^5 elements in place need not sort them for an incremental sync."""
        obj = object.__new__(cls)
        for attr, value in (("name", name), ("key_type", key_type), ("data_type", data_type),
                            ("flags", ()), ("timeout", None), ("typeof", typeof),
                            ("_element_set", [])):
            object.__setattr__(obj, attr, value)
        object.__setattr__(obj, "_source", elements)
        return obj

    def __getattr__(self, attr: str) -> Any:
        # Only reached for an unset slot: the lazily sorted elements of ``from_dict``.
        if attr == "elements":
            source: Mapping[str, str | None] = object.__getattribute__(self, "_source")
            value = tuple(sorted(source.items()))
            object.__setattr__(self, "elements", value)
            return value
        raise AttributeError(attr)

    def element_set(self) -> frozenset[tuple[str, str | None]]:
        """The elements as a set, computed once (a ruleset is diffed as the new one, then
        again as the old one)."""
        if not self._element_set:
            self._element_set.append(frozenset(self.elements))
        return self._element_set[0]

    @property
    def is_map(self) -> bool:
        return self.data_type is not None

    @property
    def dynamic(self) -> bool:
        return "dynamic" in self.flags

    def definition(self) -> tuple[str, str | None, tuple[str, ...], int | None, bool]:
        return (self.key_type, self.data_type, self.flags, self.timeout, self.typeof)

    def declaration(self) -> str:
        """``type K : D`` or ``typeof K : D``."""
        data = f" : {self.data_type}" if self.data_type else ""
        return f"{'typeof' if self.typeof else 'type'} {self.key_type}{data}"

    def render_spec(self) -> str:
        """The ``{ type ...; flags ...; timeout ...; }`` part of ``add set``/``add map``."""
        parts = [self.declaration()]
        if self.flags:
            parts.append("flags " + ",".join(self.flags))
        if self.timeout is not None:
            parts.append(f"timeout {self.timeout}s")
        return "{ " + "; ".join(parts) + "; }"

    @property
    def kind(self) -> str:
        return "map" if self.is_map else "set"


def render_element(key: str, value: str | None) -> str:
    return key if value is None else f"{key} : {value}"


@dataclass(frozen=True, slots=True)
class UdpFrontend:
    """A UDP service address (``ip`` None for a NodePort on every node address) and the
    endpoint IPs its traffic may be DNATed to; used to find stale conntrack entries."""

    ip: str | None
    port: int
    endpoints: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int]:
        return (self.ip or "", self.port)


@dataclass(frozen=True, slots=True)
class StaleFlow:
    """UDP conntrack entries to delete after a sync.

    ``endpoint`` set: entries for this frontend DNATed to an endpoint that is gone.
    ``endpoint`` None: entries for a frontend that had no endpoints (packets were rejected
    or dropped, and the kernel would keep matching those entries instead of the new rules).
    """

    ip: str | None
    port: int
    endpoint: str | None

    def conntrack_args(self) -> list[str]:
        args = ["-D", "-p", "udp"]
        if self.ip is not None:
            args += ["--orig-dst", self.ip]
        args += ["--orig-port-dst", str(self.port)]
        if self.endpoint is not None:
            args += ["--dst-nat", self.endpoint]
        return args


Element = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class RulesetDelta:
    """What changed between the ruleset whose ``token`` is ``base`` and this one, as the
    incremental planner needs it (names sorted; elements per static set, sorted).
    ``needs_full``: a base chain's hook or a set's definition changed."""

    base: object
    chains_added: tuple[str, ...] = ()
    chains_changed: tuple[str, ...] = ()
    chains_removed: tuple[str, ...] = ()
    sets_added: tuple[str, ...] = ()
    sets_removed: tuple[str, ...] = ()
    elements_gone: tuple[tuple[str, tuple[Element, ...]], ...] = ()
    elements_came: tuple[tuple[str, tuple[Element, ...]], ...] = ()
    needs_full: bool = False


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything in table ``ip kubewire-proxy``, sorted by name (elements by key)."""

    chains: tuple[Chain, ...] = ()
    sets: tuple[NftSet, ...] = ()
    udp_frontends: tuple[UdpFrontend, ...] = ()
    warnings: tuple[str, ...] = ()
    family: str = names.FAMILY
    table: str = names.TABLE
    _chain_index: dict[str, Chain] = field(default_factory=dict, init=False, compare=False,
                                           repr=False)
    _set_index: dict[str, NftSet] = field(default_factory=dict, init=False, compare=False,
                                          repr=False)
    # Identity of this ruleset, and (from ``ProxyCompiler``) what changed since the ruleset
    # whose token is ``delta.base``: lets the planner skip diffing two whole rulesets.
    _token: object = field(default_factory=object, init=False, compare=False, repr=False)
    delta: RulesetDelta | None = field(default=None, init=False, compare=False, repr=False)
    _udp_source: tuple[tuple[Any, tuple[UdpFrontend, ...]], ...] = field(
        default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._chain_index.update((c.name, c) for c in self.chains)
        self._set_index.update((s.name, s) for s in self.sets)

    @classmethod
    def from_indexes(cls, chains: dict[str, Chain], sets: dict[str, NftSet],
                     udp: tuple[tuple[Any, tuple[UdpFrontend, ...]], ...],
                     warnings: tuple[str, ...],
                     delta: RulesetDelta | None) -> Ruleset:
        """A ruleset whose sorted ``chains``/``sets``/``udp_frontends`` tuples are built
        from these (never again changed) indexes only when first read. ``udp`` is
        (owner sort key, frontends) per Service."""
        obj = object.__new__(cls)
        for attr, value in (("warnings", warnings), ("family", names.FAMILY),
                            ("table", names.TABLE), ("_chain_index", chains),
                            ("_set_index", sets), ("_token", object()), ("delta", delta),
                            ("_udp_source", udp)):
            object.__setattr__(obj, attr, value)
        return obj

    def __getattr__(self, attr: str) -> Any:
        # Only reached for an unset slot (a ruleset made by ``from_indexes``).
        if attr == "chains":
            index: dict[str, Chain] = object.__getattribute__(self, "_chain_index")
            value: Any = tuple(sorted(index.values(), key=attrgetter("name")))
        elif attr == "sets":
            sets: dict[str, NftSet] = object.__getattribute__(self, "_set_index")
            value = tuple(sorted(sets.values(), key=attrgetter("name")))
        elif attr == "udp_frontends":
            groups = object.__getattribute__(self, "_udp_source")
            value = tuple(sorted((f for _, g in sorted(groups, key=lambda og: og[0]) for f in g),
                                 key=lambda f: f.key))
        else:
            raise AttributeError(attr)
        object.__setattr__(self, attr, value)
        return value

    @property
    def token(self) -> object:
        return self._token

    def chain(self, name: str) -> Chain:
        return self._chain_index[name]

    def set(self, name: str) -> NftSet:
        return self._set_index[name]

    def chains_by_name(self) -> dict[str, Chain]:
        return self._chain_index

    def sets_by_name(self) -> dict[str, NftSet]:
        return self._set_index

    def has_chain(self, name: str) -> bool:
        return name in self._chain_index

    def has_set(self, name: str) -> bool:
        return name in self._set_index

    def render(self) -> str:
        """The whole table as one ``nft -f`` block (what ``nft list table`` would show,
        give or take nft's own normalisation)."""
        return "".join(self._render_lines()) + "\n"

    def _render_lines(self) -> Iterator[str]:
        yield f"table {self.family} {self.table} {{"
        for s in self.sets:
            yield f"\n\t{s.kind} {s.name} {{\n\t\t{s.declaration()}"
            if s.flags:
                yield f"\n\t\tflags {','.join(s.flags)}"
            if s.timeout is not None:
                yield f"\n\t\ttimeout {s.timeout}s"
            if s.elements:
                yield "\n\t\telements = { "
                yield ",\n\t\t\t     ".join(render_element(k, v) for k, v in s.elements)
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
