"""The cluster DNS add-on as kubeadm installs it: the objects, and what runs them (pure).

``addon_objects(spec)`` gives the kube-system objects a kubeadm cluster starts with: the
``coredns`` ConfigMap (the Corefile), the ``coredns`` Deployment (2 replicas labelled
``k8s-app: kube-dns``) and the ``kube-dns`` Service at the service range's tenth address.
They are ordinary objects: ``kubectl``-style edits to the ConfigMap reload the servers,
scaling the Deployment adds servers, deleting them removes cluster DNS.

kubewire has no container images, so a container whose image is CoreDNS runs kubewire's own
DNS server (``python -m kubewire.dnsserver``) with the container's arguments, its
configMap volumes projected into the pod's directory and the paths in its arguments
pointed there. The server lists and watches Services, EndpointSlices and Namespaces through
the lab daemon's socket, as CoreDNS watches the API server.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.dns.corefile import default_corefile

COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.11.3"
DNS_LABELS = {"k8s-app": "kube-dns"}


def is_coredns_image(image: object) -> bool:
    """Whether ``image`` is CoreDNS: ``registry.k8s.io/coredns/coredns:v1.11.3``,
    ``coredns/coredns``, ``docker.io/coredns/coredns@sha256:...``."""
    if not isinstance(image, str) or not image:
        return False
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == "coredns"


def addon_objects(spec: ClusterSpec) -> list[dict[str, Any]]:
    meta = {"namespace": "kube-system", "labels": dict(DNS_LABELS)}
    corefile = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "coredns", "namespace": "kube-system"},
                # kubeadm's Corefile, but reloading within 2-3 s instead of 30-45 s: a lab
                # should show a ConfigMap edit at once (CoreDNS's minimum interval is 2 s).
                "data": {"Corefile": default_corefile(spec.dns_domain, reload="2s 1s")}}
    container = {
        "name": "coredns", "image": COREDNS_IMAGE,
        "args": ["-conf", "/etc/coredns/Corefile"],
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns",
                          "readOnly": True}],
        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                           "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", **meta},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": dict(DNS_LABELS)},
            "template": {
                "metadata": {"labels": dict(DNS_LABELS)},
                "spec": {
                    # The servers resolve outside names through the node's resolver.
                    "dnsPolicy": "Default",
                    "containers": [container],
                    "volumes": [{"name": "config-volume", "configMap": {
                        "name": "coredns", "items": [{"key": "Corefile",
                                                      "path": "Corefile"}]}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", **meta,
                     "annotations": {"prometheus.io/port": "9153",
                                     "prometheus.io/scrape": "true"}},
        "spec": {
            "selector": dict(DNS_LABELS),
            "clusterIP": str(spec.dns_service_ip),
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                      {"name": "metrics", "port": 9153, "protocol": "TCP",
                       "targetPort": 9153}],
        },
    }
    return [corefile, deployment, service]


def project_config_maps(pod: Mapping[str, Any], container: Mapping[str, Any],
                        config_maps: Mapping[str, Mapping[str, Any]],
                        pod_dir: Path) -> dict[str, Path]:
    """Write the container's configMap volumes under ``pod_dir/volumes/<volume>/`` as the
    kubelet projects them (``items`` or every key); returns {mountPath: directory}.

    Files are replaced atomically (write + rename), so a reader never sees half a file.
    """
    volumes = {v.get("name"): v for v in pod.get("spec", {}).get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        source = (volume or {}).get("configMap")
        if not source:
            continue
        directory = pod_dir / "volumes" / str(mount["name"])
        directory.mkdir(parents=True, exist_ok=True)
        data = (config_maps.get(str(source.get("name"))) or {}).get("data") or {}
        items = source.get("items") or [{"key": k, "path": k} for k in sorted(data)]
        for item in items:
            if item.get("key") in data:
                target = directory / str(item.get("path", item["key"]))
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_text(str(data[item["key"]]))
                tmp.replace(target)
        mounts[str(mount["mountPath"]).rstrip("/")] = directory
    return mounts


def translate_paths(args: Sequence[str], mounts: Mapping[str, Path]) -> list[str]:
    """Container arguments with paths under a mountPath pointed at the projected files."""
    out = []
    for arg in args:
        for mount_path, directory in mounts.items():
            if arg == mount_path or arg.startswith(mount_path + "/"):
                arg = str(directory) + arg[len(mount_path):]
                break
        out.append(arg)
    return out


def coredns_argv(container: Mapping[str, Any], mounts: Mapping[str, Path],
                 daemon_socket: Path) -> list[str]:
    """The command that stands in for the CoreDNS image: kubewire's server, same flags."""
    args = [str(a) for a in container.get("args") or []]
    return [sys.executable, "-m", "kubewire.dnsserver", *translate_paths(args, mounts),
            "--watch", str(daemon_socket)]
