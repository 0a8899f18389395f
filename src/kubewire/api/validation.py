"""Check manifests the way kubectl and the API server would, for the fields kubewire uses.

:func:`validate` reports every problem at once (file, line and field for each) and returns the
manifests normalised (namespace defaulted), the warnings, and the cluster spec. Per-kind
checks are a table, :data:`VALIDATORS`, next to the kind table in :mod:`kinds`.

Not checked here: whether selectors match any pod (that needs the running cluster; the
controllers warn), and fields kubewire ignores (resources, probes, volumes...).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.api.errors import (
    KindError,
    ManifestError,
    ManifestErrors,
    ManifestWarning,
    show_value,
)
from kubewire.api.kinds import KindInfo, resolve_kind
from kubewire.api.loader import Manifest
from kubewire.api.names import (
    config_map_key_problems,
    dns1035_label_problems,
    dns1123_label_problems,
    dns1123_subdomain_problems,
    iana_svc_name_problems,
    label_key_problems,
    label_value_problems,
)
from kubewire.api.objects import DEFAULT_NAMESPACE, ObjectKey, child_path, index_path, name_of
from kubewire.api.selectors import LabelSelector, SelectorError

__all__ = [
    "BUILTIN_NAMESPACES",
    "PROTOCOLS",
    "SERVICE_TYPES",
    "VALIDATORS",
    "ValidationResult",
    "validate",
]

PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
NODE_PORT_RANGE = (30000, 32767)  # the API server's default --service-node-port-range
# Namespaces every cluster has, so objects may use them without declaring them.
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
_TRAFFIC_POLICIES = ("Cluster", "Local")
_SESSION_AFFINITIES = ("None", "ClientIP")

_TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
_TOP_LEVEL_FIELDS_BY_KIND: Mapping[str, tuple[str, ...]] = {
    "ConfigMap": ("apiVersion", "kind", "metadata", "data", "binaryData", "immutable"),
    "Cluster": ("apiVersion", "kind", "metadata", "spec"),
}
_METADATA_FIELDS = (
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
)
_CONTAINER_PORT_FIELDS = ("containerPort", "hostPort", "hostIP", "name", "protocol")
_SERVICE_PORT_FIELDS = ("name", "protocol", "appProtocol", "port", "targetPort", "nodePort")

# Name rules per kind. Services must be DNS-1035 labels (they become DNS host names and env
# var prefixes); StatefulSet names become pod host names; the Cluster checks its own name.
_NAME_RULES: Mapping[str, Callable[[str], list[str]] | None] = {
    "Namespace": dns1123_label_problems,
    "Service": dns1035_label_problems,
    "StatefulSet": dns1123_label_problems,
    "Cluster": None,
}


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Validated input: manifests in input order with namespaces defaulted, warnings that do
    not stop anything, and the cluster spec (the default one if no Cluster was given)."""

    manifests: tuple[Manifest, ...]
    warnings: tuple[ManifestWarning, ...]
    cluster: ClusterSpec


