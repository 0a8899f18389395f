"""The errors of kubewire.bgpnet: one base, a class per failure, each saying what to fix."""

from __future__ import annotations

__all__ = [
    "BgpNetError",
    "DuplicateBgpConfiguration",
    "DuplicateNode",
    "InvalidObject",
    "NodeWithoutAddress",
    "UnknownNode",
]


class BgpNetError(Exception):
    """Base of every error raised by kubewire.bgpnet."""


class InvalidObject(BgpNetError):
    """A BGPConfiguration, BGPPeer, Node or Service that does not have the shape validation
    guarantees, or uses a field kubewire refuses (``where`` names object and field)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


class NodeWithoutAddress(BgpNetError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f'node "{name}" has no IPv4 InternalIP in status.addresses, so it has no BGP '
            "router ID or peering address; wait until the node is registered with its address"
        )


class UnknownNode(BgpNetError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        shown = ", ".join(sorted(known)) or "none"
        super().__init__(f'no node named "{name}" among the BGP nodes (known: {shown})')


class DuplicateNode(BgpNetError):
    def __init__(self, what: str, first: str, second: str) -> None:
        super().__init__(
            f"nodes {first!r} and {second!r} have the same {what}; every node needs its own "
            "name and InternalIP to be a BGP peer"
        )


class DuplicateBgpConfiguration(BgpNetError):
    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(
            f"{len(names)} BGPConfigurations ({', '.join(sorted(names))}): kubewire reads one, "
            'named "default" (per-node node.<name> configurations are not supported); delete '
            "the others"
        )
