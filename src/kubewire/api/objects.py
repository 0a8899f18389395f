"""Small helpers over raw object dicts, and the field-path spelling used in every message.

Raw objects are plain JSON-compatible dicts as loaded from manifests. The accessors here are
forgiving (a missing or mistyped field reads as empty) because they also run on objects that
validation has not seen yet; validation is where wrong shapes are reported.

Field paths follow Kubernetes's ``field.Path`` spelling: ``spec.containers[0].ports[1].name``.
Map keys that are not plain words are bracketed: ``metadata.labels[app.kubernetes.io/name]``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubewire.api.kinds import KINDS

__all__ = [
    "DEFAULT_NAMESPACE",
    "ObjectKey",
    "annotations_of",
    "api_version_of",
    "child_path",
    "index_path",
    "kind_of",
    "labels_of",
    "metadata_of",
    "name_of",
    "namespace_of",
    "normalize_path",
    "parent_path",
    "pod_spec_of",
    "spec_of",
]

DEFAULT_NAMESPACE = "default"

# Kinds whose pod spec sits at spec.template.spec rather than spec.
_WORKLOAD_KINDS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"})

_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_SEGMENT_RE = re.compile(r"\[(\d+)\]|\[([^\]]*)\]|\.?([^.\[\]]+)")


@functools.lru_cache(maxsize=4096)
def _is_plain_key(key: str) -> bool:
    return _PLAIN_KEY_RE.fullmatch(key) is not None


def child_path(parent: str, key: str) -> str:
    """The path of ``key`` inside the mapping at ``parent`` ("" is the object root)."""
    if not _is_plain_key(key):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def index_path(parent: str, index: int) -> str:
    """The path of item ``index`` of the list at ``parent``."""
    return f"{parent}[{index}]"


def _segments(path: str) -> list[str | int]:
    segments: list[str | int] = []
    for match in _SEGMENT_RE.finditer(path):
        index, bracketed, dotted = match.groups()
        if index is not None:
            segments.append(int(index))
        else:
            segments.append(bracketed if bracketed is not None else dotted)
    return segments


def _join(segments: list[str | int]) -> str:
    path = ""
    for segment in segments:
        path = index_path(path, segment) if isinstance(segment, int) else child_path(path, segment)
    return path


def normalize_path(path: str) -> str:
    """Spell ``path`` canonically, so ``a[b]`` and ``a.b`` name the same field."""
    return _join(_segments(path))


def parent_path(path: str) -> str | None:
    """The enclosing field's path; "" for a top-level field, None for the root itself."""
    segments = _segments(path)
    if not segments:
        return None
    return _join(segments[:-1])


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def kind_of(obj: Mapping[str, Any]) -> str:
    return _string(obj.get("kind"))


def api_version_of(obj: Mapping[str, Any]) -> str:
    return _string(obj.get("apiVersion"))


def metadata_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj.get("metadata"))


def name_of(obj: Mapping[str, Any]) -> str:
    return _string(metadata_of(obj).get("name"))


def namespace_of(obj: Mapping[str, Any]) -> str:
    """The object's namespace: as declared, "default" if a namespaced kind declares none,
    and "" for cluster-scoped kinds. Unknown kinds count as namespaced, as in Kubernetes."""
    info = KINDS.get(kind_of(obj))
    if info is not None and not info.namespaced:
        return ""
    return _string(metadata_of(obj).get("namespace")) or DEFAULT_NAMESPACE


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _string_map(metadata_of(obj).get("labels"))


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _string_map(metadata_of(obj).get("annotations"))


def _string_map(value: Any) -> Mapping[str, str]:
    return {k: v for k, v in _mapping(value).items() if isinstance(v, str)}


def spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj.get("spec"))


def pod_spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec of a Pod or of a workload's template; None for other kinds."""
    kind = kind_of(obj)
    if kind == "Pod":
        return spec_of(obj)
    if kind in _WORKLOAD_KINDS:
        return _mapping(_mapping(spec_of(obj).get("template")).get("spec"))
    return None


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """Identity of an object; ``namespace`` is "" for cluster-scoped kinds."""

    kind: str
    namespace: str
    name: str

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> ObjectKey:
        return cls(kind_of(obj), namespace_of(obj), name_of(obj))

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind.lower()}/{self.namespace}/{self.name}"
        return f"{self.kind.lower()}/{self.name}"
