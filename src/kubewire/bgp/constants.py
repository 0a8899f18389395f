"""Numbers from the IANA BGP registries, as enums named like the RFCs name them."""

from __future__ import annotations

from enum import IntEnum, IntFlag

MARKER = b"\xff" * 16
HEADER_LEN = 19
MAX_MESSAGE_LEN = 4096  # RFC 4271 4.1; RFC 8654 extended messages raise it to 65535
AS_TRANS = 23456  # RFC 6793: stands in for a 4-octet AS where only 2 octets fit
BGP_VERSION = 4


class MessageType(IntEnum):
    OPEN = 1
    UPDATE = 2
    NOTIFICATION = 3
    KEEPALIVE = 4
    ROUTE_REFRESH = 5  # RFC 2918


class ErrorCode(IntEnum):
    """NOTIFICATION error codes (RFC 4271 4.5, RFC 2918/7313 for 7)."""

    MESSAGE_HEADER_ERROR = 1
    OPEN_MESSAGE_ERROR = 2
    UPDATE_MESSAGE_ERROR = 3
    HOLD_TIMER_EXPIRED = 4
    FINITE_STATE_MACHINE_ERROR = 5
    CEASE = 6
    ROUTE_REFRESH_MESSAGE_ERROR = 7


class HeaderSubcode(IntEnum):
    CONNECTION_NOT_SYNCHRONIZED = 1
    BAD_MESSAGE_LENGTH = 2
    BAD_MESSAGE_TYPE = 3


class OpenSubcode(IntEnum):
    UNSPECIFIC = 0
    UNSUPPORTED_VERSION_NUMBER = 1
    BAD_PEER_AS = 2
    BAD_BGP_IDENTIFIER = 3
    UNSUPPORTED_OPTIONAL_PARAMETER = 4
    UNACCEPTABLE_HOLD_TIME = 6
    UNSUPPORTED_CAPABILITY = 7  # RFC 5492


class UpdateSubcode(IntEnum):
    MALFORMED_ATTRIBUTE_LIST = 1
    UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 2
    MISSING_WELL_KNOWN_ATTRIBUTE = 3
    ATTRIBUTE_FLAGS_ERROR = 4
    ATTRIBUTE_LENGTH_ERROR = 5
    INVALID_ORIGIN_ATTRIBUTE = 6
    INVALID_NEXT_HOP_ATTRIBUTE = 8
    OPTIONAL_ATTRIBUTE_ERROR = 9
    INVALID_NETWORK_FIELD = 10
    MALFORMED_AS_PATH = 11


class FsmSubcode(IntEnum):
    """RFC 6608."""

    UNSPECIFIED_ERROR = 0
    RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT = 1
    RECEIVE_UNEXPECTED_MESSAGE_IN_OPENCONFIRM = 2
    RECEIVE_UNEXPECTED_MESSAGE_IN_ESTABLISHED = 3


class CeaseSubcode(IntEnum):
    """RFC 4486 (and RFC 8538 for HARD_RESET)."""

    MAXIMUM_NUMBER_OF_PREFIXES_REACHED = 1
    ADMINISTRATIVE_SHUTDOWN = 2
    PEER_DECONFIGURED = 3
    ADMINISTRATIVE_RESET = 4
    CONNECTION_REJECTED = 5
    OTHER_CONFIGURATION_CHANGE = 6
    CONNECTION_COLLISION_RESOLUTION = 7
    OUT_OF_RESOURCES = 8
    HARD_RESET = 9


class RouteRefreshSubcode(IntEnum):
    """RFC 7313."""

    INVALID_MESSAGE_LENGTH = 1


SUBCODES: dict[ErrorCode, type[IntEnum]] = {
    ErrorCode.MESSAGE_HEADER_ERROR: HeaderSubcode,
    ErrorCode.OPEN_MESSAGE_ERROR: OpenSubcode,
    ErrorCode.UPDATE_MESSAGE_ERROR: UpdateSubcode,
    ErrorCode.FINITE_STATE_MACHINE_ERROR: FsmSubcode,
    ErrorCode.CEASE: CeaseSubcode,
    ErrorCode.ROUTE_REFRESH_MESSAGE_ERROR: RouteRefreshSubcode,
}


