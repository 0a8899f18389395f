"""Pod egress masquerade: the nft transaction's text (no root; the kernel side is in
tests/root/test_upstream_and_masq.py)."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from kubewire.routing.masquerade import (
    EgressMasqueradeError,
    egress_ruleset,
    remove_egress_masquerade,
    sync_egress_masquerade,
)

EXPECTED = """\
add table ip kubewire-egress
delete table ip kubewire-egress
table ip kubewire-egress {
\tchain nat-postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade fully-random
\t}
}
"""


def test_ruleset_text() -> None:
    assert egress_ruleset(IPv4Network("10.244.0.0/16")) == EXPECTED


def test_ruleset_replaces_the_table_whole() -> None:
    # add + delete first: applying twice (or over a hand-edited table) leaves exactly this.
    lines = egress_ruleset(IPv4Network("10.244.0.0/16")).splitlines()
    assert lines[:2] == ["add table ip kubewire-egress", "delete table ip kubewire-egress"]
    assert sum("masquerade" in line for line in lines) == 1


def test_ruleset_follows_the_cidr() -> None:
    text = egress_ruleset(IPv4Network("192.168.128.0/17"))
    assert "ip saddr 192.168.128.0/17 ip daddr != 192.168.128.0/17 masquerade" in text
    assert "10.244" not in text


def test_refuses_the_machines_own_namespace() -> None:
    with pytest.raises(EgressMasqueradeError, match="own network namespace"):
        sync_egress_masquerade("/proc/self/ns/net", IPv4Network("10.244.0.0/16"))
    with pytest.raises(EgressMasqueradeError, match="own network namespace"):
        remove_egress_masquerade(Path("/proc/self/ns/net"))


def test_missing_namespace_is_an_error() -> None:
    with pytest.raises(EgressMasqueradeError, match="no network namespace"):
        sync_egress_masquerade("/run/netns/kwtest-no-such-ns", IPv4Network("10.244.0.0/16"))


def test_package_exports_it_lazily() -> None:
    code = ("import sys, kubewire.routing as r\n"
            "assert 'kubewire.routing.masquerade' not in sys.modules\n"
            "assert r.egress_ruleset is __import__('kubewire.routing.masquerade',"
            " fromlist=['x']).egress_ruleset\n"
            "assert issubclass(r.EgressMasqueradeError, r.SyncError)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
