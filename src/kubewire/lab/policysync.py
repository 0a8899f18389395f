"""Program a node namespace's ``ip kubewire-policy`` table (the applier of issue 5).

Each sync is one ``nft -f -`` transaction run by a child spawned while the calling thread
sits in the node's network namespace, so the kernel applies all of it or none of it:

* **full**: ``Ruleset.transaction()`` (``add table; delete table; table ... {}``) - the
  table is replaced as a whole, which also repairs anything edited by hand;
* **incremental**, when only set and map elements differ from the ruleset the kernel last
  accepted (the compiler names sets by what they select, so pod churn and label changes
  are element changes): ``delete element`` / ``add element`` for the difference. If nft
  refuses it (someone changed the table), the same sync falls back to a full one.

The syncer remembers the last accepted ruleset and never lists the table; a refused
transaction leaves the previous ruleset in force, and the next sync is a full one.
``remove()`` deletes the table (no NetworkPolicy left: labs without policies pay nothing).
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubewire.kernel.netlink import set_sysctl
from kubewire.kernel.netns import entered
from kubewire.policy.model import Ruleset

log = logging.getLogger(__name__)

# Denials answer with ICMP errors, which the kernel rate-limits per destination (6, then one
# a second) and per namespace (a burst of 50, then 1000/s): a pod whose connections are
# all denied would see timeouts after its sixth instead of an error at once. The node's
# own limits are lifted with its first table (the node namespace is the lab's).
REJECT_SYSCTLS = (("net.ipv4.icmp_ratelimit", "0"), ("net.ipv4.icmp_msgs_burst", "10000"),
                  ("net.ipv4.icmp_msgs_per_sec", "10000"))


class PolicySyncError(Exception):
    """nft refused (or could not run) a policy transaction; nothing was changed."""

    def __init__(self, message: str, stderr: str = "", transaction: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr
        self.transaction = transaction


class NftRunner(Protocol):
    """Runs one ``nft -f`` text atomically; raises PolicySyncError if it is refused."""

    def run(self, text: str) -> None: ...


class NftInNetns:
    """The real runner: ``nft -f -`` inside the node's network namespace."""

    def __init__(self, netns_path: Path | str, nft: str = "nft", timeout: float = 120.0) -> None:
        self.netns_path = netns_path
        self.nft = nft
        self.timeout = timeout

    def run(self, text: str) -> None:
        try:
            with entered(self.netns_path):
                proc = subprocess.run([self.nft, "-f", "-"], input=text, capture_output=True,
                                      text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise PolicySyncError(f"{self.nft} not found: install nftables "
                                  "(apt-get install nftables)", transaction=text) from None
        except subprocess.TimeoutExpired:
            raise PolicySyncError(f"nft did not finish within {self.timeout:.0f}s",
                                  transaction=text) from None
        if proc.returncode != 0:
            first = "\n".join(proc.stderr.strip().splitlines()[:6])
            raise PolicySyncError(
                f"nft refused the policy transaction in {self.netns_path}; the previous "
                f"rules stay in force:\n{first}", stderr=proc.stderr, transaction=text)


@dataclass(frozen=True, slots=True)
class PolicySyncReport:
    kind: str  # "full", "incremental", "unchanged", "removed", "absent"
    reason: str
    elements_added: int = 0
    elements_removed: int = 0
    transaction_bytes: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return self.kind not in ("unchanged", "absent")


def _shape(ruleset: Ruleset) -> tuple[object, ...]:
    """Everything but set elements: equal shapes mean an element-only change."""
    return (ruleset.family, ruleset.table, ruleset.chains,
            tuple((s.name, s.key_type, s.data_type, s.interval) for s in ruleset.sets))


def _element(key: str, value: str | None) -> str:
    return key if value is None else f"{key} : {value}"


def plan_elements(old: Ruleset, new: Ruleset) -> tuple[str, int, int] | None:
    """The element-only transaction from ``old`` to ``new`` as (text, added, removed),
    or None when chains or set definitions differ (a full sync is needed)."""
    if _shape(old) != _shape(new):
        return None
    where = f"{new.family} {new.table}"
    deletes: list[str] = []
    adds: list[str] = []
    added = removed = 0
    for before, after in zip(old.sets, new.sets, strict=True):
        was, now = dict(before.elements), dict(after.elements)
        gone = [k for k in was if k not in now or now[k] != was[k]]
        come = [k for k in now if k not in was or now[k] != was[k]]
        if gone:
            # Map elements are deleted by key only.
            keys = gone if before.data_type else [_element(k, None) for k in gone]
            deletes.append(f"delete element {where} {before.name} {{ {', '.join(keys)} }}")
            removed += len(gone)
        if come:
            adds.append(f"add element {where} {after.name} "
                        f"{{ {', '.join(_element(k, now[k]) for k in come)} }}")
            added += len(come)
    return "".join(line + "\n" for line in [*deletes, *adds]), added, removed


class PolicySyncer:
    """Keeps one node namespace's policy table equal to the rulesets given to ``sync``."""

    def __init__(self, netns_path: Path | str | None = None, *,
                 nft: NftRunner | None = None) -> None:
        if nft is None:
            if netns_path is None:
                # Never the machine's own namespace: policies program node namespaces only.
                raise PolicySyncError("PolicySyncer needs the node's network namespace "
                                      "path (e.g. /run/netns/kw-lab-node-1)")
            nft = NftInNetns(netns_path)
        self.nft = nft
        self.netns_path = netns_path
        self._sysctls_done = netns_path is None
        self._applied: Ruleset | None = None
        self._full_next = True
        self._reason = "first sync"

    @property
    def applied(self) -> Ruleset | None:
        """The ruleset the kernel last accepted (None: no table)."""
        return self._applied

    def sync(self, ruleset: Ruleset) -> PolicySyncReport:
        start = time.perf_counter()
        old = self._applied
        if old is not None and not self._full_next:
            if old == ruleset:
                return PolicySyncReport("unchanged", "no change",
                                        seconds=time.perf_counter() - start)
            plan = plan_elements(old, ruleset)
            if plan is not None:
                text, added, removed = plan
                try:
                    self.nft.run(text)
                except PolicySyncError:
                    pass  # the table is not what we think: replace it below
                else:
                    self._applied = ruleset
                    return PolicySyncReport("incremental", "elements changed", added, removed,
                                            len(text), time.perf_counter() - start)
                reason = "incremental refused, replacing the table"
            else:
                reason = "chains or sets changed"
        else:
            reason = self._reason
        if not self._sysctls_done:
            self._lift_icmp_limits()
        text = ruleset.transaction()
        try:
            self.nft.run(text)
        except PolicySyncError:
            self._full_next, self._reason = True, "retry after a failed sync"
            raise
        self._applied, self._full_next, self._reason = ruleset, False, "incremental"
        return PolicySyncReport("full", reason, transaction_bytes=len(text),
                                seconds=time.perf_counter() - start)

    def _lift_icmp_limits(self) -> None:
        assert self.netns_path is not None
        try:
            for key, value in REJECT_SYSCTLS:
                set_sysctl(self.netns_path, key, value)
        except OSError as exc:  # denials still work, some just time out
            log.warning("could not lift ICMP rate limits in %s: %s", self.netns_path, exc)
        self._sysctls_done = True

    def resync(self, ruleset: Ruleset | None = None) -> PolicySyncReport:
        """Replace the table with ``ruleset`` (default: the one in force), whatever the
        kernel holds now: repairs hand edits."""
        desired = ruleset or self._applied
        if desired is None:
            return PolicySyncReport("absent", "no table to repair")
        self._full_next, self._reason = True, "periodic resync"
        return self.sync(desired)

    def remove(self) -> PolicySyncReport:
        """Delete the table (``add`` first, so it is safe when it is absent)."""
        start = time.perf_counter()
        table = self._applied or Ruleset()
        text = (f"add table {table.family} {table.table}\n"
                f"delete table {table.family} {table.table}\n")
        self.nft.run(text)
        self._applied, self._full_next, self._reason = None, True, "first sync"
        return PolicySyncReport("removed", "no NetworkPolicy left", transaction_bytes=len(text),
                                seconds=time.perf_counter() - start)
