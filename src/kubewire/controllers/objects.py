"""Small accessors for Kubernetes objects held as plain JSON-shaped dicts.

Manifests are loosely typed; these helpers read them defensively (a missing ``metadata`` or a
null ``labels`` is treated as empty) so the controllers need not repeat the checks.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_NAMESPACE",
    "controller_owner",
    "derived_uid",
    "labels_of",
    "metadata_of",
    "name_of",
    "namespace_of",
    "object_key",
    "owner_reference",
    "spec_of",
    "uid_of",
]

DEFAULT_NAMESPACE = "default"

# Fixed namespace for our uuid5s: the same object always gets the same uid, in every run.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "uids.kubewire.invalid")


def derived_uid(*parts: str) -> str:
    """A deterministic stand-in for the random uid the API server would assign."""
    return str(uuid.uuid5(_UID_NAMESPACE, "\x00".join(parts)))


def metadata_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(metadata_of(obj).get("name") or "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    """The object's namespace; manifests without one land in ``default``, as with kubectl."""
    return str(metadata_of(obj).get("namespace") or DEFAULT_NAMESPACE)


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = metadata_of(obj).get("labels")
    return dict(labels) if isinstance(labels, Mapping) else {}


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name``, the key Kubernetes caches use for namespaced objects."""
    return f"{namespace_of(obj)}/{name_of(obj)}"


def uid_of(obj: Mapping[str, Any]) -> str:
    """The object's uid, or a derived one for manifests that have not been through a store."""
    uid = metadata_of(obj).get("uid")
    if isinstance(uid, str) and uid:
        return uid
    return derived_uid(str(obj.get("kind", "")), namespace_of(obj), name_of(obj))


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The controller ownerReference a child of ``owner`` carries."""
    return {
        "apiVersion": str(owner.get("apiVersion", "")),
        "kind": str(owner.get("kind", "")),
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_owner(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true``, if any (there is at most one)."""
    references = metadata_of(obj).get("ownerReferences")
    if not isinstance(references, list):
        return None
    for reference in references:
        if isinstance(reference, Mapping) and reference.get("controller") is True:
            return reference
    return None
