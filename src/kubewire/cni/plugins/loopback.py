"""kubewire-loopback: bring `lo` up in the container (down again on DEL).

Like the reference plugin it always works on `lo` whatever CNI_IFNAME says, and in
a chain it passes prevResult through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from kubewire.cni.invoke import NsRef
from kubewire.cni.plugins import nl
from kubewire.cni.plugins.skel import Handler, PluginRequest, dispatch, plugin_main
from kubewire.cni.protocol import CniError, Command, ErrorCode, Interface, IPConfig, Result
from kubewire.kernel.rtnl import LinkInfo, Rtnl

PLUGIN = "kubewire-loopback"
LOOPBACK = "lo"


def _loopback(rtnl: Rtnl) -> LinkInfo:
    link = rtnl.link(LOOPBACK)
    if link is None:
        raise CniError(ErrorCode.KERNEL, "the container has no lo interface")
    return link


def cmd_add(request: PluginRequest) -> Result:
    netns = request.env.netns
    if not nl.netns_exists(netns):
        raise CniError(ErrorCode.UNKNOWN_CONTAINER, f"network namespace {netns} does not exist")
    nl.refuse_init_netns(netns, "container")
    try:
        with Rtnl.open(netns) as rtnl:
            index = _loopback(rtnl).index
            rtnl.set_link(index, up=True)
            addrs = [a.interface for a in rtnl.addresses(index)]
    except CniError:
        raise
    except Exception as exc:
        raise nl.kernel_error("setting lo up", exc) from exc
    for addr in addrs:
        if not addr.ip.is_loopback:
            raise CniError(ErrorCode.KERNEL, f"lo has a non-loopback address {addr}")
    prev = request.prev_result
    if prev is not None:
        return prev
    ips: list[IPConfig] = []
    for family in (4, 6):
        first = next((a for a in addrs if a.version == family), None)
        if first is not None:
            ips.append(IPConfig(address=str(first), interface=0))
    iface = Interface(name=LOOPBACK, mac="00:00:00:00:00:00", sandbox=netns)
    return Result(request.cni_version, (iface,), tuple(ips))


def cmd_del(request: PluginRequest) -> None:
    netns = request.env.netns
    if not nl.netns_exists(netns):
        return  # nothing left to tidy: DEL must succeed
    nl.refuse_init_netns(netns, "container")
    try:
        with Rtnl.open(netns) as rtnl:
            rtnl.set_link(_loopback(rtnl).index, up=False)
    except Exception as exc:
        raise nl.kernel_error("setting lo down", exc) from exc


def cmd_check(request: PluginRequest) -> None:
    netns = request.env.netns
    if not nl.netns_exists(netns):
        raise CniError(ErrorCode.UNKNOWN_CONTAINER, f"network namespace {netns} is gone")
    with Rtnl.open(netns) as rtnl:
        up = _loopback(rtnl).up
    if not up:
        raise CniError(ErrorCode.CHECK_FAILED, "loopback interface is down")


def _nothing(request: PluginRequest) -> None:
    return None


HANDLERS: dict[Command, Handler] = {
    Command.ADD: cmd_add,
    Command.DEL: cmd_del,
    Command.CHECK: cmd_check,
    Command.STATUS: _nothing,
    Command.GC: _nothing,
}


def run(command: str, env: Mapping[str, str], stdin: bytes, host_netns: NsRef) -> tuple[int, bytes]:
    return dispatch(HANDLERS, command, env, stdin, host_netns)


def main() -> int:
    return plugin_main(run)
