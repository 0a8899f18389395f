"""GOMAXPROCS advice for a Go daemon in a container: what the runtime will pick, and what
it should be, given the CPU limit, the node's CPUs, GOMAXPROCS/GODEBUG and the Go versions.

Pure: inputs are values; reading a live process's cgroup is ``probe.py``'s job. Each rule
names the source it was checked against (Go 1.27.3 GOROOT, Debian's Go 1.19):

* runtime/proc.go ``schedinit``: a GOMAXPROCS environment variable that parses as a
  positive base-10 integer wins (Go 1.19: ``atoi32(...); ok && n > 0``; Go 1.25+:
  ``strconv.ParseInt(..., 10, 32); n > 0``, which also sets customGOMAXPROCS and so turns
  off automatic updates). Anything else is silently ignored.
* Before Go 1.25 the default is the CPU count (``procs := ncpu``), whatever the cgroup says.
* Go 1.25+, runtime/cgroup_linux.go ``adjustCgroupGOMAXPROCS``: limit = quota / period;
  ``limit = ceil(limit)``; ``limit = max(limit, 2)``; GOMAXPROCS = limit if it is below
  the CPU count, else the CPU count. So 1.5 CPUs -> 2, 0.5 -> 2, 3.2 -> 4, and a 1-CPU
  machine stays at 1. No limit (v1 quota -1, v2 ``max``) -> the CPU count.
* internal/godebugs/table.go: ``containermaxprocs`` and ``updatemaxprocs`` have
  ``Changed: 25, Old: "0"``: a main module whose go.mod says ``go 1.24`` or older gets
  ``=0`` for both, i.e. the container-aware default is off (runtime/debug.go, GOMAXPROCS
  doc: "GODEBUG=containermaxprocs=0 is default for language version 1.24 and below").
  A GODEBUG environment variable overrides that default; the last setting of a key wins
  (runtime1.go ``parsegodebug`` at startup, left to right).
* runtime/proc.go ``sysmon``: with updatemaxprocs on, the limit is re-read at most once a
  second (``lastgomaxprocs+1e9 <= now``), so an in-place resize of the pod's CPU limit is
  followed; a GOMAXPROCS env var or a runtime.GOMAXPROCS call stops that.
* Kubernetes ``resources.limits.cpu`` becomes a CFS quota of milliCPU * 100 us per
  100000 us period, at least 1000 us (kubelet's MilliCPUToQuota), which is the number the
  Go runtime then reads back from the cgroup.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from kubewire.gotelemetry.errors import AdviceInputError

CFS_PERIOD_US = 100_000  # kubelet's default cpu.cfs_period_us
MIN_QUOTA_US = 1_000  # kubelet's minimum quota (MilliCPUToQuota)
CONTAINER_AWARE_SINCE = (1, 25)

GoVersion = tuple[int, int]
Severity = Literal["ok", "warn"]


@dataclass(frozen=True, slots=True)
class CpuLimit:
    """A CFS bandwidth limit: at most ``quota_us`` of CPU time per ``period_us``."""

    quota_us: int
    period_us: int
    source: str

    @property
    def cpus(self) -> float:
        # float division exactly like ReadCPULimit, so ceil() agrees with the runtime
        return self.quota_us / self.period_us

    def describe(self) -> str:
        return f"{_num(self.cpus)} CPU ({self.quota_us} us per {self.period_us} us)"


def _num(x: float) -> str:
    return f"{x:g}"


_QUANTITY = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(m?)")


def parse_cpu_limit(text: str) -> CpuLimit | None:
    """A CPU limit in any of the forms people copy around; None means "no limit".

    ``500m``, ``2``, ``1.5`` (Kubernetes ``limits.cpu``); ``200000 100000`` or
    ``max 100000`` (cgroup v2 ``cpu.max``); ``max``.
    """
    t = text.strip()
    parts = t.split()
    if parts and parts[0] == "max" and len(parts) <= 2:
        return None
    if len(parts) == 2:
        if not all(re.fullmatch(r"\d+", p) for p in parts):
            raise AdviceInputError(
                f"CPU limit {text!r}: a cpu.max value is 'QUOTA PERIOD' in microseconds "
                "(e.g. '200000 100000') or 'max 100000'")
        return cpu_limit_from_cfs(int(parts[0]), int(parts[1]), source=f"cpu.max {t!r}")
    m = _QUANTITY.fullmatch(t)
    if t.startswith("-"):
        raise AdviceInputError(
            f"CPU limit {text!r} is negative; give a limit such as 500m or 2 (for no limit "
            "omit it or give 'max'; the cgroup v1 quota -1 means the same)")
    if not m:
        raise AdviceInputError(
            f"CPU limit {text!r} is not understood: give a Kubernetes limits.cpu value "
            "(500m, 2, 1.5), a cgroup v2 cpu.max line ('200000 100000', 'max'), or omit it "
            "for no limit")
    value = float(m.group(1))
    milli = round(value) if m.group(2) else round(value * 1000)
    if milli <= 0:
        raise AdviceInputError(
            f"CPU limit {text!r} is zero; a container with no CPU limit is given by "
            "omitting the limit (or 'max')")
    quota = max(milli * CFS_PERIOD_US // 1000, MIN_QUOTA_US)
    return CpuLimit(quota, CFS_PERIOD_US, f"limits.cpu {t!r}")


def cpu_limit_from_cfs(quota_us: int, period_us: int, source: str = "cgroup") -> CpuLimit | None:
    """cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us (quota -1: no limit)."""
    if quota_us < 0:
        return None
    if period_us <= 0 or quota_us == 0:
        raise AdviceInputError(
            f"{source}: quota {quota_us} us per period {period_us} us is not a CPU limit; "
            "both must be positive (quota -1 or 'max' means no limit)")
    return CpuLimit(quota_us, period_us, source)


_VERSION = re.compile(r"(?:go)?(\d+)\.(\d+)(?:\.\d+|(?:rc|beta)\d+)?")


def parse_go_version(text: str) -> GoVersion:
    """``1.24``, ``go1.25.3``, ``go1.26rc1`` or a whole ``go version`` line -> (1, 25)."""
    t = text.strip()
    words = t.split()
    if len(words) >= 3 and words[0] == "go" and words[1] == "version":
        t = words[2]
    m = _VERSION.fullmatch(t)
    if not m:
        raise AdviceInputError(
            f"Go version {text!r} is not understood; expected e.g. 1.24, go1.25.3 or the "
            "output of `go version`")
    return int(m.group(1)), int(m.group(2))


def parse_godebug(text: str) -> dict[str, str]:
    """GODEBUG's key=value list; the last setting of a key wins, as at runtime start-up."""
    out: dict[str, str] = {}
    for field in text.split(","):
        key, eq, value = field.strip().partition("=")
        if eq:  # the runtime skips fields without '='
            out[key] = value
    return out


