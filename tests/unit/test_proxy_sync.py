"""ProxySyncer's state machine (first/incremental/full/retry) against the fakes."""

from __future__ import annotations

import pytest

from kubewire.proxy import names
from kubewire.proxy.compiler import compile_proxy
from kubewire.proxy.errors import ProxyError, ProxySyncError
from kubewire.proxy.fake import FakeConntrack, FakeNft, Packet, evaluate, verdicts
from kubewire.proxy.model import Ruleset, StaleFlow
from kubewire.proxy.scenarios import NODE, endpoint, endpoint_slice, service, synthetic
from kubewire.proxy.sync import ProxySyncer

DNS = [{"name": "dns", "port": 53, "protocol": "UDP"}]
DNS_SLICE = [{"name": "dns", "port": 5353, "protocol": "UDP"}]


def dns(*ips: str) -> Ruleset:
    services, slices = synthetic(3, 2)
    services.append(service("dns", "10.96.0.10", DNS))
    slices.append(endpoint_slice("dns", [endpoint(ip) for ip in ips], DNS_SLICE))
    return compile_proxy(services, slices, NODE)


def table_of(fake: FakeNft) -> dict[str, tuple[str, ...]]:
    return {n: tuple(c.rules) for n, c in fake.table().chains.items()}


def syncer() -> tuple[ProxySyncer, FakeNft, FakeConntrack]:
    nft, ct = FakeNft(), FakeConntrack()
    return ProxySyncer(nft=nft, conntrack=ct), nft, ct


def test_first_sync_is_full_then_incremental() -> None:
    s, nft, _ = syncer()
    r1 = s.sync(dns("10.244.0.2"))
    assert r1.full and r1.reason == "first sync"
    assert nft.transactions[0].startswith("add table ip kubewire-proxy\n"
                                          "delete table ip kubewire-proxy\n")
    r2 = s.sync(dns("10.244.0.2", "10.244.0.3"))
    assert not r2.full and r2.reason == "incremental"
    assert r2.chains_changed == (names.service_chain("default/dns/udp/53"),)
    # flush + one rule (goto the new shared 2-endpoint UDP choice chain: add + its rule);
    # elements: the new hairpin pair and both endpoint choices
    assert r2.chains_added == (names.choice_chain("udp", 2, False),)
    assert r2.elements_added == 3 and r2.commands == 6
    r3 = s.sync(dns("10.244.0.2", "10.244.0.3"))
    assert r3.reason == "no change" and r3.commands == 0 and len(nft.transactions) == 2
    assert s.applied is not None
    assert table_of(nft) == {c.name: c.rules for c in s.applied.chains}


def test_failed_sync_keeps_old_rules_and_retries_in_full() -> None:
    s, nft, _ = syncer()
    good = dns("10.244.0.2")
    s.sync(good)
    before = table_of(nft)
    nft.fail_next = "Error: Could not process rule: No such file or directory"
    with pytest.raises(ProxySyncError, match="No such file"):
        s.sync(dns("10.244.0.3"))
    assert s.applied is good and table_of(nft) == before and s.next_sync_full
    r = s.sync(dns("10.244.0.3"))
    assert r.full and r.reason == "retry after a failed sync"
    assert nft.transactions[-1].startswith("add table ip kubewire-proxy\n"
                                           "flush table ip kubewire-proxy\n")
    # A failed full sync is retried from a clean slate.
    nft.fail_next = "boom"
    with pytest.raises(ProxySyncError):
        s.resync()
    r = s.sync(dns("10.244.0.3"))
    assert r.full and "delete table ip kubewire-proxy" in nft.transactions[-1]


def test_a_ruleset_the_kernel_refuses_leaves_everything_as_it_was() -> None:
    s, nft, _ = syncer()
    s.sync(dns("10.244.0.2"))
    good = s.applied
    assert good is not None
    broken = Ruleset(chains=(*good.chains[:-1],
                             type(good.chains[-1])(good.chains[-1].name, ("jump nowhere",))),
                     sets=good.sets)
    with pytest.raises(ProxySyncError, match="missing chain nowhere"):
        s.sync(broken)
    assert s.applied is good
    assert verdicts(evaluate(nft.table(), Packet("10.244.0.9", "10.96.0.10", "udp", 53),
                             "prerouting", NODE.node_ips)) == {"10.244.0.2:5353": 1.0}


def test_resync_repairs_hand_edits() -> None:
    s, nft, _ = syncer()
    s.sync(dns("10.244.0.2"))
    nft.delete_rule(names.SERVICES, 0)
    nft.delete_element(names.SERVICE_IPS, "10.96.0.10 . udp . 53")
    del nft.table().chains[names.service_chain("default/dns/udp/53")].rules[:]
    probe = Packet("10.244.0.9", "10.96.0.10", "udp", 53)
    # Broken: nothing translates the Service address any more, so the range check refuses it.
    assert verdicts(evaluate(nft.table(), probe, "prerouting", NODE.node_ips)) == {"REJECT": 1.0}
    r = s.resync()
    assert r.full and r.reason == "resync"
    assert verdicts(evaluate(nft.table(), probe, "prerouting", NODE.node_ips)) == {
        "10.244.0.2:5353": 1.0}
    assert not s.next_sync_full


def test_stale_udp_flows_are_deleted_and_conntrack_errors_reported() -> None:
    s, _, ct = syncer()
    s.sync(dns())
    r = s.sync(dns("10.244.0.2", "10.244.0.3"))
    assert r.stale_flows == (StaleFlow("10.96.0.10", 53, None),) and r.conntrack_deleted == 1
    r = s.sync(dns("10.244.0.3"))
    assert r.stale_flows == (StaleFlow("10.96.0.10", 53, "10.244.0.2"),)
    assert ct.deleted == [StaleFlow("10.96.0.10", 53, None),
                          StaleFlow("10.96.0.10", 53, "10.244.0.2")]
    ct.fail = "conntrack: Operation not permitted"
    r = s.sync(dns())
    assert r.conntrack_errors == ("conntrack: Operation not permitted",)


def test_syncer_refuses_to_guess_a_namespace() -> None:
    with pytest.raises(ProxyError, match="network namespace"):
        ProxySyncer()
    with pytest.raises(ProxyError, match="before any sync"):
        syncer()[0].resync()
