"""UPDATE messages (RFC 4271 4.3) and their error handling per RFC 7606.

``decode_update`` never raises: it parses as much as RFC 7606 lets it and returns an
``UpdateResult`` whose ``action`` is the single reaction the whole message gets (the most
severe one of its problems). ``Update.from_wire`` is the strict form: it raises
``MessageError`` unless the message is clean.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from ipaddress import IPv4Address, IPv4Network
from typing import cast

from kubewire.bgp.attributes import (
    DEFAULT_CONTEXT,
    Aggregator,
    As4Aggregator,
    As4Path,
    AsPath,
    AsSegment,
    Attribute,
    Communities,
    LocalPref,
    Malformed,
    MpReachNlri,
    MpUnreachNlri,
    MultiExitDisc,
    NextHop,
    OriginAttr,
    UnknownAttribute,
    WireContext,
    decode_attribute,
)
from kubewire.bgp.constants import (
    AS_TRANS,
    ATTR_FLAGS,
    Afi,
    AttrFlag,
    AttrType,
    ErrorCode,
    MessageType,
    Origin,
    SegmentType,
    UpdateSubcode,
)
from kubewire.bgp.errors import EncodeError, MessageError
from kubewire.bgp.nlri import (
    NlriFormatError,
    Prefix,
    decode_prefix_keys,
    encode_prefixes,
    key_prefix,
    prefix_key,
)


class Action(IntEnum):
    """RFC 7606 2 approaches, ordered by severity (the message gets the worst one)."""

    NONE = 0
    ATTRIBUTE_DISCARD = 1
    TREAT_AS_WITHDRAW = 2
    SESSION_RESET = 3


# RFC 7606 7 (and RFC 6793 6 for the AS4_ attributes, RFC 8092 6 for large communities):
# the reaction to a malformed instance of each attribute, Attribute Flags errors included (3c).
MALFORMED_ACTION: dict[AttrType, Action] = {
    AttrType.ORIGIN: Action.TREAT_AS_WITHDRAW,  # 7.1
    AttrType.AS_PATH: Action.TREAT_AS_WITHDRAW,  # 7.2
    AttrType.NEXT_HOP: Action.TREAT_AS_WITHDRAW,  # 7.3
    AttrType.MULTI_EXIT_DISC: Action.TREAT_AS_WITHDRAW,  # 7.4
    AttrType.LOCAL_PREF: Action.TREAT_AS_WITHDRAW,  # 7.5
    AttrType.ATOMIC_AGGREGATE: Action.ATTRIBUTE_DISCARD,  # 7.6
    AttrType.AGGREGATOR: Action.ATTRIBUTE_DISCARD,  # 7.7
    AttrType.COMMUNITIES: Action.TREAT_AS_WITHDRAW,  # 7.8
    AttrType.ORIGINATOR_ID: Action.TREAT_AS_WITHDRAW,  # 7.9
    AttrType.CLUSTER_LIST: Action.TREAT_AS_WITHDRAW,  # 7.10
    AttrType.MP_REACH_NLRI: Action.SESSION_RESET,  # 7.11 (AFI/SAFI disable not offered)
    AttrType.MP_UNREACH_NLRI: Action.SESSION_RESET,  # 7.12
    AttrType.EXTENDED_COMMUNITIES: Action.TREAT_AS_WITHDRAW,  # 7.14
    AttrType.AS4_PATH: Action.ATTRIBUTE_DISCARD,  # RFC 6793 6
    AttrType.AS4_AGGREGATOR: Action.ATTRIBUTE_DISCARD,  # RFC 6793 6
    AttrType.LARGE_COMMUNITIES: Action.TREAT_AS_WITHDRAW,  # RFC 8092 6
}

# Attributes an external peer must not send: dropped silently (RFC 7606 7.5, 7.9, 7.10).
IBGP_ONLY = (AttrType.LOCAL_PREF, AttrType.ORIGINATOR_ID, AttrType.CLUSTER_LIST)
# Plain ints and a dict for the attribute loop: an enum call or an IntFlag operation costs
# ~1 us each, and a new attribute set meets a dozen of them.
_EXTENDED_LENGTH = int(AttrFlag.EXTENDED_LENGTH)
_OPTIONAL = int(AttrFlag.OPTIONAL)
_ATTR_TYPE = {int(t): t for t in AttrType}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a received UPDATE, and what RFC 7606 does about it."""

    action: Action
    subcode: UpdateSubcode
    reason: str
    attr_type: int | None = None
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Update:
    """An UPDATE: IPv4 withdrawals, path attributes in wire order, IPv4 NLRI."""

    withdrawn: tuple[IPv4Network, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    nlri: tuple[IPv4Network, ...] = ()

    def get(self, code: int) -> Attribute | None:
        for a in self.attributes:
            if a.type_code == code:
                return a
        return None

    @property
    def is_end_of_rib(self) -> bool:
        """RFC 4724 2: an empty UPDATE (IPv4), or one holding only an empty MP_UNREACH_NLRI."""
        if self.withdrawn or self.nlri:
            return False
        if not self.attributes:
            return True
        return (
            len(self.attributes) == 1
            and isinstance(self.attributes[0], MpUnreachNlri)
            and not self.attributes[0].withdrawn
        )

    def reachable(self) -> tuple[Prefix, ...]:
        mp = self.get(AttrType.MP_REACH_NLRI)
        return self.nlri + (mp.nlri if isinstance(mp, MpReachNlri) else ())

    def unreachable(self) -> tuple[Prefix, ...]:
        mp = self.get(AttrType.MP_UNREACH_NLRI)
        return self.withdrawn + (mp.withdrawn if isinstance(mp, MpUnreachNlri) else ())

    def body_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        w = encode_prefixes(self.withdrawn, Afi.IPV4)
        a = b"".join(x.to_wire(ctx) for x in self.attributes)
        n = encode_prefixes(self.nlri, Afi.IPV4)
        if len(w) > 0xFFFF or len(a) > 0xFFFF:
            raise EncodeError("UPDATE withdrawn routes or attributes longer than 65535 octets")
        return struct.pack("!H", len(w)) + w + struct.pack("!H", len(a)) + a + n

    def to_wire(self, ctx: WireContext = DEFAULT_CONTEXT, max_len: int = 4096) -> bytes:
        from kubewire.bgp.messages import frame

        return frame(MessageType.UPDATE, self.body_to_wire(ctx), max_len)

    @classmethod
    def from_wire(cls, data: bytes, ctx: WireContext = DEFAULT_CONTEXT) -> Update:
        """A whole UPDATE message; raises MessageError unless RFC 7606 finds nothing wrong."""
        from kubewire.bgp.messages import split_header

        mtype, body = split_header(data)
        if mtype != MessageType.UPDATE:
            raise MessageError(ErrorCode.MESSAGE_HEADER_ERROR, 3, f"not an UPDATE: type {mtype}")
        return strict(decode_update(body, ctx))


class UpdateResult:
    """What a received UPDATE means after RFC 7606 (an immutable view).

    ``update`` holds what was parsed, minus discarded attributes (duplicates, attribute-
    discard, iBGP-only attributes from eBGP). Use ``announce()``/``withdraw()``: with
    TREAT_AS_WITHDRAW every prefix in the message is withdrawn and none announced.

    ``decode_update`` keeps the NLRI as prefix keys (``nlri.prefix_key``) and builds
    ``update`` (its ``IPv4Network`` tuples) only when asked: the RIB reads
    ``attributes`` and ``announce_keys()``/``withdraw_keys()`` and never needs it.
    """

    __slots__ = ("_attrs", "_nkeys", "_plain", "_update", "_wkeys", "action", "problems")

    action: Action
    problems: tuple[Problem, ...]
    _update: Update | None
    _attrs: tuple[Attribute, ...]
    _wkeys: list[int] | None
    _nkeys: list[int] | None
    _plain: bool  # the attributes hold no MP_(UN)REACH_NLRI: no need to look for them

    def __init__(
        self, update: Update, action: Action = Action.NONE, problems: tuple[Problem, ...] = ()
    ) -> None:
        _set(self, "action", action)
        _set(self, "problems", problems)
        _set(self, "_update", update)
        _set(self, "_attrs", update.attributes)
        _set(self, "_wkeys", None)
        _set(self, "_nkeys", None)
        _set(self, "_plain", False)

    @classmethod
    def from_keys(
        cls,
        attributes: tuple[Attribute, ...],
        withdrawn: list[int],
        nlri: list[int],
        action: Action = Action.NONE,
        problems: tuple[Problem, ...] = (),
        plain: bool = False,
    ) -> UpdateResult:
        """A result whose IPv4 withdrawn routes and NLRI are prefix keys (``plain``: the
        caller knows ``attributes`` hold no MP_(UN)REACH_NLRI)."""
        self = cls.__new__(cls)
        _set(self, "action", action)
        _set(self, "problems", problems)
        _set(self, "_update", None)
        _set(self, "_attrs", attributes)
        _set(self, "_wkeys", withdrawn)
        _set(self, "_nkeys", nlri)
        _set(self, "_plain", plain)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"UpdateResult is immutable (cannot set {name})")

    @property
    def update(self) -> Update:
        u = self._update
        if u is None:
            w = cast(tuple[IPv4Network, ...], tuple(map(key_prefix, self._wkeys or ())))
            n = cast(tuple[IPv4Network, ...], tuple(map(key_prefix, self._nkeys or ())))
            u = Update(w, self._attrs, n)
            _set(self, "_update", u)
        return u

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        return self._attrs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UpdateResult):
            return NotImplemented
        return (self.update, self.action, self.problems) == (
            other.update, other.action, other.problems
        )

    def __hash__(self) -> int:
        return hash((self.update, self.action, self.problems))

    def __repr__(self) -> str:
        return (f"UpdateResult(update={self.update!r}, action={self.action!r},"
                f" problems={self.problems!r})")

    def announce(self) -> tuple[Prefix, ...]:
        if self.action >= Action.TREAT_AS_WITHDRAW:
            return ()
        return self.update.reachable()

    def withdraw(self) -> tuple[Prefix, ...]:
        if self.action == Action.SESSION_RESET:
            return ()
        if self.action == Action.TREAT_AS_WITHDRAW:
            return self.update.unreachable() + self.update.reachable()
        return self.update.unreachable()

    def _keys(self, nlri: bool) -> list[int]:
        mine = self._nkeys if nlri else self._wkeys
        if mine is None:  # built from an Update
            u = self.update
            mine = [prefix_key(p) for p in (u.nlri if nlri else u.withdrawn)]
        if self._plain:
            return mine
        # by class, not type code: an MP attribute of a family we do not know is kept as an
        # UnknownAttribute with the same code, and has no prefixes for us
        for a in self._attrs:
            if nlri and isinstance(a, MpReachNlri):
                return [*mine, *map(prefix_key, a.nlri)]
            if not nlri and isinstance(a, MpUnreachNlri):
                return [*mine, *map(prefix_key, a.withdrawn)]
        return mine

    def announce_keys(self) -> list[int]:
        """``announce()`` as prefix keys (IPv4 NLRI first, then MP_REACH_NLRI's)."""
        if self.action >= Action.TREAT_AS_WITHDRAW:
            return []
        return self._keys(True)

    def withdraw_keys(self) -> list[int]:
        """``withdraw()`` as prefix keys."""
        if self.action == Action.SESSION_RESET:
            return []
        if self.action == Action.TREAT_AS_WITHDRAW:
            return self._keys(False) + self._keys(True)
        return self._keys(False)

    def notification(self) -> tuple[ErrorCode, int, bytes] | None:
        """The NOTIFICATION to send (code, subcode, data) when the session must be reset."""
        for p in self.problems:
            if p.action == Action.SESSION_RESET:
                return ErrorCode.UPDATE_MESSAGE_ERROR, int(p.subcode), p.data
        return None


