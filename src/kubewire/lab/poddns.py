"""A pod's /etc/resolv.conf and /etc/hosts, by the kubelet's rules (pure).

dnsPolicy decides where the resolver config comes from:

* ``ClusterFirst`` (the default; ``ClusterFirstWithHostNet`` is the same for pods with their
  own network, the only kind kubewire runs): the cluster DNS Service's address, the search
  list ``<ns>.svc.<domain> svc.<domain> <domain>`` followed by the node's own search list,
  and ``options ndots:5``.
* ``Default``: the node's resolver config as it is (in the lab: the outside-world resolver).
* ``None``: nothing but ``spec.dnsConfig``.

``spec.dnsConfig`` is then merged in as the kubelet does: its nameservers and searches are
appended (duplicates dropped), its options override same-named ones. The kubelet's limits
apply: 3 nameservers (extra ones dropped, as the kubelet does with a warning event), 32 search
domains and 2048 characters of search list (the pod is refused: ``PodDnsError``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_NAMESERVERS = 3  # glibc's MAXNS; the kubelet keeps the first three
MAX_SEARCH_DOMAINS = 32  # kubelet validation since Kubernetes 1.28
MAX_SEARCH_CHARS = 2048
CLUSTER_NDOTS = "5"


class PodDnsError(ValueError):
    """The pod's DNS settings cannot be turned into a resolver config."""


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    nameservers: tuple[str, ...]
    searches: tuple[str, ...]
    options: tuple[tuple[str, str | None], ...]  # (name, value or None), in order

    def render(self) -> str:
        lines = [f"nameserver {ns}" for ns in self.nameservers]
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        if self.options:
            lines.append("options " + " ".join(
                name if value is None else f"{name}:{value}" for name, value in self.options))
        return "\n".join(lines) + "\n"



def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


def _options(raw: object) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, Mapping) and item.get("name"):
            value = item.get("value")
            out.append((str(item["name"]), None if value is None else str(value)))
    return out


def _merge_options(base: Sequence[tuple[str, str | None]],
                   extra: Sequence[tuple[str, str | None]]) -> tuple[tuple[str, str | None], ...]:
    merged = dict(base)
    merged.update(extra)  # dnsConfig wins over the policy's own options, name by name
    return tuple(merged.items())


def pod_resolver(pod: Mapping[str, Any], cluster_dns: Sequence[str], domain: str,
                 node: ResolverConfig) -> ResolverConfig:
    """The resolver config the kubelet would write for ``pod``."""
    spec = pod.get("spec", {})
    namespace = pod.get("metadata", {}).get("namespace", "default")
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    dns_config = spec.get("dnsConfig") or {}
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        if not cluster_dns:
            raise PodDnsError("dnsPolicy ClusterFirst needs the cluster DNS Service "
                              "(kube-system/kube-dns) to have a ClusterIP")
        nameservers: list[str] = list(cluster_dns)
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *node.searches]
        options: list[tuple[str, str | None]] = [("ndots", CLUSTER_NDOTS)]
    elif policy == "Default":
        nameservers, searches = list(node.nameservers), list(node.searches)
        options = list(node.options)
    elif policy == "None":
        nameservers, searches, options = [], [], []
        if not dns_config.get("nameservers"):
            raise PodDnsError('dnsPolicy "None" needs spec.dnsConfig.nameservers')
    else:
        raise PodDnsError(f"unsupported dnsPolicy {policy!r}")
    nameservers += [str(ns) for ns in dns_config.get("nameservers") or []]
    searches += [str(s) for s in dns_config.get("searches") or []]
    unique_searches = _unique(searches)
    if len(unique_searches) > MAX_SEARCH_DOMAINS:
        raise PodDnsError(f"{len(unique_searches)} search domains; at most "
                          f"{MAX_SEARCH_DOMAINS} are allowed (spec.dnsConfig.searches)")
    if len(" ".join(unique_searches)) > MAX_SEARCH_CHARS:
        raise PodDnsError(f"the search list is longer than {MAX_SEARCH_CHARS} characters "
                          "(spec.dnsConfig.searches)")
    return ResolverConfig(_unique(nameservers)[:MAX_NAMESERVERS], unique_searches,
                          _merge_options(options, _options(dns_config.get("options"))))


def pod_hosts(pod: Mapping[str, Any], pod_ip: str, domain: str) -> str:
    """The /etc/hosts the kubelet writes: localhost, then the pod's own names."""
    spec, meta = pod.get("spec", {}), pod.get("metadata", {})
    hostname = spec.get("hostname") or meta.get("name", "")
    names = [hostname]
    subdomain = spec.get("subdomain")
    if subdomain:  # the pod's FQDN under its headless Service
        names.insert(0, f"{hostname}.{subdomain}.{meta.get('namespace', 'default')}.svc.{domain}")
    lines = ["# Kubernetes-managed hosts file (kubewire).", "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback"]
    for alias in spec.get("hostAliases") or []:
        hostnames = " ".join(str(h) for h in alias.get("hostnames") or [])
        if alias.get("ip") and hostnames:
            lines.append(f"{alias['ip']}\t{hostnames}")
    if pod_ip:
        lines.append(f"{pod_ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def parse_resolv_conf(text: str) -> ResolverConfig:
    """A resolv.conf as a ResolverConfig (``domain`` counts as a one-item search list)."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, rest = words[0], words[1:]
        if key == "nameserver" and rest:
            nameservers.append(rest[0])
        elif key in ("search", "domain"):
            searches = list(rest)
        elif key == "options":
            for opt in rest:
                name, sep, value = opt.partition(":")
                options.append((name, value if sep else None))
    return ResolverConfig(tuple(nameservers), tuple(searches), tuple(options))
