"""The EndpointSlice controller: which pods back each Service, and on which ports.

:func:`compute_endpoint_slices` is what kube-controller-manager's EndpointSlice controller
does on every sync, as one pure function over all Services at once: for each Service with a
selector, the pods it selects become endpoints (discovery.k8s.io/v1), grouped by the port
numbers their named ``targetPort``\\ s resolve to, in slices of at most ``max_per_slice``.

Like the real controller it aims for little churn: an endpoint stays in the slice it was in,
new endpoints go first to slices that change anyway, then to the slice they fill best, and
only then into new slices, whose names reuse those of slices that emptied. Slices it did not
create (``managed-by`` absent or someone else's) are passed through untouched.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kubewire.api.selectors import LabelSelector, Operator, SelectorError, service_selector
from kubewire.controllers.errors import ControllerError
from kubewire.controllers.naming import generated_name, generated_suffix
from kubewire.controllers.objects import (
    DEFAULT_NAMESPACE,
    derived_uid,
    labels_of,
    metadata_of,
    name_of,
    namespace_of,
    object_key,
    spec_of,
    uid_of,
)

__all__ = [
    "CONTROLLER_NAME",
    "DEFAULT_MAX_ENDPOINTS_PER_SLICE",
    "LABEL_HEADLESS",
    "LABEL_MANAGED_BY",
    "LABEL_SERVICE_NAME",
    "EndpointSliceResult",
    "InvalidMaxEndpointsPerSlice",
    "compute_endpoint_slices",
]

LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LABEL_HEADLESS = "service.kubernetes.io/headless"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
# kube-controller-manager --max-endpoints-per-slice
DEFAULT_MAX_ENDPOINTS_PER_SLICE = 100

_RESERVED_LABELS = frozenset({LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS})
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

# A slice's ports, as (name, port, protocol, appProtocol) in the Service's port order.
_Ports = tuple[tuple[str, int, str, str], ...]
# Who an endpoint is: its address and the pod behind it (host-network pods share addresses).
_Identity = tuple[str, str]


class InvalidMaxEndpointsPerSlice(ControllerError, ValueError):
    def __init__(self, value: int) -> None:
        self.value = value
        super().__init__(
            f"max endpoints per slice must be at least 1, got {value}; Kubernetes uses "
            f"{DEFAULT_MAX_ENDPOINTS_PER_SLICE} (at most 1000)"
        )


@dataclass(frozen=True, slots=True)
class EndpointSliceResult:
    """Every EndpointSlice there should be, sorted by (namespace, name), and why pods are missing.

    ``slices`` holds the controller's slices and, untouched, everyone else's. ``explanations``
    maps ``namespace/service`` to sentences saying why a selected pod is not an endpoint (or
    not for some port), for ``kubewire get endpointslices`` and ``kubewire check``.
    """

    slices: list[dict[str, Any]] = field(default_factory=list)
    explanations: dict[str, list[str]] = field(default_factory=dict)


class _PodView(NamedTuple):
    """The fields of a Pod the controller uses.

    A NamedTuple rather than a frozen dataclass: one is built per pod in the cluster, and
    tuple construction is several times cheaper than a frozen dataclass's __init__.
    """

    key: str  # namespace/name
    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    address: str | None
    address_order: int
    phase: str
    ready: bool
    terminating: bool
    node_name: str
    hostname: str
    subdomain: str
    spec: Mapping[str, Any]

    def container_port(self, name: str, protocol: str) -> int | None:
        """The number of the port called ``name`` (FindPort): app containers, then sidecars."""
        found = _named_port(self.spec.get("containers"), name, protocol, sidecars_only=False)
        if found is None:
            found = _named_port(self.spec.get("initContainers"), name, protocol, sidecars_only=True)
        return found


def _named_port(containers: Any, name: str, protocol: str, *, sidecars_only: bool) -> int | None:
    if not isinstance(containers, list):
        return None
    for container in containers:
        container = _mapping(container)
        # Init containers serve traffic only as sidecars (restartPolicy Always).
        if sidecars_only and container.get("restartPolicy") != "Always":
            continue
        ports = container.get("ports")
        for port in ports if isinstance(ports, list) else []:
            port = _mapping(port)
            number = port.get("containerPort")
            if (
                port.get("name") == name
                and (port.get("protocol") or "TCP") == protocol
                and isinstance(number, int)
            ):
                return number
    return None


@dataclass(frozen=True, slots=True)
class _Entry:
    """A desired endpoint and where it sorts (by address, then pod)."""

    order: tuple[int, str]
    endpoint: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _ServicePort:
    name: str
    port: int
    protocol: str
    target: int | str
    app_protocol: str


@dataclass(slots=True)
class _Bin:
    """A slice being planned: an existing one kept (``base``) or a new one (``base`` None)."""

    ports: _Ports
    endpoints: list[_Entry]
    base: Mapping[str, Any] | None = None
    changed: bool = True
    name: str = ""


def compute_endpoint_slices(
    services: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    existing_slices: Iterable[Mapping[str, Any]] = (),
    max_per_slice: int = DEFAULT_MAX_ENDPOINTS_PER_SLICE,
) -> EndpointSliceResult:
    """The EndpointSlices for ``services`` (as allocated and stored) given ``pods``.

    ``existing_slices`` are the slices in the store: the controller's own are reused so
    endpoints keep their slice and slices keep their names; the others pass through.
    Services without a selector and ExternalName Services get no managed slices.
    """
    if max_per_slice < 1:
        raise InvalidMaxEndpointsPerSlice(max_per_slice)
    index = _PodIndex(_pod_view(pod) for pod in pods)
    passthrough: list[dict[str, Any]] = []
    managed: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    taken: dict[str, set[str]] = defaultdict(set)
    for endpoint_slice in existing_slices:
        namespace = namespace_of(endpoint_slice)
        taken[namespace].add(name_of(endpoint_slice))
        labels = labels_of(endpoint_slice)
        if labels.get(LABEL_MANAGED_BY) != CONTROLLER_NAME:
            passthrough.append(_json_copy(endpoint_slice))
        elif labels.get(LABEL_SERVICE_NAME):
            managed[namespace, labels[LABEL_SERVICE_NAME]].append(endpoint_slice)
        # A managed slice that names no Service belongs to nobody; dropping it deletes it.
    results = passthrough
    explanations: dict[str, list[str]] = {}
    seen: set[str] = set()
    for service in sorted(services, key=lambda s: (namespace_of(s), name_of(s))):
        key = object_key(service)
        if key in seen or spec_of(service).get("type") == "ExternalName":
            continue
        seen.add(key)
        notes: list[str] = []
        namespace, name = namespace_of(service), name_of(service)
        groups = _desired_endpoints(service, index, notes)
        if groups is not None:
            existing = sorted(managed.get((namespace, name), []), key=name_of)
            bins = _plan(service, groups, existing, max_per_slice, taken[namespace])
            results.extend(_render(service, bin_) for bin_ in bins)
        if notes:
            explanations[key] = notes
    results.sort(key=lambda s: (namespace_of(s), name_of(s)))
    return EndpointSliceResult(slices=results, explanations=explanations)


# -- which pods, which ports -------------------------------------------------------------------


class _PodIndex:
    """Pods by (namespace, label key, label value), so a Service looks only at candidates."""

    def __init__(self, pods: Iterable[_PodView]) -> None:
        self.by_label: dict[tuple[str, str, str], list[_PodView]] = defaultdict(list)
        self.by_namespace: dict[str, list[_PodView]] = defaultdict(list)
        for pod in pods:
            self.by_namespace[pod.namespace].append(pod)
            for label, value in pod.labels.items():
                self.by_label[pod.namespace, label, value].append(pod)

    def select(self, namespace: str, selector: LabelSelector) -> list[_PodView]:
        candidates = self.by_namespace.get(namespace, [])
        for requirement in selector.requirements:
            if requirement.operator is Operator.EQUALS:
                posting = self.by_label.get((namespace, requirement.key, requirement.values[0]))
                if posting is None:
                    return []
                if len(posting) < len(candidates):
                    candidates = posting
        return [pod for pod in candidates if selector.matches(pod.labels)]


def _desired_endpoints(
    service: Mapping[str, Any], index: _PodIndex, notes: list[str]
) -> dict[_Ports, dict[_Identity, _Entry]] | None:
    """Endpoints grouped by resolved ports, each group in address order; None: no selector."""
    spec = spec_of(service)
    namespace, name = namespace_of(service), name_of(service)
    raw_selector = spec.get("selector")
    try:
        selector = service_selector(raw_selector if isinstance(raw_selector, Mapping) else None)
    except SelectorError as error:
        notes.append(f"spec.selector{error.field}: {error.message}; no endpoints are computed")
        return None
    if selector is None:
        return None
    service_ports = _service_ports(spec)
    publish_not_ready = spec.get("publishNotReadyAddresses") is True
    pods = sorted(index.select(namespace, selector), key=lambda p: (p.address_order, p.name))
    if not pods:
        notes.append(f"selector {selector} matches no pods in namespace {namespace}")
    groups: dict[_Ports, dict[_Identity, _Entry]] = {}
    for pod in pods:
        if pod.phase in _TERMINAL_PHASES:
            notes.append(
                f"pod {pod.key} has finished ({pod.phase}); finished pods are not endpoints"
            )
            continue
        if pod.address is None:
            notes.append(
                f"pod {pod.key} has no IP address yet (phase {pod.phase or 'Pending'}); "
                "it becomes an endpoint once the network plugin gives it one"
            )
            continue
        ports = []
        for port in service_ports:
            if isinstance(port.target, int):
                ports.append((port.name, port.target, port.protocol, port.app_protocol))
                continue
            number = pod.container_port(port.target, port.protocol)
            if number is None:
                shown = f"service port {port.name!r}" if port.name else "the service port"
                notes.append(
                    f"pod {pod.key}: no container port named {port.target!r} "
                    f"({port.protocol}); {shown} leaves this pod out"
                )
                continue
            ports.append((port.name, number, port.protocol, port.app_protocol))
        groups.setdefault(tuple(ports), {})[(pod.address, pod.key)] = _Entry(
            (pod.address_order, pod.key), _endpoint(pod, name, publish_not_ready)
        )
    return groups


def _service_ports(spec: Mapping[str, Any]) -> list[_ServicePort]:
    ports = []
    raw_ports = spec.get("ports")
    for raw in raw_ports if isinstance(raw_ports, list) else []:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("port"), int):
            continue
        target = raw.get("targetPort")
        if not isinstance(target, int | str) or isinstance(target, bool) or target == "":
            target = raw["port"]
        ports.append(
            _ServicePort(
                name=str(raw.get("name") or ""),
                port=raw["port"],
                protocol=str(raw.get("protocol") or "TCP"),
                target=target,
                app_protocol=str(raw.get("appProtocol") or ""),
            )
        )
    return ports


def _endpoint(pod: _PodView, service_name: str, publish_not_ready: bool) -> dict[str, Any]:
    # "ready" is never true for a terminating pod, for consumers that only read ready;
    # "serving" keeps the readiness so proxies can fall back to terminating endpoints.
    ready = publish_not_ready or (pod.ready and not pod.terminating)
    endpoint: dict[str, Any] = {
        "addresses": [pod.address],
        "conditions": {"ready": ready, "serving": pod.ready, "terminating": pod.terminating},
        "targetRef": {
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        },
    }
    if pod.node_name:
        endpoint["nodeName"] = pod.node_name
    # {hostname}.{service}.{ns}.svc names exist only under the pod's governing Service.
    if pod.hostname and pod.subdomain == service_name:
        endpoint["hostname"] = pod.hostname
    return endpoint


def _pod_view(pod: Mapping[str, Any]) -> _PodView:
    # Read fields directly rather than through objects.*: this runs once per pod in the
    # cluster and the per-call checks add up at 100k pods.
    metadata = _mapping(pod.get("metadata"))
    spec = _mapping(pod.get("spec"))
    status = _mapping(pod.get("status"))
    address, address_order = _pod_ipv4(status)
    ready = False
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, list) else []:
        condition = _mapping(condition)
        if condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    labels = metadata.get("labels")
    uid = metadata.get("uid")
    namespace = str(metadata.get("namespace") or DEFAULT_NAMESPACE)
    name = str(metadata.get("name") or "")
    return _PodView(
        key=f"{namespace}/{name}",
        namespace=namespace,
        name=name,
        uid=uid if isinstance(uid, str) and uid else uid_of(pod),
        labels=_mapping(labels),
        address=address,
        address_order=address_order,
        phase=str(status.get("phase") or ""),
        ready=ready,
        terminating=metadata.get("deletionTimestamp") is not None,
        node_name=str(spec.get("nodeName") or ""),
        hostname=str(spec.get("hostname") or ""),
        subdomain=str(spec.get("subdomain") or ""),
        spec=spec,
    )


def _pod_ipv4(status: Mapping[str, Any]) -> tuple[str | None, int]:
    """The pod's IPv4 address in canonical form and as an integer (0 when it has none)."""
    candidates = [status.get("podIP")]
    pod_ips = status.get("podIPs")
    for entry in pod_ips if isinstance(pod_ips, list) else []:
        candidates.append(_mapping(entry).get("ip"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            value = _ipv4_int(candidate)
            if value is not None:
                # _ipv4_int accepts only the canonical spelling, so the text is it.
                return candidate, value
    return None, 0


def _ipv4_int(text: str) -> int | None:
    """Dotted-quad IPv4 to an integer; ipaddress.IPv4Address is ten times slower at this."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    try:
        a, b, c, d = (int(part) for part in parts)
    except ValueError:
        return None
    # int() also takes " 1", "+1" and "01"; only the canonical spelling round-trips.
    if not (0 <= a <= 255 and 0 <= b <= 255 and 0 <= c <= 255 and 0 <= d <= 255):
        return None
    if f"{a}.{b}.{c}.{d}" != text:
        return None
    return a << 24 | b << 16 | c << 8 | d


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data, several times faster than copy.deepcopy."""
    if isinstance(value, Mapping):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return copy.deepcopy(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one: manifests are loosely typed."""
    if type(value) is dict or isinstance(value, Mapping):
        return value
    return {}


# -- which slice each endpoint goes in ---------------------------------------------------------


def _plan(
    service: Mapping[str, Any],
    groups: Mapping[_Ports, Mapping[_Identity, _Entry]],
    existing: Sequence[Mapping[str, Any]],
    max_per_slice: int,
    taken: set[str],
) -> list[_Bin]:
    """Bins of endpoints for one Service, reusing its existing slices as far as possible."""
    owner_uid = uid_of(service)
    by_ports: dict[tuple[tuple[str, int, str, str], ...], list[Mapping[str, Any]]] = {}
    reusable_names: list[str] = []
    for endpoint_slice in existing:
        if _owned_by(endpoint_slice, owner_uid) and endpoint_slice.get("addressType") == "IPv4":
            by_ports.setdefault(_sorted_ports(endpoint_slice), []).append(endpoint_slice)
        else:
            reusable_names.append(name_of(endpoint_slice))
    desired_by_sorted = {tuple(sorted(ports)): ports for ports in groups}
    for sorted_ports, slices in by_ports.items():
        if sorted_ports not in desired_by_sorted:
            reusable_names.extend(name_of(endpoint_slice) for endpoint_slice in slices)

    bins: list[_Bin] = []
    for sorted_ports in sorted(desired_by_sorted):
        ports = desired_by_sorted[sorted_ports]
        desired = groups[ports]
        group_bins, emptied = _fill_group(
            ports, desired, by_ports.get(sorted_ports, []), max_per_slice
        )
        reusable_names.extend(emptied)
        bins.extend(group_bins)

    # New slices take the names of slices that emptied, then fresh generated names.
    reusable_names.sort()
    attempt = 0
    namespace, name = namespace_of(service), name_of(service)
    for bin_ in bins:
        if bin_.base is not None:
            continue
        if reusable_names:
            bin_.name = reusable_names.pop(0)
            continue
        while True:
            candidate = generated_name(
                name, generated_suffix(namespace, name, "EndpointSlice", attempt=attempt)
            )
            attempt += 1
            if candidate not in taken:
                break
        taken.add(candidate)
        bin_.name = candidate
    return bins


def _fill_group(
    ports: _Ports,
    desired: Mapping[_Identity, _Entry],
    existing: Sequence[Mapping[str, Any]],
    max_per_slice: int,
) -> tuple[list[_Bin], list[str]]:
    """Bins for one port set, and the names of existing slices left empty."""
    bins: list[_Bin] = []
    emptied: list[str] = []
    placed: set[_Identity] = set()
    for endpoint_slice in existing:
        old = [e for e in endpoint_slice.get("endpoints") or [] if isinstance(e, Mapping)]
        kept: list[_Entry] = []
        for endpoint in old:
            identity = _identity(endpoint)
            if identity in desired and identity not in placed and len(kept) < max_per_slice:
                kept.append(desired[identity])
                placed.add(identity)
        if kept:
            changed = [e.endpoint for e in kept] != old or _ports_of(endpoint_slice) != ports
            bins.append(_Bin(ports, kept, endpoint_slice, changed, name_of(endpoint_slice)))
        else:
            emptied.append(name_of(endpoint_slice))
    remaining = [endpoint for identity, endpoint in desired.items() if identity not in placed]
    # Slices that are written anyway take new endpoints first, fullest first.
    for bin_ in sorted((b for b in bins if b.changed), key=lambda b: (-len(b.endpoints), b.name)):
        room = max_per_slice - len(bin_.endpoints)
        if room > 0 and remaining:
            bin_.endpoints.extend(remaining[:room])
            remaining = remaining[room:]
    while remaining:
        if len(remaining) < max_per_slice:
            target = _slice_to_fill(
                [b for b in bins if not b.changed], len(remaining), max_per_slice
            )
            if target is not None:
                target.endpoints.extend(remaining)
                target.changed = True
                break
        bins.append(_Bin(ports, remaining[:max_per_slice]))
        remaining = remaining[max_per_slice:]
    return bins, emptied


def _slice_to_fill(bins: Sequence[_Bin], count: int, max_per_slice: int) -> _Bin | None:
    """The unchanged slice that ``count`` more endpoints would leave closest to full."""
    fitting = [b for b in bins if len(b.endpoints) + count <= max_per_slice]
    if not fitting:
        return None
    return min(fitting, key=lambda b: (max_per_slice - len(b.endpoints) - count, b.name))


def _owned_by(endpoint_slice: Mapping[str, Any], owner_uid: str) -> bool:
    references = metadata_of(endpoint_slice).get("ownerReferences")
    if not references:
        return True  # made before the Service had a uid; adopt it
    return any(
        isinstance(reference, Mapping)
        and reference.get("kind") == "Service"
        and reference.get("uid") == owner_uid
        for reference in references
    )


def _identity(endpoint: Mapping[str, Any]) -> _Identity:
    addresses = endpoint.get("addresses")
    address = str(addresses[0]) if isinstance(addresses, list) and addresses else ""
    reference = endpoint.get("targetRef")
    if isinstance(reference, Mapping):
        return (address, f"{reference.get('namespace', '')}/{reference.get('name', '')}")
    return (address, "")


def _ports_of(endpoint_slice: Mapping[str, Any]) -> _Ports:
    ports = []
    for port in endpoint_slice.get("ports") or []:
        if isinstance(port, Mapping):
            ports.append(
                (
                    str(port.get("name") or ""),
                    int(port.get("port") or 0),
                    str(port.get("protocol") or "TCP"),
                    str(port.get("appProtocol") or ""),
                )
            )
    return tuple(ports)


def _sorted_ports(endpoint_slice: Mapping[str, Any]) -> _Ports:
    return tuple(sorted(_ports_of(endpoint_slice)))


# -- output ------------------------------------------------------------------------------------


def _render(service: Mapping[str, Any], bin_: _Bin) -> dict[str, Any]:
    namespace, service_name = namespace_of(service), name_of(service)
    if bin_.base is not None:
        metadata = _json_copy(metadata_of(bin_.base))
    else:
        metadata = {
            "generateName": generated_name(service_name, ""),
            "uid": derived_uid("EndpointSlice", namespace, bin_.name, uid_of(service)),
        }
    metadata["name"] = bin_.name
    metadata["namespace"] = namespace
    metadata["labels"] = _slice_labels(service)
    metadata["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": service_name,
            "uid": uid_of(service),
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    ports = []
    for name, number, protocol, app_protocol in bin_.ports:
        port: dict[str, Any] = {"name": name, "port": number, "protocol": protocol}
        if app_protocol:
            port["appProtocol"] = app_protocol
        ports.append(port)
    endpoints = [entry.endpoint for entry in sorted(bin_.endpoints, key=lambda e: e.order)]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": "IPv4",
        # Built afresh by this call and placed in exactly one slice, so no copy is needed.
        "endpoints": endpoints,
        "ports": ports,
    }


def _slice_labels(service: Mapping[str, Any]) -> dict[str, str]:
    """The Service's own labels, plus the ones that tie the slice to it and to us."""
    labels = {
        key: value for key, value in labels_of(service).items() if key not in _RESERVED_LABELS
    }
    cluster_ip = spec_of(service).get("clusterIP")
    if cluster_ip in (None, "", "None"):
        labels[LABEL_HEADLESS] = ""
    labels[LABEL_SERVICE_NAME] = name_of(service)
    labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
    return labels
