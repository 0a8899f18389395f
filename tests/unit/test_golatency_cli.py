"""`kubewire go trace` through click's CliRunner, on real traces and on broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kubewire.cli.main import cli
from kubewire.golatency import attribute
from kubewire.gotrace import read_events

DATA = Path(__file__).resolve().parents[1] / "data" / "gotrace"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["go", "trace", *args], obj={})
    # exit codes come through SystemExit; anything else is an escaped traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception)
    return result.exit_code, result.stdout, result.stderr


def test_text_output_has_summary_causes_top_goroutines_and_model_line() -> None:
    code, out, _ = run(str(DATA / "net-new.trace"), "--top", "3")
    assert code == 0
    assert "go 1.26 trace" in out and "GOMAXPROCS 2" in out
    for cause in ("created", "netpoll", "goroutine"):
        assert f" {cause} " in out
    assert "top 3 goroutines by total wait" in out
    assert "net/http.(*persistConn).readLoop" in out
    assert "model agreement: 99.6 % of 2758 decisions (the first miss at decision " in out


@pytest.mark.parametrize("name", ["net-old", "ticker-new"])
def test_json_output_matches_the_library(name: str, tmp_path: Path) -> None:
    html = tmp_path / "t.html"
    code, out, _ = run(str(DATA / f"{name}.trace"), "-o", "json", "--top", "4", "--waits",
                       "--html", str(html))
    assert code == 0
    doc = json.loads(out)
    report = attribute(read_events((DATA / f"{name}.trace").read_bytes()))
    assert doc["latency"]["overall"]["count"] == len(report.waits) == len(doc["latency"]["waits"])
    assert {c["cause"]: c["count"] for c in doc["latency"]["causes"]} == {
        c.cause.value: c.dist.count for c in report.causes}
    assert [g["g"] for g in doc["latency"]["goroutines"]] == [g.g for g in report.goroutines[:4]]
    assert doc["summary"]["gomaxprocs"] == 2
    assert doc["model"]["decisions"] > 100 and 0.99 <= doc["model"]["agreement"] <= 1.0
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_truncated_trace_exits_2_naming_the_byte_offset(tmp_path: Path) -> None:
    data = (DATA / "net-new.trace").read_bytes()
    cut = tmp_path / "cut.trace"
    cut.write_bytes(data[: len(data) // 2])
    code, out, err = run(str(cut))
    assert code == 2 and out == ""
    assert err.startswith(f"error: {cut}: Go trace: byte offset ")
    offset = int(err.split("byte offset ")[1].split(":")[0])
    assert 0 < offset < len(data) // 2
    assert "Traceback" not in err


@pytest.mark.parametrize(("content", "words"), [
    (b"go 1.99 trace\x00\x00\x00", "byte offset 0: trace format go 1.99 is not supported"),
    (b"", "byte offset 0: empty input"),
    (None, "byte offset 16: expected a batch"),
])
def test_bad_traces_exit_2(tmp_path: Path, content: bytes | None, words: str) -> None:
    if content is None:  # a real header followed by garbage
        real = (DATA / "cpu-new.trace").read_bytes()
        content = real[:16] + b"\xff" * 64
    bad = tmp_path / "bad.trace"
    bad.write_bytes(content)
    code, _, err = run(str(bad), "-o", "json")
    assert code == 2 and words in err and err.startswith("error: ")


def test_old_format_cut_short_exits_2(tmp_path: Path) -> None:
    data = (DATA / "spawn-old.trace").read_bytes()
    cut = tmp_path / "old.trace"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = run(str(cut))
    assert code == 2 and err.startswith("error: ") and "Go trace: byte offset " in err


def test_missing_file_and_unwritable_html_exit_2(tmp_path: Path) -> None:
    code, _, err = run(str(tmp_path / "nope.trace"))
    assert code == 2 and err.startswith("error: cannot read ") and "nope.trace" in err
    code, _, err = run(str(DATA / "ticker-old.trace"), "--html", str(tmp_path / "no" / "x.html"))
    assert code == 2 and err.startswith("error: cannot write ")