class _Checker:
    """Collects the problems of one manifest; every helper reports and returns None on error."""

    def __init__(
        self,
        manifest: Manifest,
        info: KindInfo,
        cluster: ClusterSpec,
        errors: list[ManifestError],
        warnings: list[ManifestWarning],
    ) -> None:
        self.manifest = manifest
        self.obj = manifest.obj
        self.info = info
        self.cluster = cluster
        self.errors = errors
        self.warnings = warnings

    def error(self, path: str, message: str) -> None:
        self.errors.append(self.manifest.error(path or None, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(self.manifest.warning(path or None, message))

    def mapping(self, value: Any, path: str, *, required: str = "") -> Mapping[str, Any] | None:
        """``value`` if it is a mapping; absent values are an error only when ``required``
        (the text says what belongs there)."""
        if value is None:
            if required:
                self.error(path, f"required field is missing; {required}")
            return None
        if not isinstance(value, Mapping):
            self.error(path, f"must be a mapping, got {show_value(value)}")
            return None
        return value

    def sequence(self, value: Any, path: str, *, required: str = "") -> list[Any] | None:
        if value is None:
            if required:
                self.error(path, f"required field is missing; {required}")
            return None
        if not isinstance(value, list):
            self.error(path, f"must be a list, got {show_value(value)}")
            return None
        return value

    def string(self, value: Any, path: str, *, required: str = "") -> str | None:
        if value is None or value == "":
            if required:
                self.error(path, f"required field is missing; {required}")
            return None
        if not isinstance(value, str):
            self.error(path, f"must be a string, got {show_value(value)}")
            return None
        return value

    def integer(self, value: Any, path: str, low: int, high: int | None, what: str) -> int | None:
        """An int in [low, high]; ``what`` describes the range, e.g. "a port number (1-65535)"."""
        in_range = _is_int(value) and value >= low and (high is None or value <= high)
        if not in_range:
            self.error(path, f"must be {what}, got {show_value(value)}")
            return None
        return int(value)

    def boolean(self, value: Any, path: str) -> bool | None:
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(path, f"must be true or false, got {show_value(value)}")
            return None
        return value

    def choice(self, value: Any, path: str, allowed: Iterable[str]) -> str | None:
        if value is None:
            return None
        allowed = tuple(allowed)
        if value not in allowed:
            supported = ", ".join(f'"{a}"' for a in allowed)
            self.error(
                path, f"unsupported value {show_value(value)}; supported values: {supported}"
            )
            return None
        return str(value)

    def names(self, value: str, path: str, rule: Callable[[str], list[str]], what: str) -> bool:
        problems = rule(value)
        for problem in problems:
            self.error(path, f"{what} {show_value(value)}: {problem}")
        return not problems

    def known_fields(self, value: Mapping[str, Any], path: str, known: tuple[str, ...]) -> None:
        for key in value:
            if key not in known:
                self.error(
                    child_path(path, str(key)),
                    f'unknown field "{key}"; expected one of: {", ".join(known)}',
                )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- metadata -----------------------------------------------------------------------------


def _check_labels(c: _Checker, value: Any, path: str, what: str = "label") -> dict[str, str]:
    """Check a label-style map; returns the valid entries."""
    labels = c.mapping(value, path)
    valid: dict[str, str] = {}
    if labels is None:
        return valid
    for key, label_value in labels.items():
        key_path = child_path(path, str(key))
        key_ok = c.names(str(key), key_path, label_key_problems, f"{what} key")
        if not isinstance(label_value, str):
            hint = (
                'write "" for an empty value'
                if label_value is None
                else f'quote it: "{show_value(label_value)}"'
            )
            c.error(
                key_path,
                f"{what} values must be strings, got {show_value(label_value)}; {hint}",
            )
            continue
        value_ok = c.names(label_value, key_path, label_value_problems, f"{what} value")
        if key_ok and value_ok:
            valid[str(key)] = label_value
    return valid


def _check_metadata(c: _Checker) -> None:
    metadata = c.mapping(c.obj.get("metadata"), "metadata", required="set metadata.name")
    top_level = _TOP_LEVEL_FIELDS_BY_KIND.get(c.info.kind, _TOP_LEVEL_FIELDS)
    c.known_fields(c.obj, "", top_level)
    if metadata is None:
        return
    c.known_fields(metadata, "metadata", _METADATA_FIELDS)
    rule = _NAME_RULES.get(c.info.kind, dns1123_subdomain_problems)
    if rule is not None:
        if metadata.get("name") is None and metadata.get("generateName") is not None:
            c.error("metadata.generateName", "generateName is not supported; set metadata.name")
        name = c.string(metadata.get("name"), "metadata.name", required="every object needs a name")
        if name is not None:
            c.names(name, "metadata.name", rule, f"{c.info.kind} name")
    namespace = metadata.get("namespace")
    if namespace is not None and namespace != "":
        if not c.info.namespaced:
            c.error(
                "metadata.namespace",
                f"{c.info.kind} is cluster-scoped and cannot be in a namespace; remove "
                "metadata.namespace",
            )
        elif (checked := c.string(namespace, "metadata.namespace")) is not None:
            c.names(checked, "metadata.namespace", dns1123_label_problems, "namespace")
    _check_labels(c, metadata.get("labels"), "metadata.labels")
    annotations = c.mapping(metadata.get("annotations"), "metadata.annotations")
    for key, value in (annotations or {}).items():
        key_path = child_path("metadata.annotations", str(key))
        c.names(str(key), key_path, label_key_problems, "annotation key")
        if not isinstance(value, str):
            c.error(key_path, f"annotation values must be strings, got {show_value(value)}")


# --- pods -----------------------------------------------------------------------------------


def _check_container_ports(
    c: _Checker, value: Any, path: str, seen: dict[tuple[int, str], str]
) -> None:
    ports = c.sequence(value, path)
    names: dict[str, str] = {}
    for index, raw in enumerate(ports or []):
        port_path = index_path(path, index)
        port = c.mapping(raw, port_path, required="a port needs containerPort")
        if port is None:
            continue
        c.known_fields(port, port_path, _CONTAINER_PORT_FIELDS)
        number = c.integer(
            port.get("containerPort"),
            f"{port_path}.containerPort",
            1,
            65535,
            "a port number (1-65535)",
        )
        if port.get("hostPort") not in (None, 0):
            c.integer(
                port["hostPort"], f"{port_path}.hostPort", 1, 65535, "a port number (1-65535)"
            )
        if port.get("hostIP") is not None:
            _check_ip(c, port["hostIP"], f"{port_path}.hostIP")
        protocol = c.choice(port.get("protocol"), f"{port_path}.protocol", PROTOCOLS) or "TCP"
        name = c.string(port.get("name"), f"{port_path}.name")
        if name is not None and c.names(
            name, f"{port_path}.name", iana_svc_name_problems, "port name"
        ):
            if name in names:
                c.error(f"{port_path}.name", f'duplicate port name "{name}" (also {names[name]})')
            names.setdefault(name, port_path)
        if number is not None:
            # Containers of a pod share one network namespace: two can't bind the same port.
            other = seen.get((number, protocol))
            if other is not None:
                c.warn(port_path, f"duplicate port definition {number}/{protocol} (also {other})")
            seen.setdefault((number, protocol), port_path)


def _check_container(
    c: _Checker,
    raw: Any,
    path: str,
    names: dict[str, str],
    seen_ports: dict[tuple[int, str], str],
) -> None:
    container = c.mapping(raw, path, required="a container needs name and image")
    if container is None:
        return
    name = c.string(container.get("name"), f"{path}.name", required="every container needs a name")
    if name is not None and c.names(name, f"{path}.name", dns1123_label_problems, "container name"):
        if name in names:
            c.error(f"{path}.name", f'duplicate container name "{name}" (also {names[name]})')
        names.setdefault(name, path)
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


def _check_pod_spec(c: _Checker, value: Any, path: str, *, in_template: bool) -> None:
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
    _check_labels(c, spec.get("nodeSelector"), f"{path}.nodeSelector", "node selector")
    node_name = c.string(spec.get("nodeName"), f"{path}.nodeName")
    if node_name is not None and c.cluster.node(node_name) is None:
        c.warn(
            f"{path}.nodeName",
            f'node "{node_name}" is not one of the cluster\'s nodes '
            f"({', '.join(c.cluster.node_names)}); the pod will never run",
        )


def _check_pod(c: _Checker) -> None:
    _check_pod_spec(c, c.obj.get("spec"), "spec", in_template=False)


# --- workloads ------------------------------------------------------------------------------


def _check_workload(c: _Checker, *, has_replicas: bool) -> int | None:
    """Checks shared by the apps/v1 workloads; returns the replica count (None if unknown)."""
    kind = c.info.kind
    spec = c.mapping(c.obj.get("spec"), "spec", required=f"a {kind} needs selector and template")
    if spec is None:
        return None
    replicas: int | None = 1
    if has_replicas and spec.get("replicas") is not None:
        replicas = c.integer(spec["replicas"], "spec.replicas", 0, None, "a non-negative integer")
    selector = _check_selector(c, spec.get("selector"))
    template = c.mapping(
        spec.get("template"), "spec.template", required=f"a {kind} needs a pod template"
    )
    if template is None:
        return replicas
    template_metadata = c.mapping(template.get("metadata"), "spec.template.metadata")
    labels_path = "spec.template.metadata.labels"
    labels = _check_labels(c, (template_metadata or {}).get("labels"), labels_path)
    if selector is not None and not selector.matches(labels):
        c.error(
            labels_path,
            f'selector does not match template labels: spec.selector "{selector}" must select '
            f"the pods this {kind} creates, whose labels are {show_value(labels)}",
        )
    _check_pod_spec(c, template.get("spec"), "spec.template.spec", in_template=True)
    return replicas


def _check_selector(c: _Checker, raw: Any) -> LabelSelector | None:
    if raw is None:
        c.error(
            "spec.selector",
            "required field is missing; set it to match the template's labels, "
            "e.g. matchLabels: {app: web}",
        )
        return None
    try:
        selector = LabelSelector.from_dict(raw)
    except SelectorError as exc:
        field = exc.field
        path = "spec.selector" + (field if field.startswith("[") or not field else f".{field}")
        c.error(path, exc.message)
        return None
    if selector.is_everything:
        c.error(
            "spec.selector",
            f"empty selector is invalid for a {c.info.kind}: it would select every pod in the "
            "namespace; set matchLabels",
        )
        return None
    return selector


def _check_replicated(c: _Checker) -> None:
    _check_workload(c, has_replicas=True)


def _check_daemonset(c: _Checker) -> None:
    _check_workload(c, has_replicas=False)


def _check_statefulset(c: _Checker) -> None:
    replicas = _check_workload(c, has_replicas=True)
    spec = c.obj.get("spec")
    if isinstance(spec, Mapping):
        service_name = c.string(spec.get("serviceName"), "spec.serviceName")
        if service_name is not None:
            c.names(service_name, "spec.serviceName", dns1035_label_problems, "Service name")
    name = name_of(c.obj)
    if name and replicas:
        # Pods are named NAME-0 .. NAME-(N-1) and use that as their host name, a DNS label.
        last = f"{name}-{replicas - 1}"
        if len(last) > 63:
            c.error(
                "metadata.name",
                f"too long for its pods' names: pod {last!r} would be {len(last)} characters, "
                "but pod host names are DNS labels of at most 63",
            )


# --- services -------------------------------------------------------------------------------


def _check_ip(c: _Checker, value: Any, path: str) -> ipaddress.IPv4Address | None:
    text = c.string(value, path)
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        c.error(path, f"must be an IP address, got {show_value(value)}")
        return None
    if not isinstance(address, ipaddress.IPv4Address):
        c.error(path, f"{text}: IPv6 is not supported yet; use an IPv4 address")
        return None
    return address


def _check_cluster_ip(c: _Checker, spec: Mapping[str, Any], service_type: str) -> None:
    value = spec.get("clusterIP")
    if value in (None, ""):
        return
    if service_type == "ExternalName":
        c.error("spec.clusterIP", "must be empty for an ExternalName Service")
        return
    if value == "None":
        if service_type != "ClusterIP":
            c.error(
                "spec.clusterIP",
                f'may be "None" (headless) only when type is ClusterIP, not {service_type}',
            )
        return
    address = _check_ip(c, value, "spec.clusterIP")
    if address is None:
        return
    cidr = c.cluster.service_cidr
    if address not in cidr:
        c.error(
            "spec.clusterIP",
            f"{address} is not in the service range {cidr} (the Cluster's serviceCIDR); "
            "pick an address inside it, or leave clusterIP unset",
        )
    elif address in (cidr.network_address, cidr.broadcast_address):
        c.error("spec.clusterIP", f"{address} is the network or broadcast address of {cidr}")


def _check_service_port(
    c: _Checker,
    raw: Any,
    path: str,
    service_type: str,
    names: dict[str, str],
    seen: dict[tuple[int, str], str],
    named_required: bool,
) -> None:
    port = c.mapping(raw, path, required="a Service port needs port")
    if port is None:
        return
    c.known_fields(port, path, _SERVICE_PORT_FIELDS)
    number = c.integer(port.get("port"), f"{path}.port", 1, 65535, "a port number (1-65535)")
    protocol = c.choice(port.get("protocol"), f"{path}.protocol", PROTOCOLS) or "TCP"
    name = c.string(
        port.get("name"),
        f"{path}.name",
        required="ports must be named when a Service has more than one" if named_required else "",
    )
    if name is not None and c.names(name, f"{path}.name", dns1123_label_problems, "port name"):
        if name in names:
            c.error(f"{path}.name", f'duplicate port name "{name}" (also {names[name]})')
        names.setdefault(name, path)
    if number is not None:
        if (number, protocol) in seen:
            c.error(path, f"duplicate port {number}/{protocol} (also {seen[number, protocol]})")
        seen.setdefault((number, protocol), path)
    target = port.get("targetPort")
    if isinstance(target, str):
        if target.isdigit():
            c.error(
                f"{path}.targetPort",
                f'"{target}" is a string, so it names a container port; write {target} without '
                "quotes for a port number",
            )
        else:
            c.names(target, f"{path}.targetPort", iana_svc_name_problems, "target port name")
    elif target is not None:
        c.integer(target, f"{path}.targetPort", 1, 65535, "a port number (1-65535) or a port name")
    if port.get("nodePort") not in (None, 0):
        if service_type not in ("NodePort", "LoadBalancer"):
            c.error(
                f"{path}.nodePort",
                f"may not be used when type is {service_type}; use NodePort or LoadBalancer",
            )
        else:
            low, high = NODE_PORT_RANGE
            c.integer(port["nodePort"], f"{path}.nodePort", low, high, f"in the range {low}-{high}")


def _check_service(c: _Checker) -> None:
    spec = c.mapping(c.obj.get("spec"), "spec") or {}
    service_type = c.choice(spec.get("type"), "spec.type", SERVICE_TYPES) or "ClusterIP"
    _check_cluster_ip(c, spec, service_type)
    headless = spec.get("clusterIP") == "None"
    if service_type == "ExternalName":
        external = c.string(
            spec.get("externalName"),
            "spec.externalName",
            required="an ExternalName Service needs the DNS name it aliases",
        )
        if external is not None:
            c.names(
                external.removesuffix("."),
                "spec.externalName",
                dns1123_subdomain_problems,
                "externalName",
            )
    ports = c.sequence(spec.get("ports"), "spec.ports")
    if not ports and service_type != "ExternalName" and not headless:
        c.error("spec.ports", "required field is missing; a Service needs at least one port")
    names: dict[str, str] = {}
    seen: dict[tuple[int, str], str] = {}
    for index, raw in enumerate(ports or []):
        _check_service_port(
            c,
            raw,
            index_path("spec.ports", index),
            service_type,
            names,
            seen,
            named_required=len(ports or []) > 1,
        )
    _check_labels(c, spec.get("selector"), "spec.selector", "selector")
    c.choice(spec.get("sessionAffinity"), "spec.sessionAffinity", _SESSION_AFFINITIES)
    c.choice(spec.get("internalTrafficPolicy"), "spec.internalTrafficPolicy", _TRAFFIC_POLICIES)
    external_policy = c.choice(
        spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy", _TRAFFIC_POLICIES
    )
    if external_policy is not None and service_type not in ("NodePort", "LoadBalancer"):
        c.error(
            "spec.externalTrafficPolicy",
            f"may only be set when type is NodePort or LoadBalancer, not {service_type}",
        )


# --- the rest -------------------------------------------------------------------------------


def _check_config_map(c: _Checker) -> None:
    data = c.mapping(c.obj.get("data"), "data") or {}
    for key, value in data.items():
        path = child_path("data", str(key))
        c.names(str(key), path, config_map_key_problems, "key")
        if not isinstance(value, str):
            c.error(path, f"ConfigMap values must be strings, got {show_value(value)}; quote it")
    binary = c.mapping(c.obj.get("binaryData"), "binaryData") or {}
    for key, value in binary.items():
        path = child_path("binaryData", str(key))
        c.names(str(key), path, config_map_key_problems, "key")
        if key in data:
            c.error(path, f'key "{key}" is also in data; each key may appear only once')
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            c.error(path, "binaryData values must be base64-encoded strings")
    c.boolean(c.obj.get("immutable"), "immutable")


def _check_nothing_more(c: _Checker) -> None:
    """Namespace: the name is all there is. Cluster: checked before the others, because every
    other check needs the cluster spec."""


Validator = Callable[[_Checker], None]

VALIDATORS: Mapping[str, Validator] = {
    "Namespace": _check_nothing_more,
    "Pod": _check_pod,
    "Service": _check_service,
    "ConfigMap": _check_config_map,
    "Deployment": _check_replicated,
    "ReplicaSet": _check_replicated,
    "StatefulSet": _check_statefulset,
    "DaemonSet": _check_daemonset,
    "Cluster": _check_nothing_more,
}


# --- across objects -------------------------------------------------------------------------


def _read_cluster(
    manifests: list[Manifest], kinds: list[KindInfo | None], errors: list[ManifestError]
) -> ClusterSpec:
    clusters = [
        m for m, info in zip(manifests, kinds, strict=True) if info and info.kind == "Cluster"
    ]
    for extra in clusters[1:]:
        errors.append(
            extra.error(
                "kind",
                f"only one Cluster object is allowed; another is declared at "
                f"{clusters[0].location}",
            )
        )
    if not clusters:
        return ClusterSpec.default()
    try:
        return ClusterSpec.from_manifest(clusters[0])
    except ManifestErrors as exc:
        errors.extend(exc.errors)
        # Keep checking the other objects against the defaults; the run fails anyway.
        return ClusterSpec.default()


def _with_default_namespace(manifest: Manifest, info: KindInfo) -> Manifest:
    metadata = manifest.obj.get("metadata")
    if not info.namespaced or not isinstance(metadata, Mapping) or metadata.get("namespace"):
        return manifest
    return manifest.with_obj(
        {**manifest.obj, "metadata": {**metadata, "namespace": DEFAULT_NAMESPACE}}
    )


def _check_across(
    manifests: list[Manifest],
    kinds: list[KindInfo | None],
    errors: list[ManifestError],
    warnings: list[ManifestWarning],
) -> None:
    first_seen: dict[ObjectKey, Manifest] = {}
    declared_namespaces = set(BUILTIN_NAMESPACES)
    namespace_users: dict[str, list[Manifest]] = {}
    cluster_ips: dict[str, Manifest] = {}
    node_ports: dict[tuple[int, str], Manifest] = {}
    services: set[tuple[str, str]] = set()
    statefulsets: list[Manifest] = []
    for manifest, info in zip(manifests, kinds, strict=True):
        if info is None or info.kind == "Cluster":
            continue
        key = manifest.key
        if not key.name:
            continue
        if key in first_seen:
            errors.append(
                manifest.error(
                    "metadata.name",
                    f"{key} is declared twice: here and at {first_seen[key].location}",
                )
            )
            continue
        first_seen[key] = manifest
        if info.kind == "Namespace":
            declared_namespaces.add(key.name)
        if info.namespaced:
            namespace_users.setdefault(key.namespace, []).append(manifest)
        if info.kind == "Service":
            services.add((key.namespace, key.name))
            _claim_service_addresses(manifest, cluster_ips, node_ports, errors)
        if info.kind == "StatefulSet":
            statefulsets.append(manifest)
    for namespace, users in namespace_users.items():
        if namespace not in declared_namespaces:
            warnings.append(
                users[0].warning(
                    "metadata.namespace",
                    f'namespace "{namespace}" is not declared by a Namespace object in the input '
                    f"(used by {len(users)} object{'s' if len(users) != 1 else ''}); add one, "
                    "as Kubernetes refuses objects in a namespace that does not exist",
                )
            )
    for manifest in statefulsets:
        spec = manifest.obj.get("spec")
        service_name = spec.get("serviceName") if isinstance(spec, Mapping) else None
        namespace = manifest.key.namespace
        if isinstance(service_name, str) and (namespace, service_name) not in services:
            warnings.append(
                manifest.warning(
                    "spec.serviceName",
                    f'no Service "{service_name}" in namespace "{namespace}" in the input; '
                    "its pods get no per-pod DNS names until a headless Service of that name "
                    "exists",
                )
            )


def _claim_service_addresses(
    manifest: Manifest,
    cluster_ips: dict[str, Manifest],
    node_ports: dict[tuple[int, str], Manifest],
    errors: list[ManifestError],
) -> None:
    """Two Services may not share a cluster IP or a node port, as the allocators refuse it."""
    spec = manifest.obj.get("spec")
    if not isinstance(spec, Mapping):
        return
    cluster_ip = spec.get("clusterIP")
    if isinstance(cluster_ip, str) and cluster_ip not in ("", "None"):
        owner = cluster_ips.setdefault(cluster_ip, manifest)
        if owner is not manifest:
            errors.append(
                manifest.error(
                    "spec.clusterIP",
                    f"clusterIP {cluster_ip} is already used by {owner.key} ({owner.location})",
                )
            )
    ports = spec.get("ports")
    for index, port in enumerate(ports if isinstance(ports, list) else []):
        if not isinstance(port, Mapping) or not _is_int(port.get("nodePort")):
            continue
        if port["nodePort"] == 0:
            continue
        claim = (port["nodePort"], str(port.get("protocol") or "TCP"))
        owner = node_ports.setdefault(claim, manifest)
        if owner is not manifest:
            errors.append(
                manifest.error(
                    f"{index_path('spec.ports', index)}.nodePort",
                    f"nodePort {claim[0]}/{claim[1]} is already used by {owner.key} "
                    f"({owner.location})",
                )
            )


def validate(manifests: Iterable[Manifest]) -> ValidationResult:
    """Check every manifest and the relations between them.

    Raises ManifestErrors with every problem found, sorted by file and line.
    """
    inputs = list(manifests)
    errors: list[ManifestError] = []
    warnings: list[ManifestWarning] = []
    kinds: list[KindInfo | None] = []
    for manifest in inputs:
        try:
            kinds.append(resolve_kind(manifest.obj.get("kind"), manifest.obj.get("apiVersion")))
        except KindError as exc:
            errors.append(manifest.error(exc.field, exc.message))
            kinds.append(None)
    cluster = _read_cluster(inputs, kinds, errors)
    normalized: list[Manifest] = []
    for manifest, info in zip(inputs, kinds, strict=True):
        if info is None:
            normalized.append(manifest)
            continue
        checker = _Checker(manifest, info, cluster, errors, warnings)
        _check_metadata(checker)
        VALIDATORS[info.kind](checker)
        normalized.append(_with_default_namespace(manifest, info))
    _check_across(normalized, kinds, errors, warnings)
    # Report in input order: files as given, then by line within each file.
    sources = dict.fromkeys(m.source for m in inputs)
    order = {source: rank for rank, source in enumerate(sources)}
    if errors:
        errors.sort(key=lambda e: (order.get(e.source, len(order)), e.line or 0))
        raise ManifestErrors(errors)
    warnings.sort(key=lambda w: (order.get(w.source, len(order)), w.line or 0))
    return ValidationResult(tuple(normalized), tuple(warnings), cluster)
