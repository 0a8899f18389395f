"""kubewire.api: manifests in, validated plain objects out. Pure; imports no other kubewire
package. See README.md in this directory for the theory of operation."""

from kubewire.api.cluster import ClusterSpec, ClusterSpecError, NodeSpec
from kubewire.api.errors import (
    ApiError,
    KindError,
    ManifestError,
    ManifestErrors,
    ManifestWarning,
    UnknownResourceTypeError,
)
from kubewire.api.kinds import KINDS, KindInfo, resolve_kind, resolve_resource_type
from kubewire.api.loader import Manifest, expand_paths, load_paths, load_text
from kubewire.api.objects import ObjectKey
from kubewire.api.validation import ValidationResult, validate

__all__ = [
    "KINDS",
    "ApiError",
    "ClusterSpec",
    "ClusterSpecError",
    "KindError",
    "KindInfo",
    "Manifest",
    "ManifestError",
    "ManifestErrors",
    "ManifestWarning",
    "NodeSpec",
    "ObjectKey",
    "UnknownResourceTypeError",
    "ValidationResult",
    "expand_paths",
    "load_paths",
    "load_text",
    "resolve_kind",
    "resolve_resource_type",
    "validate",
]
