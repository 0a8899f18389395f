"""Check manifests the way kubectl and the API server would, for the fields kubewire uses.

:func:`validate` reports every problem at once (file, line and field for each) and returns the
manifests normalised (namespace defaulted), the warnings, and the cluster spec. Per-kind
checks are a table, :data:`VALIDATORS`, next to the kind table in :mod:`kinds`; each kind's
checks live in a module of their own, relations between objects in :mod:`.across`.

Not checked here: whether selectors match any pod (that needs the running cluster; the
controllers warn), and fields kubewire ignores (resources, probes, volumes...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kubewire.api.cluster import ClusterSpec
from kubewire.api.errors import KindError, ManifestError, ManifestErrors, ManifestWarning
from kubewire.api.kinds import KindInfo, resolve_kind
from kubewire.api.loader import Manifest
from kubewire.api.objects import DEFAULT_NAMESPACE
from kubewire.api.validation.across import BUILTIN_NAMESPACES, check_across
from kubewire.api.validation.calico import (
    check_bgp_configuration,
    check_bgp_peer,
    check_ip_pool,
)
from kubewire.api.validation.common import PROTOCOLS, Checker
from kubewire.api.validation.configmaps import check_config_map, check_secret
from kubewire.api.validation.endpointslices import (
    ADDRESS_TYPES,
    LABEL_SERVICE_NAME,
    check_endpoint_slice,
)
from kubewire.api.validation.metadata import check_metadata
from kubewire.api.validation.networkpolicies import check_network_policy
from kubewire.api.validation.pods import check_pod
from kubewire.api.validation.services import NODE_PORT_RANGE as NODE_PORT_RANGE
from kubewire.api.validation.services import SERVICE_TYPES, check_service
from kubewire.api.validation.workloads import (
    check_daemonset,
    check_replicated,
    check_statefulset,
)

__all__ = [
    "ADDRESS_TYPES",
    "BUILTIN_NAMESPACES",
    "LABEL_SERVICE_NAME",
    "PROTOCOLS",
    "SERVICE_TYPES",
    "VALIDATORS",
    "ValidationResult",
    "validate",
]


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Validated input: manifests in input order with namespaces defaulted, warnings that do
    not stop anything, and the cluster spec (the default one if no Cluster was given)."""

    manifests: tuple[Manifest, ...]
    warnings: tuple[ManifestWarning, ...]
    cluster: ClusterSpec


def _check_nothing_more(c: Checker) -> None:
    """Namespace: the name is all there is. Cluster: checked before the others, because every
    other check needs the cluster spec."""


Validator = Callable[[Checker], None]

VALIDATORS: Mapping[str, Validator] = {
    "Namespace": _check_nothing_more,
    "Pod": check_pod,
    "Service": check_service,
    "ConfigMap": check_config_map,
    "Secret": check_secret,
    "EndpointSlice": check_endpoint_slice,
    "NetworkPolicy": check_network_policy,
    "Deployment": check_replicated,
    "ReplicaSet": check_replicated,
    "StatefulSet": check_statefulset,
    "DaemonSet": check_daemonset,
    "Cluster": _check_nothing_more,
    "BGPConfiguration": check_bgp_configuration,
    "BGPPeer": check_bgp_peer,
    "IPPool": check_ip_pool,
}


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
        checker = Checker(manifest, info, cluster, errors, warnings)
        check_metadata(checker)
        VALIDATORS[info.kind](checker)
        normalized.append(_with_default_namespace(manifest, info))
    check_across(normalized, kinds, errors, warnings)
    # Report in input order: files as given, then by line within each file.
    sources = dict.fromkeys(m.source for m in inputs)
    order = {source: rank for rank, source in enumerate(sources)}
    if errors:
        errors.sort(key=lambda e: (order.get(e.source, len(order)), e.line or 0))
        raise ManifestErrors(errors)
    warnings.sort(key=lambda w: (order.get(w.source, len(order)), w.line or 0))
    return ValidationResult(tuple(normalized), tuple(warnings), cluster)
