"""diff_objects: what reconcile loops must act on."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubewire.controllers import diff_objects

BASE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "web",
        "namespace": "default",
        "labels": {"app": "web"},
        "uid": "1",
        "resourceVersion": "10",
    },
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    "status": {"loadBalancer": {}},
}


def edited(**changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = obj
        for part in parents:
            target = target.setdefault(part, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return obj


@pytest.mark.parametrize(
    ("new", "changed"),
    [
        (edited(), False),
        (edited(status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}), False),
        (edited(metadata__resourceVersion="11", metadata__uid="2"), False),
        (edited(metadata__managedFields=[{"manager": "kubectl"}]), False),
        (edited(spec__ports=[{"port": 8080}]), True),
        (edited(spec__selector={"app": "api"}), True),
        (edited(metadata__labels={"app": "web", "tier": "x"}), True),
        (edited(metadata__labels=None), True),
        (edited(metadata__annotations={"note": "x"}), True),
        (edited(data={"Corefile": "."}), True),
    ],
)
def test_changed_means_desired_content_changed(new: dict[str, Any], changed: bool) -> None:
    result = diff_objects({"default/web": BASE}, {"default/web": new})
    assert result.changed == (["default/web"] if changed else [])
    assert result.added == [] and result.removed == []


def test_absent_and_empty_labels_are_the_same() -> None:
    without = edited(metadata__labels=None)
    empty = edited(metadata__labels={})
    assert diff_objects({"k": without}, {"k": empty}).changed == []


def test_added_changed_removed_are_sorted_keys_and_unpack() -> None:
    old = {"c": BASE, "a": BASE, "x": BASE, "m": BASE}
    new = {"b": BASE, "x": edited(spec__ports=[]), "d": BASE, "m": BASE}
    added, changed, removed = diff_objects(old, new)
    assert added == ["b", "d"]
    assert changed == ["x"]
    assert removed == ["a", "c"]


def test_tuple_keys_work() -> None:
    old = {("Service", "default", "web"): BASE}
    new = {("Service", "default", "api"): BASE}
    result = diff_objects(old, new)
    assert result.added == [("Service", "default", "api")]
    assert result.removed == [("Service", "default", "web")]
