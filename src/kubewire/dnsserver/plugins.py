"""The sync plugins: kubernetes, cache, hosts, rewrite, and the log/errors observers.

Each handler plugin has ``handle(req)`` and a ``next`` handler the chain sets. Only the
kubernetes plugin sits on the path of a cluster query, and it costs one ``respond`` call.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
import time
from collections.abc import Callable
from typing import TextIO

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from kubewire.dns.answer import NotMine, respond
from kubewire.dns.corefile import (
    CacheConfig,
    HostsConfig,
    KubernetesConfig,
    LogConfig,
    RewriteConfig,
    RewriteRule,
    in_zone,
)
from kubewire.dns.zone import ClusterZone
from kubewire.dnsserver.chain import (
    NXDOMAIN,
    SERVFAIL,
    Handler,
    Pending,
    Request,
    Result,
    edns_of,
    end_of_chain,
    name_text,
    name_wire,
    question,
    reply,
)
from kubewire.dnsserver.metrics import Family, rcode_label, type_label

_TTL = struct.Struct("!I")
_RR = struct.Struct("!HHIH")


# -- kubernetes ----------------------------------------------------------------------------


class Kubernetes:
    """Answers from the ClusterZone; ``zone`` is None until the app has cluster objects."""

    def __init__(self, cfg: KubernetesConfig) -> None:
        self.cfg = cfg
        self.zone: ClusterZone | None = None
        self.next: Handler = end_of_chain

    @property
    def ready(self) -> bool:
        return self.zone is not None

    def handle(self, req: Request) -> Result:
        zone = self.zone
        if zone is None:
            return self._not_ready(req)
        out = respond(zone, req.wire, req.max_udp, req.proto)  # type: ignore[arg-type]
        if out.__class__ is NotMine:
            return self._not_mine(req, out)
        if zone.external_targets and out is not None:
            return self._chase_external(zone, req, out)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def _chase_external(self, zone: ClusterZone, req: Request, out: bytes) -> Result:
        """An ExternalName whose target is outside the cluster: resolve the target through
        the rest of the chain (forward) and append its records after the CNAME, as CoreDNS
        resolves such targets through itself. Stub resolvers (glibc) do not chase a lone
        CNAME, so without this ``getent hosts <externalname-service>`` would fail."""
        q = question(req.wire)
        if q is None or q[1] in (_CNAME, _ANY) or (q[0], q[1]) in zone.answers:
            return out
        target = zone.external_targets.get(q[0])
        if target is None:
            return out
        try:
            sub = dns.message.make_query(target, dns.rdatatype.RdataType.make(q[1]))
        except dns.exception.DNSException:
            return out
        inner = self.next(req.copy(sub.to_wire()))

        async def resolve(_: bytes) -> bytes | None:
            got: bytes | None
            if isinstance(inner, Pending):
                got = await inner.resolve(inner.query)
                got = inner.finish(got) if got is not None else None
            else:
                got = inner
            return _append_answers(out, got, req.max_udp if req.proto == "udp" else 65535)

        return Pending(req.wire, resolve)

    def _owned(self, req: Request) -> tuple[bool, str]:
        q = question(req.wire)
        name = name_text(q[0]) if q is not None else ""
        return any(in_zone(name, z) for z in self.cfg.zones), name

    def _not_ready(self, req: Request) -> Result:
        owned, _ = self._owned(req)
        # CoreDNS answers SERVFAIL for its zones until the API is synced; others go on.
        return reply(req.wire, SERVFAIL) if owned else self.next(req)

    def _not_mine(self, req: Request, out: NotMine) -> Result:
        name = out.qname.lower().rstrip(".") + "."
        zone = next((z for z in self.cfg.zones if in_zone(name, z)), None)
        if zone is None:
            return self.next(req)
        fall = self.cfg.fallthrough
        if fall is not None and (not fall or any(in_zone(name, z) for z in fall)):
            return self.next(req)
        return reply(req.wire, NXDOMAIN, aa=True)


_CNAME, _ANY = 5, 255


def _append_answers(ours: bytes, theirs: bytes | None, limit: int) -> bytes:
    """``ours`` (the CNAME) with ``theirs``' answer records and rcode; ``ours`` alone when
    the target could not be resolved or the result would not fit."""
    if not theirs:
        return ours
    try:
        mine = dns.message.from_wire(ours)
        other = dns.message.from_wire(theirs)
    except dns.exception.DNSException:
        return ours
    mine.answer.extend(other.answer)
    if other.rcode() == dns.rcode.NXDOMAIN:
        mine.set_rcode(dns.rcode.NXDOMAIN)
        mine.authority = list(other.authority)
    wire: bytes = mine.to_wire()
    return wire if len(wire) <= limit else ours


# -- cache ---------------------------------------------------------------------------------


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += length + 1


def ttl_layout(wire: bytes) -> tuple[list[int], int, int] | None:
    """(offsets of every TTL but OPT's, min answer TTL, negative TTL) or None if unreadable."""
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", wire, 4)
        pos = 12
        for _ in range(qd):
            pos = _skip_name(wire, pos) + 4
        offsets, min_an, neg = [], 2**31 - 1, 2**31 - 1
        for i in range(an + ns + ar):
            pos = _skip_name(wire, pos)
            rtype, _cls, ttl, rdlen = _RR.unpack_from(wire, pos)
            if rtype != 41:
                offsets.append(pos + 4)
                if i < an:
                    min_an = min(min_an, ttl)
                elif i < an + ns and rtype == 6:  # SOA: RFC 2308 5, min(TTL, MINIMUM)
                    end = pos + 10 + rdlen
                    neg = min(ttl, _TTL.unpack_from(wire, end - 4)[0])
            pos += 10 + rdlen
        if pos > len(wire):
            return None
        return offsets, min_an, neg
    except (struct.error, IndexError):
        return None


CacheKey = tuple[bytes, int, int, bool, bool]  # qname, qtype, qclass, DO bit, has EDNS
CacheEntry = tuple[bytes, float, int, list[int]]  # reply, stored at, TTL, TTL offsets


class CacheStore:
    """Positive and negative entries, each capped; kept across a reload with the same config.

    Dicts keep insertion order, so the oldest entry is the first: eviction is O(1).
    """

    def __init__(self) -> None:
        self.success: dict[CacheKey, CacheEntry] = {}
        self.denial: dict[CacheKey, CacheEntry] = {}
        self.hits = {"success": 0, "denial": 0}
        self.misses = 0


class Cache:
    """Caches what only an async plugin (forward) can answer; see the package README.

    The chain runs first and the cache is only consulted when the result is ``Pending``, so a
    zone hit (already a precomputed reply) pays nothing here.
    """

    def __init__(self, cfg: CacheConfig, store: CacheStore | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.store = store or CacheStore()
        self.clock = clock
        self.next: Handler = end_of_chain
        self._all = cfg.zones == (".",)

    def handle(self, req: Request) -> Result:
        out = self.next(req)
        if not isinstance(out, Pending):
            return out
        wire = req.wire
        q = question(wire)
        if q is None or (not self._all and not any(
                in_zone(name_text(q[0]), z) for z in self.cfg.zones)):
            return out
        edns = edns_of(wire, q[3])
        key: CacheKey = (q[0], q[1], q[2], edns is not None and edns[1], edns is not None)
        hit = self._get(key, req, edns)
        if hit is not None:
            return hit
        self.store.misses += 1
        return out.then(lambda o: self._put(key, o))

    def _get(self, key: CacheKey, req: Request, edns: tuple[int, bool] | None) -> bytes | None:
        store = self.store
        kind, table = "success", store.success
        entry = table.get(key)
        if entry is None:
            kind, table = "denial", store.denial
            entry = table.get(key)
            if entry is None:
                return None
        stored, at, ttl, offsets = entry
        elapsed = int(self.clock() - at)
        if elapsed >= ttl:
            del table[key]
            return None
        limit = 65535 if req.proto == "tcp" else (
            max(512, min(edns[0], 1232)) if edns else req.max_udp)
        if len(stored) > limit:
            return None  # too big for this client: let the upstream answer (it truncates)
        wire = req.wire
        q = question(wire)
        if q is None:
            return None
        out = bytearray(stored)
        out[0:2] = wire[0:2]
        out[12:q[3]] = wire[12:q[3]]  # the asker's spelling of the name
        out[2] = (out[2] & 0xFE) | (wire[2] & 0x01)  # RD as asked
        left = ttl - elapsed  # like CoreDNS: no record outlives the cache entry
        for off in offsets:
            _TTL.pack_into(out, off, max(0, min(_TTL.unpack_from(out, off)[0] - elapsed, left)))
        store.hits[kind] += 1
        return bytes(out)

    def _put(self, key: CacheKey, out: bytes) -> bytes:
        rcode = out[3] & 0xF
        if out[2] & 0x02 or rcode not in (0, NXDOMAIN):
            return out  # truncated or an error: not cached (CoreDNS caches SERVFAIL briefly)
        layout = ttl_layout(out)
        if layout is None:
            return out
        offsets, min_an, neg = layout
        cfg = self.cfg
        if rcode == NXDOMAIN or out[6:8] == b"\x00\x00":
            # No SOA in the reply: nothing says how long the denial holds; use the minimum.
            ttl = max(cfg.denial_minttl, min(neg if neg < 2**31 - 1 else cfg.denial_minttl,
                                             cfg.denial_ttl))
            table, cap = self.store.denial, cfg.denial_capacity
        else:
            ttl = max(cfg.success_minttl, min(min_an, cfg.success_ttl))
            table, cap = self.store.success, cfg.success_capacity
        if ttl <= 0:
            return out
        if key not in table and len(table) >= cap:
            del table[next(iter(table))]
        table[key] = (out, self.clock(), ttl, offsets)
        return out

    def families(self, server: str) -> list[Family]:
        s = self.store
        size = {"success": len(s.success), "denial": len(s.denial)}
        return [
            ("coredns_cache_hits_total", "counter", "The count of cache hits.",
             [("coredns_cache_hits_total", {"server": server, "type": t}, float(n))
              for t, n in s.hits.items()]),
            ("coredns_cache_misses_total", "counter", "The count of cache misses.",
             [("coredns_cache_misses_total", {"server": server}, float(s.misses))]),
            ("coredns_cache_entries", "gauge", "The number of elements in the cache.",
             [("coredns_cache_entries", {"server": server, "type": t}, float(n))
              for t, n in size.items()]),
        ]


# -- hosts ---------------------------------------------------------------------------------


def parse_hosts(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(address, names) per line of an /etc/hosts file; bad lines are skipped as CoreDNS does."""
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 2:
            continue
        try:
            ip = str(ipaddress.ip_address(parts[0].split("%", 1)[0]))
        except ValueError:
            continue
        out.append((ip, tuple(n.lower().rstrip(".") + "." for n in parts[1:])))
    return out


class Hosts:
    """Inline entries first, then the file's; A/AAAA for names, PTR for their addresses."""

    def __init__(self, cfg: HostsConfig, file_entries: list[tuple[str, tuple[str, ...]]]) -> None:
        self.cfg = cfg
        self.next: Handler = end_of_chain
        self.load(file_entries)

    def load(self, file_entries: list[tuple[str, tuple[str, ...]]]) -> None:
        names: dict[str, dict[int, list[str]]] = {}
        ptrs: dict[str, list[str]] = {}
        for ip, hostnames in [*self.cfg.entries, *file_entries]:
            rdtype = dns.rdatatype.AAAA if ":" in ip else dns.rdatatype.A
            for n in hostnames:
                addrs = names.setdefault(n, {}).setdefault(rdtype, [])
                if ip not in addrs:
                    addrs.append(ip)
            if not self.cfg.no_reverse:
                rev = ipaddress.ip_address(ip).reverse_pointer + "."
                ptrs.setdefault(rev, [])
                ptrs[rev] += [n for n in hostnames if n not in ptrs[rev]]
        self.names, self.ptrs = names, ptrs  # one assignment each: a reload swaps atomically

    def handle(self, req: Request) -> Result:
        q = question(req.wire)
        if q is None:
            return self.next(req)
        name = name_text(q[0])
        if not any(in_zone(name, z) for z in self.cfg.zones):
            return self.next(req)
        qtype = q[1]
        records: list[str] = []
        rdtype = qtype
        if name in self.names:
            records = self.names[name].get(qtype, [])
        elif name in self.ptrs:
            records = self.ptrs[name] if qtype == dns.rdatatype.PTR else []
        else:
            fall = self.cfg.fallthrough
            if fall is not None and (not fall or any(in_zone(name, z) for z in fall)):
                return self.next(req)
            return reply(req.wire, NXDOMAIN, aa=True)
        try:
            msg = dns.message.from_wire(req.wire)
            resp = dns.message.make_response(msg)
        except Exception:
            return self.next(req)
        resp.flags |= 0x0400  # AA
        if records:
            resp.answer.append(dns.rrset.from_text_list(
                msg.question[0].name, self.cfg.ttl, dns.rdataclass.IN,
                dns.rdatatype.RdataType(rdtype), records))
        return _to_wire(resp, req)


def _to_wire(msg: dns.message.Message, req: Request) -> bytes:
    limit = 65535 if req.proto == "tcp" else (
        max(512, min(msg.payload, 1232)) if msg.edns >= 0 else req.max_udp)
    try:
        out: bytes = msg.to_wire(max_size=limit)
    except dns.exception.TooBig:
        msg.answer, msg.authority, msg.additional = [], [], []
        msg.flags |= 0x0200  # TC: the client asks again over TCP
        out = msg.to_wire()
    return out


# -- rewrite -------------------------------------------------------------------------------


class Rewrite:
    """``rewrite name``: the question goes on renamed, the reply comes back with the asked name.

    Matching works on the lowercase name without its final dot. A regex replacement may use
    ``{1}``..``{9}`` for groups, as in CoreDNS.
    """

    def __init__(self, cfg: RewriteConfig) -> None:
        import re

        self.cfg = cfg
        self.next: Handler = end_of_chain
        self._regex = {r: re.compile(r.match) for r in cfg.rules if r.kind == "regex"}

    def rename(self, name: str) -> str | None:
        """The rewritten name (no final dot), or None when no rule matched."""
        out, hit = name, False
        for rule in self.cfg.rules:
            new = self._apply(rule, out)
            if new is not None:
                out, hit = new, True
                if rule.stop:
                    break
        return out if hit else None

    def _apply(self, rule: RewriteRule, name: str) -> str | None:
        m, r = rule.match.rstrip("."), rule.replacement.rstrip(".")
        if rule.kind == "exact":
            return r if name == m else None
        if rule.kind == "prefix":
            return r + name[len(m):] if name.startswith(m) else None
        if rule.kind == "suffix":
            return name[:-len(m)] + r if name.endswith(m) and m else None
        if rule.kind == "substring":
            return name.replace(m, r, 1) if m and m in name else None
        match = self._regex[rule].fullmatch(name)
        if match is None:
            return None
        out = rule.replacement
        for i, g in enumerate(match.groups(), 1):
            out = out.replace("{" + str(i) + "}", g or "")
        return out.rstrip(".")

    def handle(self, req: Request) -> Result:
        q = question(req.wire)
        if q is None:
            return self.next(req)
        new = self.rename(name_text(q[0]).rstrip("."))
        new_wire = name_wire(new) if new is not None else None
        if new_wire is None:
            return self.next(req)
        orig = req.wire
        out = self.next(req.copy(orig[:12] + new_wire + orig[q[3] - 4:]))
        if out is None:
            return None
        if isinstance(out, Pending):
            return out.then(lambda o: self._back(o, orig, new_wire))
        return self._back(out, orig, new_wire)

    @staticmethod
    def _back(out: bytes, orig: bytes, new_wire: bytes) -> bytes:
        try:
            msg = dns.message.from_wire(out)
            asked = dns.message.from_wire(orig).question[0].name
        except Exception:
            return out
        new_name = dns.name.from_wire(new_wire, 0)[0]
        msg.question = [dns.rrset.RRset(asked, q.rdclass, q.rdtype) for q in msg.question]
        for section in (msg.answer, msg.authority, msg.additional):
            for i, rrset in enumerate(section):
                if rrset.name == new_name:
                    section[i] = dns.rrset.from_rdata_list(asked, rrset.ttl, list(rrset))
        try:
            back: bytes = msg.to_wire()
        except Exception:
            return out
        return back


# -- loadbalance ---------------------------------------------------------------------------


def _rr_spans(wire: bytes, count: int, pos: int) -> list[tuple[int, int, int, bool]] | None:
    """(start, end, type, owner is a pointer) of ``count`` records from ``pos``."""
    spans = []
    try:
        for _ in range(count):
            start = pos
            pointer = wire[pos] >= 0xC0
            pos = _skip_name(wire, pos)
            rtype, _cls, _ttl, rdlen = _RR.unpack_from(wire, pos)
            pos += 10 + rdlen
            spans.append((start, pos, rtype, pointer))
    except (struct.error, IndexError):
        return None
    return spans if pos <= len(wire) else None


class Loadbalance:
    """Rotates the A and AAAA records of an answer, one step per reply (round robin).

    Only records whose owner is a compression pointer move: their bytes hold no name another
    record could point into, so the reply stays valid without re-encoding. Zone answers and
    typical upstream replies are all of that shape; anything else passes unchanged.
    """

    def __init__(self) -> None:
        self.next: Handler = end_of_chain
        self._turn = 0

    def handle(self, req: Request) -> Result:
        out = self.next(req)
        if isinstance(out, Pending):
            return out.then(self.rotate)
        if out is None or (out[6] == 0 and out[7] < 2):
            return out  # one answer record or none: the common case costs this test only
        return self.rotate(out)

    def rotate(self, out: bytes) -> bytes:
        if len(out) < 12 or (out[6] == 0 and out[7] < 2):
            return out
        q = question(out)
        if q is None:
            return out
        spans = _rr_spans(out, (out[6] << 8) | out[7], q[3])
        if spans is None:
            return out
        movable = [i for i, (_, _, t, p) in enumerate(spans) if t in (1, 28) and p]
        if len(movable) < 2 or any(t in (1, 28) and not p for _, _, t, p in spans):
            return out
        self._turn += 1
        k = self._turn % len(movable)
        order = movable[k:] + movable[:k]
        pieces = [out[a:b] for a, b, _, _ in spans]
        for slot, src in zip(movable, order, strict=True):
            pieces[slot] = out[spans[src][0]:spans[src][1]]
        return out[:q[3]] + b"".join(pieces) + out[spans[-1][1]:]


# -- observers: log and errors -------------------------------------------------------------


_FLAGS = ((0x8000, "qr"), (0x0400, "aa"), (0x0200, "tc"), (0x0100, "rd"), (0x0080, "ra"),
          (0x0040, "z"), (0x0020, "ad"), (0x0010, "cd"))


def _flags(out: bytes) -> str:
    f = (out[2] << 8) | out[3]
    return ",".join(n for bit, n in _FLAGS if f & bit)


def _client(addr: object) -> tuple[str, str]:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return (f"[{host}]" if ":" in host else host), str(addr[1])
    return "-", "0"


def _class_text(qclass: int) -> str:
    try:
        return dns.rdataclass.to_text(dns.rdataclass.RdataClass(qclass))
    except ValueError:
        return f"CLASS{qclass}"


def _type_text(qtype: int) -> str:
    try:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType(qtype))
    except ValueError:
        return f"TYPE{qtype}"


class Log:
    """One line per query in CoreDNS's common log format, on ``stream`` (stdout)."""

    def __init__(self, cfg: LogConfig, stream: TextIO | None = None) -> None:
        self.cfg = cfg
        self.stream = stream if stream is not None else sys.stdout

    def __call__(self, req: Request, out: bytes | None) -> None:
        if out is None:
            return
        q = question(req.wire)
        name = name_text(req.wire[12:q[3] - 4]) if q is not None else "."
        if self.cfg.zones != (".",) and not any(in_zone(name.lower(), z)
                                                 for z in self.cfg.zones):
            return
        rcode = out[3] & 0xF
        if "all" not in self.cfg.classes:
            cls = ("success" if rcode == 0 and out[6:8] != b"\x00\x00" else
                   "denial" if rcode in (0, NXDOMAIN) else "error")
            if cls not in self.cfg.classes:
                return
        edns = edns_of(req.wire, q[3]) if q is not None else None
        host, port = _client(req.addr)
        qid = (req.wire[0] << 8) | req.wire[1]
        qt = _type_text(q[1]) if q is not None else "-"
        qc = _class_text(q[2]) if q is not None else "-"
        do = "true" if edns is not None and edns[1] else "false"
        bufsize = edns[0] if edns is not None else 512
        took = time.perf_counter() - req.start
        self.stream.write(
            f'[INFO] {host}:{port} - {qid} "{qt} {qc} {name} {req.proto} {len(req.wire)} {do} '
            f'{bufsize}" {rcode_label(rcode)} {_flags(out)} {len(out)} {took:.9f}s\n')


class Errors:
    """Reports every SERVFAIL on ``stream`` (stderr), as CoreDNS's errors plugin logs them."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0

    def __call__(self, req: Request, out: bytes | None) -> None:
        if out is None or out[3] & 0xF != SERVFAIL:
            return
        self.count += 1
        q = question(req.wire)
        name = name_text(req.wire[12:q[3] - 4]) if q is not None else "."
        qt = type_label(q[1]) if q is not None else "-"
        self.stream.write(f"[ERROR] plugin/errors: 2 {name} {qt}: SERVFAIL (no plugin could "
                          "answer; an upstream may have failed or timed out)\n")


__all__ = ["Cache", "CacheStore", "Errors", "Hosts", "Kubernetes", "Loadbalance", "Log", "Rewrite",
           "parse_hosts", "ttl_layout"]
