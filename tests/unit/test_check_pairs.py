from __future__ import annotations

from pathlib import Path

from kubewire.check.matrix import ProbeResult, Target, _judge, choose_pairs


def targets(nodes: int, per_node: int) -> list[Target]:
    return [Target("default", f"p{n}-{i}", f"node-{n}", f"10.244.{n}.{i + 2}",
                   Path("/nonexistent"), 8080)
            for n in range(nodes) for i in range(per_node)]


def test_small_labs_probe_every_ordered_pair() -> None:
    ts = targets(3, 2)
    pairs, sampled = choose_pairs(ts, max_pairs=100)
    assert not sampled
    assert len(pairs) == 6 * 5
    assert all(a is not b for a, b in pairs)


def test_large_labs_sample_covers_every_node_pair_and_pod() -> None:
    ts = targets(10, 100)
    pairs, sampled = choose_pairs(ts, max_pairs=3000)
    assert sampled
    assert len(pairs) == 3000
    assert len({(a.ref, b.ref) for a, b in pairs}) == len(pairs)
    node_pairs = {(a.node, b.node) for a, b in pairs}
    assert len(node_pairs) == 100
    assert {a.ref for a, _ in pairs} == {t.ref for t in ts}
    assert {b.ref for _, b in pairs} == {t.ref for t in ts}
    again, _ = choose_pairs(ts, max_pairs=3000)
    assert [(a.ref, b.ref) for a, b in again] == [(a.ref, b.ref) for a, b in pairs]


def _result(ok: bool, outcome: str) -> ProbeResult:
    t = targets(1, 1)[0]
    return ProbeResult(t, t, ok, outcome, 0.0)


def test_judge_requires_the_destination_pod_to_answer() -> None:
    dst = targets(1, 2)[1]
    good = b'HTTP/1.1 200 OK\r\n\r\n{"pod": "p0-1", "namespace": "default"}'
    wrong = b'HTTP/1.1 200 OK\r\n\r\n{"pod": "p0-0", "namespace": "default"}'
    assert _judge(good, dst, _result).outcome == "http ok"
    r = _judge(wrong, dst, _result)
    assert not r.ok and "wrong pod" in r.outcome
    assert _judge(b"SSH-2.0-x\r\n", dst, _result).ok
