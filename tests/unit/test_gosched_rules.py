"""The queueing rules one at a time, on small hand-written event sequences.

The real traces (test_gosched_replay.py) are the acceptance; these pin each rule down so a
regression names the rule that broke.
"""

from __future__ import annotations

import pytest

from kubewire.gosched import Replayer, Rules, RulesError, replay
from kubewire.gosched.errors import GoSchedError
from kubewire.gotrace import Event, Kind

_ts = [0]


def ev(kind: Kind, p: int, g: int, args: tuple[int, ...] = (), reason: str = "",
       version: int = 26) -> Event:
    _ts[0] += 100
    return Event(kind, _ts[0], 1, p, g, args, kind.value, 0, (), (reason,) if reason else (),
                 (), version)


def create(p: int, parent: int, child: int) -> Event:
    return ev(Kind.GO_CREATE, p, parent, (child, 0, 0))


def start(p: int, g: int) -> Event:
    return ev(Kind.GO_START, p, -1, (g, 1))


def block(p: int, g: int, reason: str = "chan receive") -> Event:
    return ev(Kind.GO_BLOCK, p, g, (0, 0), reason)


def end(p: int, g: int) -> Event:
    return ev(Kind.GO_DESTROY, p, g)


def running(p: int, g: int) -> list[Event]:
    """The trace's opening: P p runs goroutine g."""
    return [ev(Kind.PROCS_CHANGE, p, -1, (1, 0)), ev(Kind.PROC_STATUS, -1, -1, (p, 1)),
            ev(Kind.GO_STATUS, p, -1, (g, 1, 2))]


def test_runnext_then_the_ring_in_order() -> None:
    evs = [*running(0, 1), create(0, 1, 10), create(0, 1, 11), create(0, 1, 12),
           block(0, 1), start(0, 12), end(0, 12), start(0, 10), end(0, 10), start(0, 11)]
    res = replay(evs)
    assert (res.decisions, res.explained) == (3, 3)
    assert res.by_rule["runnext"] == (1, 1)
    # the oldest starting first would be a miss: newproc puts the newest in runnext
    evs2 = [*running(0, 1), create(0, 1, 10), create(0, 1, 11), create(0, 1, 12),
            block(0, 1), start(0, 10)]
    miss = replay(evs2).misses[0]
    assert (miss.predicted, miss.actual, miss.rule) == (12, 10, "runnext")


def _storm(n: int) -> list[Event]:
    evs = [*running(0, 1)]
    evs += [create(0, 1, 100 + i) for i in range(n)]
    evs.append(block(0, 1))
    return evs


def test_a_full_ring_spills_its_older_half_plus_one() -> None:
    # 258 creations: the 258th kicks the 257th out of runnext into a full ring, so 100..227
    # and 356 go to the global queue and the ring keeps 228..355
    evs = [*_storm(258), start(0, 357), end(0, 357), start(0, 228), end(0, 228),
           start(0, 229)]
    good = replay(evs)
    assert good.explained == good.decisions == 3
    bad = replay(evs, Rules(spill=127))  # keeps 226 and 227 on the ring
    assert bad.misses and bad.misses[0].predicted == 226


def test_the_periodic_check_takes_the_global_head_every_61_ticks() -> None:
    evs = _storm(258)
    evs += [start(0, 357), end(0, 357)]  # runnext: inherits the time slice, no schedtick
    order = list(range(228, 356))  # the ring, one schedtick each
    # the schedtick is unknown at trace start (the model learns its phase from the
    # decisions): here the P's schedtick is 1 at the first ring goroutine, so the 61st and
    # 122nd of this P's ticks after it take the global head
    seq = []
    ring = iter(order)
    glob = iter([*range(100, 228), 356])
    for tick in range(130):
        seq.append(next(glob) if tick % 61 == 60 else next(ring))
    for g in seq:
        evs += [start(0, g), end(0, g)]
    res = replay(evs)
    assert res.explained == res.decisions, res.misses[:3]
    assert res.by_rule["global61"][0] == 2
    bad = replay(evs, Rules(global_check_interval=60))
    assert bad.explained < bad.decisions


