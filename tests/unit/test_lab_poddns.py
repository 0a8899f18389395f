"""A pod's resolv.conf and hosts by the kubelet's rules."""

from __future__ import annotations

from typing import Any

import pytest

from kubewire.lab.poddns import (
    PodDnsError,
    ResolverConfig,
    parse_resolv_conf,
    pod_hosts,
    pod_resolver,
)
from kubewire.workload.runner import pod_command

NODE = ResolverConfig(("172.18.0.1",), ("lab.example",), (("timeout", "2"),))
DNS = ["10.96.0.10"]


def pod(namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-0", "namespace": namespace}, "spec": spec}


def test_cluster_first_searches_the_namespace_then_the_node() -> None:
    text = pod_resolver(pod(), DNS, "cluster.local", NODE).render()
    assert text == ("nameserver 10.96.0.10\n"
                    "search shop.svc.cluster.local svc.cluster.local cluster.local lab.example\n"
                    "options ndots:5\n")


def test_cluster_first_with_host_net_is_cluster_first_for_pod_networks() -> None:
    assert (pod_resolver(pod(dnsPolicy="ClusterFirstWithHostNet"), DNS, "k.test", NODE)
            == pod_resolver(pod(), DNS, "k.test", NODE))


def test_default_takes_the_node_config_as_is() -> None:
    assert pod_resolver(pod(dnsPolicy="Default"), DNS, "cluster.local", NODE) == NODE


def test_none_takes_only_dns_config() -> None:
    config = {"nameservers": ["1.1.1.1"], "searches": ["a.example"],
              "options": [{"name": "ndots", "value": "1"}, {"name": "edns0"}]}
    text = pod_resolver(pod(dnsPolicy="None", dnsConfig=config), DNS, "c.l", NODE).render()
    assert text == "nameserver 1.1.1.1\nsearch a.example\noptions ndots:1 edns0\n"


def test_none_without_nameservers_is_refused() -> None:
    with pytest.raises(PodDnsError, match=r"dnsConfig\.nameservers"):
        pod_resolver(pod(dnsPolicy="None"), DNS, "cluster.local", NODE)


def test_dns_config_merges_into_cluster_first() -> None:
    config = {"nameservers": ["10.96.0.10", "9.9.9.9", "8.8.8.8", "1.1.1.1"],
              "searches": ["svc.cluster.local", "corp.example"],
              "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}]}
    r = pod_resolver(pod(dnsConfig=config), DNS, "cluster.local", NODE)
    # Duplicates dropped, at most three nameservers (the kubelet trims the rest).
    assert r.nameservers == ("10.96.0.10", "9.9.9.9", "8.8.8.8")
    assert r.searches == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local",
                          "lab.example", "corp.example")
    assert r.options == (("ndots", "2"), ("single-request", None))


def test_search_limits() -> None:
    many = {"searches": [f"d{i}.example" for i in range(30)]}
    with pytest.raises(PodDnsError, match="at most 32"):
        pod_resolver(pod(dnsConfig=many), DNS, "cluster.local", NODE)
    long = {"searches": [("x" * 70 + f".{i}") for i in range(31)]}
    with pytest.raises(PodDnsError, match="2048"):
        pod_resolver(pod(dnsPolicy="None", dnsConfig={**long, "nameservers": ["1.1.1.1"]}),
                     DNS, "cluster.local", NODE)


def test_cluster_first_needs_a_cluster_dns_address() -> None:
    with pytest.raises(PodDnsError, match="kube-dns"):
        pod_resolver(pod(), [], "cluster.local", NODE)


def test_hosts_file_names_the_pod() -> None:
    text = pod_hosts(pod(hostname="db-0", subdomain="db",
                         hostAliases=[{"ip": "10.0.0.9", "hostnames": ["foo", "bar"]}]),
                     "10.244.1.7", "cluster.local")
    lines = text.splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.0.0.9\tfoo bar" in lines
    assert lines[-1] == "10.244.1.7\tdb-0.db.shop.svc.cluster.local db-0"
    assert pod_hosts(pod(), "10.244.1.8", "c.l").splitlines()[-1] == "10.244.1.8\tweb-0"


def test_parse_resolv_conf_round_trips() -> None:
    text = ("# comment\nnameserver 10.0.0.1\nnameserver 10.0.0.2 ; trailing\n"
            "domain ignored.example\nsearch a.example b.example\noptions ndots:3 rotate\n")
    parsed = parse_resolv_conf(text)
    assert parsed == ResolverConfig(("10.0.0.1", "10.0.0.2"), ("a.example", "b.example"),
                                    (("ndots", "3"), ("rotate", None)))
    assert parse_resolv_conf(parsed.render()) == parsed


def test_pod_command_mounts_files_in_a_private_mount_namespace() -> None:
    cmd = pod_command(["dig", "web"], netns="/run/netns/p", uts="/u",
                      files={"/etc/resolv.conf": "/s/resolv.conf", "/etc/hosts": "/s/hosts"})
    assert cmd[:4] == ["nsenter", "--net=/run/netns/p", "--uts=/u", "--"]
    assert cmd[4:9] == ["unshare", "--mount", "--propagation", "slave", "--"]
    # Sorted pairs of (source, target), then "--", then the command.
    assert cmd[-7:] == ["/s/hosts", "/etc/hosts", "/s/resolv.conf", "/etc/resolv.conf", "--",
                        "dig", "web"]
    assert pod_command(["true"], netns="/n") == ["nsenter", "--net=/n", "--", "true"]
