"""Go scheduling latency: why goroutines waited to run, a trace summary, a timeline page.

Pure: takes `kubewire.gotrace` events, returns frozen views and text. See README.md.
"""

from kubewire.golatency.attribution import (
    BUCKETS_NS,
    Cause,
    CauseStats,
    Distribution,
    GoroutineStats,
    LatencyReport,
    Placement,
    Wait,
    attribute,
)

__all__ = [
    "BUCKETS_NS",
    "Cause",
    "CauseStats",
    "Distribution",
    "GoroutineStats",
    "LatencyReport",
    "Placement",
    "Wait",
    "attribute",
]
