"""Program a node namespace's proxy table from compiled rulesets (the applier).

Each ``sync`` is one ``nft -f -`` transaction, run by a child spawned while the calling
thread sits in the node's network namespace, so the kernel applies all of it or none of
it. The syncer keeps the last ruleset the kernel accepted and diffs against it; it never
lists the table. After a sync it deletes UDP conntrack entries the change left stale.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubewire.kernel.netns import entered
from kubewire.proxy.errors import ProxyError, ProxySyncError
from kubewire.proxy.model import Ruleset, StaleFlow
from kubewire.proxy.plan import Op, Transaction, plan_full, plan_incremental
from kubewire.proxy.stale import stale_udp_flows

_DELETED_RE = re.compile(r"(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted")


class NftBackend(Protocol):
    """Applies one transaction atomically; raises ProxySyncError if it is refused."""

    def run(self, transaction: Transaction) -> None: ...


class ConntrackBackend(Protocol):
    """Deletes the conntrack entries of one stale flow; returns how many went."""

    def delete(self, flow: StaleFlow) -> int: ...


class NftCommand:
    """The real backend: ``nft -f -`` inside the node's network namespace."""

    def __init__(self, netns_path: Path | str, nft: str = "nft", timeout: float = 300.0) -> None:
        self.netns_path = netns_path
        self.nft = nft
        self.timeout = timeout

    def run(self, transaction: Transaction) -> None:
        text = transaction.render()
        kind = "full" if transaction.full else "incremental"
        try:
            with entered(self.netns_path):
                proc = subprocess.run([self.nft, "-f", "-"], input=text, capture_output=True,
                                      text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise ProxySyncError(f"{self.nft} not found: install nftables "
                                 "(apt-get install nftables)", transaction=text) from None
        except subprocess.TimeoutExpired:
            raise ProxySyncError(f"nft did not finish the {kind} transaction within "
                                 f"{self.timeout:.0f}s", transaction=text) from None
        if proc.returncode != 0:
            first = "\n".join(proc.stderr.strip().splitlines()[:6])
            raise ProxySyncError(
                f"nft refused the {kind} transaction ({len(transaction.ops)} commands) in "
                f"{self.netns_path}; the previous rules stay in force and the next sync "
                f"is a full one:\n{first}", stderr=proc.stderr, transaction=text)


class ConntrackCommand:
    """The real backend: ``conntrack -D`` inside the node's network namespace."""

    def __init__(self, netns_path: Path | str, conntrack: str = "conntrack") -> None:
        self.netns_path = netns_path
        self.conntrack = conntrack

    def delete(self, flow: StaleFlow) -> int:
        try:
            with entered(self.netns_path):
                proc = subprocess.run([self.conntrack, *flow.conntrack_args()],
                                      capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError:
            raise ProxyError(f"{self.conntrack} not found: install conntrack "
                             "(apt-get install conntrack)") from None
        found = _DELETED_RE.search(proc.stderr + proc.stdout)
        # conntrack exits 1 when nothing matched ("0 flow entries have been deleted").
        if found is not None and (proc.returncode == 0 or found.group(1) == "0"):
            return int(found.group(1))
        if proc.returncode == 0:
            return 0
        raise ProxyError(f"conntrack {' '.join(flow.conntrack_args())} failed "
                         f"(exit {proc.returncode}): {proc.stderr.strip()}")


@dataclass(frozen=True, slots=True)
class SyncReport:
    full: bool
    reason: str
    chains_added: tuple[str, ...] = ()
    chains_changed: tuple[str, ...] = ()
    chains_removed: tuple[str, ...] = ()
    sets_added: tuple[str, ...] = ()
    sets_removed: tuple[str, ...] = ()
    elements_added: int = 0
    elements_removed: int = 0
    commands: int = 0
    transaction_bytes: int = 0
    seconds: float = 0.0
    nft_seconds: float = 0.0
    stale_flows: tuple[StaleFlow, ...] = ()
    conntrack_deleted: int = 0
    conntrack_errors: tuple[str, ...] = ()

    @property
    def changes(self) -> int:
        return (len(self.chains_added) + len(self.chains_changed) + len(self.chains_removed)
                + len(self.sets_added) + len(self.sets_removed)
                + self.elements_added + self.elements_removed)


class ProxySyncer:
    """Keeps one node namespace's ``ip kubewire-proxy`` table equal to the rulesets given.

    ``sync`` applies only the difference from the last accepted ruleset; the first sync,
    a ``resync()`` and the sync after a failure are full. ``nft``/``conntrack`` default to
    the real commands inside ``netns_path``; tests pass ``FakeNft``/``FakeConntrack``.
    """

    def __init__(self, netns_path: Path | str | None = None, *, nft: NftBackend | None = None,
                 conntrack: ConntrackBackend | None = None) -> None:
        if netns_path is None and (nft is None or conntrack is None):
            # Never the machine's own namespace: the proxy programs node namespaces only.
            raise ProxyError("ProxySyncer needs the node's network namespace path "
                             "(e.g. /run/netns/kw-lab-node-1)")
        self.netns_path = netns_path
        self.nft: NftBackend = nft if nft is not None else NftCommand(str(netns_path))
        self.conntrack: ConntrackBackend = (conntrack if conntrack is not None
                                            else ConntrackCommand(str(netns_path)))
        self._applied: Ruleset | None = None
        self._desired: Ruleset | None = None
        # What the next sync must be: "recreate" (nothing known about the table: delete
        # and rebuild it), "full" (flush and refill; affinity state survives) or
        # "incremental".
        self._next = "recreate"
        self._reason = "first sync"

    @property
    def applied(self) -> Ruleset | None:
        """The ruleset the kernel last accepted (what is in force now)."""
        return self._applied

    @property
    def next_sync_full(self) -> bool:
        return self._next != "incremental"

    def sync(self, ruleset: Ruleset) -> SyncReport:
        start = time.perf_counter()
        self._desired = ruleset
        reason = self._reason
        tx: Transaction | None = None
        if self._next == "incremental" and self._applied is not None:
            tx = plan_incremental(self._applied, ruleset)
            reason = "incremental" if tx is not None else "a set or base chain changed type"
        if tx is None:
            recreate = self._next == "recreate" or self._applied is None
            tx = plan_full(ruleset, None if recreate else self._applied, recreate=recreate)

        nft_seconds = 0.0
        if not tx.empty:
            t0 = time.perf_counter()
            try:
                self.nft.run(tx)
            except ProxySyncError:
                if tx.full:
                    self._next, self._reason = "recreate", "retry after a failed full sync"
                else:
                    self._next, self._reason = "full", "retry after a failed sync"
                raise
            nft_seconds = time.perf_counter() - t0

        old, self._applied = self._applied, ruleset
        self._next, self._reason = "incremental", "incremental"
        stale = stale_udp_flows(old, ruleset)
        deleted, errors = 0, []
        for flow in stale:
            try:
                deleted += self.conntrack.delete(flow)
            except ProxyError as exc:
                errors.append(str(exc))
        return SyncReport(
            full=tx.full, reason=reason if tx.ops else "no change",
            chains_added=tx.chains_added, chains_changed=tx.chains_changed,
            chains_removed=tx.chains_removed, sets_added=tx.sets_added,
            sets_removed=tx.sets_removed, elements_added=tx.elements_added,
            elements_removed=tx.elements_removed, commands=len(tx.ops),
            transaction_bytes=len(tx.render()) if tx.ops else 0,
            seconds=time.perf_counter() - start, nft_seconds=nft_seconds,
            stale_flows=stale, conntrack_deleted=deleted, conntrack_errors=tuple(errors),
        )

    def resync(self, ruleset: Ruleset | None = None, recreate: bool = False) -> SyncReport:
        """A full sync of ``ruleset`` (default: the last one given to ``sync``). Repairs
        anything changed by hand inside the table; ``recreate`` also drops objects the
        syncer does not know about (and the affinity sets' state)."""
        desired = ruleset or self._desired or self._applied
        if desired is None:
            raise ProxyError("resync() before any sync: pass the ruleset to apply")
        if recreate or self._applied is None:
            self._next, self._reason = "recreate", "resync (recreate)"
        elif self._next == "incremental":
            self._next, self._reason = "full", "resync"
        return self.sync(desired)

    def delete_table(self) -> None:
        """Remove the table (node teardown); ``add`` first makes it safe if absent."""
        ruleset = self._applied or self._desired or Ruleset()
        self.nft.run(Transaction((Op("add", "table"), Op("delete", "table")), full=True,
                                 family=ruleset.family, table=ruleset.table))
        self._applied = None
        self._next, self._reason = "recreate", "first sync"
