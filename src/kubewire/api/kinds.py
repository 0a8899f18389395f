"""The kinds kubewire serves, as one table, and the lookups over it.

The table is data: adding a kind is adding a row here and a validator in
:data:`kubewire.api.validation.VALIDATORS` (kept there so this module imports nothing and
validation can import it without a cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from kubewire.api.errors import KindError, UnknownResourceTypeError

__all__ = [
    "CLUSTER_API_VERSION",
    "KINDS",
    "KindInfo",
    "loadable_kinds",
    "resolve_kind",
    "resolve_resource_type",
]

CLUSTER_API_VERSION = "kubewire.dev/v1alpha1"


@dataclass(frozen=True, slots=True)
class KindInfo:
    """What kubewire knows about one kind. ``api_versions[0]`` is the preferred version."""

    kind: str
    api_versions: tuple[str, ...]
    namespaced: bool
    plural: str
    short_names: tuple[str, ...] = ()
    # Kinds kubewire makes itself (Node) are listed for `get` but refused in manifests,
    # with ``not_loadable_reason`` telling the user where such objects come from instead.
    loadable: bool = True
    not_loadable_reason: str = ""

    @property
    def api_version(self) -> str:
        return self.api_versions[0]

    @property
    def group(self) -> str:
        """API group ("" for the core group), as in ``deployments.apps``."""
        group, _, _ = self.api_version.rpartition("/")
        return group

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def type_names(self) -> tuple[str, ...]:
        """Every name the CLI accepts for this kind."""
        return (self.singular, self.plural, *self.short_names)


_NODES_COME_FROM_CLUSTER = (
    "Node objects cannot be declared in manifests: the cluster makes its nodes from the "
    "Cluster object's spec.nodes; declare them there"
)

_CALICO_VERSIONS = ("projectcalico.org/v3", "crd.projectcalico.org/v1")

_AFFINITIES_COME_FROM_NODES = (
    "BlockAffinity objects cannot be declared in manifests: a node claims its IPAM blocks "
    "itself when it needs addresses (declare an IPPool to choose where they come from)"
)

KINDS: Mapping[str, KindInfo] = MappingProxyType(
    {
        info.kind: info
        for info in (
            KindInfo("Namespace", ("v1",), False, "namespaces", ("ns",)),
            KindInfo(
                "Node",
                ("v1",),
                False,
                "nodes",
                ("no",),
                loadable=False,
                not_loadable_reason=_NODES_COME_FROM_CLUSTER,
            ),
            KindInfo("Pod", ("v1",), True, "pods", ("po",)),
            KindInfo("Service", ("v1",), True, "services", ("svc",)),
            KindInfo("ConfigMap", ("v1",), True, "configmaps", ("cm",)),
            KindInfo("Secret", ("v1",), True, "secrets"),
            KindInfo("EndpointSlice", ("discovery.k8s.io/v1",), True, "endpointslices"),
            KindInfo("NetworkPolicy", ("networking.k8s.io/v1",), True, "networkpolicies",
                     ("netpol",)),
            KindInfo("Deployment", ("apps/v1",), True, "deployments", ("deploy",)),
            KindInfo("ReplicaSet", ("apps/v1",), True, "replicasets", ("rs",)),
            KindInfo("StatefulSet", ("apps/v1",), True, "statefulsets", ("sts",)),
            KindInfo("DaemonSet", ("apps/v1",), True, "daemonsets", ("ds",)),
            KindInfo("Cluster", (CLUSTER_API_VERSION,), False, "clusters"),
            # Calico's BGP kinds; crd.projectcalico.org/v1 is how they sit in a cluster
            # without the Calico API server, so manifests in either spelling load.
            KindInfo("BGPConfiguration", _CALICO_VERSIONS, False, "bgpconfigurations",
                     ("bgpconfig",)),
            KindInfo("BGPPeer", _CALICO_VERSIONS, False, "bgppeers", ("bgppeer",)),
            KindInfo("IPPool", _CALICO_VERSIONS, False, "ippools", ("ippool",)),
            KindInfo("BlockAffinity", ("crd.projectcalico.org/v1",), False, "blockaffinities",
                     loadable=False, not_loadable_reason=_AFFINITIES_COME_FROM_NODES),
        )
    }
)

_BY_TYPE_NAME: Mapping[str, KindInfo] = MappingProxyType(
    {name: info for info in KINDS.values() for name in (*info.type_names, info.kind.lower())}
)


def loadable_kinds() -> tuple[str, ...]:
    """Kinds a manifest may declare, sorted."""
    return tuple(sorted(info.kind for info in KINDS.values() if info.loadable))


def resolve_kind(kind: object, api_version: object) -> KindInfo:
    """The KindInfo for a manifest's ``kind`` and ``apiVersion``, or KindError saying why not."""
    supported = ", ".join(loadable_kinds())
    if kind is None or kind == "":
        raise KindError("kind", f"required field is missing; set it to one of: {supported}")
    if not isinstance(kind, str):
        raise KindError("kind", f"must be a string, one of: {supported}")
    info = KINDS.get(kind)
    if info is None:
        near = _BY_TYPE_NAME.get(kind.lower())
        hint = f'; did you mean "{near.kind}"?' if near is not None and near.loadable else ""
        raise KindError("kind", f'unknown kind "{kind}"{hint} (kubewire supports: {supported})')
    if not info.loadable:
        raise KindError("kind", info.not_loadable_reason)
    if api_version is None or api_version == "":
        raise KindError("apiVersion", f'required field is missing; set it to "{info.api_version}"')
    if api_version not in info.api_versions:
        shown = f'"{api_version}"' if isinstance(api_version, str) else repr(api_version)
        raise KindError(
            "apiVersion",
            f'no matches for kind "{kind}" in version {shown}; '
            f'{kind} is served as apiVersion "{info.api_version}"',
        )
    return info


def resolve_resource_type(name: str) -> KindInfo:
    """Resolve a CLI type name (``po``, ``deployments``, ``deploy.apps``, ``Service``)."""
    lowered = name.lower()
    info = _BY_TYPE_NAME.get(lowered)
    if info is None and "." in lowered:
        # kubectl accepts TYPE.GROUP (deployments.apps); the core group has no suffix.
        bare, _, group = lowered.partition(".")
        candidate = _BY_TYPE_NAME.get(bare)
        if candidate is not None and candidate.group == group:
            info = candidate
    if info is None:
        known = ", ".join(sorted(i.plural for i in KINDS.values()))
        raise UnknownResourceTypeError(
            f'the server doesn\'t have a resource type "{name}" (kubewire knows: {known})'
        )
    return info
