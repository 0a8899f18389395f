"""The validating fake refuses what the kernel refuses, atomically; the rule parser reads
exactly the subset the compiler writes."""

from __future__ import annotations

import pytest

from kubewire.proxy.compiler import compile_proxy
from kubewire.proxy.errors import FakeNftError
from kubewire.proxy.fake import FakeNft, check_ruleset
from kubewire.proxy.model import Chain, Hook, NftSet, Ruleset
from kubewire.proxy.nftrules import (
    Dnat,
    Lookup,
    MarkSet,
    Match,
    Numgen,
    RuleSyntaxError,
    Update,
    Verdict,
    parse_rule,
)
from kubewire.proxy.plan import Op, Transaction, plan_full
from kubewire.proxy.scenarios import NODE, SCENARIOS


def tx(*ops: Op) -> Transaction:
    return Transaction(tuple(ops), full=False, family="ip", table="kubewire-proxy")


VMAP = NftSet("m", "ipv4_addr . inet_proto . inet_service", "verdict")


@pytest.fixture
def fake() -> FakeNft:
    f = FakeNft()
    f.run(tx(Op("add", "table"), Op("add", "set", "m", nft_set=VMAP),
             Op("add", "chain", "a"), Op("add", "chain", "b"),
             Op("add", "rule", "a", rule="goto b"),
             Op("add", "element", "m", nft_set=VMAP,
                elements=(("10.0.0.1 . tcp . 80", "goto a"),))))
    return f


def snapshot(f: FakeNft) -> str:
    t = f.table()
    return repr(({n: (c.hook, c.rules) for n, c in t.chains.items()},
                 {n: s.elements for n, s in t.sets.items()}))


@pytest.mark.parametrize(("ops", "message"), [
    ([Op("add", "rule", "a", rule="jump missing")], "missing chain missing"),
    ([Op("add", "rule", "a", rule="ip saddr @nope accept")], "missing set @nope"),
    ([Op("add", "rule", "zz", rule="accept")], "chain: No such file"),
    ([Op("delete", "chain", "b")], "busy \\(used by chain a\\)"),
    ([Op("delete", "chain", "a")], "busy \\(used by map m\\)"),
    ([Op("add", "rule", "a", rule="ip saddr @m accept")], "is a map, used as a set"),
    ([Op("add", "element", "m", nft_set=VMAP, elements=(("10.0.0.1 . tcp . 80", "goto b"),))],
     "File exists"),
    ([Op("delete", "element", "m", nft_set=VMAP, elements=(("10.0.0.9 . tcp . 80", None),))],
     "No such file"),
    ([Op("add", "element", "m", nft_set=VMAP, elements=(("10.0.0.2 . tcp . 80", "goto zz"),))],
     "missing chain zz"),
    ([Op("add", "rule", "a", rule="frobnicate")], "unknown word"),
])
def test_refused_transactions_change_nothing(fake: FakeNft, ops: list[Op], message: str) -> None:
    before = snapshot(fake)
    # A valid command first: it must be rolled back with the rest.
    with pytest.raises(FakeNftError, match=message):
        fake.run(tx(Op("add", "chain", "c"), *ops))
    assert snapshot(fake) == before
    assert "c" not in fake.table().chains and len(fake.refused) == 1


def test_delete_set_in_use_is_refused() -> None:
    f = FakeNft()
    s = NftSet("ips", "ipv4_addr")
    f.run(tx(Op("add", "table"), Op("add", "set", "ips", nft_set=s), Op("add", "chain", "a"),
             Op("add", "rule", "a", rule="ip saddr @ips accept")))
    with pytest.raises(FakeNftError, match="busy"):
        f.run(tx(Op("delete", "set", "ips", nft_set=s)))
    f.run(tx(Op("flush", "chain", "a"), Op("delete", "set", "ips", nft_set=s)))
    assert "ips" not in f.table().sets


def test_nat_statements_only_under_nat_hooks() -> None:
    filter_hook = Hook("filter", "forward", "filter")
    bad = Ruleset(chains=(Chain("base", ("jump x",), filter_hook),
                          Chain("x", ("meta l4proto tcp dnat to 10.0.0.1:80",))))
    assert check_ruleset(bad) == ["dnat in x is reachable from filter chain base"]
    reject_in_nat = Ruleset(chains=(Chain("n", ("reject",), Hook("nat", "prerouting", "dstnat")),))
    assert check_ruleset(reject_in_nat) == ["reject in n is reachable from n"]


def test_every_scenario_applies_to_the_fake() -> None:
    for name, build in SCENARIOS.items():
        services, slices = build()
        rs = compile_proxy(services, slices, NODE)
        fake = FakeNft()
        fake.run(plan_full(rs, None))
        assert set(fake.table().chains) == {c.name for c in rs.chains}, name


def test_parser_reads_the_compiler_subset() -> None:
    assert parse_rule("meta mark set meta mark or 0x4000") == (MarkSet("or", 0x4000),)
    assert parse_rule("meta mark & 0x4000 == 0 return") == (
        Match("mark", "0", False, 0x4000), Verdict("return"))
    assert parse_rule("ip daddr 10.96.0.1 tcp dport 80 ip saddr != 10.244.0.0/16 jump m") == (
        Match("daddr", "10.96.0.1"), Match("l4proto", "tcp"), Match("dport", "80"),
        Match("saddr", "10.244.0.0/16", negate=True), Verdict("jump", "m"))
    assert parse_rule("ip daddr @n meta l4proto . th dport vmap @np") == (
        Match("daddr", "@n"), Lookup(("l4proto", "dport"), "np", vmap=True))
    assert parse_rule("meta l4proto udp numgen random mod 3 == 0 update @s { ip saddr } "
                      "dnat to 10.0.0.1:53") == (
        Match("l4proto", "udp"), Numgen(3, 0), Update("s", "saddr"), Dnat("10.0.0.1", 53))
    for bad in ("dnat to 10.0.0.1:80 accept", "ip daddr . ip saddr vmap m", "numgen random",
                "reject with icmp type host-unreachable", ""):
        with pytest.raises(RuleSyntaxError):
            parse_rule(bad)
