"""Search-list expansion, as glibc's res_search does it."""

from __future__ import annotations

import pytest

from kubewire.dns.search import search_candidates

K8S = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]


@pytest.mark.parametrize(("name", "ndots", "expected"), [
    ("web", 5, ["web.default.svc.cluster.local.", "web.svc.cluster.local.",
                "web.cluster.local.", "web."]),
    # Four dots is still under ndots:5: the search list comes first.
    ("web.default.svc.cluster", 5, ["web.default.svc.cluster.default.svc.cluster.local.",
                                    "web.default.svc.cluster.svc.cluster.local.",
                                    "web.default.svc.cluster.cluster.local.",
                                    "web.default.svc.cluster."]),
    ("a.b.c.d.e.f", 5, ["a.b.c.d.e.f.", "a.b.c.d.e.f.default.svc.cluster.local.",
                        "a.b.c.d.e.f.svc.cluster.local.", "a.b.c.d.e.f.cluster.local."]),
    ("example.com", 1, ["example.com.", "example.com.default.svc.cluster.local.",
                        "example.com.svc.cluster.local.", "example.com.cluster.local."]),
    ("example.com.", 5, ["example.com."]),  # absolute: no search at all
    ("", 5, []),
])
def test_search_order(name: str, ndots: int, expected: list[str]) -> None:
    assert search_candidates(name, K8S, ndots) == expected


def test_empty_and_dotted_search_domains() -> None:
    assert search_candidates("x", ["a.example.", "", "."], 1) == ["x.a.example.", "x."]
