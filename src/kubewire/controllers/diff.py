"""What changed between two snapshots of objects, for reconcile loops.

Only the desired state counts: ``spec`` (and other top-level content such as a ConfigMap's
``data`` or an EndpointSlice's ``endpoints``) plus ``metadata.labels`` and
``metadata.annotations``. Status and server bookkeeping (uid, resourceVersion, timestamps,
managedFields) are ignored, so a status update never triggers a reconcile of the data plane.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from kubewire.controllers.objects import metadata_of

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

__all__ = ["ObjectDiff", "desired_content", "diff_objects"]

K = TypeVar("K", bound="SupportsRichComparison")

# Identity (kind, apiVersion), bookkeeping (metadata) and observed state (status).
_IGNORED_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "status"})


class ObjectDiff(NamedTuple, Generic[K]):
    """Keys, each list sorted. Unpacks as ``added, changed, removed``."""

    added: list[K]
    changed: list[K]
    removed: list[K]


def desired_content(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``obj`` a change to which must be reconciled."""
    content = {key: value for key, value in obj.items() if key not in _IGNORED_TOP_LEVEL}
    metadata = metadata_of(obj)
    # Absent and empty labels mean the same thing; compare them as equal.
    content["metadata.labels"] = dict(metadata.get("labels") or {})
    content["metadata.annotations"] = dict(metadata.get("annotations") or {})
    return content


def diff_objects(
    old: Mapping[K, Mapping[str, Any]], new: Mapping[K, Mapping[str, Any]]
) -> ObjectDiff[K]:
    """Keys only in ``new``, in both with different desired content, and only in ``old``."""
    added = sorted(key for key in new if key not in old)
    removed = sorted(key for key in old if key not in new)
    changed = sorted(
        key for key in new if key in old and desired_content(old[key]) != desired_content(new[key])
    )
    return ObjectDiff(added, changed, removed)
