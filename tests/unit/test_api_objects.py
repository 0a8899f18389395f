"""Object helpers and the field-path spelling."""

from __future__ import annotations

from typing import Any

import pytest

from kubewire.api.objects import (
    ObjectKey,
    annotations_of,
    child_path,
    index_path,
    labels_of,
    name_of,
    namespace_of,
    normalize_path,
    parent_path,
    pod_spec_of,
)

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-0",
        "labels": {"app": "web", "bad": 1},
        "annotations": {"note": "x"},
    },
    "spec": {"containers": [{"name": "c", "image": "i"}]},
}


@pytest.mark.parametrize(
    ("obj", "key", "text"),
    [
        (POD, ObjectKey("Pod", "default", "web-0"), "pod/default/web-0"),
        (
            {"kind": "Service", "metadata": {"name": "db", "namespace": "prod"}},
            ObjectKey("Service", "prod", "db"),
            "service/prod/db",
        ),
        ({"kind": "Namespace", "metadata": {"name": "prod"}}, ObjectKey("Namespace", "", "prod"),
         "namespace/prod"),
        # A namespace on a cluster-scoped kind is an error elsewhere; the key ignores it.
        ({"kind": "Cluster", "metadata": {"name": "c", "namespace": "x"}},
         ObjectKey("Cluster", "", "c"), "cluster/c"),
        ({"metadata": "oops"}, ObjectKey("", "default", ""), "/default/"),
    ],
)
def test_object_key(obj: dict[str, Any], key: ObjectKey, text: str) -> None:
    assert ObjectKey.from_obj(obj) == key
    assert str(key) == text


def test_accessors_are_forgiving() -> None:
    assert name_of(POD) == "web-0"
    assert namespace_of(POD) == "default"
    assert labels_of(POD) == {"app": "web"}  # the non-string value is dropped
    assert annotations_of(POD) == {"note": "x"}
    assert pod_spec_of(POD) == POD["spec"]
    deployment = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": []}}}}
    assert pod_spec_of(deployment) == {"containers": []}
    assert pod_spec_of({"kind": "Service"}) is None
    assert labels_of({}) == {}
    assert name_of({"metadata": {"name": 3}}) == ""


@pytest.mark.parametrize(
    ("parent", "key", "path"),
    [
        ("", "spec", "spec"),
        ("spec", "replicas", "spec.replicas"),
        ("metadata.labels", "app.kubernetes.io/name", "metadata.labels[app.kubernetes.io/name]"),
        ("data", "0", "data.0"),
    ],
)
def test_child_path(parent: str, key: str, path: str) -> None:
    assert child_path(parent, key) == path


@pytest.mark.parametrize(
    ("path", "normal", "parent"),
    [
        ("spec.containers[0].ports[1].name", "spec.containers[0].ports[1].name",
         "spec.containers[0].ports[1]"),
        ("spec.containers[0]", "spec.containers[0]", "spec.containers"),
        ("spec", "spec", ""),
        ("", "", None),
        ("spec.selector.matchLabels[app]", "spec.selector.matchLabels.app",
         "spec.selector.matchLabels"),
        ("metadata.labels[a.b/c]", "metadata.labels[a.b/c]", "metadata.labels"),
        ("metadata.annotations.a/b", "metadata.annotations[a/b]", "metadata.annotations"),
    ],
)
def test_path_normalisation_and_parent(path: str, normal: str, parent: str | None) -> None:
    assert normalize_path(path) == normal
    assert parent_path(path) == parent


def test_index_path() -> None:
    assert index_path("items", 3) == "items[3]"
