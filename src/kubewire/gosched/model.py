"""The scheduler model: Ps with run queues, the global queue, and the replay of a trace.

The rules are those of runtime/proc.go (Go 1.27 and Go 1.19 agree on the queueing rules the
trace can show; the differences are noted where they apply). Names of the rules a decision can
be explained by, in the order findRunnable tries them:

- ``direct``: a goroutine findRunnable returns without queueing it (the trace reader, a GC mark
  worker) or, ``netpoll``, the first goroutine a non-blocking netpoll returned;
- ``global61``: every ``global_check_interval``-th schedtick the global queue's head comes first;
- ``runnext``: the P's runnext slot (the goroutine inherits the time slice: no schedtick);
- ``local``: the head of the P's 256-slot ring;
- ``global``: a batch grab from the global queue when the local queue is empty;
- ``steal``: the last goroutine of half a victim's ring (its runnext only on the last pass);
- ``syscall``: a goroutine leaving a syscall without its P that took an idle P at once;
- ``phase``: a decision that told the model a P's schedtick phase (unknown at trace start).

Where the rules give several equally possible goroutines and the trace cannot say which (a
random steal victim, puts racing for sched.lock, a steal stamped late), a decision that ran
one of them is explained and also counted in ``several_possible`` (README.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

from kubewire.gosched.result import Miss, ReplayResult, make_result
from kubewire.gosched.rules import Rules
from kubewire.gosched.state import RACE_DEPTH, PState, SchedulerState, Tentative
from kubewire.gotrace import Event, Kind

# Old-format (Go 1.19) pseudo-Ps the toolchain's parser puts on wake-ups it cannot place.
TIMER_P = 1000001

# Block reasons (as the reader names them) of goroutines findRunnable starts directly when it
# unparks them: the trace reader and idle GC mark workers park with these.
_DIRECT_REASONS = frozenset({"system goroutine wait", "GC worker (idle)", ""})
_NETWORK = "network"
# A put on the global queue happens after its GoStop is stamped and before the P's next
# event: puts by different Ps whose windows overlap took sched.lock in an order the trace does
# not record. An open window ends here (no later event on that P yet).
_OPEN = 1 << 62
_NO_PUT = [0, -1, 0]
# Start functions of goroutines the runtime wakes with injectglist (ring tail, or global for
# idle Ps) instead of ready's runnext: the scavenger (scavengerState.wake, Go 1.19 and 1.27).
_INJECTED_STARTS = frozenset({"runtime.bgscavenge"})

_STATUS_RUNNABLE, _STATUS_RUNNING = 1, 2
_PROC_IDLE = 2


class Replayer(SchedulerState):
    """Feeds trace events through the model, one ``feed`` per event (sans-I/O).

    ``keep_decisions`` keeps every ``Decision`` in ``decisions`` (memory grows with the trace);
    ``max_misses`` caps the misses kept for the result.
    """

    def __init__(self, rules: Rules | None = None, *, keep_decisions: bool = False,
                 max_misses: int = 100) -> None:
        super().__init__(rules, keep_decisions, max_misses)
        self._handlers: dict[Kind, Callable[[Event], None]] = {
            Kind.GO_CREATE: self._go_create,
            Kind.GO_START: self._go_start,
            Kind.GO_STOP: self._go_stop,
            Kind.GO_BLOCK: self._go_block,
            Kind.GO_DESTROY: self._go_end,
            Kind.GO_UNBLOCK: self._go_unblock,
            Kind.GO_SYSCALL_END_BLOCKED: self._syscall_exit,
            Kind.GO_SYSCALL_BLOCK: self._go_end,
            Kind.PROC_START: self._proc_start,
            Kind.PROC_STOP: self._proc_stop,
            Kind.PROC_STEAL: self._proc_steal,
            Kind.PROC_STATUS: self._proc_status,
            Kind.PROCS_CHANGE: self._procs_change,
            Kind.GO_STATUS: self._go_status,
            Kind.GO_WAITING: self._go_placed,
            Kind.GO_IN_SYSCALL: self._go_placed,
            Kind.GO_SWITCH: self._go_switch,
            Kind.GO_SWITCH_DESTROY: self._go_switch,
            Kind.STW_BEGIN: self._stw_begin,
            Kind.STW_END: self._stw_end,
        }


    # -- driving ---------------------------------------------------------------------------

    def feed_all(self, events: Iterable[Event]) -> None:
        it = iter(events)
        if not self._primed:
            self._primed = True
            head = self._first_generation(it)
            self._run(head)
        self._run(it)

    def _first_generation(self, it: Iterator[Event]) -> list[Event]:
        """Read ahead through the first generation (current format) and seed the goroutines
        that were runnable when the trace began.

        The current format announces a goroutine's status lazily, at its first event: one
        that sat in a run queue since before the trace started shows up only when it runs.
        Until then the model's ring would be short by one per such goroutine, and every
        spill would move the wrong ones. The status is in the trace, only later; reading one
        generation ahead (the reader holds one in memory anyway) finds it in time. Such
        goroutines go to the ring of the P that announced them, oldest first.
        """
        head: list[Event] = []
        syncs = 0
        for ev in it:
            head.append(ev)
            if ev.version and ev.version < 22:
                return head  # Go 1.19 announces every goroutine up front
            if ev.kind is Kind.SYNC:
                syncs += 1
                if syncs == 2:
                    break
        seen: set[int] = set()
        seeds: list[tuple[int, int]] = []
        # goroutine ids grow: one above the first created in the trace was made during it
        # (by a path the trace does not show, e.g. the finalizer goroutine), not before
        first_new = min((ev.args[0] for ev in head if ev.kind is Kind.GO_CREATE), default=-1)
        for ev in head:
            k = ev.kind
            if k is Kind.GO_STATUS:
                g = ev.args[0]
                if g not in seen and ev.args[2] == _STATUS_RUNNABLE and (
                        first_new < 0 or g < first_new):
                    seeds.append((g, ev.p))
                seen.add(g)
            elif k in (Kind.GO_CREATE, Kind.GO_START, Kind.GO_UNBLOCK):
                seen.add(ev.args[0])
            if ev.g >= 0:
                seen.add(ev.g)
        for g, p in sorted(seeds):
            ps = self._p(max(p, 0))
            ps.runq.append(g)
            self._known.add(g)
            self._st[g] = 1
        return head

    def _run(self, events: Iterable[Event]) -> None:
        get = self._handlers.get
        n = 0
        for ev in events:
            n += 1
            h = get(ev.kind)
            if h is not None:
                if not self._version:
                    self._set_version(ev.version)
                h(ev)
        self.events += n

    def feed(self, ev: Event) -> None:
        self.feed_all((ev,))

    def result(self) -> ReplayResult:
        notes = []
        if not self.n_decisions:
            notes.append("no Runnable -> Running decisions in the trace: agreement is 0.0")
        if self._old:
            notes.append("Go 1.19 format: net poller and timer wake-ups carry no P")
        misses = list(self._misses)
        firsts = [self._first_miss] if self._first_miss else []
        for tok in self._tentative:
            if tok.waiting >= 0:  # a goroutine it skipped never started elsewhere
                misses.append(Miss(tok.ts, tok.p, tok.predicted, tok.actual, tok.rule))
                firsts.append(tok.number)
        misses.sort(key=lambda m: m.ts)
        return make_result(
            decisions=self.n_decisions,
            explained=self.n_explained,
            by_rule={k: (v[0], v[1]) for k, v in self._by_rule.items()},
            misses=tuple(misses[: self.max_misses]),
            events=self.events,
            version=self._version,
            gomaxprocs=self._gomaxprocs,
            preemptions=self.preemptions,
            preemptions_after_slice=self.preemptions_after_slice,
            notes=tuple(notes),
            several_possible=self.n_several,
            first_miss=min(firsts, default=None),
        )

    def _go_start(self, ev: Event) -> None:
        g = ev.args[0]
        p = ev.p
        ps = self._p(p)
        self._ts = ev.ts
        if self._prologue:
            # Go 1.19's StartTrace ends with a GoStart of the goroutine that called it: it is
            # already running, not a scheduling decision
            self._prologue = False
            self._unplaced.discard(g)
            self._known.add(g)
            ps.cur = g
            return
        ps.cur = g
        if ps.last_put is not None:
            ps.last_put[2] = ev.ts
            ps.last_put = None
        started = ps.started
        ps.started = False
        if self._pending:
            self._settle(p, g)
        if self._inflight:
            ent = self._inflight.pop(g, None)
            if ent is not None:
                victim, tok = ent
                ok = p != victim
                if ok:
                    tok.waiting -= 1
                    if tok.waiting == 0:
                        self._resolve(tok)
                self._finish(ps, ev.ts, p, g if ok else -1, g, "steal", ok, inherit=False)
                return
        if self._held:
            other = self._held.pop(g, -1)
            if other >= 0 and other != p:
                self._finish(ps, ev.ts, p, g, g, "steal", True, inherit=False, several=True)
                return
        inherit = False
        pred = -1
        rule = "none"
        ok = False
        # direct: trace reader, GC worker, netpoll's first goroutine
        if ps.direct:
            pred, rule = ps.direct[-1]
            if pred == g:
                ps.direct.pop()
                self._flush_direct(ps)
                self._finish(ps, ev.ts, p, pred, g, rule, True, inherit=False)
                return
            self._flush_direct(ps)
        if ps.hidden is not None:
            self._settle_hidden(ps, g, ps.hidden)
        glob = self._glob
        st = self._st
        # drop stale heads: goroutines the trace has since shown running, blocked or dead
        if ps.runnext >= 0 and st.get(ps.runnext, 1) != 1:
            ps.runnext = -1
        while ps.runq and st.get(ps.runq[0], 1) != 1:
            ps.runq.popleft()
        while glob and st.get(glob[0], 1) != 1:
            glob.popleft()
        # what runnext / local / global batch / pool / steal would give
        if ps.runnext >= 0:
            lpred, lrule = ps.runnext, "runnext"
        elif ps.runq:
            lpred, lrule = ps.runq[0], "local"
        elif glob:
            lpred, lrule = glob[0], "global"
        elif self._pool:
            lpred, lrule, _ = self._pool[-1]
        else:
            lpred, lrule = -1, "steal"
        fires = False
        if glob:
            phase = ps.phase
            zero = -ps.tick % self._k
            can_fire = zero in phase
            can_skip = len(phase) > 1 or not can_fire
            if can_fire and can_skip:
                # the phase is still open: the decision tells which way the check went
                if g == glob[0] and lpred != g:
                    ps.phase = {zero}
                    fires = True
                    rule = "phase"
                    if ps.relearn:
                        # relearning after a contradiction: the rules had said otherwise,
                        # so the decision that fixes the phase again counts as a miss
                        ps.relearn = False
                        glob.popleft()
                        self._finish(ps, ev.ts, p, lpred, g, rule, False, inherit=False)
                        return
                elif lpred == g and glob[0] != g:
                    phase.discard(zero)
                    rule = "phase"
            else:
                fires = can_fire
        if fires:
            pred = glob[0]
            if rule != "phase":
                rule = "global61"
            if pred == g:
                glob.popleft()
                self._finish(ps, ev.ts, p, pred, g, rule, True, inherit=False)
                return
            if g == lpred:
                # the check did not fire: the P's schedtick moved by something the trace does
                # not show; learn the phase again rather than miss twice every 61 ticks
                ps.phase = set(range(self._k))
                ps.phase.discard(-ps.tick % self._k)
                ps.relearn = True
        else:
            if glob and g == glob[0] and g != lpred and len(ps.phase) == 1:
                # the check fired at a schedtick the model did not expect: relearn, as above
                ps.phase = {-ps.tick % self._k}
            pred = lpred
            rule = lrule if rule != "phase" else "phase"
            if lrule == "runnext" and pred == g:
                ps.runnext = -1
                self._finish(ps, ev.ts, p, pred, g, rule, True, inherit=True)
                return
            if lrule == "local" and pred == g:
                ps.runq.popleft()
                self._finish(ps, ev.ts, p, pred, g, rule, True, inherit=False)
                return
            if lrule == "global" and pred == g:
                self._glob_batch(ps)
                if rule == "phase" or (len(ps.phase) > 1 and -ps.tick % self._k in ps.phase):
                    # the periodic check would have started the same goroutine: which one
                    # happened shows later, when another P takes a goroutine of the batch
                    ps.pending = (-ps.tick % self._k, list(ps.runq))
                    self._pending.add(p)
                self._finish(ps, ev.ts, p, pred, g, rule, True, inherit=False)
                return
            if lrule in ("netpoll", "timer") and self._from_pool(ps, g):
                self._finish(ps, ev.ts, p, pred, g, lrule, True, inherit=False)
                return
        if ps.runnext < 0 and not ps.runq and g != pred:
            # a P with nothing of its own steals; also when the global queue looks non-empty:
            # the P may have looked at it before another P's put (the trace orders events by
            # time stamp, not by who took sched.lock first)
            cands = self._steal_candidates(p)
            for cg, victim, n in cands:
                if cg == g:
                    v = self._ps[victim]
                    if n == 0:
                        v.runnext = -1
                    else:
                        batch = [v.runq.popleft() for _ in range(n)]
                        ps.runq.extend(batch[:-1])
                    # stealWork's victim order is random: several victims, several goroutines
                    several = len({c[0] for c in cands}) > 1
                    self._finish(ps, ev.ts, p, g, g, "steal", True, inherit=False,
                                 several=several)
                    return
            if cands and pred < 0:
                pred = cands[0][0]
            if self._late_steal(ps, p, g):
                self._finish(ps, ev.ts, p, g, g, "steal", True, inherit=False, several=True)
                return
        # the model's rule chose another goroutine: resynchronise on the trace
        if (fires or lrule == "global") and (self._reordered(g, glob) or (
                self._unbatch(g, p) and glob[0] == g)):
            # a put still in flight (its P has shown nothing since its GoStop: its M is not
            # running) lands after everything queued now
            gput = self._gput
            pending = [x for x in glob if x != g and gput.get(x, _NO_PUT)[2] == _OPEN]
            pending = pending[:RACE_DEPTH]
            for x in pending:
                glob.remove(x)
            glob.remove(g)
            glob.appendleft(g)
            if fires:
                glob.popleft()
            else:
                self._glob_batch(ps)
            glob.extend(pending)
            self._finish(ps, ev.ts, p, g, g, "global61" if fires else "global", True,
                         inherit=False, several=True)
            return
        if lrule == "local" and not fires and self._reordered(g, ps.runq):
            ps.runq.remove(g)
            self._finish(ps, ev.ts, p, g, g, "local", True, inherit=False, several=True)
            return
        if pred >= 0 and self._skip(ps, p, g, fires):
            return
        if g in self._sysexit and (started or pred < 0):
            # exitsyscall0 found an idle P and ran the goroutine on it at once
            self._sysexit.discard(g)
            self._take(g)
            self._finish(ps, ev.ts, p, g, g, "syscall", True, inherit=False)
            return
        if lrule == "local" and not fires and g in ps.runq and ps.runq[0] != g:
            # the ones ahead of it are not where the model thought (most often: an
            # unannounced goroutine at trace start shifted every later spill by one, so they
            # went to the global queue); move them there so one miss does not cascade
            q0 = ps.runq
            while q0[0] != g:
                glob.append(q0.popleft())
        if lrule == "local" and not fires and ps.last_spill and g in glob:
            self._unspill(ps, g)
        where, q = self._take(g)
        if (not fires and (ps.runq or ps.runnext >= 0)
                and (where == "global" or (where in ("local", "runnext") and q != p))
                and not (where == "global" and -ps.tick % self._k in ps.phase)):
            # runqget comes before the global queue and stealing, so the P's own queue was
            # empty: what the model held there was taken by a thief it has not seen yet (or
            # never was there); keep one miss from becoming one per decision
            stale = list(ps.runq)
            if ps.runnext >= 0:
                stale.insert(0, ps.runnext)
            ps.runnext = -1
            ps.runq.clear()
            glob.extend(stale)
        if not where and g in self._unplaced:
            rule = "unplaced"
        if where == "pool" and pred < 0:
            # an old-format wake-up that the pseudo-P hides, started by an idle P
            self._finish(ps, ev.ts, p, g, g, "netpoll", True, inherit=False)
            return
        inherit = where == "runnext" and q == p
        self._finish(ps, ev.ts, p, pred, g, rule, ok, inherit=inherit)

    def _unspill(self, ps: PState, g: int) -> None:
        """The ring's head is a goroutine the model's last spill moved away: the ring held k
        more goroutines than the model knew (runnable ones the trace announces only when they
        first run), so Go spilled k fewer of the model's. Put the last k back at the head;
        from then on the ring's length, and so every later spill, agrees again."""
        batch = ps.last_spill
        i = batch.index(g) if g in batch else -1
        k = len(batch) - i
        if i < 0 or k > 16:
            return
        back = batch[i:]
        glob = self._glob
        if not all(x in glob for x in back):
            return
        for x in back:
            glob.remove(x)
        ps.runq.extendleft(reversed(back))
        ps.last_spill = batch[:i]

    def _from_pool(self, ps: PState, g: int) -> bool:
        """An old-format wake-up started by a P with nothing else to run: findRunnable's
        netpoll returned it (or it was injected where the trace cannot say). The rest of its
        batch, unparked before it, went through injectglist on this P."""
        pool = self._pool
        for i in range(len(pool) - 1, -1, -1):
            if pool[i][0] == g:
                batch = pool[i][2]
                del pool[i]
                rest = [x for x in pool if x[2] == batch]
                if rest:
                    self._pool = [x for x in pool if x[2] != batch]
                    for x in rest:
                        if x[1] == "netpoll":
                            self._inject(ps, x[0])
                        else:
                            self._runqput(ps, x[0], True)
                return True
        return False

    def _late_steal(self, ps: PState, p: int, g: int) -> bool:
        """``g`` is deeper in a victim's ring than half of it is now: the thief grabbed half
        when the ring was shorter (or held others) and its GoStart shows only now. Half of a
        ring of 2i+1 goroutines ends at index i, so the ring must hold at least that many."""
        for q, v in self._ps.items():
            if q == p or g not in v.runq:
                continue
            i = v.runq.index(g)
            k = len(v.runq)
            hidden = -1
            if k < 2 * i + 1:
                hidden = self._hidden_thief(p, i, k)
                if hidden < 0:
                    return False
            # runqgrab takes the ring from its head up to the one it runs, and runqsteal
            # puts the others on the thief's ring: the victim cannot have run them since,
            # or the steal would have taken later ones
            prefix = [v.runq.popleft() for _ in range(i)]
            ps.runq.extend(prefix)
            v.runq.popleft()
            if hidden >= 0:
                ps.hidden = (hidden, set(prefix))
            return True
        return False

    def _settle_hidden(self, ps: PState, g: int, hidden: tuple[int, set[int]]) -> None:
        """This P's first decision after a steal a hidden thief may have preceded: if it
        runs neither its ring's head nor a later one of it, the ring held none of them (the
        hidden thief took them all); if it runs a later one, ``_skip`` hands the ones ahead
        to that thief. Either way the split was the trace's to tell, not the rules'."""
        if g == ps.runnext or (self._glob and g == self._glob[0]
                               and -ps.tick % self._k in ps.phase):
            return  # runnext and the periodic check come before the ring: no answer yet
        hq, owned = hidden
        ps.hidden = None
        q = ps.runq
        if not q or q[0] == g or q[0] not in owned:
            return
        self._several_next = True
        if g in q:
            self._prefer_thief = (self.n_decisions, hq)
            return
        # the hidden thief runs the last it took and keeps the others on its ring
        taken = [x for x in q if x in owned]
        keep = [x for x in q if x not in owned]
        self._ps[hq].runq.extend(taken[:-1])
        self._held[taken[-1]] = ps.pid
        q.clear()
        q.extend(keep)

    def _hidden_thief(self, p: int, i: int, k: int) -> int:
        """Another searching P may have stolen the head of the ring first (its M has not run
        since, so its GoStart has not shown): j goroutines, half a ring of at least 2j-1, then
        this thief half of the rest, ending at index i. Which j the trace does not say yet:
        this thief's ring takes them all, and the goroutines it skips when it next runs go
        to the hidden thief (``_skip``)."""
        if not any(k - j >= 2 * (i - j) + 1 for j in range(1, min(i, (k + 1) // 2) + 1)):
            return -1
        for q, v in self._ps.items():
            if q != p and v.cur < 0 and not v.idle and v.runnext < 0 and not v.runq:
                return q
        return -1

    def _reordered(self, g: int, queue: deque[int]) -> bool:
        """``g`` is behind goroutines (on the global queue, or on a ring a batch grab filled
        from it) that other Ps put on the global queue while ``g``'s put was in flight: the
        puts took sched.lock in an order the trace does not record, so those may as well be
        behind it. A put lies between its GoStop and the P's next event."""
        gput = self._gput
        mine = gput.get(g)
        if mine is None:
            return False
        ts, p, end = mine
        for i, x in enumerate(queue):
            if x == g:
                return i > 0
            other = gput.get(x)
            if (i >= RACE_DEPTH or other is None or other[1] == p or other[0] >= end
                    or ts >= other[2]):
                return False
        return False

    def _skip(self, ps: PState, p: int, g: int, fires: bool) -> bool:
        """The P ran a goroutine further back in its queue (or the global queue) than the head.

        If another P is searching for work (started, running nothing), that P stole the ones
        ahead: the steal happened before its GoStart shows it (the thief's thread may not run
        for tens of microseconds). The ones ahead go "in flight"; the decision is explained
        once every one of them starts on another P, and a miss if one starts here.
        """
        if not any(v.cur < 0 and not v.idle for q, v in self._ps.items() if q != p):
            return False
        glob = self._glob
        skipped: list[int] = []
        if not fires and g in ps.runq:
            if ps.runnext >= 0:
                skipped.append(ps.runnext)
                ps.runnext = -1
            q = ps.runq
            while q[0] != g:
                skipped.append(q.popleft())
            q.popleft()
            rule = "local"
        elif (fires or (ps.runnext < 0 and not ps.runq)) and g in glob:
            while glob[0] != g:
                skipped.append(glob.popleft())
            if fires:
                glob.popleft()
                rule = "global61"
            else:
                self._glob_batch(ps)
                rule = "global"
        else:
            return False
        ts = self._ts
        if not skipped:
            self._finish(ps, ts, p, g, g, rule, True, inherit=False)
            return True
        thief = self._thief(p, skipped, rule)
        if thief is not None:
            # runqsteal (or a batch grab) put all but the one it runs on the thief's ring,
            # where they may be stolen again (the thief's M may not run for a while)
            runs = skipped[0] if rule != "local" else skipped[-1]
            thief.runq.extend(x for x in skipped if x != runs)
            skipped = [runs]
        tok = Tentative(len(skipped), ts, p, skipped[0], g, rule, len(self.decisions),
                         self.n_decisions + 1)
        for x in skipped:
            self._inflight[x] = (p, tok)
        # counted now, explained when the thief shows itself
        self._finish(ps, ts, p, skipped[0], g, rule, False, inherit=False, tentative=True)
        self._tentative.append(tok)
        return True

    def _thief(self, p: int, skipped: list[int], rule: str) -> PState | None:
        """The searching P that took ``skipped`` ahead of P ``p``'s decision, when the rules
        let one steal or grab exactly those: half a ring (a ring of at least 2k-1), or a
        batch from the global queue. Several searching Ps: the one the model saw first."""
        k = len(skipped)
        if k < 2:
            return None  # one goroutine is in flight either way: nothing to place
        victim = self._ps[p]
        # the ring then held the k taken, the one run now and what is left behind it, and
        # at least 2k-1 (runqgrab takes half, rounded up); the skipped runnext is no part
        if rule == "local" and victim.runnext < 0 and k + 1 + len(victim.runq) < 2 * k - 1:
            return None
        n, hq = self._prefer_thief
        pref = self._ps.get(hq) if n == self.n_decisions else None
        if pref is not None and pref.cur < 0 and not pref.idle:
            return pref
        for q, v in self._ps.items():
            if q != p and v.cur < 0 and not v.idle and v.runnext < 0 and not v.runq:
                return v
        return None

    def _resolve(self, tok: Tentative) -> None:
        rule = tok.rule
        self.n_explained += 1
        self.n_several += 1  # the ring's head, or a later one if a thief took those ahead
        self._by_rule[rule][1] += 1
        tok.waiting = -1  # resolved
        if self.keep_decisions:
            i = tok.index
            d = self.decisions[i]
            self.decisions[i] = d._replace(predicted=d.actual, explained=True)

    def _settle(self, p: int, g: int) -> None:
        """Resolve open phase questions that this decision answers."""
        for q in list(self._pending):
            v = self._ps[q]
            if v.pending is None:
                self._pending.discard(q)
                continue
            zero, moved = v.pending
            if g not in moved:
                continue
            if q == p:
                # either way this P runs the batch in the same order (after a single grab its
                # next batch grab starts at the same goroutine): no answer yet
                if g == moved[-1]:
                    self._pending.discard(q)
                    v.pending = None
                continue
            self._pending.discard(q)
            v.pending = None
            if q != p:
                # another P took a goroutine the model had moved: the check fired and took one
                back = [x for x in moved if x in v.runq]
                for x in back:
                    v.runq.remove(x)
                self._glob.extendleft(reversed(back))
                v.phase = {zero}

    def _finish(self, ps: PState, ts: int, p: int, pred: int, g: int, rule: str, ok: bool,
                *, inherit: bool, tentative: bool = False, several: bool = False) -> None:
        self._unplaced.discard(g)
        self._sysexit.discard(g)
        self._st[g] = 2
        if self._gput:
            self._gput.pop(g, None)  # its put is spent: later queue moves are not puts
        if not inherit:
            ps.tick += 1
            ps.slice_ts = ts
        self._record(ts, p, pred, g, rule, ok, tentative, several)

    def _flush_direct(self, ps: PState) -> None:
        """Unparked-for-itself goroutines that did not run: they were readied after all."""
        for dg, rule in ps.direct:
            if rule == "netpoll":
                self._inject(ps, dg)
            else:
                self._runqput(ps, dg, True)
        ps.direct.clear()

    # -- goroutine transitions -------------------------------------------------------------

    def _go_create(self, ev: Event) -> None:
        g = ev.args[0]
        self._known.add(g)
        if ev.extra_stack and ev.extra_stack[0].func in _INJECTED_STARTS:
            self._injected.add(g)
        if ev.p < 0:
            return
        ps = self._p(ev.p)
        if self._old and ev.g <= 0:
            # Go 1.19's StartTrace announces every live goroutine with a GoCreate from no
            # goroutine; runnable ones are somewhere in a queue the trace does not show
            self._unplaced.add(g)
            return
        self._st[g] = 1
        self._runqput(ps, g, True)  # newproc: runqput(pp, newg, true)

    def _go_stop(self, ev: Event) -> None:
        g = ev.g
        ps = self._p(ev.p)
        ps.cur = -1
        ps.free_ts = ev.ts
        self._st[g] = 1
        reason = ev.strings[0] if ev.strings else ""
        if reason == "preempted":
            self.preemptions += 1
            if ev.ts - ps.slice_ts >= self.rules.preempt_ns:
                self.preemptions_after_slice += 1
            if self._stw and not self._old:
                # Go 1.27: preempted for a stop-the-world, the G keeps runnext
                self._runqput(ps, g, True)
                return
        # goschedImpl: Gosched and preemption put the goroutine on the global queue
        self._glob.append(g)
        rec = [ev.ts, ev.p, _OPEN]
        self._gput[g] = rec
        ps.last_put = rec

    def _go_block(self, ev: Event) -> None:
        self._reason[ev.g] = ev.strings[0] if ev.strings else ""
        if ev.stack and ev.stack[-1].func in _INJECTED_STARTS:
            self._injected.add(ev.g)
        self._st[ev.g] = 4
        if ev.p >= 0:
            ps = self._p(ev.p)
            ps.cur = -1
            ps.free_ts = ev.ts

    def _go_end(self, ev: Event) -> None:
        if ev.kind is Kind.GO_DESTROY:
            self._st[ev.g] = 4
        if ev.p >= 0:
            ps = self._p(ev.p)
            ps.cur = -1
            ps.free_ts = ev.ts

    def _go_unblock(self, ev: Event) -> None:
        g = ev.args[0]
        p = ev.p
        self._known.add(g)
        self._unplaced.discard(g)
        reason = self._reason.pop(g, None)
        self._st[g] = 1
        if p < 0:
            # readied by an M without a P (sysmon's netpoll, injectglist with no P)
            self._glob.append(g)
            return
        if p >= TIMER_P:
            # Go 1.19 hides which P netpoll or the timers ran on
            self._pool.append((g, "timer" if p == TIMER_P else "netpoll", self.n_decisions))
            return
        ps = self._p(p)
        if not self._old and reason == _NETWORK:
            # findRunnable's netpoll: the last one unparked runs here, earlier ones were
            # injected; startTheWorld's netpoll injects them all. (A network waiter readied by
            # a running goroutine, e.g. on Close or a deadline, goes through ready().)
            if ps.cur < 0:
                self._flush_direct(ps)
                ps.direct.append((g, "netpoll"))
                return
            if self._stw:
                # startTheWorld polls before procresize, while every P is stopped: no P is
                # idle, so injectglist puts them all on this P's ring
                self._runqput(ps, g, False)
                return
        if ps.cur < 0 and reason in _DIRECT_REASONS:
            ps.direct.append((g, "direct"))
            return
        if g in self._injected:
            self._inject(ps, g)
            return
        self._runqput(ps, g, True)  # ready(): runqput(pp, gp, next=true)

    def _syscall_exit(self, ev: Event) -> None:
        g = ev.args[0] if self._old else ev.g
        for v in self._ps.values():
            if v.cur == g:
                v.cur = -1
        self._sysexit.add(g)
        self._st[g] = 1
        # exitsyscall0: an idle P runs it at once, otherwise the global queue
        if not any(v.idle for v in self._ps.values()):
            self._glob.append(g)

    def _go_switch(self, ev: Event) -> None:
        if ev.p >= 0:
            self._p(ev.p).cur = ev.args[0]

    def _go_status(self, ev: Event) -> None:
        g, _m, status = ev.args[0], ev.args[1], ev.args[2]
        if g in self._known:
            return
        self._known.add(g)
        if status == _STATUS_RUNNABLE:
            self._unplaced.add(g)
        elif status == _STATUS_RUNNING and ev.p >= 0:
            self._p(ev.p).cur = g

    def _go_placed(self, ev: Event) -> None:
        self._unplaced.discard(ev.args[0])

    # -- Ps ------------------------------------------------------------------------------

    def _proc_start(self, ev: Event) -> None:
        ps = self._p(ev.p if self._old else ev.args[0])
        ps.idle = False
        ps.started = True
        ps.free_ts = ev.ts

    def _proc_stop(self, ev: Event) -> None:
        if ev.p >= 0:
            ps = self._p(ev.p)
            ps.idle = True
            ps.cur = -1
            if ps.last_put is not None:
                ps.last_put[2] = ev.ts
                ps.last_put = None

    def _proc_steal(self, ev: Event) -> None:
        ps = self._p(ev.args[0])
        ps.cur = -1
        ps.idle = True

    def _proc_status(self, ev: Event) -> None:
        ps = self._p(ev.args[0])
        ps.idle = ev.args[1] == _PROC_IDLE

    def _procs_change(self, ev: Event) -> None:
        self._gomaxprocs = max(1, ev.args[0])
        for p in range(self._gomaxprocs):
            self._p(p)

    def _stw_begin(self, ev: Event) -> None:
        self._stw = True

    def _stw_end(self, ev: Event) -> None:
        self._stw = False


def replay(events: Iterable[Event], rules: Rules | None = None) -> ReplayResult:
    """Replay a trace's events through the model; how often its rules chose as Go did."""
    r = Replayer(rules)
    r.feed_all(events)
    return r.result()