_set = object.__setattr__


def strict(res: UpdateResult) -> Update:
    """The update, or MessageError naming its worst problem if it has any."""
    if res.problems:
        p = res.problems[0]
        raise MessageError(ErrorCode.UPDATE_MESSAGE_ERROR, p.subcode, p.reason, p.data)
    return res.update


def _reset(subcode: UpdateSubcode, reason: str, data: bytes = b"") -> UpdateResult:
    return UpdateResult(
        Update(),
        Action.SESSION_RESET,
        (Problem(Action.SESSION_RESET, subcode, reason, None, data),),
    )


def decode_update(body: bytes, ctx: WireContext = DEFAULT_CONTEXT) -> UpdateResult:
    """Classify and parse an UPDATE body (the octets after the 19-octet header)."""
    if len(body) < 4:
        return _reset(UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, "UPDATE shorter than 4 octets")
    wlen = body[0] << 8 | body[1]
    if 2 + wlen + 2 > len(body):
        return _reset(
            UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, "Withdrawn Routes Length overruns the message"
        )
    alen = body[2 + wlen] << 8 | body[3 + wlen]
    if 4 + wlen + alen > len(body):
        return _reset(
            UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
            "Total Path Attribute Length overruns the message",
        )
    # RFC 7606 5.3: NLRI that cannot be parsed exactly leaves nothing to withdraw: reset.
    try:
        withdrawn = decode_prefix_keys(body[2 : 2 + wlen], Afi.IPV4) if wlen else []
        nlri = decode_prefix_keys(body[4 + wlen + alen :], Afi.IPV4)
    except NlriFormatError as e:
        return _reset(UpdateSubcode.INVALID_NETWORK_FIELD, f"NLRI: {e}")

    attributes, action, problems, plain = _attributes(
        bytes(body[4 + wlen : 4 + wlen + alen]), ctx, bool(nlri)
    )
    return UpdateResult.from_keys(attributes, withdrawn, nlri, action, problems, plain)