def test_gosched_goes_to_the_global_queue_tail() -> None:
    evs = [*running(0, 1), create(0, 1, 10), ev(Kind.GO_STOP, 0, 1, (0, 0), "runtime.Gosched"),
           start(0, 10), end(0, 10), start(0, 1)]
    res = replay(evs)
    assert res.explained == res.decisions == 2
    assert res.by_rule["global"] == (1, 1)


def test_a_thief_steals_half_and_runs_the_last_it_took() -> None:
    evs = [ev(Kind.PROCS_CHANGE, 0, -1, (2, 0)), ev(Kind.PROC_STATUS, -1, -1, (0, 1)),
           ev(Kind.PROC_STATUS, -1, -1, (1, 2)), ev(Kind.GO_STATUS, 0, -1, (1, 1, 2))]
    evs += [create(0, 1, 10 + i) for i in range(4)]  # runnext 13, ring 10 11 12
    evs += [ev(Kind.PROC_START, -1, -1, (1, 1)), start(1, 11), end(1, 11), start(1, 10)]
    res = replay(evs)
    assert res.by_rule["steal"] == (1, 1)
    assert res.by_rule["local"] == (1, 1)  # 10 came along to the thief's ring
    assert res.gomaxprocs == 2


def test_one_surprise_does_not_cascade() -> None:
    evs = [*running(0, 1), *(create(0, 1, 10 + i) for i in range(4)), block(0, 1)]
    # runnext 13, ring 10 11 12; the trace runs 11 before 10 (say a goroutine the trace
    # never showed changed the ring): one miss, then the model follows the trace again
    evs += [start(0, 13), end(0, 13), start(0, 11), end(0, 11), start(0, 12), end(0, 12),
            start(0, 10)]
    res = replay(evs)
    assert res.decisions == 4 and res.explained == 3
    assert res.misses[0].actual == 11


def test_old_format_net_poller_wake_ups() -> None:
    v = 19
    evs = [ev(Kind.PROCS_CHANGE, 0, 0, (1,), version=v), ev(Kind.GO_START, 0, 0, (1, 0), version=v),
           ev(Kind.GO_BLOCK, 0, 1, (), "network", version=v),
           ev(Kind.GO_UNBLOCK, 1000002, 0, (20, 0), version=v),
           ev(Kind.GO_UNBLOCK, 1000002, 0, (21, 0), version=v),
           ev(Kind.GO_START, 0, 0, (21, 0), version=v), ev(Kind.GO_DESTROY, 0, 21, (), version=v),
           ev(Kind.GO_START, 0, 0, (20, 0), version=v)]
    res = replay(evs)
    # the last one unparked runs at once; the other was injected into this P's ring
    assert res.by_rule["netpoll"] == (1, 1)
    assert res.by_rule["local"] == (1, 1)
    assert res.version == 19


def test_new_format_netpoll_runs_the_last_and_injects_the_rest() -> None:
    evs = [*running(0, 1), ev(Kind.GO_BLOCK, 0, 1, (0, 0), "network")]
    evs += [ev(Kind.GO_STATUS, 0, -1, (g, 1, 4)) for g in (20, 21)]
    evs += [block(0, 1)]
    for g in (20, 21):  # they blocked on the network earlier
        evs += [ev(Kind.GO_BLOCK, 0, g, (0, 0), "network")]
    evs += [ev(Kind.GO_UNBLOCK, 0, -1, (20, 1, 0)), ev(Kind.GO_UNBLOCK, 0, -1, (21, 1, 0)),
            start(0, 21), end(0, 21), start(0, 20)]
    res = replay(evs)
    assert res.by_rule["netpoll"] == (1, 1)
    assert res.explained == res.decisions == 2


def test_rules_are_validated_with_a_message_that_says_what_to_do() -> None:
    with pytest.raises(RulesError, match="global_check_interval must be at least 1"):
        Rules(global_check_interval=0)
    with pytest.raises(GoSchedError, match="spill"):
        Rules(spill=300)
    assert Rules().batch_max == 128 and Rules(local_queue_size=64).spill_count == 33


def test_feed_one_at_a_time_equals_feed_all() -> None:
    evs = [*_storm(300), start(0, 399), end(0, 399)]
    a = Replayer()
    for e in evs:
        a.feed(e)
    assert a.result() == replay(evs)


