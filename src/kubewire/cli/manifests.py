"""Manifests as the CLI takes them: load, validate, and split off the Cluster object."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.api.errors import ManifestWarning
from kubewire.api.loader import load_paths
from kubewire.api.validation import validate
from kubewire.controllers.admission import pod_range_problems
from kubewire.controllers.nodes import build_nodes


@dataclass
class LoadedInput:
    objects: list[dict[str, Any]]          # everything but the Cluster object
    cluster: dict[str, Any] | None         # the Cluster object, if one was given
    warnings: list[ManifestWarning] = field(default_factory=list)

    def warnings_for_running_lab(self) -> list[ManifestWarning]:
        """Warnings that still hold when applying to a running lab: there the daemon checks
        namespaces against the lab itself, so "namespace not declared in the input" is noise."""
        return [w for w in self.warnings if w.field != "metadata.namespace"]

    def cluster_object(self, name_override: str | None = None) -> dict[str, Any]:
        """The Cluster object to build, with every default filled in."""
        obj: dict[str, Any] = json.loads(json.dumps(self.cluster)) if self.cluster else {
            "apiVersion": "kubewire.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "kubewire"}, "spec": {}}
        if name_override:
            obj["metadata"]["name"] = name_override
        spec = ClusterSpec.from_obj(obj)
        obj["metadata"]["name"] = spec.name
        return obj

    def pod_range_problems(self, cluster_obj: dict[str, Any]) -> list[str]:
        """Workloads that would exhaust the pod ranges of the lab this input builds."""
        spec = ClusterSpec.from_obj(cluster_obj)
        nodes = build_nodes(spec.nodes, pod_cidr=spec.pod_cidr, underlay_cidr=spec.underlay_cidr,
                            node_cidr_mask_size=spec.node_cidr_mask_size,
                            reserved=spec.reserved_underlay)
        return pod_range_problems(self.objects, nodes)

    def all_objects(self) -> list[dict[str, Any]]:
        return [*self.objects, *([self.cluster] if self.cluster else [])]


def load_input(paths: Sequence[str]) -> LoadedInput:
    """Load and validate; raises an ApiError subclass naming file, line and field."""
    result = validate(load_paths(paths))
    objects, cluster = [], None
    for m in result.manifests:
        if m.obj.get("kind") == "Cluster":
            cluster = m.obj
        else:
            objects.append(m.obj)
    return LoadedInput(objects, cluster, list(result.warnings))
