"""build_zone: every answer of the cluster zone, computed once per change of the inputs.

The hot path (``answer.respond``) must do no record building, so each (name, qtype) maps to an
``Answer`` that already holds its sections as wire bytes. Owners equal to the question name are
written as a pointer to offset 12 (RFC 1035 4.1.4): the question sits there in every reply, so
the bytes stay valid for any spelling of the name and the reply echoes the asker's case.
"""

from __future__ import annotations

import gc
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.rdataclass
import dns.rdatatype
import dns.rrset

from kubewire.dns.errors import DnsInputError
from kubewire.dns.names import (
    dashed,
    external_to_wire,
    ip_address,
    is_label,
    reverse_name,
    to_wire,
)
from kubewire.dns.views import PodView, ServiceView, SliceView

SCHEMA_VERSION = "1.1.0"
TTL = 5  # CoreDNS kubernetes plugin default: short, because endpoints churn
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, SOA_MINIMUM = 7200, 1800, 86400, 5

A, NS, CNAME, SOA, PTR, TXT, AAAA, SRV, ANY = 1, 2, 5, 6, 12, 16, 28, 33, 255
NOERROR, NXDOMAIN = 0, 3
_RR = struct.Struct("!HHIH")
_QNAME_POINTER = b"\xc0\x0c"

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; ``rdata`` is wire form, ``text`` its presentation form."""

    owner: str
    rdtype: int
    rdata: bytes
    text: str
    ttl: int = TTL

    def to_wire(self, qname: str) -> bytes:
        owner = _QNAME_POINTER if self.owner == qname else to_wire(self.owner)
        return owner + _RR.pack(self.rdtype, 1, self.ttl, len(self.rdata)) + self.rdata


@dataclass(frozen=True, slots=True)
class Answer:
    """A precomputed reply, minus header and question.

    ``body`` is answer+authority+additional; ``short_body`` drops the additional section, which
    is what goes out when the full reply does not fit (RFC 2181 9: no TC for that alone).
    """

    rcode: int
    answer: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]
    body: bytes = field(repr=False)
    short_body: bytes = field(repr=False)

    @classmethod
    def build(cls, qname: str, rcode: int, answer: Iterable[Record] = (),
              authority: Iterable[Record] = (), additional: Iterable[Record] = ()) -> Answer:
        an, ns, ar = tuple(answer), tuple(authority), tuple(additional)
        short = b"".join(r.to_wire(qname) for r in (*an, *ns))
        # Most answers have no additional section: one bytes object serves as both.
        body = short + b"".join(r.to_wire(qname) for r in ar) if ar else short
        return cls(rcode, an, ns, ar, body, short)

    def rrsets(self, qname: str | None = None) -> tuple[list[dns.rrset.RRset], ...]:
        """The three sections as dnspython RRsets (for tests and tools; not the hot path)."""
        return tuple(_rrsets(sec, qname) for sec in (self.answer, self.authority,
                                                      self.additional))


def _rrsets(records: tuple[Record, ...], qname: str | None) -> list[dns.rrset.RRset]:
    groups: dict[tuple[str, int], list[str]] = {}
    for r in records:
        owner = qname if qname is not None and r.owner == qname.lower().rstrip(".") else r.owner
        groups.setdefault((owner, r.rdtype), []).append(r.text)
    ttl = records[0].ttl if records else TTL  # one zone, one TTL
    return [dns.rrset.from_text_list(owner + ".", ttl, dns.rdataclass.IN,
                                     dns.rdatatype.RdataType.make(t), texts)
            for (owner, t), texts in groups.items()]


@dataclass(frozen=True, slots=True)
class ClusterZone:
    """Every answer of the cluster domain and of the reverse names it publishes.

    ``answers`` maps (lowercase wire qname, qtype) -> Answer; ``names`` holds every name that
    exists under the domain, empty non-terminals included, so a miss there is NXDOMAIN and a
    hit NODATA. ``cnames`` answers every qtype not in ``answers`` for an ExternalName Service.
    """

    domain: str
    apex_wire: bytes
    answers: Mapping[tuple[bytes, int], Answer] = field(repr=False)
    names: frozenset[bytes] = field(repr=False)
    cnames: Mapping[bytes, Answer] = field(repr=False)
    pod_namespaces: frozenset[bytes] = field(repr=False)
    nxdomain: Answer = field(repr=False)
    nodata: Answer = field(repr=False)
    reverse_names: frozenset[bytes] = field(repr=False)
    reverse_nodata: Answer = field(repr=False)
    reverse_nodata6: Answer = field(repr=False)
    # ExternalName owners whose target lies outside the domain -> the target: a server
    # resolves those targets itself and appends them, as CoreDNS does for ExternalName.
    external_targets: Mapping[bytes, str] = field(default_factory=dict, repr=False)

    def lookup(self, name: str, qtype: int) -> Answer | None:
        """The precomputed answer for a (text) name, or None (NODATA/NXDOMAIN/pod/not ours)."""
        wire = to_wire(name.lower().rstrip("."))
        return self.answers.get((wire, qtype)) or self.cnames.get(wire)

    def __len__(self) -> int:
        return len(self.answers)


class _Builder:
    def __init__(self, domain: str, serial: int, ttl: int = TTL) -> None:
        self.domain = domain
        self.ttl = ttl
        self.rr: dict[str, dict[int, dict[bytes, Record]]] = defaultdict(lambda: defaultdict(dict))
        self.extra: dict[tuple[str, int], list[str]] = defaultdict(list)  # SRV -> glue names
        self.cname_targets: dict[str, str] = {}
        self.ents: set[str] = set()
        soa_rdata = (to_wire(f"ns.dns.{domain}") + to_wire(f"hostmaster.{domain}")
                     + struct.pack("!IIIII", serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE,
                                   SOA_MINIMUM))
        soa_text = (f"ns.dns.{domain}. hostmaster.{domain}. {serial} {SOA_REFRESH} "
                    f"{SOA_RETRY} {SOA_EXPIRE} {SOA_MINIMUM}")
        self.soa = Record(domain, SOA, soa_rdata, soa_text, ttl)
        self.reverse_soa = {z: Record(z, SOA, soa_rdata, soa_text, ttl)
                            for z in ("in-addr.arpa", "ip6.arpa")}

    def add(self, owner: str, rdtype: int, rdata: bytes, text: str) -> None:
        self.rr[owner][rdtype][rdata] = Record(owner, rdtype, rdata, text, self.ttl)

    def address(self, owner: str, ip: str) -> None:
        if ":" in ip:
            import ipaddress  # IPv6 is rare here; keep the common path free of it

            self.add(owner, AAAA, ipaddress.IPv6Address(ip).packed, ip)
        else:
            self.add(owner, A, bytes(map(int, ip.split("."))), ip)

    def pointer(self, ip: str, target: str) -> None:
        self.add(reverse_name(ip), PTR, to_wire(target), target + ".")

    def srv(self, owner: str, port: int, target: str) -> None:
        # Priority 0 and one weight for all: RFC 2782 selection then spreads load evenly.
        self.add(owner, SRV, struct.pack("!HHH", 0, 100, port) + to_wire(target),
                 f"0 100 {port} {target}.")
        self.extra[(owner, SRV)].append(target)


def build_zone(services: Iterable[Obj | ServiceView], slices: Iterable[Obj | SliceView] = (),
               pods: Iterable[Obj | PodView] = (), domain: str = "cluster.local", *,
               serial: int = 1, namespaces: Iterable[str] = (),
               nameserver_ips: Iterable[str] = (), ttl: int = TTL) -> ClusterZone:
    """Compile Services, EndpointSlices and Pods (JSON dicts or views) into a ClusterZone.

    ``namespaces``: extra namespaces whose pod names answer (any namespace holding a Service,
    slice or Pod already does). ``nameserver_ips``: addresses of ``ns.dns.<domain>``, the
    apex NS target (the DNS Service's ClusterIP), added as glue. ``ttl``: of every record
    (CoreDNS ``kubernetes { ttl N }``); pod-name answers, built per query, keep ``TTL``.
    """
    if not 0 <= ttl <= 3600:
        raise DnsInputError(f"ttl {ttl} is out of range; use 0-3600 seconds (as CoreDNS)")
    # The build allocates ~10 objects per record and none of them form cycles; letting the
    # cyclic GC scan them all again and again costs ~45% of a 10k-Service build.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(services, slices, pods, domain, serial, namespaces, nameserver_ips, ttl)
    finally:
        if was_enabled:
            gc.enable()


def _build(services: Iterable[Obj | ServiceView], slices: Iterable[Obj | SliceView],
           pods: Iterable[Obj | PodView], domain: str, serial: int, namespaces: Iterable[str],
           nameserver_ips: Iterable[str], ttl: int = TTL) -> ClusterZone:
    domain = domain.lower().strip(".")
    if not domain or not all(is_label(lbl) for lbl in domain.split(".")):
        raise DnsInputError(f"cluster domain {domain!r} is not a DNS name; "
                            "use dot-separated lowercase labels such as cluster.local")
    svcs = sorted((s if isinstance(s, ServiceView) else ServiceView.from_k8s(s) for s in services),
                  key=lambda s: (s.namespace, s.name))
    views = [s if isinstance(s, SliceView) else SliceView.from_k8s(s) for s in slices]
    pod_views = [p if isinstance(p, PodView) else PodView.from_k8s(p) for p in pods]

    b = _Builder(domain, serial, ttl)
    b.add(f"dns-version.{domain}", TXT, bytes([len(SCHEMA_VERSION)]) + SCHEMA_VERSION.encode(),
          f'"{SCHEMA_VERSION}"')
    b.add(domain, SOA, b.soa.rdata, b.soa.text)
    ns_name = f"ns.dns.{domain}"
    b.add(domain, NS, to_wire(ns_name), ns_name + ".")
    for raw_ip in nameserver_ips:
        if (ip := ip_address(raw_ip)) is None:
            raise DnsInputError(f"nameserver address {raw_ip!r} is not an IP address")
        b.address(ns_name, ip)
    b.extra[(domain, NS)].append(ns_name)

    by_service: dict[tuple[str, str], list[SliceView]] = defaultdict(list)
    for sl in views:
        if sl.service:
            by_service[(sl.namespace, sl.service)].append(sl)

    ns_set = {s.namespace for s in svcs} | {s.namespace for s in views}
    ns_set |= {p.namespace for p in pod_views} | {n.lower() for n in namespaces}
    for ns in ns_set:
        b.ents.add(f"{ns}.svc.{domain}")
        b.ents.add(f"{ns}.pod.{domain}")

    for svc in svcs:
        fqdn = f"{svc.name}.{svc.namespace}.svc.{domain}"
        if svc.external_name is not None:
            text, wire = external_to_wire(svc.external_name)
            b.add(fqdn, CNAME, wire, text + ".")
            b.cname_targets[fqdn] = text.lower()
            continue
        if not svc.headless:
            for ip in svc.cluster_ips:
                b.address(fqdn, ip)
                b.pointer(ip, fqdn)
            for p in svc.ports:
                b.srv(f"_{p.name}._{p.protocol}.{fqdn}", p.port, fqdn)
            continue
        for sl in by_service.get((svc.namespace, svc.name), ()):
            hosts = []
            for ep in sl.endpoints:
                if not (ep.ready or svc.publish_not_ready):
                    continue
                for ip in ep.addresses:
                    host = f"{ep.hostname or dashed(ip)}.{fqdn}"
                    b.address(fqdn, ip)
                    b.address(host, ip)
                    b.pointer(ip, host)
                    hosts.append(host)
            # The slice's port is the one open on the endpoint itself, which is what a
            # client of a headless Service connects to.
            for p in sl.ports:
                for host in hosts:
                    b.srv(f"_{p.name}._{p.protocol}.{fqdn}", p.port, host)
    return _finish(b, ns_set)


def _finish(b: _Builder, ns_set: set[str]) -> ClusterZone:
    domain = b.domain
    suffix = "." + domain
    answers: dict[tuple[bytes, int], Answer] = {}
    names: set[str] = set(b.ents)
    reverse: set[bytes] = set()
    sorted_rr = {owner: {t: tuple(sorted(recs.values(), key=lambda r: r.rdata))
                         for t, recs in types.items()} for owner, types in b.rr.items()}
    for owner, types in sorted_rr.items():
        wire = to_wire(owner)
        for rdtype, recs in types.items():
            glue = [g for target in b.extra.get((owner, rdtype), ())
                    for t in (A, AAAA) for g in sorted_rr.get(target, {}).get(t, ())]
            answers[(wire, rdtype)] = Answer.build(owner, NOERROR, recs, (),
                                                   dict.fromkeys(glue))
        answers[(wire, ANY)] = (answers[(wire, next(iter(types)))] if len(types) == 1 else
                                Answer.build(owner, NOERROR,
                                             [r for recs in types.values() for r in recs]))
        if owner.endswith(suffix) or owner == domain:
            names.add(owner)
        else:
            reverse.add(wire)
    # Every ancestor down to the apex exists (RFC 1034 3.1: empty non-terminals).
    for name in list(names):
        while name.endswith(suffix):
            name = name.split(".", 1)[1]
            if name in names:
                break
            names.add(name)

    cnames: dict[bytes, Answer] = {}
    external: dict[bytes, str] = {}
    for owner, target in b.cname_targets.items():
        if not (target == domain or target.endswith(suffix)):
            external[to_wire(owner)] = target
        cname = sorted_rr[owner][CNAME]
        cnames[to_wire(owner)] = answers[(to_wire(owner), CNAME)]
        # An in-zone target is chased here (RFC 1034 4.3.2 step 3a) for the types it has.
        for rdtype, recs in sorted_rr.get(target, {}).items():
            if rdtype != CNAME:
                answers[(to_wire(owner), rdtype)] = Answer.build(owner, NOERROR, cname + recs)

    return ClusterZone(
        domain=domain,
        apex_wire=to_wire(domain),
        answers=answers,
        names=frozenset(to_wire(n) for n in names),
        cnames=cnames,
        pod_namespaces=frozenset(to_wire(ns)[:-1] for ns in ns_set),
        nxdomain=Answer.build("", NXDOMAIN, (), (b.soa,)),
        nodata=Answer.build("", NOERROR, (), (b.soa,)),
        reverse_names=frozenset(reverse),
        reverse_nodata=Answer.build("", NOERROR, (), (b.reverse_soa["in-addr.arpa"],)),
        reverse_nodata6=Answer.build("", NOERROR, (), (b.reverse_soa["ip6.arpa"],)),
        external_targets=external,
    )
