"""Services + EndpointSlices + node context -> the node's proxy ruleset (pure).

The shape follows kube-proxy's nftables mode (KEP-3866): one private table, dispatch by
verdict maps keyed on ``daddr . proto . port``, one chain per Service port. Three
deliberate differences, each measured on this kernel (6.18) and nft 1.0.6 - see README.md:

* Endpoint choice among N > 1 endpoints is one lookup of ``ip daddr . th dport . numgen
  random mod N`` in a per-protocol ``typeof`` map (one element per frontend and endpoint),
  done in a chain shared by every Service port with the same protocol and N (the kernel
  walks a map's elements for each rule binding it): elements load ~3x faster than the
  ``numgen random mod (N-i) == 0`` cascade's rules. ClientIP affinity keeps the cascade,
  which can ``update`` the chosen endpoint's affinity set. Not one anonymous
  ``numgen ... vmap { ... }`` per Service: the kernel scans all sets of a table to name
  each anonymous set, so 10k Services took ~30 s to load.
* DNAT happens in the service chain itself; there are no per-endpoint chains. nft fetches
  the table's whole chain list before every transaction and that fetch grows faster than
  linearly (30k chains ~75 ms, 100k ~1 s), which made one-Service incremental syncs at 10k
  Services x 10 endpoints take a second.
* Hairpin traffic (a pod reaching itself through a Service) is recognised at postrouting,
  by ``ip saddr . ip daddr`` in a set of ``endpoint . endpoint`` pairs, instead of by an
  ``ip saddr <endpoint>`` rule in each endpoint chain. Only this node's endpoints are in
  it: hairpin traffic is DNATed on the sending pod's own node.

Likewise, ClusterIP traffic from outside the pod network is marked for masquerade by one
lookup in ``@cluster-ip-ports`` in the ``services`` chain rather than by a rule in each
service chain: set elements are far cheaper for nft to load than rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from kubewire.proxy.assembly import Assembly, KeyConflict, MemoEntry, ServiceKey
from kubewire.proxy.errors import ProxyInputError
from kubewire.proxy.fragments import Fragment, compile_service
from kubewire.proxy.model import (
    Ruleset,
    gc_paused,
)
from kubewire.proxy.views import (
    NodeContext,
    ServiceView,
    SliceView,
    ViewCache,
)


def _ordered(found: Sequence[SliceView]) -> tuple[SliceView, ...]:
    return tuple(found) if len(found) < 2 else tuple(sorted(found, key=attrgetter("name")))


class ProxyCompiler:
    """``compile_proxy`` with a memory, for an agent that recompiles on every change.

    Two entry points that give the same rulesets and deltas:

    * ``compile(services, slices)``: the whole current state (first sync, resyncs). A
      Service whose view and EndpointSlice views are unchanged since the last call reuses
      its compiled fragment (and, given dicts with ``metadata.resourceVersion``, its
      views), so a change to one Service of 10k costs one pass over the input.
    * ``update(changed_services, removed_services, changed_slices, removed_slices)``: only
      what changed (watch events); costs the changed Services' fragments, independent of
      the number of Services. The state is the last ``compile`` plus every ``update``
      since.

    The assembled table is kept and only the changed Services' fragments are taken out
    and put back; the result carries a ``delta`` from the previous result for the
    incremental planner. A Service claiming a key another one holds (and any call while
    such a conflict exists) reassembles everything in name order. The output is exactly
    ``compile_proxy``'s for the same (full) input.
    """

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self._views = ViewCache()
        self._memo: dict[ServiceKey, MemoEntry] = {}
        # update()'s state: Services not in _memo (none: every Service has an entry), the
        # EndpointSlices by (namespace, name), and by the Service their label names.
        self._slices: dict[ServiceKey, SliceView] = {}
        self._groups: dict[ServiceKey, list[SliceView]] = {}
        self._slice_names_unique = True
        self._assembly: Assembly | None = None
        self._last: Ruleset | None = None

    def compile(
        self,
        services: Iterable[Mapping[str, Any] | ServiceView],
        slices: Iterable[Mapping[str, Any] | SliceView],
    ) -> Ruleset:
        with gc_paused():
            return self._compile(services, slices)

    def update(
        self,
        changed_services: Iterable[Mapping[str, Any] | ServiceView] = (),
        removed_services: Iterable[tuple[str, str]] = (),
        changed_slices: Iterable[Mapping[str, Any] | SliceView] = (),
        removed_slices: Iterable[tuple[str, str]] = (),
    ) -> Ruleset:
        """Apply watch events and return the ruleset ``compile()`` would return for the
        resulting full state (same ruleset, same delta against the previous result).

        ``changed_*``: the new state of added or modified objects (dicts or views; later
        entries for one key win). ``removed_*``: ``(namespace, name)`` of deleted objects;
        unknown keys are ignored. A key both changed and removed in one call is refused
        (``ProxyInputError``): coalesce events to the last state per key first. A changed
        EndpointSlice affects the Service its ``kubernetes.io/service-name`` label names
        and, when the label changed, the Service it named before. Calling it before any
        ``compile()`` starts from an empty state.
        """
        with gc_paused():
            return self._update(changed_services, removed_services, changed_slices,
                                removed_slices)

    def _compile(
        self,
        services: Iterable[Mapping[str, Any] | ServiceView],
        slices: Iterable[Mapping[str, Any] | SliceView],
    ) -> Ruleset:
        groups: dict[ServiceKey, list[SliceView]] = {}
        index: dict[ServiceKey, SliceView] = {}
        n_slices = 0
        for sl in self._views.slices(slices):
            n_slices += 1
            index[(sl.namespace, sl.name)] = sl
            if sl.service_name:
                skey = (sl.namespace, sl.service_name)
                group = groups.get(skey)
                if group is None:
                    groups[skey] = [sl]
                else:
                    group.append(sl)
        old_memo = self._memo
        memo: dict[ServiceKey, MemoEntry] = {}
        fragments: list[tuple[ServiceKey, Fragment]] = []
        changed: list[ServiceKey] = []
        for svc in self._views.services(services):
            key = (svc.namespace, svc.name)
            svc_slices = _ordered(groups.get(key, ()))
            hit = old_memo.get(key)
            # Tuple comparison tests identity first: unchanged views cost no field compare.
            if hit is not None and (hit[0] is svc or hit[0] == svc) and hit[1] == svc_slices:
                fragment = hit[2]
            else:
                fragment = compile_service(svc, svc_slices, self.node)
                changed.append(key)
            memo[key] = (svc, svc_slices, fragment)
            fragments.append((key, fragment))
        self._memo = memo
        self._slices, self._groups = index, groups
        self._slice_names_unique = len(index) == n_slices
        removed = [k for k in old_memo if k not in memo]
        # Duplicate Services: a full assembly of every one, as compile_proxy always did.
        return self._assemble(old_memo, removed, changed, fragments,
                              full=len(memo) != len(fragments))

    def _update(
        self,
        changed_services: Iterable[Mapping[str, Any] | ServiceView],
        removed_services: Iterable[tuple[str, str]],
        changed_slices: Iterable[Mapping[str, Any] | SliceView],
        removed_slices: Iterable[tuple[str, str]],
    ) -> Ruleset:
        if not self._slice_names_unique:
            raise ProxyInputError("the last compile() had two EndpointSlices with one "
                                  "namespace/name, so update() cannot tell them apart; "
                                  "call compile() with the full state")
        svc_views = [self._views.service(o) for o in changed_services]
        slice_views = [self._views.slice(o) for o in changed_slices]
        gone_svcs = {(str(ns), str(name)) for ns, name in removed_services}
        gone_slices = {(str(ns), str(name)) for ns, name in removed_slices}
        for v in slice_views:
            if not v.name:
                raise ProxyInputError(f"EndpointSlice of {v.namespace}/{v.service_name} "
                                      "without a name: update() keys slices by name")
        both = ({(v.namespace, v.name) for v in svc_views} & gone_svcs) \
            | ({(v.namespace, v.name) for v in slice_views} & gone_slices)
        if both:
            raise ProxyInputError(f"{sorted(both)} both changed and removed in one update(); "
                                  "pass only the last state of each object")

        dirty: dict[ServiceKey, None] = {}  # ordered, for a deterministic assembly
        for key in gone_slices:
            self._views.forget(SliceView, key)
            self._drop_slice(key, dirty)
        for sl in slice_views:
            key = (sl.namespace, sl.name)
            self._drop_slice(key, dirty)
            self._slices[key] = sl
            if sl.service_name:
                skey = (sl.namespace, sl.service_name)
                self._groups.setdefault(skey, []).append(sl)
                dirty[skey] = None
        services: dict[ServiceKey, ServiceView | None] = {}
        for key in gone_svcs:
            self._views.forget(ServiceView, key)
            services[key] = None
        for svc in svc_views:
            services[(svc.namespace, svc.name)] = svc
        for key in services:
            dirty[key] = None

        memo = self._memo
        old_entries: dict[ServiceKey, MemoEntry] = {}
        removed: list[ServiceKey] = []
        changed: list[ServiceKey] = []
        for key in sorted(dirty):
            hit = memo.get(key)
            now = services[key] if key in services else (hit[0] if hit else None)
            if now is None:
                if hit is not None:
                    old_entries[key] = memo.pop(key)
                    removed.append(key)
                continue
            svc_slices = _ordered(self._groups.get(key, ()))
            if hit is not None and (hit[0] is now or hit[0] == now) and hit[1] == svc_slices:
                memo[key] = (now, svc_slices, hit[2])  # the newest equal view, as compile()
                continue
            if hit is not None:
                old_entries[key] = hit
            memo[key] = (now, svc_slices, compile_service(now, svc_slices, self.node))
            changed.append(key)
        return self._assemble(old_entries, removed, changed, None, full=False)

    def _drop_slice(self, key: ServiceKey, dirty: dict[ServiceKey, None]) -> None:
        old = self._slices.pop(key, None)
        if old is None or not old.service_name:
            return
        skey = (old.namespace, old.service_name)
        group = self._groups.get(skey)
        if group is not None:
            group[:] = [s for s in group if s.name != old.name]
            if not group:
                del self._groups[skey]
        dirty[skey] = None

    def _assemble(self, old_memo: Mapping[ServiceKey, MemoEntry],
                  removed: Sequence[ServiceKey], changed: Sequence[ServiceKey],
                  fragments: list[tuple[ServiceKey, Fragment]] | None,
                  full: bool) -> Ruleset:
        """Take the removed and changed Services' old fragments (from ``old_memo``) out of
        the kept assembly and put the changed ones' new fragments (``self._memo``) in; or
        assemble ``fragments`` (default: the memo's) from scratch."""
        memo = self._memo
        asm, last = self._assembly, self._last
        if asm is not None and last is not None and not asm.warnings and not full:
            try:
                asm.begin()
                for key in (*removed, *changed):
                    old = old_memo.get(key)
                    if old is not None:
                        asm.remove(key, f"{key[0]}/{key[1]}", old[2])
                for key in changed:
                    asm.add(key, f"{key[0]}/{key[1]}", memo[key][2])
            except KeyConflict:
                pass
            else:
                self._last = asm.snapshot(asm.delta(last.token))
                return self._last
        # First call, or a conflict to settle in name order: assemble everything.
        if fragments is None:
            fragments = [(key, entry[2]) for key, entry in memo.items()]
        fragments.sort(key=lambda kf: kf[0])
        asm = Assembly(self.node)
        for key, fragment in fragments:
            asm.add(key, f"{key[0]}/{key[1]}", fragment)
        self._assembly = asm
        self._last = asm.snapshot(None)
        return self._last


def compile_proxy(
    services: Iterable[Mapping[str, Any] | ServiceView],
    slices: Iterable[Mapping[str, Any] | SliceView],
    node: NodeContext,
) -> Ruleset:
    """The proxy ruleset for one node. Pure and deterministic: same input, same output.

    ``services``/``slices`` are Kubernetes JSON dicts (Service v1, EndpointSlice
    discovery.k8s.io/v1) or views (``ServiceView.from_k8s``, ``SliceView.from_k8s``).
    Headless and ExternalName Services produce nothing. Two Services claiming the same
    address and port: the first in (namespace, name) order wins and the other is named in
    ``Ruleset.warnings``.
    """
    return ProxyCompiler(node).compile(services, slices)
