"""The kind table and the lookups over it."""

from __future__ import annotations

import pytest

from kubewire.api.errors import KindError, UnknownResourceTypeError
from kubewire.api.kinds import KINDS, loadable_kinds, resolve_kind, resolve_resource_type
from kubewire.api.validation import VALIDATORS


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("pods", "Pod"), ("pod", "Pod"), ("po", "Pod"), ("Pod", "Pod"),
        ("deploy", "Deployment"), ("deployments", "Deployment"),
        ("deployments.apps", "Deployment"),
        ("svc", "Service"), ("services", "Service"),
        ("ns", "Namespace"), ("namespaces", "Namespace"),
        ("nodes", "Node"), ("no", "Node"), ("node", "Node"),
        ("sts", "StatefulSet"), ("statefulsets", "StatefulSet"),
        ("ds", "DaemonSet"), ("rs", "ReplicaSet"), ("cm", "ConfigMap"),
        ("clusters", "Cluster"), ("cluster", "Cluster"),
    ],
)
def test_resolve_resource_type(name: str, kind: str) -> None:
    assert resolve_resource_type(name).kind == kind


@pytest.mark.parametrize("name", ["ingresses", "pods.apps", "deployments.batch", ""])
def test_unknown_resource_type_lists_known_ones(name: str) -> None:
    with pytest.raises(UnknownResourceTypeError) as caught:
        resolve_resource_type(name)
    assert f'resource type "{name}"' in str(caught.value)
    assert "deployments" in str(caught.value)


def test_kind_table() -> None:
    assert set(loadable_kinds()) == {
        "Namespace", "Pod", "Service", "ConfigMap", "EndpointSlice", "Deployment", "ReplicaSet",
        "StatefulSet", "DaemonSet", "Cluster", "NetworkPolicy", "BGPConfiguration", "BGPPeer",
        "IPPool", "Secret",
    }
    assert not KINDS["Node"].loadable and not KINDS["BlockAffinity"].loadable
    assert KINDS["Cluster"].api_version == "kubewire.dev/v1alpha1"
    assert not KINDS["Cluster"].namespaced and not KINDS["Namespace"].namespaced
    assert KINDS["Pod"].namespaced
    assert KINDS["Deployment"].group == "apps" and KINDS["Pod"].group == ""
    # Every kind a manifest may declare has a validator.
    assert set(VALIDATORS) == set(loadable_kinds())


@pytest.mark.parametrize(
    ("kind", "api_version", "field", "message"),
    [
        ("Ingress", "networking.k8s.io/v1", "kind", 'unknown kind "Ingress"'),
        ("Ingress", "v1", "kind", "kubewire supports: BGPConfiguration, BGPPeer, Cluster, "
                                  "ConfigMap, DaemonSet"),
        ("deployment", "apps/v1", "kind", 'did you mean "Deployment"?'),
        (None, "v1", "kind", "required field is missing"),
        (3, "v1", "kind", "must be a string"),
        ("Node", "v1", "kind", "the Cluster object's spec.nodes"),
        ("Deployment", "v1", "apiVersion",
         'no matches for kind "Deployment" in version "v1"; Deployment is served as apiVersion '
         '"apps/v1"'),
        ("Deployment", None, "apiVersion", 'set it to "apps/v1"'),
        ("Cluster", "v1", "apiVersion", '"kubewire.dev/v1alpha1"'),
    ],
)
def test_resolve_kind_errors(kind: object, api_version: object, field: str, message: str) -> None:
    with pytest.raises(KindError) as caught:
        resolve_kind(kind, api_version)
    assert caught.value.field == field
    assert message in caught.value.message


def test_resolve_kind_accepts_known_pairs() -> None:
    assert resolve_kind("StatefulSet", "apps/v1") is KINDS["StatefulSet"]
    assert resolve_kind("ConfigMap", "v1") is KINDS["ConfigMap"]