def test_a_schedtick_slip_costs_two_decisions_not_two_every_61() -> None:
    # as above, but the second check comes one tick late (something the trace does not show
    # moved the P's schedtick): the model misses the check it expected and the one it did
    # not, relearns the phase, and is right again afterwards
    evs = [*_storm(258), start(0, 357), end(0, 357)]
    ring = iter(range(228, 356))
    glob = iter([*range(100, 228), 356])
    for tick in range(128):
        g = next(glob) if tick in (60, 122) else next(ring)
        evs += [start(0, g), end(0, g)]
    res = replay(evs)
    assert res.decisions - res.explained == 2, res.misses
    assert [m.rule for m in res.misses] == ["global61", "phase"]


def _two_ps(n_ps: int = 3) -> list[Event]:
    """P0 runs goroutine 1; the other Ps are idle."""
    evs = [ev(Kind.PROCS_CHANGE, 0, -1, (n_ps, 0)), ev(Kind.PROC_STATUS, -1, -1, (0, 1))]
    evs += [ev(Kind.PROC_STATUS, -1, -1, (p, 2)) for p in range(1, n_ps)]
    return [*evs, ev(Kind.GO_STATUS, 0, -1, (1, 1, 2))]


def test_a_late_stamped_steal_brings_the_ring_head_along() -> None:
    # ring 10..13 (runnext 14): a thief running 11 took half of a ring of 3 (10, 11), so 10
    # sits on its ring and the victim goes on with 12
    evs = [*_two_ps(2), *(create(0, 1, 10 + i) for i in range(5)),
           ev(Kind.PROC_START, -1, -1, (1, 1)), start(1, 11), end(1, 11), start(1, 10)]
    res = replay(evs)
    assert res.explained == res.decisions == 2, res.misses
    assert res.by_rule["steal"] == (1, 1) and res.by_rule["local"] == (1, 1)


def test_a_silent_thief_holds_what_it_took() -> None:
    # ring 10..15, runnext 16; P2 starts searching and its M stalls; P1 then runs 13, deeper
    # than half the ring: only if P2 took the head first (10..12, running 12) can it be so
    evs = [*_two_ps(3), *(create(0, 1, 10 + i) for i in range(7)),
           ev(Kind.PROC_START, -1, -1, (2, 1)), ev(Kind.PROC_START, -1, -1, (1, 1)),
           start(1, 13), end(1, 13),
           start(1, 14), end(1, 14),  # P1 steals again: its ring never held 10..12
           ev(Kind.PROC_START, -1, -1, (2, 2)), start(2, 12)]  # P2's M finally runs
    res = replay(evs)
    assert res.explained == res.decisions == 3, res.misses
    # a split of the ring the trace, not the rules, settled: counted as such
    assert res.several_possible == 3
    assert res.to_dict()["several_possible"] == 3


def test_racing_puts_to_the_global_queue_may_land_in_either_order() -> None:
    # P0 and P1 each Gosched a goroutine; P1's put window (its GoStop to its next event)
    # overlaps P0's, so P2 may find P0's goroutine first
    evs = [*_two_ps(3), ev(Kind.PROC_STATUS, -1, -1, (1, 1)), ev(Kind.GO_STATUS, 1, -1, (2, 1, 2))]
    evs += [ev(Kind.GO_STOP, 1, 2, (0, 0), "runtime.Gosched"),
            ev(Kind.GO_STOP, 0, 1, (0, 0), "runtime.Gosched"),
            ev(Kind.PROC_START, -1, -1, (2, 1)), start(2, 1)]
    res = replay(evs)
    assert res.explained == res.decisions == 1 and res.several_possible == 1
    # with the windows apart (P1 moved on before P0 stopped) the order is the trace's
    evs2 = [*_two_ps(3), ev(Kind.PROC_STATUS, -1, -1, (1, 1)),
            ev(Kind.GO_STATUS, 1, -1, (2, 1, 2)), ev(Kind.GO_STOP, 1, 2, (0, 0), "runtime.Gosched"),
            ev(Kind.PROC_STOP, 1, -1, ()), ev(Kind.GO_STOP, 0, 1, (0, 0), "runtime.Gosched"),
            ev(Kind.PROC_START, -1, -1, (2, 1)), start(2, 1)]
    res2 = replay(evs2)
    assert res2.explained == 0 and res2.misses[0].predicted == 2
