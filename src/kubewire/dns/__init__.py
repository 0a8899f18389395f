"""Cluster DNS: the pure core (zone compiler and sans-I/O responder). See README.md."""

from kubewire.dns.answer import EDNS_PAYLOAD, NotMine, Result, respond
from kubewire.dns.errors import DnsError, DnsInputError
from kubewire.dns.views import EndpointView, PodView, PortView, ServiceView, SliceView
from kubewire.dns.zone import SCHEMA_VERSION, TTL, Answer, ClusterZone, Record, build_zone

__all__ = [
    "EDNS_PAYLOAD",
    "SCHEMA_VERSION",
    "TTL",
    "Answer",
    "ClusterZone",
    "DnsError",
    "DnsInputError",
    "EndpointView",
    "NotMine",
    "PodView",
    "PortView",
    "Record",
    "Result",
    "ServiceView",
    "SliceView",
    "build_zone",
    "respond",
]
