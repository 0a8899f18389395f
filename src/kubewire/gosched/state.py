"""What the scheduler model knows: Ps with runnext and their rings, the global queue, the
goroutines the trace has shown, and the primitive queue operations of runtime/proc.go
(runqput with its spill, globrunqget's batch, runqsteal's candidates, injectglist).

`Replayer` (model.py) drives it from trace events and makes the decisions.
"""

from __future__ import annotations

from collections import deque

from kubewire.gosched.result import Decision, Miss
from kubewire.gosched.rules import Rules

# How far behind the head a racing put is looked for (keeps the check cheap).
RACE_DEPTH = 16


class PState:
    """One P: runnext, the local ring, its schedtick and what the trace says it runs."""

    __slots__ = ("batch_tail", "cur", "direct", "free_ts", "hidden", "idle", "last_put",
                 "last_spill", "pending", "phase", "pid", "relearn", "runnext", "runq",
                 "slice_ts", "started", "tick")

    def __init__(self, interval: int, pid: int = -1) -> None:
        self.pid = pid
        self.runnext = -1
        self.runq: deque[int] = deque()
        # schedticks seen since the trace began; the phase (schedtick at trace start, modulo
        # the check interval) is unknown until a decision reveals it: the set of values still
        # consistent with every decision so far.
        self.tick = 0
        self.phase: set[int] = set(range(interval))
        self.relearn = False  # the phase was reopened after a contradiction
        self.cur = -1
        self.idle = False
        self.started = False
        # goroutines findRunnable unparked for itself (trace reader, GC worker, netpoll): the
        # last one is started; earlier netpoll ones were injected (see _inject)
        self.direct: list[tuple[int, str]] = []
        self.slice_ts = 0
        # an open question about the phase: a batch grab from the global queue that may have
        # been the periodic check's single grab (both start the same goroutine): the check's
        # schedtick value and the goroutines the batch moved to this P's ring
        self.pending: tuple[int, list[int]] | None = None
        # what the last spill moved to the global queue: the ring's older half, then the new one
        self.last_spill: list[int] = []
        # this P's last put on the global queue, whose window its next event closes
        self.last_put: list[int] | None = None
        # a steal that another, still silent, thief may have preceded: that thief's P and
        # the goroutines (now on this ring) it may have taken; this P's next decision tells
        self.hidden: tuple[int, set[int]] | None = None
        # when the P last let go of a goroutine (its search for the next began)
        self.free_ts = 0
        # the end of its last batch from the global queue that a smaller queue would not have
        # taken: puts racing with the grab may have landed after it
        self.batch_tail: list[int] | None = None


class Tentative:
    """A decision waiting for the thieves of the goroutines it skipped to show themselves."""

    __slots__ = ("actual", "index", "number", "p", "predicted", "rule", "ts", "waiting")

    def __init__(self, waiting: int, ts: int, p: int, predicted: int, actual: int, rule: str,
                 index: int, number: int) -> None:
        self.waiting = waiting  # skipped goroutines not yet started elsewhere; -1: explained
        self.ts = ts
        self.p = p
        self.predicted = predicted
        self.actual = actual
        self.rule = rule
        self.index = index  # in Replayer.decisions, when kept
        self.number = number  # the decision's number (1-based), kept or not


