"""Checks across objects, once each object has passed its own: duplicate objects, Services
claiming the same cluster IP or node port, undeclared namespaces, StatefulSets without their
governing Service."""

from __future__ import annotations

from collections.abc import Mapping

from kubewire.api.errors import ManifestError, ManifestWarning
from kubewire.api.kinds import KindInfo
from kubewire.api.loader import Manifest
from kubewire.api.objects import ObjectKey, index_path
from kubewire.api.validation.common import is_int

# Namespaces every cluster has, so objects may use them without declaring them.
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def check_across(
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
    _warn_undeclared_namespaces(namespace_users, declared_namespaces, warnings)
    _warn_missing_governing_services(statefulsets, services, warnings)


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
        if not isinstance(port, Mapping) or not is_int(port.get("nodePort")):
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


def _warn_undeclared_namespaces(
    namespace_users: dict[str, list[Manifest]],
    declared: set[str],
    warnings: list[ManifestWarning],
) -> None:
    for namespace, users in namespace_users.items():
        if namespace not in declared:
            warnings.append(
                users[0].warning(
                    "metadata.namespace",
                    f'namespace "{namespace}" is not declared by a Namespace object in the input '
                    f"(used by {len(users)} object{'s' if len(users) != 1 else ''}); add one, "
                    "as Kubernetes refuses objects in a namespace that does not exist",
                )
            )


def _warn_missing_governing_services(
    statefulsets: list[Manifest],
    services: set[tuple[str, str]],
    warnings: list[ManifestWarning],
) -> None:
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
