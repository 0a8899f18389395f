"""Go runtime telemetry: GODEBUG=schedtrace/scheddetail parsers and GOMAXPROCS advice.

Pure except ``probe`` (reads /proc and /sys for a live process); see README.md.
"""

from kubewire.gotelemetry.advisor import (
    Advice,
    CpuLimit,
    advise,
    cpu_limit_from_cfs,
    parse_cpu_limit,
    parse_go_version,
    parse_godebug,
)
from kubewire.gotelemetry.errors import (
    AdviceInputError,
    GoTelemetryError,
    ProbeError,
    SchedTraceError,
)
from kubewire.gotelemetry.schedtrace import (
    GRecord,
    MRecord,
    PRecord,
    SchedSample,
    SchedSummary,
    SchedTrace,
    parse_schedtrace,
)

__all__ = [
    "Advice", "AdviceInputError", "CpuLimit", "GRecord", "GoTelemetryError", "MRecord",
    "PRecord", "ProbeError", "SchedSample", "SchedSummary", "SchedTrace", "SchedTraceError",
    "advise", "cpu_limit_from_cfs", "parse_cpu_limit", "parse_go_version", "parse_godebug",
    "parse_schedtrace",
]
