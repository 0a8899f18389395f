"""The naming scheme for every kernel object and file a lab creates.

All names derive from the lab name, so several labs coexist and `down --all` can find
every trace by prefix alone, even when no kubewire process survived to tell it.

    network namespaces   kw-<lab>-underlay              the lab's L2 segment (bridge br0)
                         kw-<lab>-node-<node>           one per node
                         kw-<lab>-host-<name>           plain hosts on the underlay, e.g.
                                                        the external client
                         kw-<lab>-pod-<ns>_<pod>        one per pod ("_" cannot occur in
                                                        Kubernetes names, so it splits
                                                        unambiguously)
    links                br0 (underlay bridge), ul<hash8> (underlay end of a node's
                         uplink), eth0 (node uplink / pod interface), cni0 (node pod
                         bridge), flannel.1 (VXLAN device), veth<hash8> (pod host end)
    state directory      /run/kubewire/<lab>/  (KUBEWIRE_STATE_DIR overrides /run/kubewire)

Interface names are limited to 15 bytes by the kernel, hence the hashes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PREFIX = "kw-"
MAX_NETNS_NAME = 240


def state_root() -> Path:
    return Path(os.environ.get("KUBEWIRE_STATE_DIR", "/run/kubewire"))


def lab_dir(lab: str) -> Path:
    return state_root() / lab


def lab_prefix(lab: str) -> str:
    return f"{PREFIX}{lab}-"


def underlay_netns(lab: str) -> str:
    return f"{PREFIX}{lab}-underlay"


def node_netns(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}-node-{node}"


def host_netns(lab: str, host: str) -> str:
    return f"{PREFIX}{lab}-host-{host}"


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    name = f"{PREFIX}{lab}-pod-{namespace}_{pod}"
    if len(name) <= MAX_NETNS_NAME:
        return name
    return f"{PREFIX}{lab}-pod-{short_hash(namespace + '/' + pod, 16)}"


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def underlay_port(node: str) -> str:
    return f"ul{short_hash(node)}"


def pod_uts_file(lab: str, namespace: str, pod: str) -> Path:
    return lab_dir(lab) / "uts" / f"{namespace}_{pod}"


def pod_dir(lab: str, namespace: str, pod: str) -> Path:
    """A pod's files: resolv.conf, hosts and projected configMap volumes."""
    return lab_dir(lab) / "pods" / f"{namespace}_{pod}"


def pod_files(lab: str, namespace: str, pod: str) -> dict[str, Path]:
    """The files bind-mounted into every process of the pod ({path in pod: host file});
    only those the node agent has written."""
    root = pod_dir(lab, namespace, pod)
    wanted = {"/etc/resolv.conf": root / "resolv.conf", "/etc/hosts": root / "hosts"}
    return {target: source for target, source in wanted.items() if source.exists()}


def container_log(lab: str, namespace: str, pod: str, container: str) -> Path:
    return lab_dir(lab) / "logs" / f"{namespace}_{pod}_{container}.log"


def container_id(lab: str, namespace: str, pod: str, uid: str) -> str:
    return short_hash(f"{lab}/{namespace}/{pod}/{uid}", 32)
