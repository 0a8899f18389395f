"""Search-list expansion as a stub resolver does it (glibc's res_search, resolv.conf(5)).

A name with a trailing dot is absolute: it is asked as it is and nothing else. Otherwise,
a name with at least ``ndots`` dots is first asked as it is, then with each search domain
appended; a name with fewer dots tries the search domains first and itself last. With
Kubernetes' ``ndots:5`` almost every name a pod looks up walks the whole search list
first: ``example.com`` costs four queries (three NXDOMAIN) before the one that answers,
which is why cluster DNS sees so many ``*.svc.cluster.local`` misses.
"""

from __future__ import annotations

from collections.abc import Sequence


def search_candidates(name: str, searches: Sequence[str], ndots: int = 1) -> list[str]:
    """The absolute names a stub resolver asks for ``name``, in order (with trailing dots)."""
    if not name:
        return []
    if name.endswith("."):
        return [name]
    suffixed = [f"{name}.{domain.strip('.')}." for domain in searches if domain.strip(".")]
    as_is = f"{name}."
    if name.count(".") >= ndots:
        return [as_is, *suffixed]
    return [*suffixed, as_is]
