"""bgpd: the asyncio BGP speaker around the sans-I/O core in ``kubewire.bgp``.

See README.md. ``Speaker(SpeakerConfig(...))``, ``await speaker.start()``, then
``speaker.peers()`` and ``speaker.routes()`` for status.
"""

from kubewire.bgpd.config import (
    BGP_PORT,
    NeighborConfig,
    Origination,
    SpeakerConfig,
    originations,
)
from kubewire.bgpd.errors import BgpdError, ConfigError
from kubewire.bgpd.sockets import SocketFactory, default_socket, set_gtsm, set_md5
from kubewire.bgpd.speaker import Speaker
from kubewire.bgpd.status import PathStatus, PeerStatus, RouteStatus

__all__ = [
    "BGP_PORT",
    "BgpdError",
    "ConfigError",
    "NeighborConfig",
    "Origination",
    "PathStatus",
    "PeerStatus",
    "RouteStatus",
    "SocketFactory",
    "Speaker",
    "SpeakerConfig",
    "default_socket",
    "originations",
    "set_gtsm",
    "set_md5",
]
