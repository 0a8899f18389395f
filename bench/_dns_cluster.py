"""The synthetic cluster, query mixes and Unbound configs of bench/dns_perf.py (pure).

Services and EndpointSlices come from ``kubewire.dns.bench.synthetic`` (every 10th Service
headless, one slice of ``endpoints`` ready endpoints each, half of them with a hostname);
Pods are added here. Unbound's records are generated from the very zone kubewire serves
(``build_zone`` of the same objects), so both servers publish the same records.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from kubewire.dns.bench import synthetic
from kubewire.dns.names import dashed
from kubewire.dns.zone import ANY, ClusterZone

Obj = dict[str, Any]

DOMAIN = "cluster.local"
NAMESPACES = 20  # what kubewire.dns.bench.synthetic spreads Services over
HEADLESS_EVERY = 10
EXTERNAL_ZONE = "example.test"
EXTERNAL_TTL = 300
_TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 16: "TXT", 28: "AAAA",
               33: "SRV"}


def pod_ip(k: int) -> str:
    return f"10.244.{k // 250 % 256}.{k % 250 + 1}"


def pods(count: int) -> list[Obj]:
    """``count`` running Pods spread over the Services' namespaces, one address each."""
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"pod-{k}", "namespace": f"ns-{k % NAMESPACES}"},
             "status": {"phase": "Running", "podIP": pod_ip(k)}} for k in range(count)]


def cluster(services: int, endpoints: int, pod_count: int) -> Obj:
    """The cluster as the server's --objects file: ``{"kind": "List", "items": [...]}``."""
    svcs, slices = synthetic(services, endpoints, HEADLESS_EVERY, NAMESPACES)
    for s in svcs:
        s.update(apiVersion="v1", kind="Service")
    for sl in slices:
        sl.update(apiVersion="discovery.k8s.io/v1", kind="EndpointSlice", addressType="IPv4")
    return {"apiVersion": "v1", "kind": "List", "items": [*svcs, *slices, *pods(pod_count)]}


def split(items: Iterable[Obj]) -> tuple[list[Obj], list[Obj], list[Obj]]:
    by_kind: dict[str, list[Obj]] = {"Service": [], "EndpointSlice": [], "Pod": []}
    for obj in items:
        by_kind.setdefault(obj.get("kind", ""), []).append(obj)
    return by_kind["Service"], by_kind["EndpointSlice"], by_kind["Pod"]


# --- queries ---------------------------------------------------------------------------

# (share, kind) of the cluster mix: what pods ask a cluster DNS server. glibc asks A and AAAA
# for every lookup (AAAA of an IPv4 Service is NODATA); ndots:5 sends a pod's search-path
# misses first (NXDOMAIN).
CLUSTER_MIX: tuple[tuple[int, str], ...] = (
    (40, "service-a"), (10, "service-aaaa-nodata"), (8, "service-srv"), (10, "headless-a"),
    (2, "headless-srv"), (5, "ptr"), (10, "pod-a"), (15, "search-miss-nxdomain"),
)


def _cluster_query(rnd: random.Random, kind: str, services: int, endpoints: int,
                   pod_count: int) -> str:
    def svc(headless: bool) -> tuple[int, str]:
        while True:
            i = rnd.randrange(services)
            if (i % HEADLESS_EVERY == 0) == headless:
                return i, f"svc-{i}.ns-{i % NAMESPACES}.svc.{DOMAIN}"

    if kind == "service-a":
        return f"{svc(False)[1]} A"
    if kind == "service-aaaa-nodata":
        return f"{svc(False)[1]} AAAA"
    if kind == "service-srv":
        return f"_http._tcp.{svc(False)[1]} SRV"
    if kind == "headless-a":
        return f"{svc(True)[1]} A"
    if kind == "headless-srv":
        return f"_http._tcp.{svc(True)[1]} SRV"
    if kind == "ptr":
        i, _ = svc(False)
        return f"{i % 250 + 1}.{i // 250}.96.10.in-addr.arpa PTR"
    if kind == "pod-a":
        k = rnd.randrange(pod_count)
        return f"{dashed(pod_ip(k))}.ns-{k % NAMESPACES}.pod.{DOMAIN} A"
    if kind == "search-miss-nxdomain":
        _, name = svc(False)
        asker = f"ns-{rnd.randrange(NAMESPACES)}"
        suffix = rnd.choice([f"{asker}.svc.{DOMAIN}", f"svc.{DOMAIN}", DOMAIN])
        return f"{name}.{suffix} A"
    raise ValueError(kind)


