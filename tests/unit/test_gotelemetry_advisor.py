"""The GOMAXPROCS advisor: one row per rule of advisor.py's docstring (runtime/proc.go
schedinit, runtime/cgroup_linux.go adjustCgroupGOMAXPROCS, internal/godebugs table)."""

from __future__ import annotations

import pytest

from kubewire.gotelemetry import AdviceInputError, advise, parse_cpu_limit, parse_go_version
from kubewire.gotelemetry.advisor import cpu_limit_from_cfs, parse_godebug, parse_gomaxprocs_env

# (id, cpus, limit, go, go.mod, GOMAXPROCS env, GODEBUG env) -> (effective, recommended,
# severity, container_aware, updates, words that must appear in the reasons)
CASES = [
    ("go1.22 ignores the limit", 32, "1", "1.22", None, None, None,
     32, 1, "warn", False, False, ["ignores the container's CPU limit", "GOMAXPROCS=1"]),
    ("go1.25 binary, go.mod 1.23: old default", 32, "1", "1.25", "1.23", None, None,
     32, 1, "warn", False, False, ["go.mod says go 1.23", "containermaxprocs=0",
                                   "raise go.mod"]),
    ("go1.25 + go.mod 1.25, 1.5 CPU rounds up", 32, "1.5", "1.25", "1.25", None, None,
     2, 2, "ok", True, True, ["rounds it up", "once a second"]),
    ("2.1 CPU rounds up to 3", 32, "2100m", "go1.27.3", "1.26", None, None,
     3, 3, "ok", True, True, []),
    ("0.5 CPU: never below 2", 32, "500m", "1.25", "1.25", None, None,
     2, 1, "ok", True, True, ["never picks fewer than 2"]),
    ("limit above the CPU count", 4, "8", "1.25", "1.25", None, None,
     4, 4, "ok", True, True, ["caps it at the CPU count (4)"]),
    ("1-CPU machine stays at 1", 1, "4", "1.25", "1.25", None, None,
     1, 1, "ok", True, True, []),
    ("no limit: CPU count", 16, None, "1.25", "1.25", None, None,
     16, 16, "ok", True, True, ["No CPU limit"]),
    ("GOMAXPROCS env wins, stops updates", 32, "1", "1.25", "1.25", "3", None,
     3, 1, "warn", False, False, ["GOMAXPROCS=3 is set", "never re-reads"]),
    ("GOMAXPROCS env fixes old Go", 32, "1", "1.22", None, "1", None,
     1, 1, "ok", False, False, ["GOMAXPROCS=1 is set"]),
    ("GOMAXPROCS env below the limit", 32, "4", "1.22", None, "2", None,
     2, 4, "warn", False, False, ["uses less than"]),
    ("GOMAXPROCS env not a number is ignored", 32, "1", "1.25", "1.25", "two", None,
     2, 1, "warn", True, True, ["ignores it silently"]),
    ("GOMAXPROCS env 0 is ignored", 8, None, "1.22", None, "0", None,
     8, 8, "warn", False, False, ["not a positive whole number"]),
    ("GOMAXPROCS above the CPUs", 4, None, "1.22", None, "16", None,
     16, 4, "warn", False, False, ["more than the 4 CPUs"]),
    ("GODEBUG turns it off at run time", 32, "1", "1.25", "1.25", None,
     "containermaxprocs=0", 32, 1, "warn", False, True, ["containermaxprocs=0 turns"]),
    ("GODEBUG turns it on for an old go.mod", 32, "1", "1.25", "1.23", None,
     "containermaxprocs=1,updatemaxprocs=1", 2, 1, "ok", True, True, []),
    ("GODEBUG last setting wins", 32, "1", "1.25", "1.25", None,
     "containermaxprocs=0,containermaxprocs=1", 2, 1, "ok", True, True, []),
    ("GODEBUG means nothing before 1.25", 32, "1", "1.24", None, None,
     "containermaxprocs=1", 32, 1, "warn", False, False, ["no effect before Go 1.25"]),
    ("unknown Go version: assume old", 32, "2", None, None, None, None,
     32, 2, "warn", False, False, ["Go version unknown"]),
    ("cpu.max form", 32, "250000 100000", "1.25", "1.25", None, None,
     3, 3, "ok", True, True, ["2.5 CPU"]),
    ("cpu.max max", 8, "max 100000", "1.25", "1.25", None, None,
     8, 8, "ok", True, True, []),
]


