"""The attribute fast path (`update._parse_common`) agrees with the full RFC 7606 parser
wherever it answers, and answers for every clean list of the attribute kinds it covers."""

from __future__ import annotations

import random
import struct

from kubewire.bgp import update
from kubewire.bgp.attributes import (
    AsPath,
    Communities,
    LocalPref,
    MultiExitDisc,
    NextHop,
    OriginAttr,
    WireContext,
)

CONTEXTS = [WireContext(), WireContext(False), WireContext(True, True, 65100),
            WireContext(True, True, None), WireContext(False, True, 65100),
            WireContext(True, True, 70000), WireContext(False, True, 23456)]
COVERED = (OriginAttr, AsPath, NextHop, MultiExitDisc, LocalPref, Communities)
ROUNDS = 3000
FAST_ROUNDS = 20000


def _attr(flags: int, code: int, value: bytes) -> bytes:
    if flags & 0x10:
        return bytes([flags, code]) + struct.pack("!H", len(value)) + value
    return bytes([flags, code, len(value)]) + value


def _random_attr(rnd: random.Random) -> bytes:
    """Mostly the common kinds, well formed or off by one in a field, a flag or a length."""
    code = rnd.choice([1, 2, 3, 4, 5, 8, 6, 7, 9, 0, 14, 15, 16, 17, 32, 255])
    flags = rnd.choice([0x40, 0x80, 0xC0, 0x50, 0x00, 0x60, 0xE0, 0x90, 0x4F])
    if code == 1:
        value = bytes([rnd.choice([0, 1, 2, 3])]) if rnd.random() < .9 else b""
    elif code == 2:
        width, value = rnd.choice([2, 4]), b""
        for _ in range(rnd.choice([0, 1, 1, 2, 3])):
            n = rnd.choice([0, 1, 2, 3, 4])
            asns = [rnd.choice([65100, 23456, 70000, 1, 0, 65001]) for _ in range(n)]
            value += bytes([rnd.choice([1, 2, 2, 2, 3, 4, 0, 5]), n]) + b"".join(
                a.to_bytes(4, "big")[-width:] for a in asns)
        if rnd.random() < .1:
            value = value[:-1]
    elif code == 3:
        value = rnd.choice([b"\x0a\0\0\1", b"\0\0\0\0", b"\xff\xff\xff\xff", b"\xe0\0\0\1",
                            b"\x7f\0\0\2", b"\1\2\3", b"\1\2\3\4\5"])
    elif code in (4, 5):
        value = rnd.choice([b"\0\0\0\5", b"\0\0\5", b"\0\0\0\0\0"])
    elif code == 8:
        value = rnd.choice([b"", b"\0\1\0\2", b"\0\1\0\2\xff\xff\xff\x01", b"\0\1\0"])
    else:
        value = bytes(rnd.randrange(256) for _ in range(rnd.randrange(12)))
    usual = {1: 0x40, 2: 0x40, 3: 0x40, 4: 0x80, 5: 0x40, 8: 0xC0}.get(code, flags)
    chosen = flags if rnd.random() < .5 else usual | rnd.choice([0, 0, 0x10, 0x20])
    return _attr(chosen, code, value)


def test_the_fast_path_answers_only_what_the_full_parser_accepts_unchanged() -> None:
    rnd = random.Random(1)
    answered = 0
    for _ in range(FAST_ROUNDS):
        parts = [_random_attr(rnd) for _ in range(rnd.choice([0, 1, 2, 3, 4, 4, 5, 6]))]
        data = b"".join(parts)
        if rnd.random() < .05:
            data = data[:rnd.randrange(len(data) + 1)]
        for ctx in CONTEXTS:
            for has_nlri in (True, False):
                fast = update._parse_common(data, ctx, has_nlri)
                if fast is None:
                    continue  # declining is always allowed: the full parser takes it
                answered += 1
                attrs, action, problems = update._parse_attributes(data, ctx, has_nlri)
                assert action == update.Action.NONE and problems == (), (data, ctx)
                assert fast == attrs and [type(a) for a in fast] == [type(a) for a in attrs]
    assert answered > FAST_ROUNDS // 2  # the fast path is really taken, often


def test_clean_lists_of_the_covered_kinds_take_the_fast_path() -> None:
    rnd = random.Random(2)
    for _ in range(ROUNDS):
        data = b"".join(_random_attr(rnd) for _ in range(rnd.choice([0, 1, 2, 3, 4, 5])))
        for ctx in CONTEXTS:
            for has_nlri in (True, False):
                attrs, _, problems = update._parse_attributes(data, ctx, has_nlri)
                plain = all(type(a) in COVERED for a in attrs) and not any(
                    s.type > 2 for a in attrs if type(a) is AsPath for s in a.segments)
                if problems == () and plain:
                    assert update._parse_common(data, ctx, has_nlri) is not None, (data, ctx)
