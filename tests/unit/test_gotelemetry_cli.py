"""`kubewire go schedtrace` and `kubewire go maxprocs` through click's CliRunner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from kubewire.cli.gocmd import go

DATA = Path(__file__).resolve().parents[1] / "data" / "gotelemetry"


def _run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    res = CliRunner().invoke(go, args, input=stdin)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize("name", ["schedtrace-go1.19.txt", "schedtrace-go1.27.txt",
                                  "scheddetail-go1.19.txt", "scheddetail-go1.27.txt"])
def test_schedtrace_json(name: str) -> None:
    code, out, _ = _run(["schedtrace", str(DATA / name), "-o", "json", "--samples"])
    assert code == 0
    doc = json.loads(out)
    n = (DATA / name).read_text().count("\nSCHED ") + 1
    assert doc["summary"]["samples"] == n == len(doc["samples"])
    assert doc["summary"]["gomaxprocs"] == [2]
    assert all(s["gomaxprocs"] == 2 for s in doc["samples"])
    detail = "detail" in name
    assert ("goroutines" in doc["samples"][0]) == detail
    assert (doc["summary"]["goroutines_last"] is not None) == detail
    assert doc["samples"][0]["needspinning"] is None if "1.19" in name else \
        isinstance(doc["samples"][0]["needspinning"], int)


def test_schedtrace_text_and_stdin() -> None:
    text = (DATA / "schedtrace-go1.27.txt").read_text()
    code, out, _ = _run(["schedtrace", "-", "--samples"], stdin=text)
    assert code == 0
    assert "SCHED records" in out and "global run queue" in out
    assert "needspin" in out  # the --samples table
    n = text.count("\nSCHED ") + 1
    assert f"{n} SCHED records" in out
    code, out, _ = _run(["schedtrace", str(DATA / "scheddetail-go1.19.txt")])
    assert code == 0 and "goroutines (last detail)" in out and "needspin" not in out


def test_schedtrace_missing_file(tmp_path: Path) -> None:
    code, out, err = _run(["schedtrace", str(tmp_path / "nope.txt")])
    assert code == 2 and out == ""
    assert err.startswith("error: cannot read") and "GODEBUG=schedtrace" in err


def test_schedtrace_malformed_record(tmp_path: Path) -> None:
    lines = (DATA / "scheddetail-go1.27.txt").read_text().splitlines()
    bad = next(i for i, line in enumerate(lines) if line.startswith("  M")) + 5
    while not lines[bad].startswith("  M"):
        bad += 1
    lines[bad] = lines[bad].replace("spinning=false", "spinning=perhaps")
    f = tmp_path / "bad.txt"
    f.write_text("\n".join(lines) + "\n")
    code, _, err = _run(["schedtrace", str(f)])
    assert code == 2
    assert f"line {bad + 1}:" in err and "spinning='perhaps'" in err
    assert "Traceback" not in err


def test_schedtrace_no_records(tmp_path: Path) -> None:
    f = tmp_path / "log.txt"
    f.write_text("listening on :80\nserved 3 requests\n")
    code, _, err = _run(["schedtrace", str(f)])
    assert code == 2 and "no SCHED records in 2 lines" in err


def test_maxprocs_json_cases() -> None:
    code, out, _ = _run(["maxprocs", "--cpu-limit", "1", "--cpus", "32", "--go-version",
                         "1.22", "-o", "json"])
    assert code == 0
    doc = json.loads(out)
    assert (doc["effective"], doc["recommended"], doc["severity"]) == (32, 1, "warn")
    code, out, _ = _run(["maxprocs", "--cpu-limit", "1", "--cpus", "32", "--go-version",
                         "go1.25.0", "--go-mod", "1.23", "-o", "json"])
    doc = json.loads(out)
    assert doc["effective"] == 32 and not doc["container_aware"]
    assert any("go.mod says go 1.23" in r for r in doc["reasons"])
    code, out, _ = _run(["maxprocs", "--cpu-limit", "1500m", "--cpus", "32", "--go-version",
                         "1.25", "--go-mod", "1.25", "-o", "json"])
    doc = json.loads(out)
    assert (doc["effective"], doc["recommended"], doc["severity"]) == (2, 2, "ok")
    assert doc["cpu_limit"] == 1.5


def test_maxprocs_text() -> None:
    code, out, _ = _run(["maxprocs", "--cpu-limit", "500m", "--cpus", "8", "--go-version",
                         "1.24", "--gomaxprocs", "1"])
    assert code == 0
    assert "GOMAXPROCS 1 (GOMAXPROCS environment variable)" in out and "ok" in out


def test_maxprocs_defaults_to_this_machine() -> None:
    code, out, _ = _run(["maxprocs", "--go-version", "1.25", "-o", "json"])
    assert code == 0
    assert json.loads(out)["cpus"] == len(os.sched_getaffinity(0))


def test_maxprocs_pid_self() -> None:
    code, out, _ = _run(["maxprocs", "--pid", str(os.getpid()), "-o", "json"])
    assert code == 0
    doc = json.loads(out)
    assert doc["process"]["pid"] == os.getpid() and doc["process"]["go_version"] is None


@pytest.mark.parametrize(("args", "words"), [
    (["--cpu-limit", "abc"], "CPU limit 'abc' is not understood"),
    (["--cpu-limit", "-1"], "negative"),
    (["--cpu-limit", "0"], "zero"),
    (["--go-version", "latest"], "--go-version"),
    (["--go-mod", "x"], "--go-mod"),
    (["--cpus", "0"], "at least 1"),
    (["--go-version", "1.22", "--go-mod", "1.25"], "newer language version"),
    (["--pid", str(2**22 + 4321)], "no process"),
])
def test_maxprocs_bad_input(args: list[str], words: str) -> None:
    code, out, err = _run(["maxprocs", *args])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and words in err


def test_schedtrace_skip_bad(tmp_path: Path) -> None:
    lines = (DATA / "schedtrace-go1.27.txt").read_text().splitlines()
    lines[3] = lines[3][:30] + "busy: interleaved"
    f = tmp_path / "mixed.txt"
    f.write_text("\n".join(lines) + "\n")
    code, _, err = _run(["schedtrace", str(f)])
    assert code == 2 and "line 4:" in err and "--skip-bad" in err
    code, out, _ = _run(["schedtrace", str(f), "--skip-bad", "-o", "json"])
    assert code == 0
    doc = json.loads(out)
    assert doc["bad_lines"] == [4]
    assert doc["summary"]["samples"] == sum(1 for line in lines if line.startswith("SCHED")) - 1