def parse_gomaxprocs_env(text: str) -> int | None:
    """The value the runtime takes from GOMAXPROCS, or None when it would ignore it."""
    t = text.strip()
    if not re.fullmatch(r"[+-]?\d+", t):
        return None
    n = int(t)
    return n if 0 < n < 2**31 else None


@dataclass(frozen=True, slots=True)
class Advice:
    effective: int  # the GOMAXPROCS this runtime will run with
    recommended: int
    source: str  # where the effective value comes from
    container_aware: bool  # Go 1.25+ cgroup-aware default in force
    updates: bool  # the runtime re-reads the limit about once a second
    severity: Severity
    reasons: tuple[str, ...]
    cpu_limit: float | None
    cpus: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "effective": self.effective, "recommended": self.recommended,
            "source": self.source, "container_aware": self.container_aware,
            "updates": self.updates, "severity": self.severity,
            "reasons": list(self.reasons), "cpu_limit": self.cpu_limit, "cpus": self.cpus,
        }


def _v(v: GoVersion) -> str:
    return f"{v[0]}.{v[1]}"


def advise(*, cpus: int, cpu_limit: CpuLimit | None, go_version: GoVersion | None,
           go_mod: GoVersion | None = None, gomaxprocs_env: str | None = None,
           godebug: str | None = None, default_godebug: str | None = None) -> Advice:
    """What GOMAXPROCS the runtime picks in this container, and what it should be.

    ``default_godebug`` is the binary's embedded DefaultGODEBUG (``go version -m``), which
    the go.mod go line and godebug directives produced; when given it replaces the
    defaults derived from ``go_mod``. ``godebug`` is the GODEBUG environment variable.
    """
    if cpus < 1:
        raise AdviceInputError(f"CPU count {cpus} must be at least 1")
    if go_mod and go_version and go_mod > go_version:
        raise AdviceInputError(
            f"go.mod says go {_v(go_mod)} but the binary was built with Go "
            f"{_v(go_version)}; a toolchain cannot build a newer language version. Check "
            "the versions (`go version -m BINARY` shows the toolchain).")
    reasons: list[str] = []
    warn = False
    limit = cpu_limit.cpus if cpu_limit else None
    # what the Go 1.25+ rule makes of the limit (runtime/cgroup_linux.go)
    cgroup_pick = min(cpus, max(math.ceil(limit), 2)) if limit is not None else cpus
    recommended = min(cpus, max(1, math.ceil(limit))) if limit is not None else cpus

    if go_version is None:
        reasons.append("Go version unknown: assuming a toolchain older than 1.25 (no "
                       "container-aware default); give the version to be sure.")
    ver = _v(go_version) if go_version else "?"
    period_ms = (cpu_limit.period_us if cpu_limit else CFS_PERIOD_US) / 1000
    new_runtime = go_version is not None and go_version >= CONTAINER_AWARE_SINCE
    lang = go_mod or go_version
    debug_default = "1" if lang is not None and lang >= CONTAINER_AWARE_SINCE else "0"
    defaults: dict[str, str] = {}
    if default_godebug is not None:
        # DefaultGODEBUG lists only what differs from the toolchain's own defaults
        debug_default = "1"
        defaults = parse_godebug(default_godebug)
    settings = parse_godebug(godebug) if godebug else {}
    effective_debug = {**defaults, **settings}
    container_on = (new_runtime
                    and effective_debug.get("containermaxprocs", debug_default) != "0")
    updates_on = new_runtime and effective_debug.get("updatemaxprocs", debug_default) != "0"

    env = parse_gomaxprocs_env(gomaxprocs_env) if gomaxprocs_env is not None else None
    if gomaxprocs_env is not None and env is None:
        warn = True
        reasons.append(f"GOMAXPROCS={gomaxprocs_env!r} is not a positive whole number: the "
                       "runtime ignores it silently and uses its default.")
    if env is not None:
        effective, source = env, "GOMAXPROCS environment variable"
        updates_on = False
        reasons.append(f"GOMAXPROCS={env} is set in the environment, so the runtime uses "
                       "it as is" + (" and never re-reads the CPU limit." if new_runtime
                                     else "."))
    elif container_on:
        effective, source = cgroup_pick, "cgroup CPU limit (Go 1.25+ default)"
        if cpu_limit is not None:
            reasons.append(
                f"Go {ver} reads the cgroup limit {cpu_limit.describe()}, rounds it up "
                "to a whole number, never below 2 (unless the machine has "
                f"fewer CPUs), and caps it at the CPU count ({cpus}): GOMAXPROCS={effective}.")
        else:
            reasons.append(f"No CPU limit: Go {ver} uses the CPU count "
                           f"({cpus}).")
    else:
        effective, source = cpus, "CPU count"
        if new_runtime and "containermaxprocs" in defaults and \
                "containermaxprocs" not in settings:
            reasons.append(
                f"The binary is Go {ver}, but its embedded DefaultGODEBUG has "
                "containermaxprocs=0 (go.mod's go line is 1.24 or older, or a godebug "
                "directive says so), so the container-aware default is off and GOMAXPROCS "
                f"is the CPU count ({cpus}).")
        elif new_runtime and lang is not None and lang < CONTAINER_AWARE_SINCE and \
                default_godebug is None and "containermaxprocs" not in settings:
            reasons.append(
                f"The binary is Go {ver}, but go.mod says go "
                f"{_v(lang)}: a main module at go 1.24 or older gets the old GODEBUG "
                "defaults containermaxprocs=0 and updatemaxprocs=0, so the container-aware "
                f"default is off and GOMAXPROCS is the CPU count ({cpus}).")
        elif new_runtime:
            reasons.append("GODEBUG containermaxprocs=0 turns the container-aware default "
                           f"off: GOMAXPROCS is the CPU count ({cpus}).")
        elif go_version is not None:
            reasons.append(f"Go {_v(go_version)} sets GOMAXPROCS to the CPU count ({cpus}) "
                           "and ignores the container's CPU limit; the container-aware "
                           "default arrived in Go 1.25.")
            if "containermaxprocs" in settings:
                reasons.append("GODEBUG containermaxprocs has no effect before Go 1.25.")
        else:
            reasons.append(f"GOMAXPROCS is the CPU count ({cpus}).")

    if limit is not None and effective > max(2, math.ceil(limit)) and effective > recommended:
        warn = True
        reasons.append(
            f"{effective} Ps can keep {effective} threads busy at once against a quota of "
            f"{_num(limit)} CPU: the quota is spent early in each {period_ms:g} ms period"
            " and every thread is throttled until the next one (CFS throttling), "
            "which shows up as tail latency and long GC pauses.")
        fixes = [f"set GOMAXPROCS={recommended} in the container's env"]
        if not container_on and env is None:
            fixes.append("build with Go 1.25 or later with `go 1.25` (or later) in go.mod"
                         if not new_runtime
                         else "raise go.mod's go line to 1.25, or add `godebug "
                         "containermaxprocs=1` to go.mod, or run with "
                         "GODEBUG=containermaxprocs=1,updatemaxprocs=1")
        reasons.append("Fix: " + ", or ".join(fixes) + ".")
    elif limit is not None and effective < recommended and env is not None:
        warn = True
        reasons.append(f"GOMAXPROCS={effective} uses less than the {_num(limit)} CPU the "
                       f"container may use; {recommended} would use the whole limit.")
    elif limit is not None and effective > recommended:
        why = ("only because the Go 1.25+ rule never picks fewer than 2" if container_on
               else f"(the {source.lower()}), which is at most 2")
        reasons.append(
            f"GOMAXPROCS={effective} is above the limit of {_num(limit)} CPU {why}; two busy "
            "threads can spend the quota in bursts and be throttled, so GOMAXPROCS=1 is "
            "the choice for a latency-sensitive daemon that needs no parallelism.")
    if env is not None and env > cpus:
        warn = True
        reasons.append(f"GOMAXPROCS={env} is more than the {cpus} CPUs: the extra Ps only "
                       "add contention.")
    if updates_on and env is None:
        reasons.append("The runtime re-reads the limit at most once a second, so an "
                       "in-place change of the pod's CPU limit is followed.")
    if not warn and limit is None and env is None:
        reasons.append("No CPU limit: GOMAXPROCS equal to the CPU count is right, but CPU "
                       "requests of other pods on the node may still leave fewer CPUs free.")
    return Advice(
        effective=effective, recommended=recommended, source=source,
        container_aware=container_on and env is None, updates=updates_on,
        severity="warn" if warn else "ok", reasons=tuple(reasons), cpu_limit=limit,
        cpus=cpus,
    )
