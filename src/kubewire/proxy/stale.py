"""Which UDP conntrack entries a ruleset change leaves stale (pure).

UDP has no connection end, so conntrack keeps translating a client's packets to the
endpoint chosen for its first packet for as long as the client keeps sending, even after
that endpoint is gone; and packets sent while a Service had no endpoints leave entries
without DNAT that shadow the new rules. kube-proxy deletes both kinds after each sync;
this computes the same list from two compiled rulesets.
"""

from __future__ import annotations

from kubewire.proxy.model import Ruleset, StaleFlow


def stale_udp_flows(old: Ruleset | None, new: Ruleset) -> tuple[StaleFlow, ...]:
    """Flows to delete after replacing ``old`` with ``new`` (none when ``old`` is None:
    nothing is known about what the kernel translated before)."""
    if old is None:
        return ()
    before = {f.key: f for f in old.udp_frontends}
    after = {f.key: f for f in new.udp_frontends}
    out: set[StaleFlow] = set()
    for key, f in before.items():
        now = after.get(key)
        kept = set(now.endpoints) if now is not None else set()
        out.update(StaleFlow(f.ip, f.port, ep) for ep in f.endpoints if ep not in kept)
    for key, f in after.items():
        prev = before.get(key)
        if f.endpoints and (prev is None or not prev.endpoints):
            out.add(StaleFlow(f.ip, f.port, None))
    return tuple(sorted(out, key=lambda s: (s.ip or "", s.port, s.endpoint or "")))
