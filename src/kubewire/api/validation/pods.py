"""Pod specs, used by Pods and by the pod templates of workloads: containers, their ports,
and the pod-level fields kubewire acts on."""

from __future__ import annotations

from typing import Any

from kubewire.api.errors import show_value
from kubewire.api.names import (
    dns1123_label_problems,
    dns1123_subdomain_problems,
    iana_svc_name_problems,
)
from kubewire.api.objects import index_path
from kubewire.api.validation.common import PROTOCOLS, Checker, check_ip, check_labels

_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
_MAX_DNS_NAMESERVERS = 3
_MAX_DNS_SEARCHES = 32
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
    dns_policy = c.choice(spec.get("dnsPolicy"), f"{path}.dnsPolicy", _DNS_POLICIES)
    _check_dns_config(c, spec.get("dnsConfig"), f"{path}.dnsConfig", dns_policy)
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


def _check_dns_config(c: Checker, raw: Any, path: str, policy: str | None) -> None:
    """The API server's dnsConfig rules: IP nameservers (at most 3), at most 32 search
    domains of DNS names, named options; dnsPolicy None needs a nameserver."""
    config = c.mapping(raw, path) or {}
    nameservers = c.sequence(config.get("nameservers"), f"{path}.nameservers") or []
    if policy == "None" and not nameservers:
        c.error(f"{path}.nameservers",
                'required when dnsPolicy is "None": give at least one DNS server address')
    if len(nameservers) > _MAX_DNS_NAMESERVERS:
        c.error(f"{path}.nameservers", f"must not have more than {_MAX_DNS_NAMESERVERS} "
                f"nameservers (got {len(nameservers)})")
    for index, server in enumerate(nameservers):
        check_ip(c, server, index_path(f"{path}.nameservers", index))
    searches = c.sequence(config.get("searches"), f"{path}.searches") or []
    if len(searches) > _MAX_DNS_SEARCHES:
        c.error(f"{path}.searches", f"must not have more than {_MAX_DNS_SEARCHES} search "
                f"paths (got {len(searches)})")
    for index, search in enumerate(searches):
        where = index_path(f"{path}.searches", index)
        word = c.string(search, where)
        if word is not None:
            c.names(word.rstrip("."), where, dns1123_subdomain_problems, "search domain")
    for index, option in enumerate(c.sequence(config.get("options"), f"{path}.options") or []):
        where = index_path(f"{path}.options", index)
        item = c.mapping(option, where) or {}
        c.string(item.get("name"), f"{where}.name", required="a resolver option name")
        if "value" in item:
            c.string(item.get("value"), f"{where}.value")


def check_pod(c: Checker) -> None:
    check_pod_spec(c, c.obj.get("spec"), "spec", in_template=False)