def queries(mix: str, count: int, services: int, endpoints: int, pod_count: int,
            external_names: int, external_share: int = 20, seed: int = 1) -> list[str]:
    """``count`` dnsperf input lines ("name TYPE"). Mix ``cluster`` or ``external``
    (``external_share`` % A queries for www-N.example.test, N < ``external_names``)."""
    if not (services >= HEADLESS_EVERY and pod_count > 0):
        raise ValueError("the query mix needs >= 10 Services and >= 1 Pod")
    rnd = random.Random(seed)
    kinds = [k for share, k in CLUSTER_MIX for _ in range(share)]
    out = []
    for _ in range(count):
        if mix == "external" and rnd.randrange(100) < external_share:
            out.append(f"www-{rnd.randrange(external_names)}.{EXTERNAL_ZONE} A")
        else:
            out.append(_cluster_query(rnd, rnd.choice(kinds), services, endpoints, pod_count))
    return out


# --- Unbound ---------------------------------------------------------------------------

def zone_records(zone: ClusterZone) -> list[str]:
    """Every record kubewire's zone publishes, as Unbound local-data lines (sorted)."""
    lines: set[str] = set()
    for (_wire, qtype), answer in zone.answers.items():
        if qtype == ANY:
            continue
        for r in answer.answer:
            lines.add(f"local-data: '{r.owner}. {r.ttl} IN {_TYPE_NAMES[r.rdtype]} {r.text}'")
    return sorted(lines)


def pod_records(pod_objs: Iterable[Obj]) -> list[str]:
    """kubewire answers ``a-b-c-d.<ns>.pod`` per query (CoreDNS ``pods insecure``); Unbound
    needs each one written down: one A record per Pod."""
    out = []
    for p in pod_objs:
        ns, ip = p["metadata"]["namespace"], p["status"]["podIP"]
        out.append(f'local-data: "{dashed(ip)}.{ns}.pod.{DOMAIN}. 5 IN A {ip}"')
    return out


def _base(listen: str, port: int) -> list[str]:
    # Nothing outside the namespace: one interface, no chroot or user switch, no remote
    # control, no trust anchor (so no DNSSEC lookups), no root hints used (everything is
    # local data or forwarded to the namespace's own upstream).
    return ["server:", f"  interface: {listen}", f"  port: {port}", "  do-ip6: no",
            "  do-tcp: yes", "  do-daemonize: no", '  chroot: ""', '  username: ""',
            '  pidfile: ""', '  logfile: ""', "  use-syslog: no", "  verbosity: 0",
            "  num-threads: 1", "  access-control: 0.0.0.0/0 allow",
            '  module-config: "iterator"', "  do-not-query-localhost: yes",
            "  so-reuseport: no", "  qname-minimisation: no"]


def unbound_peer_conf(listen: str, port: int, zone: ClusterZone, pod_objs: Iterable[Obj],
                      upstream: str) -> str:
    """The peer: the cluster zone as local data, everything else forwarded to ``upstream``."""
    reverse = sorted({".".join(line.split("'")[1].split(" ")[0].rstrip(".").split(".")[-3:])
                      for line in zone_records(zone) if ".in-addr.arpa. " in line})
    lines = [*_base(listen, port), f'  local-zone: "{zone.domain}." static']
    lines += [f'  local-zone: "{z}." static' for z in reverse]
    lines += ["  " + line for line in zone_records(zone)]
    lines += ["  " + line for line in pod_records(pod_objs)]
    # Unbound answers .test itself (RFC 6761 default zone); the fake world lives there.
    lines += [f'  local-zone: "{EXTERNAL_ZONE.rsplit(".", 1)[-1]}." nodefault']
    lines += ["forward-zone:", '  name: "."', f"  forward-addr: {upstream}"]
    return "\n".join(lines) + "\n"


def unbound_upstream_conf(listen: str, port: int, names: int) -> str:
    """The fake outside world: example.test with ``names`` A records, NXDOMAIN elsewhere."""
    lines = [*_base(listen, port), '  local-zone: "." static',
             f'  local-zone: "{EXTERNAL_ZONE}." static']
    lines += [f'  local-data: "www-{n}.{EXTERNAL_ZONE}. {EXTERNAL_TTL} IN A '
              f'198.51.{100 + n // 250 % 100}.{n % 250 + 1}"' for n in range(names)]
    return "\n".join(lines) + "\n"