# Full tables repeat attribute sets: thousands of UPDATEs carry a few hundred distinct ones
# (as BIRD, we share them). Parsing one costs ~100 us, so parsed sets are kept by their
# octets; every object in them is immutable. Bounded: cleared when full. Sets carrying
# MP_(UN)REACH_NLRI hold prefixes, so they differ every time: never kept (so every kept set
# is "plain", the last item: no MP attribute in it).
_Attrs = tuple[tuple[Attribute, ...], Action, tuple[Problem, ...], bool]
_ATTR_CACHE: dict[tuple[bytes, WireContext, bool], _Attrs] = {}
_ATTR_CACHE_SIZE = 4096


def _attributes(data: bytes, ctx: WireContext, has_nlri: bool) -> _Attrs:
    key = (data, ctx, has_nlri)
    got = _ATTR_CACHE.get(key)
    if got is None:
        if len(_ATTR_CACHE) >= _ATTR_CACHE_SIZE:
            _ATTR_CACHE.clear()
        fast = _parse_common(data, ctx, has_nlri)
        if fast is not None:
            got = (fast, Action.NONE, (), True)  # _parse_common takes no MP attributes
        else:
            attrs, action, problems = _parse_attributes(data, ctx, has_nlri)
            plain = not any(isinstance(a, MpReachNlri | MpUnreachNlri) for a in attrs)
            got = (attrs, action, problems, plain)
            if not plain:
                return got
        _ATTR_CACHE[key] = got
    return got