class OptionalParameter(IntEnum):
    CAPABILITIES = 2  # RFC 5492


class CapabilityCode(IntEnum):
    MULTIPROTOCOL = 1  # RFC 4760
    ROUTE_REFRESH = 2  # RFC 2918
    EXTENDED_NEXT_HOP = 5  # RFC 8950
    EXTENDED_MESSAGE = 6  # RFC 8654
    GRACEFUL_RESTART = 64  # RFC 4724
    FOUR_OCTET_AS = 65  # RFC 6793
    ADD_PATH = 69  # RFC 7911
    ENHANCED_ROUTE_REFRESH = 70  # RFC 7313


class Afi(IntEnum):
    IPV4 = 1
    IPV6 = 2


class Safi(IntEnum):
    UNICAST = 1
    MULTICAST = 2


class AttrFlag(IntFlag):
    OPTIONAL = 0x80
    TRANSITIVE = 0x40
    PARTIAL = 0x20
    EXTENDED_LENGTH = 0x10


class AttrType(IntEnum):
    ORIGIN = 1
    AS_PATH = 2
    NEXT_HOP = 3
    MULTI_EXIT_DISC = 4
    LOCAL_PREF = 5
    ATOMIC_AGGREGATE = 6
    AGGREGATOR = 7
    COMMUNITIES = 8  # RFC 1997
    ORIGINATOR_ID = 9  # RFC 4456
    CLUSTER_LIST = 10  # RFC 4456
    MP_REACH_NLRI = 14  # RFC 4760
    MP_UNREACH_NLRI = 15  # RFC 4760
    EXTENDED_COMMUNITIES = 16  # RFC 4360
    AS4_PATH = 17  # RFC 6793
    AS4_AGGREGATOR = 18  # RFC 6793
    LARGE_COMMUNITIES = 32  # RFC 8092


_WK = AttrFlag.TRANSITIVE
_OPT = AttrFlag.OPTIONAL
_OPT_T = AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE

# The Optional and Transitive bits each known attribute must carry (RFC 4271 5, and each
# attribute's RFC). RFC 7606 3(c): a mismatch makes the attribute malformed.
ATTR_FLAGS: dict[AttrType, AttrFlag] = {
    AttrType.ORIGIN: _WK,
    AttrType.AS_PATH: _WK,
    AttrType.NEXT_HOP: _WK,
    AttrType.MULTI_EXIT_DISC: _OPT,
    AttrType.LOCAL_PREF: _WK,
    AttrType.ATOMIC_AGGREGATE: _WK,
    AttrType.AGGREGATOR: _OPT_T,
    AttrType.COMMUNITIES: _OPT_T,
    AttrType.ORIGINATOR_ID: _OPT,
    AttrType.CLUSTER_LIST: _OPT,
    AttrType.MP_REACH_NLRI: _OPT,
    AttrType.MP_UNREACH_NLRI: _OPT,
    AttrType.EXTENDED_COMMUNITIES: _OPT_T,
    AttrType.AS4_PATH: _OPT_T,
    AttrType.AS4_AGGREGATOR: _OPT_T,
    AttrType.LARGE_COMMUNITIES: _OPT_T,
}


class Origin(IntEnum):
    IGP = 0
    EGP = 1
    INCOMPLETE = 2


class SegmentType(IntEnum):
    AS_SET = 1
    AS_SEQUENCE = 2
    AS_CONFED_SEQUENCE = 3  # RFC 5065
    AS_CONFED_SET = 4  # RFC 5065


class WellKnownCommunity(IntEnum):
    """RFC 1997 and the IANA well-known communities registry."""

    GRACEFUL_SHUTDOWN = 0xFFFF0000  # RFC 8326
    ACCEPT_OWN = 0xFFFF0001  # RFC 7611
    LLGR_STALE = 0xFFFF0006
    NO_LLGR = 0xFFFF0007
    BLACKHOLE = 0xFFFF029A  # RFC 7999
    NO_EXPORT = 0xFFFFFF01
    NO_ADVERTISE = 0xFFFFFF02
    NO_EXPORT_SUBCONFED = 0xFFFFFF03
    NOPEER = 0xFFFFFF04  # RFC 3765
