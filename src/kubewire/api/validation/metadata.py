"""Checks every kind shares: the top-level fields and ``metadata`` (name, namespace, labels,
annotations)."""

from __future__ import annotations

from collections.abc import Mapping

from kubewire.api.errors import show_value
from kubewire.api.names import (
    dns1035_label_problems,
    dns1123_label_problems,
    dns1123_subdomain_problems,
    label_key_problems,
)
from kubewire.api.objects import child_path
from kubewire.api.validation.common import Checker, NameRule, check_labels

_TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
_TOP_LEVEL_FIELDS_BY_KIND: Mapping[str, tuple[str, ...]] = {
    "ConfigMap": ("apiVersion", "kind", "metadata", "data", "binaryData", "immutable"),
    "Secret": ("apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"),
    "Cluster": ("apiVersion", "kind", "metadata", "spec"),
    "EndpointSlice": ("apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"),
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

# Name rules per kind. Services must be DNS-1035 labels (they become DNS host names and env
# var prefixes); StatefulSet names become pod host names; the Cluster checks its own name.
_NAME_RULES: Mapping[str, NameRule | None] = {
    "Namespace": dns1123_label_problems,
    "Service": dns1035_label_problems,
    "StatefulSet": dns1123_label_problems,
    "Cluster": None,
}


def check_metadata(c: Checker) -> None:
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
    check_labels(c, metadata.get("labels"), "metadata.labels")
    annotations = c.mapping(metadata.get("annotations"), "metadata.annotations")
    for key, value in (annotations or {}).items():
        key_path = child_path("metadata.annotations", str(key))
        c.names(str(key), key_path, label_key_problems, "annotation key")
        if not isinstance(value, str):
            c.error(key_path, f"annotation values must be strings, got {show_value(value)}")