# The common attributes, pre-built or built without dataclass __init__ (which sets each
# field through object.__setattr__): an ORIGIN is one of three values, a feed has few next
# hops and MEDs. All are immutable, so sharing them is safe.
_ORIGINS = {o: OriginAttr(Origin(o)) for o in range(3)}
_SEGMENT_TYPES = {1: SegmentType.AS_SET, 2: SegmentType.AS_SEQUENCE}
_SMALL_VALUES: dict[tuple[int, bytes], Attribute] = {}  # (code, value) -> NEXT_HOP, MED, ...
_new = object.__new__
# (slot descriptors, looked up by name: mypy will not let a class touch them directly)
_SET_SEG_TYPE, _SET_SEG_ASNS, _SET_SEGMENTS = (
    getattr(cls, name).__set__
    for cls, name in ((AsSegment, "type"), (AsSegment, "asns"), (AsPath, "segments"))
)
_AS_PATH_FMT = {True: ">{}I".format, False: ">{}H".format}


def _small_value(code: int, value: bytes) -> Attribute:
    key = (code, value)
    got = _SMALL_VALUES.get(key)
    if got is None:
        if len(_SMALL_VALUES) >= 1024:
            _SMALL_VALUES.clear()
        n = int.from_bytes(value, "big")
        if code == 3:
            got = NextHop(IPv4Address(n))
        elif code == 4:
            got = MultiExitDisc(n)
        else:
            got = LocalPref(n)
        _SMALL_VALUES[key] = got
    return got


