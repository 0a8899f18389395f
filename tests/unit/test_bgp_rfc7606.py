"""RFC 7606: every malformation gets exactly the action section 7 (or 3-5) gives it."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from kubewire.bgp.attributes import (
    Aggregator,
    As4Aggregator,
    As4Path,
    AsPath,
    AsSegment,
    MpReachNlri,
    NextHop,
    OriginAttr,
    UnknownAttribute,
    WireContext,
)
from kubewire.bgp.constants import (
    AS_TRANS,
    Afi,
    AttrFlag,
    AttrType,
    ErrorCode,
    Origin,
    Safi,
    SegmentType,
    UpdateSubcode,
)
from kubewire.bgp.update import (
    MALFORMED_ACTION,
    Action,
    Update,
    decode_update,
    downgrade_as4,
    forward_attributes,
    merge_as4_path,
    reconcile_as4,
)

WK, OPT, OPT_T = 0x40, 0x80, 0xC0
T, D, R, N = (Action.TREAT_AS_WITHDRAW, Action.ATTRIBUTE_DISCARD, Action.SESSION_RESET,
              Action.NONE)
U = UpdateSubcode


def attr(flags: int, code: int, value: bytes) -> bytes:
    if flags & AttrFlag.EXTENDED_LENGTH:
        return struct.pack("!BBH", flags, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


ORIGIN = attr(WK, 1, b"\x00")
AS_PATH = attr(WK, 2, bytes.fromhex("02 01 0000fde9"))
NEXT_HOP = attr(WK, 3, bytes.fromhex("0a000001"))
BASE = ORIGIN + AS_PATH + NEXT_HOP
NLRI = bytes.fromhex("10 0a01")  # 10.1.0.0/16
MP6 = attr(OPT, 14, bytes.fromhex("0002 01 10") + bytes(15) + b"\x01" + b"\x00"
           + bytes.fromhex("30 20010db80001"))


def body(attrs: bytes, nlri: bytes = NLRI, withdrawn: bytes = b"") -> bytes:
    return (struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(attrs)) + attrs
            + nlri)


def test_clean_update_has_no_problems() -> None:
    r = decode_update(body(BASE))
    assert r.action == N and r.problems == ()
    assert r.announce() == (IPv4Network("10.1.0.0/16"),) and r.withdraw() == ()
    assert r.notification() is None


# (name, attributes, context, expected action, expected subcode, attribute kept?)
CASES = [
    # 7.1 ORIGIN
    ("origin-length", attr(WK, 1, b"\x00\x00") + AS_PATH + NEXT_HOP, T, U.ATTRIBUTE_LENGTH_ERROR),
    ("origin-value", attr(WK, 1, b"\x03") + AS_PATH + NEXT_HOP, T, U.INVALID_ORIGIN_ATTRIBUTE),
    ("origin-flags", attr(OPT_T, 1, b"\x00") + AS_PATH + NEXT_HOP, T, U.ATTRIBUTE_FLAGS_ERROR),
    # 7.2 AS_PATH
    ("as-path-segment-type", ORIGIN + attr(WK, 2, bytes.fromhex("05 01 00000001")) + NEXT_HOP,
     T, U.MALFORMED_AS_PATH),
    ("as-path-zero-segment", ORIGIN + attr(WK, 2, bytes.fromhex("02 00")) + NEXT_HOP,
     T, U.MALFORMED_AS_PATH),
    ("as-path-overrun", ORIGIN + attr(WK, 2, bytes.fromhex("02 02 00000001")) + NEXT_HOP,
     T, U.MALFORMED_AS_PATH),
    ("as-path-half-header", ORIGIN + attr(WK, 2, bytes.fromhex("02 01 00000001 02")) + NEXT_HOP,
     T, U.MALFORMED_AS_PATH),
    ("as-path-flags", ORIGIN + attr(OPT, 2, b"") + NEXT_HOP, T, U.ATTRIBUTE_FLAGS_ERROR),
    # 7.3 NEXT_HOP
    ("next-hop-length", ORIGIN + AS_PATH + attr(WK, 3, bytes(5)), T, U.ATTRIBUTE_LENGTH_ERROR),
    ("next-hop-zero", ORIGIN + AS_PATH + attr(WK, 3, bytes(4)), T, U.INVALID_NEXT_HOP_ATTRIBUTE),
    ("next-hop-multicast", ORIGIN + AS_PATH + attr(WK, 3, bytes.fromhex("e0000001")),
     T, U.INVALID_NEXT_HOP_ATTRIBUTE),
    ("next-hop-broadcast", ORIGIN + AS_PATH + attr(WK, 3, b"\xff" * 4),
     T, U.INVALID_NEXT_HOP_ATTRIBUTE),
    # 7.4 MULTI_EXIT_DISC, 7.5 LOCAL_PREF
    ("med-length", BASE + attr(OPT, 4, bytes(3)), T, U.ATTRIBUTE_LENGTH_ERROR),
    ("med-flags", BASE + attr(OPT_T, 4, bytes(4)), T, U.ATTRIBUTE_FLAGS_ERROR),
    ("local-pref-length", BASE + attr(WK, 5, bytes(2)), T, U.ATTRIBUTE_LENGTH_ERROR),
    # 7.6 ATOMIC_AGGREGATE, 7.7 AGGREGATOR: attribute discard
    ("atomic-aggregate-length", BASE + attr(WK, 6, b"\x01"), D, U.ATTRIBUTE_LENGTH_ERROR),
    ("atomic-aggregate-flags", BASE + attr(OPT_T, 6, b""), D, U.ATTRIBUTE_FLAGS_ERROR),
    ("aggregator-length", BASE + attr(OPT_T, 7, bytes(7)), D, U.ATTRIBUTE_LENGTH_ERROR),
    ("aggregator-2-octet-on-4-octet", BASE + attr(OPT_T, 7, bytes(6)), D,
     U.ATTRIBUTE_LENGTH_ERROR),
    # 7.8 COMMUNITIES, RFC 8092 LARGE_COMMUNITIES, 7.14 extended communities
    ("communities-empty", BASE + attr(OPT_T, 8, b""), T, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("communities-5", BASE + attr(OPT_T, 8, bytes(5)), T, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("communities-flags", BASE + attr(OPT, 8, bytes(4)), T, U.ATTRIBUTE_FLAGS_ERROR),
    ("large-communities-13", BASE + attr(OPT_T, 32, bytes(13)), T, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("ext-communities-4", BASE + attr(OPT_T, 16, bytes(4)), T, U.OPTIONAL_ATTRIBUTE_ERROR),
    # 7.9 ORIGINATOR_ID, 7.10 CLUSTER_LIST
    ("originator-id-length", BASE + attr(OPT, 9, bytes(3)), T, U.ATTRIBUTE_LENGTH_ERROR),
    ("cluster-list-6", BASE + attr(OPT, 10, bytes(6)), T, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("cluster-list-empty", BASE + attr(OPT, 10, b""), T, U.OPTIONAL_ATTRIBUTE_ERROR),
    # 7.11 / 7.12 MP_REACH_NLRI and MP_UNREACH_NLRI: session reset
    ("mp-reach-next-hop-length", BASE + attr(OPT, 14, bytes.fromhex("0002 01 05") + bytes(6)),
     R, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("mp-reach-next-hop-overrun", BASE + attr(OPT, 14, bytes.fromhex("0002 01 20") + bytes(6)),
     R, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("mp-reach-short", BASE + attr(OPT, 14, bytes.fromhex("0002 01")),
     R, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("mp-reach-bad-nlri", BASE + attr(OPT, 14, bytes.fromhex("0002 01 10") + bytes(17) + b"\x81"),
     R, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("mp-reach-flags", BASE + attr(OPT_T, 14, bytes.fromhex("0001 01 04 0a000001 00")),
     R, U.ATTRIBUTE_FLAGS_ERROR),
    ("mp-unreach-bad-nlri", BASE + attr(OPT, 15, bytes.fromhex("0001 01 20 0a00")),
     R, U.OPTIONAL_ATTRIBUTE_ERROR),
    ("mp-unreach-short", BASE + attr(OPT, 15, bytes.fromhex("0001")), R,
     U.OPTIONAL_ATTRIBUTE_ERROR),
    # RFC 6793 6: AS4_PATH and AS4_AGGREGATOR are discarded when malformed
    ("as4-path-malformed", BASE + attr(OPT_T, 17, bytes.fromhex("02 02 00000001")), D,
     U.MALFORMED_AS_PATH),
    ("as4-aggregator-length", BASE + attr(OPT_T, 18, bytes(6)), D, U.ATTRIBUTE_LENGTH_ERROR),
    # 3(g) duplicates
    ("duplicate-origin", BASE + attr(WK, 1, b"\x02"), D, U.MALFORMED_ATTRIBUTE_LIST),
    ("duplicate-unknown", BASE + attr(OPT_T, 99, b"a") + attr(OPT_T, 99, b"b"), D,
     U.MALFORMED_ATTRIBUTE_LIST),
    ("duplicate-mp-reach", BASE + MP6 + MP6, R, U.MALFORMED_ATTRIBUTE_LIST),
    ("duplicate-mp-unreach", BASE + attr(OPT, 15, bytes.fromhex("000201")) * 2, R,
     U.MALFORMED_ATTRIBUTE_LIST),
    # 3(d) missing well-known mandatory attributes, with NLRI present
    ("missing-origin", AS_PATH + NEXT_HOP, T, U.MISSING_WELL_KNOWN_ATTRIBUTE),
    ("missing-as-path", ORIGIN + NEXT_HOP, T, U.MISSING_WELL_KNOWN_ATTRIBUTE),
    ("missing-next-hop", ORIGIN + AS_PATH, T, U.MISSING_WELL_KNOWN_ATTRIBUTE),
    # RFC 4271 6.3, not revised by RFC 7606: an unrecognized well-known attribute
    ("unrecognized-well-known", BASE + attr(WK, 200, b"x"), R,
     U.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE),
    # section 4: the attribute list itself
    ("attribute-overruns-list", BASE + bytes.fromhex("c0 63 05 0000"), T,
     U.ATTRIBUTE_LENGTH_ERROR),
    ("trailing-octets-in-list", BASE + bytes.fromhex("c0 63"), T, U.ATTRIBUTE_LENGTH_ERROR),
    ("trailing-octets-extended", BASE + bytes.fromhex("d0 63 00"), T, U.ATTRIBUTE_LENGTH_ERROR),
]


@pytest.mark.parametrize(("name", "attrs", "action", "subcode"), CASES, ids=[c[0] for c in CASES])
def test_rfc7606_action(name: str, attrs: bytes, action: Action, subcode: UpdateSubcode) -> None:
    r = decode_update(body(attrs))
    assert r.action == action, r.problems
    assert r.problems[0].action == action and r.problems[0].subcode == subcode, r.problems
    if action == R:
        assert r.notification() == (ErrorCode.UPDATE_MESSAGE_ERROR, subcode, r.problems[0].data)
        assert r.announce() == () and r.withdraw() == ()
    elif action == T:
        assert r.announce() == ()
        assert IPv4Network("10.1.0.0/16") in r.withdraw()
    else:
        assert r.announce() == (IPv4Network("10.1.0.0/16"),)
    with pytest.raises(Exception) as ei:
        Update.from_wire(b"\xff" * 16 + struct.pack("!HB", 19 + len(body(attrs)), 2) + body(attrs))
    assert getattr(ei.value, "code", None) == ErrorCode.UPDATE_MESSAGE_ERROR


def test_table_covers_every_known_attribute() -> None:
    assert set(MALFORMED_ACTION) == set(AttrType)


def test_discarded_attributes_are_gone_and_the_rest_kept() -> None:
    r = decode_update(body(BASE + attr(WK, 6, b"\x01") + attr(WK, 1, b"\x02")))
    assert r.action == D
    types = [a.type_code for a in r.update.attributes]
    assert types == [1, 2, 3]
    assert r.update.attributes[0] == OriginAttr(Origin.IGP)  # the first ORIGIN wins


def test_ebgp_drops_ibgp_only_attributes_silently() -> None:
    ctx = WireContext(ebgp=True)
    extra = attr(WK, 5, bytes(4)) + attr(OPT, 9, bytes(4)) + attr(OPT, 10, bytes(4))
    r = decode_update(body(BASE + extra), ctx)
    assert r.action == D
    assert [a.type_code for a in r.update.attributes] == [1, 2, 3]
    assert r.announce() == (IPv4Network("10.1.0.0/16"),)
    # a malformed LOCAL_PREF from an external peer is just dropped too
    assert decode_update(body(BASE + attr(WK, 5, bytes(2))), ctx).action == D
    assert decode_update(body(BASE + extra)).action == N  # iBGP keeps them


def test_ebgp_first_as_must_be_the_peer() -> None:
    assert decode_update(body(BASE), WireContext(ebgp=True, peer_as=65001)).action == N
    r = decode_update(body(BASE), WireContext(ebgp=True, peer_as=65002))
    assert r.action == T and r.problems[0].subcode == U.MALFORMED_AS_PATH
    two = attr(WK, 2, bytes.fromhex("02 01") + AS_TRANS.to_bytes(2, "big"))
    ctx2 = WireContext(as4=False, ebgp=True, peer_as=4200000000)
    assert decode_update(body(ORIGIN + two + NEXT_HOP), ctx2).action == N


@pytest.mark.parametrize(("b", "subcode"), [
    (b"\x00", U.MALFORMED_ATTRIBUTE_LIST),
    (bytes.fromhex("0005 0000"), U.MALFORMED_ATTRIBUTE_LIST),  # withdrawn overruns
    (bytes.fromhex("0000 0009 400101"), U.MALFORMED_ATTRIBUTE_LIST),  # attributes overrun
    (body(BASE, nlri=bytes.fromhex("21 0a000000 00")), U.INVALID_NETWORK_FIELD),  # /33
    (body(BASE, nlri=bytes.fromhex("18 0a00")), U.INVALID_NETWORK_FIELD),  # NLRI overrun
    (body(b"", nlri=b"", withdrawn=bytes.fromhex("20 0a")), U.INVALID_NETWORK_FIELD),
])
def test_nlri_and_length_errors_reset_the_session(b: bytes, subcode: UpdateSubcode) -> None:
    r = decode_update(b)
    assert r.action == R and r.problems[0].subcode == subcode
    assert r.notification() == (ErrorCode.UPDATE_MESSAGE_ERROR, subcode, b"")


def test_no_nlri_means_no_mandatory_attributes() -> None:
    assert decode_update(body(b"", nlri=b"")).action == N  # End-of-RIB
    assert decode_update(body(attr(WK, 1, b"\x00"), nlri=b"")).action == N
    # MP_REACH_NLRI needs ORIGIN and AS_PATH but not NEXT_HOP (RFC 4760)
    assert decode_update(body(ORIGIN + AS_PATH + MP6, nlri=b"")).action == N
    r = decode_update(body(ORIGIN + MP6, nlri=b""))
    assert r.action == T and r.problems[0].subcode == U.MISSING_WELL_KNOWN_ATTRIBUTE
    assert r.problems[0].data == bytes([AttrType.AS_PATH])


def test_treat_as_withdraw_withdraws_mp_prefixes_too() -> None:
    r = decode_update(body(ORIGIN + attr(WK, 2, bytes.fromhex("02 00")) + MP6, nlri=b"",
                           withdrawn=bytes.fromhex("08 0b")))
    assert r.action == T
    assert set(r.withdraw()) == {IPv4Network("11.0.0.0/8"), IPv6Network("2001:db8:1::/48")}


def test_most_severe_action_wins() -> None:
    bad_agg = attr(OPT_T, 7, bytes(7))
    bad_comm = attr(OPT_T, 8, bytes(5))
    assert decode_update(body(BASE + bad_agg)).action == D
    assert decode_update(body(BASE + bad_agg + bad_comm)).action == T
    r = decode_update(body(BASE + bad_agg + bad_comm + MP6 + MP6))
    assert r.action == R and len(r.problems) == 3
    assert r.notification() == (ErrorCode.UPDATE_MESSAGE_ERROR, U.MALFORMED_ATTRIBUTE_LIST, b"")


def test_session_reset_notification_carries_the_attribute() -> None:
    bad = attr(WK, 200, b"xyz")
    r = decode_update(body(BASE + bad))
    assert r.notification() == (ErrorCode.UPDATE_MESSAGE_ERROR,
                                U.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, bad)


def test_unknown_optional_attributes_are_kept_and_forwarded_partial() -> None:
    r = decode_update(body(BASE + attr(OPT_T, 99, b"t") + attr(OPT, 98, b"n")))
    assert r.action == N
    unknown = [a for a in r.update.attributes if isinstance(a, UnknownAttribute)]
    assert [(a.code, a.flags) for a in unknown] == [(99, OPT_T), (98, OPT)]
    fwd = forward_attributes(r.update.attributes)
    assert [a.type_code for a in fwd] == [1, 2, 3, 99]
    assert fwd[-1].flags == OPT_T | AttrFlag.PARTIAL
    assert fwd[-1].to_wire()[0] == 0xE0


def test_unknown_mp_family_is_kept_raw() -> None:
    flowspec = attr(OPT, 14, bytes.fromhex("0001 85 00 00"))
    r = decode_update(body(ORIGIN + AS_PATH + flowspec, nlri=b""))
    assert r.action == N
    assert isinstance(r.update.attributes[-1], UnknownAttribute)
    assert r.update.attributes[-1].to_wire() == flowspec


# --- RFC 6793 ---------------------------------------------------------------------------------

SEQ, SET = SegmentType.AS_SEQUENCE, SegmentType.AS_SET
BIG = 4200000000


def test_merge_as4_path_keeps_the_leading_old_speaker_ases() -> None:
    # an OLD speaker (65002) prepended itself after the path left a NEW one
    path = AsPath((AsSegment(SEQ, (65002, AS_TRANS, 65001)),))
    path4 = As4Path((AsSegment(SEQ, (BIG, 65001)),))
    assert merge_as4_path(path, path4) == AsPath((AsSegment(SEQ, (65002, BIG, 65001)),))


def test_merge_as4_path_sets_and_confed() -> None:
    path = AsPath((AsSegment(SegmentType.AS_CONFED_SEQUENCE, (64512,)),
                   AsSegment(SET, (1, 2)), AsSegment(SEQ, (AS_TRANS, 7))))
    path4 = As4Path((AsSegment(SEQ, (BIG, 7)),))
    assert merge_as4_path(path, path4) == AsPath((
        AsSegment(SegmentType.AS_CONFED_SEQUENCE, (64512,)), AsSegment(SET, (1, 2)),
        AsSegment(SEQ, (BIG, 7))))


def test_longer_as4_path_is_ignored() -> None:
    path = AsPath.sequence(AS_TRANS)
    assert merge_as4_path(path, As4Path((AsSegment(SEQ, (BIG, 1)),))) == path


def test_reconcile_as4_and_aggregator() -> None:
    a = IPv4Address("10.0.0.9")
    u = Update(attributes=(AsPath.sequence(65002, AS_TRANS), Aggregator(AS_TRANS, a),
                           As4Path((AsSegment(SEQ, (BIG,)),)), As4Aggregator(BIG, a)))
    got = reconcile_as4(u)
    assert got.attributes == (AsPath.sequence(65002, BIG), Aggregator(BIG, a))
    # AGGREGATOR naming a real 2-octet AS: the AS4_ attributes are stale, both ignored
    stale = Update(attributes=(AsPath.sequence(65002, AS_TRANS), Aggregator(65002, a),
                               As4Path((AsSegment(SEQ, (BIG,)),)), As4Aggregator(BIG, a)))
    assert reconcile_as4(stale).attributes == (AsPath.sequence(65002, AS_TRANS),
                                               Aggregator(65002, a))


def test_downgrade_then_decode_on_a_two_octet_session_then_reconcile() -> None:
    a = IPv4Address("10.0.0.9")
    u = Update(attributes=(OriginAttr(Origin.IGP), AsPath.sequence(BIG, 65001),
                           NextHop(a), Aggregator(BIG, a)), nlri=(IPv4Network("10.0.0.0/8"),))
    ctx = WireContext(as4=False)
    down = downgrade_as4(u)
    got = Update.from_wire(down.to_wire(ctx), ctx)
    assert got.get(AttrType.AS_PATH) == AsPath.sequence(AS_TRANS, 65001)
    assert reconcile_as4(got) == u
    assert downgrade_as4(Update(attributes=(AsPath.sequence(1),))).attributes == (
        AsPath.sequence(1),)


def test_mp_reach_keeps_link_local_next_hop() -> None:
    r = decode_update(body(ORIGIN + AS_PATH + attr(OPT, 14, bytes.fromhex("0002 01 20")
                      + bytes.fromhex("20010db8000000000000000000000001")
                      + bytes.fromhex("fe800000000000000000000000000001") + b"\x00"), nlri=b""))
    mp = r.update.get(AttrType.MP_REACH_NLRI)
    assert isinstance(mp, MpReachNlri)
    assert [str(h) for h in mp.next_hops] == ["2001:db8::1", "fe80::1"]
    assert (mp.afi, mp.safi) == (Afi.IPV6, Safi.UNICAST)


def test_confederation_segments_from_an_external_peer() -> None:
    confed = ORIGIN + attr(WK, 2, bytes.fromhex("03 01 0000fc00 02 01 0000fde9")) + NEXT_HOP
    assert decode_update(body(confed)).action == N  # iBGP (inside a confederation): fine
    r = decode_update(body(confed), WireContext(ebgp=True))
    assert r.action == T and r.problems[0].subcode == U.MALFORMED_AS_PATH