@pytest.mark.parametrize(
    ("cpus", "limit", "go", "gomod", "env", "godebug", "eff", "rec", "sev", "aware",
     "updates", "words"),
    [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rules(cpus: int, limit: str | None, go: str | None, gomod: str | None,
               env: str | None, godebug: str | None, eff: int, rec: int, sev: str,
               aware: bool, updates: bool, words: list[str]) -> None:
    a = advise(cpus=cpus, cpu_limit=parse_cpu_limit(limit) if limit else None,
               go_version=parse_go_version(go) if go else None,
               go_mod=parse_go_version(gomod) if gomod else None,
               gomaxprocs_env=env, godebug=godebug)
    text = " ".join(a.reasons)
    assert (a.effective, a.recommended, a.severity) == (eff, rec, sev), text
    assert (a.container_aware, a.updates) == (aware, updates), text
    for w in words:
        assert w in text
    assert a.to_dict()["effective"] == eff


def test_binary_default_godebug_replaces_gomod_guess() -> None:
    limit = parse_cpu_limit("1")
    # what `go version -m` shows for a go.mod at go 1.23 built with Go 1.27
    old = "containermaxprocs=0,tlsmlkem=0,updatemaxprocs=0"
    a = advise(cpus=32, cpu_limit=limit, go_version=(1, 27), default_godebug=old)
    assert (a.effective, a.container_aware, a.updates) == (32, False, False)
    assert "embedded DefaultGODEBUG" in " ".join(a.reasons)
    # go.mod at 1.25+: DefaultGODEBUG lacks both keys, so the toolchain's defaults (on)
    b = advise(cpus=32, cpu_limit=limit, go_version=(1, 27), default_godebug="")
    assert (b.effective, b.container_aware, b.updates) == (2, True, True)
    # and GODEBUG at run time still overrides the embedded default
    c = advise(cpus=32, cpu_limit=limit, go_version=(1, 27), default_godebug=old,
               godebug="containermaxprocs=1")
    assert c.effective == 2 and not c.updates


@pytest.mark.parametrize(("text", "cpus", "quota", "period"), [
    ("500m", 0.5, 50_000, 100_000),
    ("2", 2.0, 200_000, 100_000),
    ("1.5", 1.5, 150_000, 100_000),
    ("2100m", 2.1, 210_000, 100_000),
    ("1m", 0.01, 1_000, 100_000),  # kubelet's minimum quota of 1000 us
    ("200000 100000", 2.0, 200_000, 100_000),
    ("50000 50000", 1.0, 50_000, 50_000),
])
def test_parse_cpu_limit(text: str, cpus: float, quota: int, period: int) -> None:
    lim = parse_cpu_limit(text)
    assert lim is not None
    assert (lim.quota_us, lim.period_us) == (quota, period)
    assert lim.cpus == pytest.approx(cpus)


@pytest.mark.parametrize("text", ["max", "max 100000", " max\n"])
def test_no_limit(text: str) -> None:
    assert parse_cpu_limit(text) is None


@pytest.mark.parametrize(("text", "words"), [
    ("abc", "not understood"), ("-1", "negative"), ("0", "zero"), ("0m", "zero"),
    ("1.5.2", "not understood"), ("100000 abc", "QUOTA PERIOD"), ("", "not understood"),
    ("0 100000", "both must be positive"), ("100000 0", "both must be positive"),
])
def test_bad_cpu_limit(text: str, words: str) -> None:
    with pytest.raises(AdviceInputError, match=words):
        parse_cpu_limit(text)


def test_cfs_v1() -> None:
    assert cpu_limit_from_cfs(-1, 100_000) is None
    lim = cpu_limit_from_cfs(150_000, 100_000)
    assert lim is not None and lim.cpus == 1.5


@pytest.mark.parametrize(("text", "want"), [
    ("1.24", (1, 24)), ("go1.25.3", (1, 25)), ("go1.26rc1", (1, 26)),
    ("go version go1.27.3 linux/amd64", (1, 27)), ("1.19.8", (1, 19)),
])
def test_go_versions(text: str, want: tuple[int, int]) -> None:
    assert parse_go_version(text) == want


@pytest.mark.parametrize("text", ["1", "go", "latest", "v1.25"])
def test_bad_go_versions(text: str) -> None:
    with pytest.raises(AdviceInputError, match="not understood"):
        parse_go_version(text)


def test_gomod_newer_than_toolchain_is_an_input_error() -> None:
    with pytest.raises(AdviceInputError, match="cannot build a newer language version"):
        advise(cpus=4, cpu_limit=None, go_version=(1, 24), go_mod=(1, 25))


def test_cpus_must_be_positive() -> None:
    with pytest.raises(AdviceInputError, match="at least 1"):
        advise(cpus=0, cpu_limit=None, go_version=(1, 25))


def test_small_parsers() -> None:
    assert parse_godebug("a=1,b=2,a=3,junk") == {"a": "3", "b": "2"}
    assert parse_gomaxprocs_env(" 4 ") == 4
    assert parse_gomaxprocs_env("-4") is None and parse_gomaxprocs_env("4.5") is None
    assert parse_gomaxprocs_env(str(2**31)) is None