def _parse_common(data: bytes, ctx: WireContext, has_nlri: bool) -> tuple[Attribute, ...] | None:
    """The attribute list when it is well formed and made only of ORIGIN, AS_PATH (AS_SET and
    AS_SEQUENCE segments), NEXT_HOP, MULTI_EXIT_DISC, LOCAL_PREF (iBGP) and COMMUNITIES, each
    once: what nearly every UPDATE of a full table carries. Then RFC 7606 finds nothing, and
    this gives the attributes ``_parse_attributes`` would, in a fraction of its time (no
    Problem bookkeeping, no per-attribute dispatch or enum lookups). Anything else (another
    attribute, a duplicate, a flag, length or value that is wrong, a missing mandatory one,
    a failed semantic check): None, and ``_parse_attributes`` judges it."""
    attrs: list[Attribute] = []
    seen = 0  # bit per attribute code
    i, end = 0, len(data)
    path: AsPath | None = None
    as4 = ctx.as4
    while i < end:
        if end - i < 3:
            return None
        flags, code = data[i], data[i + 1]
        if flags & 0x10:  # Extended Length
            if end - i < 4:
                return None
            v = i + 4
            j = v + (data[i + 2] << 8 | data[i + 3])
        else:
            v = i + 3
            j = v + data[i + 2]
        if j > end or code > 8 or seen >> code & 1:
            return None
        seen |= 1 << code
        opt = flags & 0xC0
        if code == 2:  # AS_PATH
            if opt != 0x40:
                return None
            width = 4 if as4 else 2
            segs: list[AsSegment] = []
            k = v
            while k < j:
                if j - k < 2:
                    return None
                stype = _SEGMENT_TYPES.get(data[k])
                count = data[k + 1]
                m = k + 2 + count * width
                if stype is None or not count or m > j:
                    return None  # confederation segments too: RFC 5065 checks are the full parser's
                seg = _new(AsSegment)
                _SET_SEG_TYPE(seg, stype)
                _SET_SEG_ASNS(seg, struct.unpack_from(_AS_PATH_FMT[as4](count), data, k + 2))
                segs.append(seg)
                k = m
            path = _new(AsPath)
            _SET_SEGMENTS(path, tuple(segs))
            attrs.append(path)
        elif code == 1:  # ORIGIN
            if opt != 0x40 or j - v != 1 or data[v] > 2:
                return None
            attrs.append(_ORIGINS[data[v]])
        elif code == 3:  # NEXT_HOP, a host address (RFC 4271 6.3)
            if opt != 0x40 or j - v != 4:
                return None
            first, value = data[v], data[v:j]
            if 224 <= first <= 239 or value in (b"\0\0\0\0", b"\xff\xff\xff\xff"):
                return None
            attrs.append(_small_value(3, value))
        elif code == 4 or code == 5:  # MULTI_EXIT_DISC, LOCAL_PREF (not from eBGP)
            if opt != (0x80 if code == 4 else 0x40) or j - v != 4 or (code == 5 and ctx.ebgp):
                return None
            attrs.append(_small_value(code, data[v:j]))
        elif code == 8:  # COMMUNITIES
            if opt != 0xC0 or j == v or (j - v) & 3:
                return None
            attrs.append(Communities(struct.unpack_from(f">{(j - v) >> 2}I", data, v)))
        else:
            return None
        i = j
    if has_nlri:
        # RFC 7606 3(d): ORIGIN, AS_PATH and NEXT_HOP present (else the full parser)
        if seen & 0b1110 != 0b1110:
            return None
        if ctx.ebgp and ctx.peer_as is not None:
            assert path is not None
            first_as = path.first_as()
            if first_as != ctx.peer_as and not (first_as == AS_TRANS and ctx.peer_as > 0xFFFF):
                return None
    return tuple(attrs)


