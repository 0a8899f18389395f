"""respond: table-driven query -> reply cases for every record form, then the edges."""

from __future__ import annotations

import struct
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubewire.dns import NotMine, build_zone, respond

D = "cluster.local"
SOA = f"cluster.local. 5 IN SOA ns.dns.{D}. hostmaster.{D}. 7 7200 1800 86400 5"


def _svc(name: str, ip: str | None, ports: list[dict[str, Any]] | None = None,
         ns: str = "default", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"clusterIP": ip, "ports": ports or [], **spec}
    return {"metadata": {"name": name, "namespace": ns}, "spec": body}


def _slice(svc: str, endpoints: list[dict[str, Any]], ports: list[dict[str, Any]],
           ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": f"{svc}-x", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": endpoints, "ports": ports}


def _ep(ip: str, ready: bool | None = True, hostname: str | None = None) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "targetRef": {"kind": "Pod", "name": "p"}}
    if ready is not None:
        ep["conditions"] = {"ready": ready}
    if hostname:
        ep["hostname"] = hostname
    return ep


HTTP = [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]
SERVICES = [
    _svc("web", "10.96.0.10", HTTP),
    _svc("db", "None", [{"name": "pg", "port": 5432, "protocol": "TCP"}]),
    _svc("late", "None", [], publishNotReadyAddresses=True),
    _svc("empty", "None", []),
    _svc("ext", None, type="ExternalName", externalName="www.example.com"),
    _svc("alias", None, type="ExternalName", externalName=f"web.default.svc.{D}"),
    _svc("dns", "10.96.0.53", [{"name": "dns", "port": 53, "protocol": "UDP"}],
         ns="kube-system"),
]
SLICES = [
    _slice("db", [_ep("10.244.1.5", hostname="db-0"), _ep("10.244.2.5", ready=None),
                  _ep("10.244.3.5", ready=False, hostname="db-2")],
           [{"name": "pg", "port": 5433, "protocol": "TCP"}]),
    _slice("late", [_ep("10.244.4.4", ready=False)], []),
    _slice("empty", [_ep("10.244.5.5", ready=False)], []),
]
PODS = [{"metadata": {"name": "p", "namespace": "team-a"}, "status": {"podIP": "10.244.9.9"}}]


@pytest.fixture(scope="module")
def zone() -> Any:
    return build_zone(SERVICES, SLICES, PODS, D, serial=7)


def ask(zone: Any, name: str, rdtype: str, **kw: Any) -> dns.message.Message:
    edns = kw.pop("use_edns", None)
    extra = {} if edns is None else {"use_edns": edns, "payload": kw.pop("payload", 1232)}
    q = dns.message.make_query(name, rdtype, **extra)
    wire = respond(zone, q.to_wire(), **kw)
    assert isinstance(wire, bytes), wire
    r = dns.message.from_wire(wire)
    assert r.id == q.id and r.question == q.question
    return r


def lines(section: list[Any]) -> set[str]:
    return {line for rrset in section for line in rrset.to_text().splitlines()}


