"""The assembled table: fragments merged into shared maps and sets, updated in place per
changed Service, with a delta for the incremental planner.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubewire.proxy import names
from kubewire.proxy.fragments import Dispatch, Fragment
from kubewire.proxy.layout import CHOICE_KEY, DISPATCH_KEY, NODEPORT_KEY, fixed_chains
from kubewire.proxy.model import (
    Chain,
    NftSet,
    Ruleset,
    RulesetDelta,
    UdpFrontend,
)
from kubewire.proxy.views import (
    NodeContext,
    ServiceView,
    SliceView,
)


class KeyConflict(Exception):
    """Two Services claim one key: only a full assembly (in name order) settles it."""


_MISSING: Any = object()
_STATIC_SETS = (names.SERVICE_IPS, names.SERVICE_NODEPORTS, names.NO_ENDPOINT_SERVICES,
                names.NO_ENDPOINT_NODEPORTS, names.CLUSTER_IP_PORTS, names.HAIRPIN_ENDPOINTS,
                *names.SERVICE_ENDPOINTS.values())
_TYPEOF = frozenset(names.SERVICE_ENDPOINTS.values())
_SET_TYPES = {**{m: (f"{CHOICE_KEY} . numgen random mod 2", f"ip daddr . {p} dport")
                 for p, m in names.SERVICE_ENDPOINTS.items()},
              names.SERVICE_IPS: (DISPATCH_KEY, "verdict"),
              names.SERVICE_NODEPORTS: (NODEPORT_KEY, "verdict"),
              names.NO_ENDPOINT_SERVICES: (DISPATCH_KEY, "verdict"),
              names.NO_ENDPOINT_NODEPORTS: (NODEPORT_KEY, "verdict"),
              names.CLUSTER_IP_PORTS: (DISPATCH_KEY, None),
              names.HAIRPIN_ENDPOINTS: ("ipv4_addr . ipv4_addr", None)}


class Assembly:
    """The assembled table as mutable indexes, updated per Service fragment.

    A ``Ruleset`` made from it shares its dicts, so every dict is copied before its first
    change after ``snapshot()`` (copy-on-write); the old ruleset stays as it was. While
    applying a change it remembers each touched chain's and element's old value, which
    gives the delta for the incremental planner without comparing whole rulesets.
    """

    def __init__(self, node: NodeContext) -> None:
        self.chains: dict[str, Chain] = {c.name: c for c in fixed_chains(node)}
        self.elements: dict[str, dict[str, str | None]] = {n: {} for n in _STATIC_SETS}
        self.nodeport_ips = NftSet(names.NODEPORT_IPS, "ipv4_addr",
                                   elements=tuple((ip, None) for ip in node.node_ips))
        self.affinity: dict[str, NftSet] = {}
        self.dispatch_owner: dict[str, str] = {}
        self.nodeport_owner: dict[str, str] = {}
        self.choice_owner: dict[str, str] = {}
        self.shared_refs: dict[str, int] = {}
        self.refs: dict[str, dict[str, int]] = {names.CLUSTER_IP_PORTS: {},
                                                names.HAIRPIN_ENDPOINTS: {}}
        self.udp: dict[tuple[str, str], tuple[UdpFrontend, ...]] = {}
        self.warnings: list[str] = []
        self.strict = False
        self._shared: set[str] = set()  # dicts the last snapshot still refers to
        self._old_chains: dict[str, Chain] = {}
        self._old_elements: dict[str, dict[str, str | None]] = {}
        self._old_sets: dict[str, NftSet] = {}

    def begin(self) -> None:
        """Start recording a change against the last snapshot."""
        self.strict = True
        self._old_chains, self._old_elements, self._old_sets = {}, {}, {}

    def _own(self, what: str) -> None:
        if what in self._shared:
            self._shared.discard(what)
            if what == "chains":
                self.chains = dict(self.chains)
            elif what == "affinity":
                self.affinity = dict(self.affinity)
            else:
                self.elements[what] = dict(self.elements[what])

    def _set_chain(self, name: str, chain: Chain | None) -> None:
        self._own("chains")
        if self.strict and name not in self._old_chains:
            self._old_chains[name] = self.chains.get(name, _MISSING)
        if chain is None:
            del self.chains[name]
        else:
            self.chains[name] = chain

    def _set_element(self, set_name: str, key: str, value: Any) -> None:
        self._own(set_name)
        elements = self.elements[set_name]
        if self.strict:
            old = self._old_elements.setdefault(set_name, {})
            if key not in old:
                old[key] = elements.get(key, _MISSING)
        if value is _MISSING:
            del elements[key]
        else:
            elements[key] = value

    def _set_affinity(self, name: str, s: NftSet | None) -> None:
        self._own("affinity")
        if self.strict and name not in self._old_sets:
            self._old_sets[name] = self.affinity.get(name, _MISSING)
        if s is None:
            del self.affinity[name]
        else:
            self.affinity[name] = s

    def _claim(self, owners: dict[str, str], live_set: str, dead_set: str, owner: str,
               entries: tuple[Dispatch, ...], live: bool) -> None:
        for key, verdict, what, choices in entries:
            other = owners.get(key)
            if other is not None and other != owner:
                if self.strict:
                    raise KeyConflict(key)
                self.warnings.append(f"{owner}: {what} is already used by {other}; ignored")
                continue
            owners[key] = owner
            there, elsewhere = (live_set, dead_set) if live else (dead_set, live_set)
            if key in self.elements[elsewhere]:
                self._set_element(elsewhere, key, _MISSING)
            if self.elements[there].get(key, _MISSING) != verdict:
                self._set_element(there, key, verdict)
            for m, element, endpoint in choices:
                # A node address . nodePort can equal an externalIP . port of another
                # Service: the same element, which only one of them may have.
                other = self.choice_owner.get(element)
                if other is not None and other != owner:
                    if self.strict:
                        raise KeyConflict(element)
                    self.warnings.append(f"{owner}: {what} is already used by {other}; "
                                         "ignored")
                    continue
                self.choice_owner[element] = owner
                if self.elements[m].get(element, _MISSING) != endpoint:
                    self._set_element(m, element, endpoint)

    def _unclaim(self, owners: dict[str, str], sets: tuple[str, str], owner: str,
                 entries: tuple[Dispatch, ...]) -> None:
        for key, _, _, choices in entries:
            for m, element, _endpoint in choices:
                if self.choice_owner.get(element) == owner:
                    del self.choice_owner[element]
                    self._set_element(m, element, _MISSING)
            if owners.get(key) != owner:
                continue
            del owners[key]
            for name in sets:
                if key in self.elements[name]:
                    self._set_element(name, key, _MISSING)

    def _ref(self, set_name: str, keys: Iterable[str], step: int) -> None:
        refs = self.refs[set_name]
        for key in keys:
            n = refs.get(key, 0) + step
            if n:
                refs[key] = n
            else:
                del refs[key]
            if n == 0:
                self._set_element(set_name, key, _MISSING)
            elif n == 1 and step == 1:
                self._set_element(set_name, key, None)

    def add(self, key: tuple[str, str], owner: str, f: Fragment) -> None:
        for c in f.chains:
            if self.strict and c.name in self.chains:
                raise KeyConflict(c.name)
            self._set_chain(c.name, c)
        for c in f.shared:
            n = self.shared_refs.get(c.name, 0) + 1
            self.shared_refs[c.name] = n
            if n == 1:
                self._set_chain(c.name, c)
        self._claim(self.dispatch_owner, names.SERVICE_IPS, names.NO_ENDPOINT_SERVICES,
                    owner, f.service_ips, True)
        self._claim(self.dispatch_owner, names.SERVICE_IPS, names.NO_ENDPOINT_SERVICES,
                    owner, f.no_ep_services, False)
        self._claim(self.nodeport_owner, names.SERVICE_NODEPORTS, names.NO_ENDPOINT_NODEPORTS,
                    owner, f.nodeports, True)
        self._claim(self.nodeport_owner, names.SERVICE_NODEPORTS, names.NO_ENDPOINT_NODEPORTS,
                    owner, f.no_ep_nodeports, False)
        for name, timeout in f.affinity:
            if self.strict and name in self.affinity:
                raise KeyConflict(name)
            self._set_affinity(name, NftSet(name, "ipv4_addr", flags=("dynamic", "timeout"),
                                            timeout=timeout))
        self._ref(names.CLUSTER_IP_PORTS, set(f.cluster_ports), 1)
        self._ref(names.HAIRPIN_ENDPOINTS, f.hairpin, 1)
        if f.udp:
            self.udp[key] = f.udp

    def remove(self, key: tuple[str, str], owner: str, f: Fragment) -> None:
        for c in f.chains:
            self._set_chain(c.name, None)
        for c in f.shared:
            n = self.shared_refs[c.name] - 1
            if n:
                self.shared_refs[c.name] = n
            else:
                del self.shared_refs[c.name]
                self._set_chain(c.name, None)
        self._unclaim(self.dispatch_owner, (names.SERVICE_IPS, names.NO_ENDPOINT_SERVICES),
                      owner, f.service_ips + f.no_ep_services)
        self._unclaim(self.nodeport_owner,
                      (names.SERVICE_NODEPORTS, names.NO_ENDPOINT_NODEPORTS),
                      owner, f.nodeports + f.no_ep_nodeports)
        for name, _ in f.affinity:
            self._set_affinity(name, None)
        self._ref(names.CLUSTER_IP_PORTS, set(f.cluster_ports), -1)
        self._ref(names.HAIRPIN_ENDPOINTS, f.hairpin, -1)
        self.udp.pop(key, None)

    def delta(self, base: object) -> RulesetDelta:
        added, changed, removed = [], [], []
        needs_full = False
        for name, old in self._old_chains.items():
            new = self.chains.get(name, _MISSING)
            if old is _MISSING:
                if new is not _MISSING:
                    added.append(name)
            elif new is _MISSING:
                removed.append(name)
            elif old is not new:
                needs_full = needs_full or old.hook != new.hook
                if old.rules != new.rules:
                    changed.append(name)
        sets_added, sets_removed = [], []
        for name, old_set in self._old_sets.items():
            new_set = self.affinity.get(name, _MISSING)
            if old_set is _MISSING:
                if new_set is not _MISSING:
                    sets_added.append(name)
            elif new_set is _MISSING:
                sets_removed.append(name)
            elif old_set.definition() != new_set.definition():
                needs_full = True
        gone_by_set, came_by_set = [], []
        for name in sorted(self._old_elements):
            elements = self.elements[name]
            gone, came = [], []
            for key, old_value in self._old_elements[name].items():
                value = elements.get(key, _MISSING)
                if value is _MISSING and old_value is _MISSING:
                    continue
                if old_value is _MISSING:
                    came.append((key, value))
                elif value is _MISSING:
                    gone.append((key, old_value))
                elif value != old_value:
                    gone.append((key, old_value))
                    came.append((key, value))
            if gone:
                gone_by_set.append((name, tuple(sorted(gone))))
            if came:
                came_by_set.append((name, tuple(sorted(came))))
        return RulesetDelta(
            base=base, chains_added=tuple(sorted(added)), chains_changed=tuple(sorted(changed)),
            chains_removed=tuple(sorted(removed)), sets_added=tuple(sorted(sets_added)),
            sets_removed=tuple(sorted(sets_removed)), elements_gone=tuple(gone_by_set),
            elements_came=tuple(came_by_set), needs_full=needs_full)

    def snapshot(self, delta: RulesetDelta | None) -> Ruleset:
        sets: dict[str, NftSet] = dict(self.affinity)
        sets[names.NODEPORT_IPS] = self.nodeport_ips
        for name in _STATIC_SETS:
            key_type, data_type = _SET_TYPES[name]
            sets[name] = NftSet.from_dict(name, key_type, self.elements[name], data_type,
                                          typeof=name in _TYPEOF)
        self._shared = {"chains", "affinity", *_STATIC_SETS}
        self.strict = False
        return Ruleset.from_indexes(self.chains, sets, tuple(self.udp.items()),
                                    tuple(self.warnings), delta)


ServiceKey = tuple[str, str]
MemoEntry = tuple[ServiceView, tuple[SliceView, ...], Fragment]