def _parse_attributes(
    data: bytes, ctx: WireContext, has_nlri: bool
) -> tuple[tuple[Attribute, ...], Action, tuple[Problem, ...]]:
    """The path attributes of an UPDATE and their RFC 7606 verdict (``has_nlri``: the NLRI
    field is not empty)."""
    problems: list[Problem] = []
    attrs: list[Attribute] = []
    seen: set[int] = set()
    i, end = 0, len(data)
    while i < end:
        flags = data[i]
        hdr = 4 if flags & _EXTENDED_LENGTH else 3
        if end - i < hdr:
            # RFC 7606 4: too few octets left for an attribute header
            problems.append(
                Problem(
                    Action.TREAT_AS_WITHDRAW,
                    UpdateSubcode.ATTRIBUTE_LENGTH_ERROR,
                    f"{end - i} trailing octets in the attribute list",
                )
            )
            break
        code = data[i + 1]
        alen_ = int.from_bytes(data[i + 2 : i + hdr], "big")
        if i + hdr + alen_ > end:
            # RFC 7606 4: the last attribute overruns the Total Path Attribute Length
            problems.append(
                Problem(
                    Action.TREAT_AS_WITHDRAW,
                    UpdateSubcode.ATTRIBUTE_LENGTH_ERROR,
                    f"attribute {code} overruns the attribute list",
                    code,
                )
            )
            break
        value = data[i + hdr : i + hdr + alen_]
        raw = data[i : i + hdr + alen_]
        i += hdr + alen_
        if code in seen:
            if code in (AttrType.MP_REACH_NLRI, AttrType.MP_UNREACH_NLRI):
                problems.append(
                    Problem(
                        Action.SESSION_RESET,
                        UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
                        f"attribute {code} appears twice",
                        code,
                    )
                )
            else:  # RFC 7606 3(g): keep the first, drop the rest
                problems.append(
                    Problem(
                        Action.ATTRIBUTE_DISCARD,
                        UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
                        f"duplicate attribute {code} discarded",
                        code,
                    )
                )
            continue
        seen.add(code)
        if code not in ATTR_FLAGS:
            if not flags & _OPTIONAL:
                problems.append(
                    Problem(
                        Action.SESSION_RESET,
                        UpdateSubcode.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                        f"unrecognized well-known attribute {code}",
                        code,
                        raw,
                    )
                )
            else:
                attrs.append(UnknownAttribute(code, flags & 0xE0, bytes(value)))
            continue
        t = _ATTR_TYPE[code]
        if ctx.ebgp and t in IBGP_ONLY:
            problems.append(
                Problem(
                    Action.ATTRIBUTE_DISCARD,
                    UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
                    f"{t.name} from an external peer discarded",
                    code,
                )
            )
            continue
        want = ATTR_FLAGS[t]
        try:
            if (flags & 0xC0) != want:
                raise Malformed(
                    UpdateSubcode.ATTRIBUTE_FLAGS_ERROR,
                    f"{t.name} flags 0x{flags:02x}, Optional/Transitive must be 0x{int(want):02x}",
                )
            attr = decode_attribute(code, bytes(value), ctx)
        except Malformed as m:
            act = MALFORMED_ACTION[t]
            problems.append(Problem(act, m.subcode, f"{t.name}: {m.reason}", code, raw))
            continue
        attrs.append(attr)

    attributes = tuple(attrs)
    has_reach = has_nlri or AttrType.MP_REACH_NLRI in seen
    if has_reach:
        # RFC 7606 3(d): a missing well-known mandatory attribute means treat-as-withdraw
        # (RFC 4760 leaves NEXT_HOP mandatory only with NLRI in the NLRI field).
        need = [AttrType.ORIGIN, AttrType.AS_PATH] + ([AttrType.NEXT_HOP] if has_nlri else [])
        for t in need:
            if t not in seen:
                problems.append(
                    Problem(
                        Action.TREAT_AS_WITHDRAW,
                        UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE,
                        f"missing well-known attribute {t.name}",
                        t,
                        bytes([t]),
                    )
                )
    nh = _get(attributes, AttrType.NEXT_HOP)
    if isinstance(nh, NextHop) and (
        nh.address.is_multicast
        or nh.address.is_unspecified
        or nh.address.packed == b"\xff\xff\xff\xff"
    ):
        # RFC 4271 6.3 semantic check; RFC 7606 7.3 makes it treat-as-withdraw
        problems.append(
            Problem(
                Action.TREAT_AS_WITHDRAW,
                UpdateSubcode.INVALID_NEXT_HOP_ATTRIBUTE,
                f"NEXT_HOP {nh.address} is not a host address",
                AttrType.NEXT_HOP,
            )
        )
    path = _get(attributes, AttrType.AS_PATH)
    confed = (SegmentType.AS_CONFED_SEQUENCE, SegmentType.AS_CONFED_SET)
    if ctx.ebgp and isinstance(path, AsPath) and any(s.type in confed for s in path.segments):
        # RFC 5065 5: confederation segments never leave the confederation
        problems.append(
            Problem(
                Action.TREAT_AS_WITHDRAW,
                UpdateSubcode.MALFORMED_AS_PATH,
                "AS_PATH from an external peer holds confederation segments",
                AttrType.AS_PATH,
            )
        )
    if ctx.ebgp and ctx.peer_as is not None and isinstance(path, AsPath) and has_reach:
        first = path.first_as()
        if first != ctx.peer_as and not (first == AS_TRANS and ctx.peer_as > 0xFFFF):
            problems.append(
                Problem(
                    Action.TREAT_AS_WITHDRAW,
                    UpdateSubcode.MALFORMED_AS_PATH,
                    f"AS_PATH starts with {first}, not the peer's AS {ctx.peer_as}",
                    AttrType.AS_PATH,
                )
            )
    action = max((p.action for p in problems), default=Action.NONE)
    problems.sort(key=lambda p: -p.action)
    return attributes, action, tuple(problems)