S = f"default.svc.{D}"
CASES = [
    # name, type, rcode, answer, additional (authority is SOA iff the answer is negative)
    (f"dns-version.{D}", "TXT", "NOERROR", {f'dns-version.{D}. 5 IN TXT "1.1.0"'}, set()),
    (f"web.{S}", "A", "NOERROR", {f"web.{S}. 5 IN A 10.96.0.10"}, set()),
    (f"web.{S}", "AAAA", "NOERROR", set(), set()),
    (f"_http._tcp.web.{S}", "SRV", "NOERROR", {f"_http._tcp.web.{S}. 5 IN SRV 0 100 80 web.{S}."},
     {f"web.{S}. 5 IN A 10.96.0.10"}),
    (f"_tcp.web.{S}", "SRV", "NOERROR", set(), set()),  # empty non-terminal
    (f"_81._tcp.web.{S}", "SRV", "NXDOMAIN", set(), set()),  # unnamed ports have no SRV
    (f"_http._udp.web.{S}", "SRV", "NXDOMAIN", set(), set()),
    ("10.0.96.10.in-addr.arpa", "PTR", "NOERROR",
     {f"10.0.96.10.in-addr.arpa. 5 IN PTR web.{S}."}, set()),
    (f"db.{S}", "A", "NOERROR", {f"db.{S}. 5 IN A 10.244.1.5", f"db.{S}. 5 IN A 10.244.2.5"},
     set()),
    (f"db-0.db.{S}", "A", "NOERROR", {f"db-0.db.{S}. 5 IN A 10.244.1.5"}, set()),
    (f"10-244-2-5.db.{S}", "A", "NOERROR", {f"10-244-2-5.db.{S}. 5 IN A 10.244.2.5"}, set()),
    (f"db-2.db.{S}", "A", "NXDOMAIN", set(), set()),  # not ready
    (f"_pg._tcp.db.{S}", "SRV", "NOERROR",
     {f"_pg._tcp.db.{S}. 5 IN SRV 0 100 5433 db-0.db.{S}.",
      f"_pg._tcp.db.{S}. 5 IN SRV 0 100 5433 10-244-2-5.db.{S}."},
     {f"db-0.db.{S}. 5 IN A 10.244.1.5", f"10-244-2-5.db.{S}. 5 IN A 10.244.2.5"}),
    ("5.1.244.10.in-addr.arpa", "PTR", "NOERROR",
     {f"5.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.{S}."}, set()),
    ("5.1.244.10.in-addr.arpa", "A", "NOERROR", set(), set()),
    (f"late.{S}", "A", "NOERROR", {f"late.{S}. 5 IN A 10.244.4.4"}, set()),
    (f"empty.{S}", "A", "NXDOMAIN", set(), set()),  # spec 2.4.1: no ready endpoints
    (f"ext.{S}", "A", "NOERROR", {f"ext.{S}. 5 IN CNAME www.example.com."}, set()),
    (f"ext.{S}", "CNAME", "NOERROR", {f"ext.{S}. 5 IN CNAME www.example.com."}, set()),
    (f"alias.{S}", "A", "NOERROR", {f"alias.{S}. 5 IN CNAME web.{S}.",
                                    f"web.{S}. 5 IN A 10.96.0.10"}, set()),
    (f"10-1-2-3.team-a.pod.{D}", "A", "NOERROR", {f"10-1-2-3.team-a.pod.{D}. 5 IN A 10.1.2.3"},
     set()),
    (f"10-1-2-3.team-a.pod.{D}", "AAAA", "NOERROR", set(), set()),
    (f"10-1-2-300.team-a.pod.{D}", "A", "NXDOMAIN", set(), set()),
    (f"10-1-2-3.nobody.pod.{D}", "A", "NXDOMAIN", set(), set()),
    (f"team-a.pod.{D}", "A", "NOERROR", set(), set()),
    (f"svc.{D}", "A", "NOERROR", set(), set()),
    (S, "A", "NOERROR", set(), set()),
    (D, "A", "NOERROR", set(), set()),
    (D, "NS", "NOERROR", {f"{D}. 5 IN NS ns.dns.{D}."}, set()),
    (D, "SOA", "NOERROR", {SOA}, set()),
    (f"nope.{S}", "A", "NXDOMAIN", set(), set()),
    (f"dns.kube-system.svc.{D}", "A", "NOERROR", {f"dns.kube-system.svc.{D}. 5 IN A 10.96.0.53"},
     set()),
]


