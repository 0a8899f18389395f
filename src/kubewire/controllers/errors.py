"""Failures of the controllers: one base class, one subclass per way things go wrong."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network

__all__ = [
    "ControllerError",
    "DuplicateNodeName",
    "PodCidrExhausted",
    "UnderlayExhausted",
]


class ControllerError(Exception):
    """Base class for every error raised by kubewire.controllers."""


class DuplicateNodeName(ControllerError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"node {name!r} is declared more than once; node names must be unique")


class PodCidrExhausted(ControllerError):
    """The cluster pod CIDR has fewer per-node ranges than there are nodes."""

    def __init__(
        self, pod_cidr: IPv4Network, mask_size: int, capacity: int, unserved: Sequence[str]
    ) -> None:
        self.pod_cidr = pod_cidr
        self.mask_size = mask_size
        self.capacity = capacity
        self.unserved = tuple(unserved)
        shown = ", ".join(self.unserved[:3]) + (", ..." if len(self.unserved) > 3 else "")
        super().__init__(
            f"pod CIDR {pod_cidr} holds only {capacity} per-node /{mask_size} range(s) and all "
            f"are taken; {len(self.unserved)} node(s) got none ({shown}). Use a bigger cluster "
            f"pod CIDR (a prefix shorter than /{pod_cidr.prefixlen}) or smaller per-node ranges "
            f"(a mask longer than /{mask_size})."
        )


class UnderlayExhausted(ControllerError):
    """The underlay network has fewer free host addresses than there are nodes."""

    def __init__(self, underlay_cidr: IPv4Network, capacity: int, unserved: Sequence[str]) -> None:
        self.underlay_cidr = underlay_cidr
        self.capacity = capacity
        self.unserved = tuple(unserved)
        shown = ", ".join(self.unserved[:3]) + (", ..." if len(self.unserved) > 3 else "")
        super().__init__(
            f"underlay network {underlay_cidr} has only {capacity} node address(es) (the network "
            f"address, the first host, reserved for the lab, and broadcast are not handed out) "
            f"and all are taken; {len(self.unserved)} node(s) got none ({shown}). Use a bigger "
            f"underlay network (a prefix shorter than /{underlay_cidr.prefixlen})."
        )