def _get(attributes: tuple[Attribute, ...], code: int) -> Attribute | None:
    for a in attributes:
        if a.type_code == code:
            return a
    return None


# --- RFC 6793: talking to 2-octet ("OLD") speakers -------------------------------------------


def _count(segments: tuple[AsSegment, ...]) -> int:
    return AsPath(segments).path_length()


def merge_as4_path(as_path: AsPath, as4_path: As4Path) -> AsPath:
    """RFC 6793 4.2.3: rebuild the true path from a 2-octet AS_PATH and an AS4_PATH.

    If AS4_PATH is longer than AS_PATH it is ignored; otherwise the leading ASes that AS_PATH
    has in excess (added by OLD speakers) are kept and AS4_PATH follows them."""
    n, n4 = as_path.path_length(), _count(as4_path.segments)
    if n4 > n:
        return as_path
    need = n - n4
    head: list[AsSegment] = []
    for seg in as_path.segments:
        if seg.type in (SegmentType.AS_CONFED_SEQUENCE, SegmentType.AS_CONFED_SET):
            head.append(seg)
            continue
        if need == 0:
            break
        if seg.type == SegmentType.AS_SET:
            head.append(seg)
            need -= 1
        else:
            take = seg.asns[:need]
            head.append(AsSegment(seg.type, take))
            need -= len(take)
    tail = list(as4_path.segments)
    if head and tail and head[-1].type == tail[0].type == SegmentType.AS_SEQUENCE:
        tail[0] = AsSegment(SegmentType.AS_SEQUENCE, head.pop().asns + tail[0].asns)
    return AsPath(tuple(head + tail))


