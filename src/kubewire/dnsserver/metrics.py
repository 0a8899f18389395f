"""Metrics with CoreDNS's names, kept as plain integers and rendered on scrape.

Per query the observer does a few dict/list increments and one ``bisect`` for the duration
histogram; all formatting happens when ``/metrics`` is read. Only the event loop thread writes.
"""

from __future__ import annotations

import platform
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import dns.rcode
import dns.rdatatype

from kubewire.dnsserver.chain import Request

VERSION = "kubewire-0.1.0"
# CoreDNS: exponential buckets from 0.25 ms doubling 16 times (to ~8 s).
BUCKETS: tuple[float, ...] = tuple(0.00025 * 2 ** i for i in range(16))
_NBUCKETS = len(BUCKETS)
# The types CoreDNS reports by name; every other type is counted as "other".
_NAMED_TYPES = frozenset({1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 43, 46, 47, 48, 50, 64, 65,
                          251, 252, 255})


def type_label(qtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType(qtype)) if qtype in _NAMED_TYPES \
        else "other"


def rcode_label(rcode: int) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.Rcode(rcode))
    except ValueError:
        return str(rcode)


class ServerMetrics:
    """The dns_* series of one (server, zone): an observer of every reply.

    Per query: one histogram list per (proto, qtype) gets a bucket and a running sum (its
    last slot); requests_total is the sum of a list's buckets, so it needs no counter.
    """

    __slots__ = ("rcodes", "server", "tcp", "udp", "zone")

    def __init__(self, server: str, zone: str) -> None:
        self.server, self.zone = server, zone
        # family << 16 | qtype -> bucket counts, then the running sum in the last slot
        self.udp: dict[int, list[float]] = {}
        self.tcp: dict[int, list[float]] = {}
        self.rcodes = [0] * 16

    def __call__(self, req: Request, out: bytes | None,
                 _now: Callable[[], float] = time.perf_counter,
                 _bucket: Callable[[Sequence[float], float], int] = bisect_left) -> None:
        elapsed = _now() - req.start
        if out is not None:
            self.rcodes[out[3] & 0xF] += 1
        wire = req.wire
        z = wire.find(0, 12)  # the qname's end, as qtype_of finds it (inlined: hot path)
        key = (req.family << 16) | ((wire[z + 1] << 8 | wire[z + 2]) if 0 < z < len(wire) - 2
                                    else 0)
        hists = self.udp if req.proto == "udp" else self.tcp
        hist = hists.get(key)
        if hist is None:
            hist = hists[key] = [0.0] * (_NBUCKETS + 2)
        hist[_bucket(BUCKETS, elapsed)] += 1
        hist[-1] += elapsed


Sample = tuple[str, dict[str, str], float]
Family = tuple[str, str, str, list[Sample]]  # name, type, help, samples


def _fmt_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return "{" + inner + "}"


def _value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def render(families: Iterable[Family]) -> str:
    """Prometheus text exposition format 0.0.4."""
    out = []
    for name, kind, help_, samples in families:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{n}{_fmt_labels(lbl)} {_value(v)}" for n, lbl, v in samples)
    return "\n".join(out) + "\n"


def server_families(servers: Iterable[ServerMetrics]) -> list[Family]:
    req: list[Sample] = []
    resp: list[Sample] = []
    hist: list[Sample] = []
    for m in servers:
        base = {"server": m.server, "zone": m.zone}
        by_label: defaultdict[tuple[str, int, str], int] = defaultdict(int)
        merged: dict[str, list[float]] = {}
        for proto, table in (("udp", m.udp), ("tcp", m.tcp)):
            for key, counts in list(table.items()):
                family, qtype = key >> 16, key & 0xFFFF
                tl = type_label(qtype)
                by_label[(proto, family, tl)] += int(sum(counts[:-1]))
                prev = merged.setdefault(tl, [0.0] * len(counts))
                for i, n in enumerate(counts):
                    prev[i] += n
        for (proto, family, tl), n in sorted(by_label.items()):
            req.append(("coredns_dns_requests_total",
                        {**base, "proto": proto, "family": str(family), "type": tl}, n))
        for rcode, n in enumerate(m.rcodes):
            if n:
                resp.append(("coredns_dns_responses_total",
                             {**base, "rcode": rcode_label(rcode)}, n))
        for tl, counts in sorted(merged.items()):
            labels = {**base, "type": tl}
            running = 0.0
            for bound, n in zip((*BUCKETS, float("inf")), counts[:-1], strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                hist.append(("coredns_dns_request_duration_seconds_bucket",
                             {**labels, "le": le}, running))
            hist.append(("coredns_dns_request_duration_seconds_sum", labels, counts[-1]))
            hist.append(("coredns_dns_request_duration_seconds_count", labels, running))
    return [
        ("coredns_dns_requests_total", "counter", "Counter of DNS requests made per zone, "
         "protocol and family.", req),
        ("coredns_dns_responses_total", "counter", "Counter of response status codes.", resp),
        ("coredns_dns_request_duration_seconds", "histogram", "Histogram of the time (in "
         "seconds) each request took per zone.", hist),
    ]


def build_info() -> Family:
    return ("coredns_build_info", "gauge", "A metric with a constant '1' value labeled by "
            "version, revision, and goversion from which CoreDNS was built.",
            [("coredns_build_info", {"version": VERSION, "revision": "",
                                     "goversion": "python" + platform.python_version()}, 1)])


Collector = Callable[[], list[Family]]

__all__ = ["BUCKETS", "Collector", "Family", "ServerMetrics", "build_info", "rcode_label",
           "render", "server_families", "type_label"]
