"""Pod specs, used by Pods and by the pod templates of workloads: containers, their ports,
and the pod-level fields kubewire acts on."""

from __future__ import annotations

from typing import Any

from kubewire.api.errors import show_value
from kubewire.api.names import dns1123_label_problems, iana_svc_name_problems
from kubewire.api.objects import index_path
from kubewire.api.validation.common import PROTOCOLS, Checker, check_ip, check_labels

_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
_CONTAINER_PORT_FIELDS = ("containerPort", "hostPort", "hostIP", "name", "protocol")


def _check_container_ports(
    c: Checker, value: Any, path: str, seen: dict[tuple[int, str], str]
) -> None:
    ports = c.sequence(value, path)
    names: dict[str, str] = {}
    for index, raw in enumerate(ports or []):
        port_path = index_path(path, index)
        port = c.mapping(raw, port_path, required="a port needs containerPort")
        if port is None:
            continue
        c.known_fields(port, port_path, _CONTAINER_PORT_FIELDS)
        number = c.port(port.get("containerPort"), f"{port_path}.containerPort")
        if port.get("hostPort") not in (None, 0):
            c.port(port["hostPort"], f"{port_path}.hostPort")
        if port.get("hostIP") is not None:
            check_ip(c, port["hostIP"], f"{port_path}.hostIP")
        protocol = c.choice(port.get("protocol"), f"{port_path}.protocol", PROTOCOLS) or "TCP"
        name = c.string(port.get("name"), f"{port_path}.name")
        c.unique_name(name, port_path, iana_svc_name_problems, "port name", names)
        if number is not None:
            # Containers of a pod share one network namespace: two can't bind the same port.
            other = seen.get((number, protocol))
            if other is not None:
                c.warn(port_path, f"duplicate port definition {number}/{protocol} (also {other})")
            seen.setdefault((number, protocol), port_path)


def _check_container(
    c: Checker,
    raw: Any,
    path: str,
    names: dict[str, str],
    seen_ports: dict[tuple[int, str], str],
) -> None:
    container = c.mapping(raw, path, required="a container needs name and image")
    if container is None:
        return
    name = c.string(container.get("name"), f"{path}.name", required="every container needs a name")
    c.unique_name(name, path, dns1123_label_problems, "container name", names)
    c.string(
        container.get("image"),
        f"{path}.image",
        required="set the image whose program the container runs",
    )
    for key in ("command", "args"):
        words = c.sequence(container.get(key), f"{path}.{key}")
        for index, word in enumerate(words or []):
            if not isinstance(word, str):
                c.error(
                    index_path(f"{path}.{key}", index),
                    f"must be a string, got {show_value(word)}; quote it",
                )
    _check_container_ports(c, container.get("ports"), f"{path}.ports", seen_ports)


def check_pod_spec(c: Checker, value: Any, path: str, *, in_template: bool) -> None:
    spec = c.mapping(value, path, required="a pod needs a spec with containers")
    if spec is None:
        return
    if c.boolean(spec.get("hostNetwork"), f"{path}.hostNetwork"):
        c.error(
            f"{path}.hostNetwork",
            "hostNetwork is not supported: every kubewire pod gets its own network namespace; "
            "remove hostNetwork (or set it to false)",
        )
    container_names: dict[str, str] = {}
    seen_ports: dict[tuple[int, str], str] = {}
    containers = c.sequence(
        spec.get("containers"),
        f"{path}.containers",
        required="a pod needs at least one container",
    )
    if containers is not None and not containers:
        c.error(f"{path}.containers", "a pod needs at least one container")
    for index, raw in enumerate(containers or []):
        _check_container(
            c, raw, index_path(f"{path}.containers", index), container_names, seen_ports
        )
    init_containers = c.sequence(spec.get("initContainers"), f"{path}.initContainers")
    for index, raw in enumerate(init_containers or []):
        # Init containers run before the others, so their ports never clash with them.
        _check_container(c, raw, index_path(f"{path}.initContainers", index), container_names, {})
    restart = c.choice(spec.get("restartPolicy"), f"{path}.restartPolicy", _RESTART_POLICIES)
    if in_template and restart not in (None, "Always"):
        c.error(
            f"{path}.restartPolicy",
            f'unsupported value "{restart}": {c.info.kind} pods must use "Always"',
        )
    c.choice(spec.get("dnsPolicy"), f"{path}.dnsPolicy", _DNS_POLICIES)
    for key in ("hostname", "subdomain"):
        word = c.string(spec.get(key), f"{path}.{key}")
        if word is not None:
            c.names(word, f"{path}.{key}", dns1123_label_problems, key)
    check_labels(c, spec.get("nodeSelector"), f"{path}.nodeSelector", "node selector")
    node_name = c.string(spec.get("nodeName"), f"{path}.nodeName")
    if node_name is not None and c.cluster.node(node_name) is None:
        c.warn(
            f"{path}.nodeName",
            f'node "{node_name}" is not one of the cluster\'s nodes '
            f"({', '.join(c.cluster.node_names)}); the pod will never run",
        )


def check_pod(c: Checker) -> None:
    check_pod_spec(c, c.obj.get("spec"), "spec", in_template=False)
