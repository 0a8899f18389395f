"""kube-proxy for kubewire: Services and EndpointSlices -> one nftables table per node.

Pure: ``compile_proxy`` / ``ProxyCompiler`` (compiler; ``update`` takes watch events),
``Ruleset`` (model), ``plan_full`` / ``plan_incremental`` (plan), ``stale_udp_flows``
(stale), ``FakeNft`` / ``check_ruleset`` / ``evaluate`` (fake). I/O: ``ProxySyncer`` (sync).
See README.md.
"""

from kubewire.proxy.compiler import ProxyCompiler, compile_proxy
from kubewire.proxy.errors import FakeNftError, ProxyError, ProxyInputError, ProxySyncError
from kubewire.proxy.model import Chain, Hook, NftSet, Ruleset, StaleFlow, UdpFrontend
from kubewire.proxy.stale import stale_udp_flows
from kubewire.proxy.views import NodeContext, ServiceView, SliceView

__all__ = [
    "Chain",
    "FakeNftError",
    "Hook",
    "NftSet",
    "NodeContext",
    "ProxyCompiler",
    "ProxyError",
    "ProxyInputError",
    "ProxySyncError",
    "Ruleset",
    "ServiceView",
    "SliceView",
    "StaleFlow",
    "UdpFrontend",
    "compile_proxy",
    "stale_udp_flows",
]
