"""The validating fake refuses what the kernel refuses, and evaluates jump/goto/return and
set lookups as nft does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubewire.policy.errors import RulesetError
from kubewire.policy.fake import Packet, check_ruleset, evaluate, parse_rule
from kubewire.policy.model import Chain, Hook, NftSet, Ruleset

BASE = Hook("filter", "forward", 10)


def table(rules: tuple[str, ...], *sets: NftSet, extra: tuple[Chain, ...] = ()) -> Ruleset:
    chains = (Chain("base", rules, BASE), *extra)
    return Ruleset(tuple(sorted(chains, key=lambda c: c.name)),
                   tuple(sorted(sets, key=lambda s: s.name)))


PEERS = NftSet("peers", "ipv4_addr", (("10.0.0.0/24", None), ("10.0.1.7", None)), interval=True)
PORTS = NftSet("ports", "inet_proto . inet_service", (("tcp . 80", None), ("udp . 50-60", None)),
               interval=True)


@pytest.mark.parametrize(("ruleset", "problem"), [
    (table(("ip saddr @nope accept",)), "missing set @nope"),
    (table(("ip saddr @ports accept",), PORTS), "key ipv4_addr does not fit @ports"),
    (table(("ip saddr vmap @peers",), PEERS), "used as the wrong kind"),
    (table(("jump gone",)), "jump to missing chain gone"),
    (table(("jump base",)), "jump to base chain base"),
    (table(("ip saddr 10.0.0.1 accept",)), "outside the compiler's subset"),
    (table(("log prefix x",)), "outside the compiler's subset"),
    (table((), replace(PEERS, interval=False)), "ranges or prefixes need flags interval"),
    (table((), replace(PEERS, elements=(("10.0.0.0/24", None), ("10.0.0.9", None)))),
     "elements overlap"),
    (table((), replace(PORTS, elements=(("tcp . 80-90", None), ("tcp . 90", None)))),
     "elements overlap"),
    (table((), replace(PEERS, elements=(("10.0.0.1/24", None),))), "host bits set"),
    (table((), NftSet("m", "ipv4_addr", (("10.0.0.1", "jump gone"),), "verdict")),
     "jumps to a missing chain"),
    (table((), NftSet("n", "ipv4_addr . inet_proto", (("10.0.0.1", None),))), "does not fit"),
    (table((f'accept comment "{"c" * 130}"',)), "comment longer than 128"),
    (Ruleset((Chain("b"), Chain("a")), ()), "not sorted"),
])
def test_check_ruleset_finds_what_nft_refuses(ruleset: Ruleset, problem: str) -> None:
    problems = check_ruleset(ruleset)
    assert any(problem in p for p in problems), problems


def test_parse_rule_reads_the_subset() -> None:
    rule = parse_rule('ip daddr . meta l4proto . th dport @named return comment "x/p egress[0]"')
    assert rule.comment == "x/p egress[0]" and len(rule.statements) == 2
    with pytest.raises(RulesetError):
        parse_rule("ip daddr . meta mark @x accept")


def test_evaluation_follows_jump_return_and_goto() -> None:
    chains = (Chain("check", ("ip saddr @peers return", "goto deny")),
              Chain("deny", ("meta l4proto tcp reject with tcp reset", "drop")),
              Chain("ports", ("meta l4proto . th dport @ports accept",)))
    ruleset = table(("jump check", "goto ports", "drop"), PEERS, PORTS, extra=chains)
    assert check_ruleset(ruleset) == []
    ok = evaluate(ruleset, Packet("10.0.1.7", "10.9.9.9", "udp", 55))
    assert ok.verdict == "accept" and ok.trace == ("base", "check", "ports")
    # goto'd chain falls through: back to base's caller, the hook's policy (accept).
    assert evaluate(ruleset, Packet("10.0.0.3", "10.9.9.9", "udp", 61)).verdict == "accept"
    assert evaluate(ruleset, Packet("10.0.2.3", "10.9.9.9", "tcp", 80)).verdict == "reject"
    assert evaluate(ruleset, Packet("10.0.2.3", "10.9.9.9", "udp", 80)).verdict == "drop"
    assert evaluate(ruleset, Packet("10.0.2.3", "10.9.9.9", "udp", 80), "input").verdict == \
        "accept"  # no base chain on that hook
