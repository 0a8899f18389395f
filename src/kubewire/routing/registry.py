"""The routing backend registry: plain data, no registration side effects."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from kubewire.routing.bgp import BgpBackend
from kubewire.routing.hostgw import HostGwBackend
from kubewire.routing.model import Backend, UnknownBackendError
from kubewire.routing.vxlan import VxlanBackend

BACKENDS: Mapping[str, Backend] = MappingProxyType(
    {
        "vxlan": VxlanBackend(),
        "host-gw": HostGwBackend(),
        "bgp": BgpBackend(),
    }
)

DEFAULT_BACKEND = "vxlan"


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        choices = ", ".join(sorted(BACKENDS))
        raise UnknownBackendError(
            f"unknown routing backend {name!r}; choose one of: {choices}"
        ) from None


def pod_mtu(backend: Backend | str, mtu: int) -> int:
    """The MTU pods should get (the CNI config's "mtu") on an underlay of MTU `mtu`."""
    chosen = get_backend(backend) if isinstance(backend, str) else backend
    return mtu - chosen.mtu_overhead