class SchedulerState:
    """The model's state and its queue operations; the rule constants come from ``Rules``."""

    def __init__(self, rules: Rules | None, keep_decisions: bool, max_misses: int) -> None:
        self.rules = rules or Rules()
        r = self.rules
        self._k = r.global_check_interval
        self._qsize = r.local_queue_size
        self._spill = r.spill_count
        self._batch_max = r.batch_max
        self._runnext = r.runnext
        self._passes = r.steal_passes
        self.keep_decisions = keep_decisions
        self.decisions: list[Decision] = []
        self.max_misses = max_misses
        self._misses: list[Miss] = []
        self._first_miss = 0  # number of the first decision missed; 0: none yet
        self._ps: dict[int, PState] = {}
        self._glob: deque[int] = deque()
        self._gomaxprocs = 1
        self._version = 0
        self._old = False
        self._prologue = True  # old format: the first GoStart re-announces the running G
        self._stw = False
        self._known: set[int] = set()
        self._unplaced: set[int] = set()  # runnable when the trace began, queue unknown
        self._sysexit: set[int] = set()  # left a syscall without a P
        self._inflight: dict[int, tuple[int, Tentative]] = {}  # stolen ahead of a GoStart
        self._tentative: list[Tentative] = []
        self._ts = 0
        self._primed = False
        self._inj_key = (0, -1)
        self._inj_budget = 0
        self._pending: set[int] = set()  # Ps with an open phase question
        self._reason: dict[int, str] = {}  # last block reason per goroutine
        self._injected: set[int] = set()  # goroutines whose wake-up uses injectglist
        # global-queue puts: goroutine -> [GoStop ts, P, end of the put's window]
        self._gput: dict[int, list[int]] = {}
        # what the trace last said of each goroutine (1 runnable, 2 running, 4 waiting or
        # dead): a queued goroutine the trace shows doing something else is a stale entry
        self._st: dict[int, int] = {}
        # old format: wake-ups on a pseudo-P: (goroutine, rule, batch); a batch is the
        # wake-ups between two decisions (one netpoll or one timer run)
        self._pool: list[tuple[int, str, int]] = []
        self._by_rule: dict[str, list[int]] = {}
        self.n_decisions = 0
        self.n_explained = 0
        self.n_several = 0
        self._several_next = False  # the next decision settles a hidden thief's share
        # goroutines a silent thief took to run next: goroutine -> the P whose decision showed
        # it did not take them itself
        self._held: dict[int, int] = {}
        # (decision number, P): the thief _settle_hidden names for this decision's _skip
        self._prefer_thief = (-1, -1)
        self.events = 0
        self.preemptions = 0
        self.preemptions_after_slice = 0

    def _set_version(self, v: int) -> None:
        self._version = v
        self._old = v < 22
        self._prologue = self._old

    def _p(self, p: int) -> PState:
        ps = self._ps.get(p)
        if ps is None:
            ps = self._ps[p] = PState(self._k, p)
        return ps

    # -- queue primitives (runqput, runqputslow, globrunqget, runqsteal) -------------------

    def _runqput(self, ps: PState, g: int, nxt: bool) -> None:
        if nxt and self._runnext:
            old = ps.runnext
            ps.runnext = g
            if old < 0:
                return
            g = old
        q = ps.runq
        if len(q) < self._qsize:
            q.append(g)
            return
        # runqputslow: the oldest half of the ring plus the new one go to the global queue
        glob = self._glob
        moved = [q.popleft() for _ in range(min(self._spill - 1, len(q)))]
        moved.append(g)
        glob.extend(moved)
        ps.last_spill = moved

    def _glob_batch(self, ps: PState) -> int:
        glob = self._glob
        n = min(len(glob), len(glob) // max(1, self._gomaxprocs) + 1, self._batch_max)
        absent = 0
        if n > 1 and self._gput:
            # puts by other Ps whose window reaches past the moment this P began its search
            # may have landed after the grab, and a shorter queue gives a smaller batch
            gput = self._gput
            for i in range(1, min(len(glob), RACE_DEPTH) + 1):
                rec = gput.get(glob[-i])
                if rec is None or rec[2] <= ps.free_ts:
                    break
                if rec[1] != ps.pid:  # its own put came before its search
                    absent += 1
        g = glob.popleft()
        q = ps.runq
        for _ in range(n - 1):
            q.append(glob.popleft())
        ps.batch_tail = None
        if absent:
            k = len(glob) + n - absent
            n_min = min(k, k // max(1, self._gomaxprocs) + 1, self._batch_max)
            if n_min < n:
                ps.batch_tail = list(q)[n_min - n:]
        return g

    def _unbatch(self, g: int, p: int) -> bool:
        """``g`` is at the end of another P's last batch grab, in the part a queue without
        the puts racing with that grab would not have given it: move that part back to the
        global queue's head."""
        for q, v in self._ps.items():
            tail = v.batch_tail
            if q == p or tail is None or g not in tail:
                continue
            back = tail[tail.index(g):]
            ring = v.runq
            if len(ring) < len(back) or list(ring)[-len(back):] != back:
                return False
            for _ in back:
                ring.pop()
            self._glob.extendleft(reversed(back))
            v.batch_tail = None
            return True
        return False

    def _steal_candidates(self, p: int) -> list[tuple[int, int, int]]:
        """(goroutine, victim, n): what stealing from each victim would run.

        n > 0: half the victim's ring (rounded up), of which the last one runs; n == 0: the
        victim's runnext, which Go takes only on the last of its ``steal_passes`` passes
        (with one pass, at once).
        """
        out = []
        nexts = []
        for q, v in self._ps.items():
            if q == p:
                continue
            k = len(v.runq)
            if k:
                n = k - k // 2
                out.append((v.runq[n - 1], q, n))
            elif v.runnext >= 0:
                nexts.append((v.runnext, q, 0))
        if self._passes == 1:
            return out + nexts
        return out or nexts

    def _take(self, g: int) -> tuple[str, int]:
        """Remove ``g`` from wherever the model holds it; (where, which P) or ("", -1)."""
        for q, v in self._ps.items():
            if v.runnext == g:
                v.runnext = -1
                return "runnext", q
            if g in v.runq:
                v.runq.remove(g)
                return "local", q
            for i, (dg, _) in enumerate(v.direct):
                if dg == g:
                    del v.direct[i]
                    return "direct", q
        if g in self._glob:
            self._glob.remove(g)
            return "global", -1
        for i, (pg, _, _) in enumerate(self._pool):
            if pg == g:
                del self._pool[i]
                return "pool", -1
        return "", -1

    def _inject(self, ps: PState, g: int) -> None:
        """injectglist with a P: one goroutine per idle P to the global queue, the rest to
        the tail of this P's ring (Go 1.19 and 1.27 alike)."""
        key = (id(ps), self.n_decisions)
        if key != self._inj_key:
            # a new injectglist call: as many go global as there are idle Ps to start
            self._inj_key = key
            self._inj_budget = sum(1 for v in self._ps.values() if v.idle)
        if self._inj_budget > 0:
            self._inj_budget -= 1
            self._glob.append(g)
        else:
            self._runqput(ps, g, False)

    # -- the decision ----------------------------------------------------------------------

    def _record(self, ts: int, p: int, pred: int, g: int, rule: str, ok: bool,
                tentative: bool = False, several: bool = False) -> None:
        self.n_decisions += 1
        c = self._by_rule.get(rule)
        if c is None:
            c = self._by_rule[rule] = [0, 0]
        c[0] += 1
        if self._several_next:
            several = True
            self._several_next = False
        if ok:
            self.n_explained += 1
            c[1] += 1
            if several:
                self.n_several += 1
        elif not tentative:
            if not self._first_miss:
                self._first_miss = self.n_decisions
            if len(self._misses) < self.max_misses:
                self._misses.append(Miss(ts, p, pred, g, rule))
        if self.keep_decisions:
            self.decisions.append(Decision(ts, p, pred, g, rule, ok))