def reconcile_as4(update: Update) -> Update:
    """Fold AS4_PATH/AS4_AGGREGATOR into AS_PATH/AGGREGATOR, for UPDATEs from a 2-octet peer.

    RFC 6793 4.2.3: when AGGREGATOR names a real 2-octet AS (not AS_TRANS), the AS4_
    attributes are stale and both are ignored."""
    path, path4 = update.get(AttrType.AS_PATH), update.get(AttrType.AS4_PATH)
    agg, agg4 = update.get(AttrType.AGGREGATOR), update.get(AttrType.AS4_AGGREGATOR)
    use4 = True
    new_agg = agg
    if isinstance(agg, Aggregator) and isinstance(agg4, As4Aggregator):
        if agg.asn == AS_TRANS:
            new_agg = Aggregator(agg4.asn, agg4.address)
        else:
            use4 = False
    new_path = path
    if use4 and isinstance(path, AsPath) and isinstance(path4, As4Path):
        new_path = merge_as4_path(path, path4)
    out: list[Attribute] = []
    for a in update.attributes:
        if a.type_code in (AttrType.AS4_PATH, AttrType.AS4_AGGREGATOR):
            continue
        if a.type_code == AttrType.AS_PATH and new_path is not None:
            a = new_path
        elif a.type_code == AttrType.AGGREGATOR and new_agg is not None:
            a = new_agg
        out.append(a)
    return replace(update, attributes=tuple(out))


def downgrade_as4(update: Update) -> Update:
    """For sending to a 2-octet peer: add AS4_PATH/AS4_AGGREGATOR when AS_PATH or AGGREGATOR
    holds an AS above 65535 (the encoder writes AS_TRANS in its place). RFC 6793 4.2.2:
    confederation segments are not copied into AS4_PATH."""
    extra: list[Attribute] = []
    path = update.get(AttrType.AS_PATH)
    if isinstance(path, AsPath) and any(a > 0xFFFF for a in path.all_asns()):
        segs = tuple(
            s for s in path.segments if s.type in (SegmentType.AS_SEQUENCE, SegmentType.AS_SET)
        )
        extra.append(As4Path(segs))
    agg = update.get(AttrType.AGGREGATOR)
    if isinstance(agg, Aggregator) and agg.asn > 0xFFFF:
        extra.append(As4Aggregator(agg.asn, agg.address))
    kept = tuple(
        a
        for a in update.attributes
        if a.type_code not in (AttrType.AS4_PATH, AttrType.AS4_AGGREGATOR)
    )
    return replace(update, attributes=kept + tuple(extra))


def forward_attributes(attributes: tuple[Attribute, ...]) -> tuple[Attribute, ...]:
    """Attributes as passed on to another peer: unknown optional transitive ones get the
    Partial bit, unknown non-transitive ones are dropped (RFC 4271 5)."""
    out: list[Attribute] = []
    for a in attributes:
        if isinstance(a, UnknownAttribute):
            f = a.forwarded()
            if f is not None:
                out.append(f)
        else:
            out.append(a)
    return tuple(out)
