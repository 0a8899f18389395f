"""The cluster DNS add-on objects and how a CoreDNS container is run."""

from __future__ import annotations

import sys
from ipaddress import IPv4Network
from pathlib import Path

from kubewire.api.cluster import ClusterSpec
from kubewire.api.loader import Manifest
from kubewire.api.validation import validate
from kubewire.dns.corefile import parse_corefile
from kubewire.lab.clusterdns import (
    addon_objects,
    coredns_argv,
    is_coredns_image,
    project_config_maps,
    translate_paths,
)


def test_addon_objects_pass_validation_and_match_kubeadm() -> None:
    spec = ClusterSpec(service_cidr=IPv4Network("10.100.0.0/16"), dns_domain="lab.test")
    objects = addon_objects(spec)
    validate([Manifest(obj, "<addon>") for obj in objects])  # raises on any problem
    by_kind = {o["kind"]: o for o in objects}
    assert by_kind["Service"]["metadata"]["name"] == "kube-dns"
    assert by_kind["Service"]["spec"]["clusterIP"] == "10.100.0.10"
    assert by_kind["Deployment"]["spec"]["template"]["metadata"]["labels"] == \
        {"k8s-app": "kube-dns"}
    corefile = by_kind["ConfigMap"]["data"]["Corefile"]
    assert "kubernetes lab.test in-addr.arpa ip6.arpa" in corefile
    parse_corefile(corefile)  # the shipped Corefile parses


def test_default_dns_address_is_the_tenth() -> None:
    assert str(ClusterSpec().dns_service_ip) == "10.96.0.10"
    assert str(ClusterSpec(service_cidr=IPv4Network("10.0.0.0/29")).dns_service_ip) == \
        "10.0.0.6"


def test_coredns_images_are_recognised() -> None:
    for image in ("registry.k8s.io/coredns/coredns:v1.11.3", "coredns/coredns",
                  "docker.io/coredns/coredns@sha256:abc", "coredns:1.8"):
        assert is_coredns_image(image), image
    for image in ("agnhost", "registry.k8s.io/e2e-test-images/agnhost:2.47", "", None,
                  "corednsx/other"):
        assert not is_coredns_image(image), image


def test_config_map_volumes_are_projected_and_paths_translated(tmp_path: Path) -> None:
    pod = {"spec": {"volumes": [
        {"name": "config-volume", "configMap": {"name": "coredns",
                                                "items": [{"key": "Corefile",
                                                           "path": "Corefile"}]}},
        {"name": "all", "configMap": {"name": "extra"}},
        {"name": "scratch", "emptyDir": {}}]}}
    container = {"args": ["-conf", "/etc/coredns/Corefile", "-dns.port", "53"],
                 "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns"},
                                  {"name": "all", "mountPath": "/etc/extra/"},
                                  {"name": "scratch", "mountPath": "/tmp/x"}]}
    maps = {"coredns": {"data": {"Corefile": ".:53 {\n}\n", "ignored": "x"}},
            "extra": {"data": {"a": "1", "b": "2"}}}
    mounts = project_config_maps(pod, container, maps, tmp_path)
    assert mounts == {"/etc/coredns": tmp_path / "volumes" / "config-volume",
                      "/etc/extra": tmp_path / "volumes" / "all"}
    assert (mounts["/etc/coredns"] / "Corefile").read_text() == ".:53 {\n}\n"
    assert not (mounts["/etc/coredns"] / "ignored").exists()
    assert sorted(p.name for p in mounts["/etc/extra"].iterdir()) == ["a", "b"]
    args = translate_paths(container["args"], mounts)
    assert args == ["-conf", str(tmp_path / "volumes/config-volume/Corefile"), "-dns.port", "53"]
    # A changed ConfigMap is projected again in place.
    maps["coredns"]["data"]["Corefile"] = "changed"
    project_config_maps(pod, container, maps, tmp_path)
    assert (mounts["/etc/coredns"] / "Corefile").read_text() == "changed"
    argv = coredns_argv(container, mounts, Path("/run/kubewire/l/daemon.sock"))
    assert argv[:3] == [sys.executable, "-m", "kubewire.dnsserver"]
    assert argv[-2:] == ["--watch", "/run/kubewire/l/daemon.sock"]