@pytest.mark.parametrize(("name", "rdtype", "rcode", "answer", "additional"), CASES,
                         ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_answers(zone: Any, name: str, rdtype: str, rcode: str, answer: set[str],
                 additional: set[str]) -> None:
    r = ask(zone, name, rdtype)
    assert dns.rcode.to_text(r.rcode()) == rcode
    assert r.flags & dns.flags.AA and not r.flags & dns.flags.TC and r.flags & dns.flags.RD
    assert lines(r.answer) == answer
    soa = SOA.replace(f"{D}. 5", "in-addr.arpa. 5", 1) if name.endswith(".arpa") else SOA
    assert lines(r.authority) == (set() if answer else {soa})
    assert lines(r.additional) == additional


def test_case_is_echoed_and_ignored(zone: Any) -> None:
    r = ask(zone, "Web.DEFAULT.svc.Cluster.Local", "A")
    assert lines(r.answer) == {"Web.DEFAULT.svc.Cluster.Local. 5 IN A 10.96.0.10"}
    r = ask(zone, f"_HTTP._Tcp.WEB.{S}", "SRV")
    assert r.answer[0].name.to_text() == f"_HTTP._Tcp.WEB.{S}."
    assert ask(zone, f"NOPE.{S}", "A").rcode() == dns.rcode.NXDOMAIN


def test_any_answers_every_rrset_at_the_name(zone: Any) -> None:
    assert lines(ask(zone, D, "ANY").answer) == {SOA, f"{D}. 5 IN NS ns.dns.{D}."}
    assert lines(ask(zone, f"web.{S}", "ANY").answer) == {f"web.{S}. 5 IN A 10.96.0.10"}


@pytest.mark.parametrize("name", ["example.com", "10.10.10.10.in-addr.arpa", "local",
                                  "xcluster.local", "cluster.local.example.org"])
def test_names_outside_the_zone_are_handed_on(zone: Any, name: str) -> None:
    wire = dns.message.make_query(name, "A").to_wire()
    out = respond(zone, wire)
    assert isinstance(out, NotMine)
    assert out.query == wire and out.qname == name and out.qtype == 1


def test_non_in_class_is_handed_on(zone: Any) -> None:
    wire = dns.message.make_query(f"web.{S}", "A", rdclass="CH").to_wire()
    assert isinstance(respond(zone, wire), NotMine)


def test_edns_echoes_our_payload_and_do_bit(zone: Any) -> None:
    r = ask(zone, f"web.{S}", "A", use_edns=0, payload=4096)
    assert r.edns == 0 and r.payload == 1232 and not r.ednsflags & dns.flags.DO
    q = dns.message.make_query(f"web.{S}", "A", want_dnssec=True)
    r = dns.message.from_wire(respond(zone, q.to_wire()))  # type: ignore[arg-type]
    assert r.ednsflags & dns.flags.DO
    assert ask(zone, f"web.{S}", "A").edns == -1  # no OPT when the client sent none


def test_badvers(zone: Any) -> None:
    q = dns.message.make_query(f"web.{S}", "A", use_edns=1)
    r = dns.message.from_wire(respond(zone, q.to_wire()))  # type: ignore[arg-type]
    assert r.rcode() == dns.rcode.BADVERS and not r.answer


@pytest.fixture(scope="module")
def big() -> Any:
    eps = [_ep(f"10.244.{i // 200}.{i % 200 + 1}", hostname=f"host-{i}") for i in range(60)]
    return build_zone([_svc("big", "None", [{"name": "p", "port": 1, "protocol": "TCP"}])],
                      [_slice("big", eps, [{"name": "p", "port": 1, "protocol": "TCP"}])])


def test_truncation_over_udp_without_edns(big: Any) -> None:
    r = ask(big, f"big.{S}", "A")  # 60 * 16 bytes > 512
    assert r.flags & dns.flags.TC and not r.answer and not r.authority


def test_edns_size_is_the_clients_and_capped_at_ours(big: Any) -> None:
    r = ask(big, f"big.{S}", "A", use_edns=0, payload=1232)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 60
    assert ask(big, f"big.{S}", "A", use_edns=0, payload=600).flags & dns.flags.TC
    assert ask(big, f"big.{S}", "A", use_edns=0, payload=100).flags & dns.flags.TC  # 512 floor


def test_additional_is_dropped_before_setting_tc(big: Any) -> None:
    r = ask(big, f"_p._tcp.big.{S}", "SRV", use_edns=0, payload=16000, edns_payload=16000)
    full = len(respond(big, dns.message.make_query(f"_p._tcp.big.{S}", "SRV", use_edns=0,
                                                   payload=16000).to_wire(),
                       edns_payload=16000))  # type: ignore[arg-type]
    assert len(r.additional) == 60 and len(r.answer[0]) == 60
    r = ask(big, f"_p._tcp.big.{S}", "SRV", use_edns=0, payload=full - 1, edns_payload=16000)
    assert len(r.answer[0]) == 60 and not r.additional and not r.flags & dns.flags.TC


def test_tcp_is_not_truncated(big: Any) -> None:
    r = ask(big, f"_p._tcp.big.{S}", "SRV", transport="tcp")
    assert not r.flags & dns.flags.TC and len(r.additional) == 60


def _header(wire: bytes) -> tuple[int, ...]:
    return struct.unpack("!HHHHHH", wire[:12])


@pytest.mark.parametrize("cut", [12, 13, 20, 30])
def test_byte_truncated_query_is_formerr(zone: Any, cut: int) -> None:
    wire = dns.message.make_query(f"web.{S}", "A", use_edns=0).to_wire()[:cut]
    out = respond(zone, wire)
    assert isinstance(out, bytes)
    assert _header(out)[0] == _header(wire)[0] and _header(out)[1] & 0xF == dns.rcode.FORMERR


@pytest.mark.parametrize("wire", [b"", b"\x00", b"\x12\x34" * 5 + b"\x00"])
def test_unreadable_header_is_dropped(zone: Any, wire: bytes) -> None:
    assert respond(zone, wire) is None


def test_responses_are_never_answered(zone: Any) -> None:
    q = dns.message.make_query(f"web.{S}", "A")
    q.flags |= dns.flags.QR
    assert respond(zone, q.to_wire()) is None


def test_trailing_garbage_is_formerr(zone: Any) -> None:
    out = respond(zone, dns.message.make_query(f"web.{S}", "A").to_wire() + b"junk")
    assert isinstance(out, bytes) and _header(out)[1] & 0xF == dns.rcode.FORMERR


def test_two_questions_is_formerr(zone: Any) -> None:
    q = dns.message.make_query(f"web.{S}", "A")
    q.question.append(dns.message.make_query(f"db.{S}", "A").question[0])
    out = respond(zone, q.to_wire())
    assert isinstance(out, bytes) and _header(out)[1] & 0xF == dns.rcode.FORMERR


def test_other_opcodes_are_notimp(zone: Any) -> None:
    q = dns.message.make_query(f"web.{S}", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    out = respond(zone, q.to_wire())
    assert isinstance(out, bytes) and _header(out)[1] & 0xF == dns.rcode.NOTIMP


def test_zone_transfer_is_notimp(zone: Any) -> None:
    q = dns.message.make_query(D, "AXFR")
    out = respond(zone, q.to_wire(), transport="tcp")
    assert isinstance(out, bytes) and _header(out)[1] & 0xF == dns.rcode.NOTIMP


def test_slow_path_gives_the_same_answer(zone: Any) -> None:
    # An authority-section record in the query sends it down the dnspython path.
    q = dns.message.make_query(f"web.{S}", "A")
    fast = respond(zone, q.to_wire())
    q.authority.append(dns.rrset.from_text(f"web.{S}.", 5, "IN", "A", "10.0.0.1"))
    slow = respond(zone, q.to_wire())
    assert isinstance(slow, bytes) and slow == fast


def test_cookie_option_is_accepted_and_not_echoed(zone: Any) -> None:
    import dns.edns

    opt = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345678")
    q = dns.message.make_query(f"web.{S}", "A", use_edns=0, options=[opt])
    r = dns.message.from_wire(respond(zone, q.to_wire()))  # type: ignore[arg-type]
    assert r.answer and not r.options


_SEEDS = [dns.message.make_query(n, t, use_edns=e).to_wire()
          for n, t, e in [(f"web.{S}", "A", None), (f"_pg._tcp.db.{S}", "SRV", 0),
                          ("5.1.244.10.in-addr.arpa", "PTR", 0), ("example.com", "AAAA", None)]]


@settings(max_examples=600, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.tuples(st.sampled_from(_SEEDS), st.lists(st.tuples(st.integers(0, 200),
                                                          st.integers(0, 255)), max_size=6),
              st.integers(0, 200)).map(
        lambda t: bytes(dict(t[1]).get(i, b)
                        for i, b in enumerate(t[0]))[: max(t[2], 0) or None]),
))
def test_random_and_mutated_packets_never_raise(zone: Any, wire: bytes) -> None:
    out = respond(zone, wire)
    assert out is None or isinstance(out, bytes | NotMine)
    if isinstance(out, bytes):
        assert _header(out)[1] & 0x8000  # a response
        dns.message.from_wire(out)  # and a well-formed one
