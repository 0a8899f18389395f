"""The validating fake refuses what the kernel refuses, atomically; the rule parser reads
exactly the subset the compiler writes."""

from __future__ import annotations

import pytest

from kubewire.proxy.compiler import compile_proxy
from kubewire.proxy.errors import FakeNftError
from kubewire.proxy.fake import FakeNft, Packet, check_ruleset, evaluate, verdicts
from kubewire.proxy.model import Chain, Hook, NftSet, Ruleset
from kubewire.proxy.nftrules import (
    Dnat,
    DnatMap,
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


CHOICES = NftSet("c", "ip daddr . th dport . numgen random mod 2",
                 "ip daddr . tcp dport", typeof=True)
DNAT_MAP = ("meta l4proto tcp dnat ip to ip daddr . th dport . "
            "numgen random mod 3 offset 7 map @c")


def test_parser_reads_the_dnat_map() -> None:
    assert parse_rule(DNAT_MAP) == (
        Match("l4proto", "tcp"), DnatMap(("daddr", "dport"), 3, 7, "c"))
    assert parse_rule("dnat ip to ip daddr . numgen random mod 2 map @c") == (
        DnatMap(("daddr",), 2, 0, "c"),)
    for bad in ("dnat ip to ip daddr . numgen random mod 2 map c",
                "dnat ip to tcp dport . numgen random mod 2 map @c",
                "dnat ip to ip daddr . numgen random mod 0 map @c",
                "dnat ip to ip daddr . numgen random mod 2 map @c accept"):
        with pytest.raises(RuleSyntaxError):
            parse_rule(bad)


def test_dnat_map_needs_a_typeof_data_map_and_fitting_elements() -> None:
    f = FakeNft()
    plain = NftSet("c", "ipv4_addr . inet_proto . inet_service . mark",
                   "ipv4_addr . inet_service")
    f.run(tx(Op("add", "table"), Op("add", "set", "c", nft_set=plain),
             Op("add", "set", "m", nft_set=VMAP), Op("add", "chain", "a")))
    udp = NftSet("u", CHOICES.key_type, "ip daddr . udp dport", typeof=True)
    th = NftSet("h", CHOICES.key_type, "ip daddr . th dport", typeof=True)
    f.run(tx(Op("add", "set", "u", nft_set=udp), Op("add", "set", "h", nft_set=th)))
    for name, why in (("c", "typeof"), ("m", "data map"), ("u", "protocol"),
                      ("h", "protocol")):
        with pytest.raises(FakeNftError, match=why):
            f.run(tx(Op("add", "rule", "a", rule=DNAT_MAP.replace("@c", f"@{name}"))))
    f.run(tx(Op("delete", "set", "c", nft_set=plain), Op("add", "set", "c", nft_set=CHOICES),
             Op("add", "rule", "a", rule=DNAT_MAP)))
    with pytest.raises(FakeNftError, match="does not fit"):
        f.run(tx(Op("add", "element", "c", nft_set=CHOICES,
                    elements=(("10.0.0.1 . 80", "10.1.0.1 . 80"),))))


def test_dnat_map_evaluates_each_choice_and_falls_through_on_a_missing_one() -> None:
    nat = Hook("nat", "prerouting", "dstnat")
    choices = NftSet("c", CHOICES.key_type, CHOICES.data_type, typeof=True, elements=(
        ("10.96.0.1 . 80 . 7", "10.244.0.1 . 8080"),
        ("10.96.0.1 . 80 . 9", "10.244.0.2 . 8080")))
    rs = Ruleset(chains=(Chain("pre", (DNAT_MAP, "drop"), nat),), sets=(choices,))
    assert check_ruleset(rs) == []
    out = verdicts(evaluate(rs, Packet("10.0.0.9", "10.96.0.1", "tcp", 80)))
    assert out == {"10.244.0.1:8080": pytest.approx(1 / 3), "10.244.0.2:8080":
                   pytest.approx(1 / 3), "DROP": pytest.approx(1 / 3)}
