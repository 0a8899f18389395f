"""kubewire-bridge: attach a container to a Linux bridge with a veth pair.

Behaves like the reference `bridge` plugin for the fields it supports: `bridge`
(default cni0), `isGateway`, `isDefaultGateway`, `mtu`, `hairpinMode`, `promiscMode`,
`ipam`. `ipMasq` is accepted and ignored: the lab's node agent masquerades pod egress for
the whole node, as flannel does (see the package README).

Differences on purpose:
- The host end is named `veth` + 8 hex digits of sha256(container id, ifname), so DEL
  finds it even when the container namespace is already gone.
- IPAM runs first and the veth second, and a failure after IPAM removes the veth and
  releases the address: a failed ADD leaves nothing behind.
- The veth is created in one request: host end already enslaved, up and with its MTU,
  peer created straight inside the container namespace under its final name.
- The bridge gets an explicit MAC when created, so its address does not follow the
  lowest port MAC as ports come and go.
- IPAM `kubewire-ipam` runs in-process (see skel.delegate); any other IPAM type is
  executed from CNI_PATH as the spec describes.
- If IPAM already returns a default route, `isDefaultGateway` does not add a second one
  (the reference v1.1.1 fails with "file exists").
- It refuses to work in the machine's own network namespace (lab safety).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from kubewire.cni.invoke import NsRef
from kubewire.cni.plugins import ipam, nl
from kubewire.cni.plugins.skel import Handler, PluginRequest, delegate, dispatch, plugin_main
from kubewire.cni.protocol import (
    DNS,
    CniError,
    Command,
    ConfigError,
    ErrorCode,
    Interface,
    IPConfig,
    Result,
    Route,
    validate_ifname,
)
from kubewire.kernel.netns import entered
from kubewire.kernel.rtnl import (
    IFA_F_NODAD,
    IFF_PROMISC,
    RT_TABLE_MAIN,
    IPAddress,
    IPInterface,
    LinkInfo,
    NetlinkError,
    Rtnl,
)

PLUGIN = "kubewire-bridge"
DEFAULT_BRIDGE = "cni0"
IN_PROCESS: dict[str, Mapping[Command, Handler]] = {ipam.PLUGIN: ipam.HANDLERS}
_DEFAULT_DST = {4: "0.0.0.0/0", 6: "::/0"}
_FORWARDING = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}


@dataclass(frozen=True, slots=True)
class BridgeConf:
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    ip_masq: bool = False
    mtu: int | None = None
    hairpin_mode: bool = False
    promisc_mode: bool = False
    ipam_type: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BridgeConf:
        bridge = config.get("bridge") or DEFAULT_BRIDGE
        if not isinstance(bridge, str):
            raise ConfigError(f"'bridge' must be an interface name, got {bridge!r}")
        try:
            validate_ifname(bridge)
        except CniError as exc:
            raise ConfigError(f"'bridge': {exc.msg}") from None
        flags = {}
        for key in ("isGateway", "isDefaultGateway", "ipMasq", "hairpinMode", "promiscMode"):
            value = config.get(key, False)
            if not isinstance(value, bool):
                raise ConfigError(f"'{key}' must be true or false, got {value!r}")
            flags[key] = value
        mtu = config.get("mtu")
        if mtu is not None and (
            not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535
        ):
            raise ConfigError(f"'mtu' must be an integer from 68 to 65535, got {mtu!r}")
        ipam_conf = config.get("ipam")
        ipam_type = None
        if ipam_conf is not None:
            if not isinstance(ipam_conf, Mapping):
                raise ConfigError("'ipam' must be an object")
            raw_type = ipam_conf.get("type")
            if raw_type is not None and (not isinstance(raw_type, str) or "/" in raw_type):
                raise ConfigError(f"'ipam.type' must name a plugin, got {raw_type!r}")
            ipam_type = raw_type or None
        return cls(
            bridge=bridge,
            # isDefaultGateway implies isGateway, as in the reference plugin.
            is_gateway=flags["isGateway"] or flags["isDefaultGateway"],
            is_default_gateway=flags["isDefaultGateway"],
            ip_masq=flags["ipMasq"],
            mtu=mtu,
            hairpin_mode=flags["hairpinMode"],
            promisc_mode=flags["promiscMode"],
            ipam_type=ipam_type,
        )


def host_veth_name(container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()
    return f"veth{digest[:8]}"


# --- ADD -------------------------------------------------------------------------


def cmd_add(request: PluginRequest) -> Result:
    conf = BridgeConf.from_config(request.config)
    nl.refuse_init_netns(request.host_netns, "host")
    nl.refuse_init_netns(request.env.netns, "container")
    ns_fd = nl.open_netns_fd(request.env.netns)
    try:
        ipam_result = _ipam(conf, request)
        try:
            return _attach(request, conf, ipam_result, ns_fd)
        except CniError:
            _undo_add(request, conf)
            raise
        except Exception as exc:
            _undo_add(request, conf)
            raise nl.kernel_error("attaching the container to the bridge", exc) from exc
    finally:
        os.close(ns_fd)


def _ipam(conf: BridgeConf, request: PluginRequest) -> Result | None:
    if conf.ipam_type is None:
        return None
    result = delegate(conf.ipam_type, request, IN_PROCESS)
    if request.command is Command.ADD and (result is None or not result.ips):
        raise CniError(ErrorCode.INTERNAL, f"IPAM plugin {conf.ipam_type} returned no IPs")
    return result


def _attach(
    request: PluginRequest, conf: BridgeConf, ipam_result: Result | None, ns_fd: int
) -> Result:
    env = request.env
    host_name = host_veth_name(env.container_id, env.ifname)
    host_mac, cont_mac = nl.random_mac(), nl.random_mac()
    ips, routes = _layer3(conf, ipam_result)
    with Rtnl.open(request.host_netns) as host, Rtnl.open(env.netns) as cont:
        bridge = _ensure_bridge(host, conf)
        _create_veth(host, conf, host_name, host_mac, env.ifname, cont_mac, ns_fd, bridge.index)
        if conf.hairpin_mode:
            host_link = _must_link(host, host_name, "host namespace")
            host.set_hairpin(host_link.index)

        cont_index = _must_link(cont, env.ifname, env.netns).index
        cont.set_link(cont_index, up=True)
        for ip in ips:
            iface = ipaddress.ip_interface(ip.address)
            cont.add_address(cont_index, iface, *_addr_extras(iface))
        gateways = _gateways(ips)
        for route in routes:
            _add_route(cont, cont_index, route, gateways)
        if conf.is_gateway:
            for ip in ips:
                if ip.gateway:
                    _ensure_gateway_address(host, bridge, ip)
            with entered(request.host_netns):
                for family in {ipaddress.ip_interface(ip.address).version for ip in ips}:
                    _enable_forwarding(family)

    interfaces = (
        Interface(name=conf.bridge, mac=bridge.mac or ""),
        Interface(name=host_name, mac=host_mac),
        Interface(name=env.ifname, mac=cont_mac, sandbox=env.netns, mtu=conf.mtu),
    )
    dns = ipam_result.dns if ipam_result is not None else DNS()
    return Result(request.cni_version, interfaces, ips, routes, dns)


def _must_link(rtnl: Rtnl, name: str, where: str) -> LinkInfo:
    link = rtnl.link(name)
    if link is None:
        raise CniError(ErrorCode.KERNEL, f"{name} vanished from {where} right after creation")
    return link


def _ensure_bridge(host: Rtnl, conf: BridgeConf) -> LinkInfo:
    """The bridge, created up if missing; many ADDs may race to create it."""
    link = host.link(conf.bridge)
    if link is None:
        try:
            host.add_bridge(conf.bridge, nl.random_mac(), conf.mtu)
        except NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                raise
        link = _must_link(host, conf.bridge, "host namespace")
    if link.kind != "bridge":
        raise CniError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{conf.bridge} already exists but is a {link.kind or 'plain'} device, not a bridge",
            "choose another 'bridge' name or delete that device",
        )
    if not link.up:
        host.set_link(link.index, up=True)
    if conf.promisc_mode and not link.flags & IFF_PROMISC:
        host.set_link(link.index, promisc=True)
    return link


def _create_veth(
    host: Rtnl,
    conf: BridgeConf,
    host_name: str,
    host_mac: str,
    ifname: str,
    cont_mac: str,
    ns_fd: int,
    br_index: int,
) -> None:
    for attempt in (1, 2):
        try:
            host.add_veth(host_name, host_mac, ifname, cont_mac, ns_fd, conf.mtu, br_index)
            return
        except NetlinkError as exc:
            if exc.errno != errno.EEXIST or attempt == 2:
                raise
        if host.link(host_name) is None:
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f"the container already has an interface named {ifname}",
                "use another CNI_IFNAME or DEL the earlier attachment first",
            )
        # A host end with our name left over from an attachment whose DEL never came
        # (its namespace died and the kernel has not reaped the pair yet): replace it.
        host.delete_link(host_name)


def _layer3(
    conf: BridgeConf, ipam_result: Result | None
) -> tuple[tuple[IPConfig, ...], tuple[Route, ...]]:
    """The container's IPs (interface 2, gateway filled in) and routes, like the reference."""
    if ipam_result is None:
        return (), ()
    ips = []
    for ip in ipam_result.ips:
        gateway = ip.gateway
        if gateway is None and conf.is_gateway:
            gateway = str(next(ipaddress.ip_interface(ip.address).network.hosts()))
        ips.append(IPConfig(address=ip.address, gateway=gateway, interface=2))
    routes = list(ipam_result.routes)
    if conf.is_default_gateway:
        for ip in ips:
            family = ipaddress.ip_interface(ip.address).version
            has_default = any(
                ipaddress.ip_network(r.dst, strict=False).prefixlen == 0
                and ipaddress.ip_network(r.dst, strict=False).version == family
                for r in routes
            )
            if ip.gateway and not has_default:
                routes.append(Route(dst=_DEFAULT_DST[family], gw=ip.gateway))
    return tuple(ips), tuple(routes)


def _addr_extras(iface: IPInterface) -> tuple[IPAddress | None, int]:
    """(broadcast, flags) as `ip addr add ... brd +` would set them; no DAD for IPv6."""
    if iface.version == 4:
        net = iface.network
        return (net.broadcast_address if net.prefixlen <= 30 else None), 0
    return None, IFA_F_NODAD


def _gateways(ips: tuple[IPConfig, ...]) -> dict[int, str]:
    out: dict[int, str] = {}
    for ip in ips:
        if ip.gateway:
            out.setdefault(ipaddress.ip_interface(ip.address).version, ip.gateway)
    return out


def _add_route(cont: Rtnl, index: int, route: Route, gateways: Mapping[int, str]) -> None:
    dst = ipaddress.ip_network(route.dst, strict=False)
    gw = route.gw or gateways.get(dst.version)
    cont.add_route(
        dst,
        index,
        ipaddress.ip_address(gw) if gw else None,
        table=route.table if route.table is not None else RT_TABLE_MAIN,
        scope=route.scope,
        priority=route.priority,
        mtu=route.mtu,
        advmss=route.advmss,
    )


def _ensure_gateway_address(host: Rtnl, bridge: LinkInfo, ip: IPConfig) -> None:
    assert ip.gateway is not None
    network = ipaddress.ip_interface(ip.address).network
    gw = ipaddress.ip_interface(f"{ip.gateway}/{network.prefixlen}")
    try:
        host.add_address(bridge.index, gw, *_addr_extras(gw))
    except NetlinkError as exc:
        if exc.errno == errno.EEXIST:
            return  # the usual case: an earlier pod put it there
        raise
    # A new gateway on this bridge: make sure it does not clash with one already there.
    # Gateways of separate subnets may share the bridge (the reference plugin allows it,
    # and Calico-style IPAM gives a node one subnet per address block).
    for addr in host.addresses(bridge.index, gw.version):
        other = addr.interface
        if other == gw or other.ip.is_link_local:
            continue
        if other.network.overlaps(network):
            host.delete_address(bridge.index, gw)
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"bridge {bridge.name} already has address {other}, different from the "
                f"gateway {gw}",
                "each network needs its own bridge, or fix the IPAM ranges",
            )


def _enable_forwarding(family: int) -> None:
    # Called with the thread inside the host namespace: /proc/sys/net follows the thread.
    path = _FORWARDING[family]
    with open(path, "r+") as knob:
        if knob.read().strip() != "1":
            knob.seek(0)
            knob.write("1")


def _undo_add(request: PluginRequest, conf: BridgeConf) -> None:
    """Best-effort rollback of a failed ADD: drop the veth, then the address."""
    host_name = host_veth_name(request.env.container_id, request.env.ifname)
    with contextlib.suppress(Exception), Rtnl.open(request.host_netns) as host:
        host.delete_link(host_name)
    if conf.ipam_type is not None:
        undo = replace(
            request,
            env=replace(request.env, command=Command.DEL),
            raw_env={**request.raw_env, "CNI_COMMAND": Command.DEL.value},
        )
        with contextlib.suppress(Exception):
            delegate(conf.ipam_type, undo, IN_PROCESS)


# --- DEL / CHECK / STATUS / GC ---------------------------------------------------------


def cmd_del(request: PluginRequest) -> None:
    conf = BridgeConf.from_config(request.config)
    nl.refuse_init_netns(request.host_netns, "host")
    nl.refuse_init_netns(request.env.netns, "container")
    ipam_error: CniError | None = None
    if conf.ipam_type is not None:
        try:
            _ipam(conf, request)
        except CniError as exc:
            ipam_error = exc  # still remove our links; report the IPAM failure after
    env = request.env
    try:
        with Rtnl.open(request.host_netns) as host:
            deleted = host.delete_link(host_veth_name(env.container_id, env.ifname))
        if not deleted and nl.netns_exists(env.netns):
            # Not our name on the host side (renamed, or added by an older version).
            with Rtnl.open(env.netns) as cont:
                link = cont.link(env.ifname)
                if link is not None and link.kind == "veth":
                    cont.delete_link(index=link.index)
    except Exception as exc:
        raise nl.kernel_error("removing the container interface", exc) from exc
    if ipam_error is not None:
        raise ipam_error


def cmd_check(request: PluginRequest) -> None:
    prev = request.prev_result
    if prev is None:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, "CHECK needs prevResult in the config")
    conf = BridgeConf.from_config(request.config)
    if conf.ipam_type is not None:
        _ipam(conf, request)
    env = request.env
    index = next(
        (
            i
            for i, iface in enumerate(prev.interfaces)
            if iface.name == env.ifname and iface.sandbox == env.netns
        ),
        None,
    )
    if index is None:
        _check_failed(f"prevResult has no interface {env.ifname} in sandbox {env.netns}")
    if not nl.netns_exists(env.netns):
        raise CniError(ErrorCode.UNKNOWN_CONTAINER, f"network namespace {env.netns} is gone")
    try:
        with Rtnl.open(env.netns) as cont:
            _check_container(cont, conf, prev, index)
        with Rtnl.open(request.host_netns) as host:
            _check_host(host, conf, prev, env.container_id, env.ifname)
    except CniError:
        raise
    except Exception as exc:
        raise nl.kernel_error("checking the attachment", exc) from exc


def _check_failed(msg: str) -> NoReturn:
    raise CniError(ErrorCode.CHECK_FAILED, msg)


def _check_container(cont: Rtnl, conf: BridgeConf, prev: Result, index: int) -> None:
    expected = prev.interfaces[index]
    link = cont.link(expected.name)
    if link is None:
        _check_failed(f"interface {expected.name} is missing from {expected.sandbox}")
    if link.kind != "veth":
        _check_failed(f"interface {expected.name} is a {link.kind}, not a veth")
    if expected.mac and (link.mac or "").lower() != expected.mac.lower():
        _check_failed(f"interface {expected.name} has MAC {link.mac}, expected {expected.mac}")
    if conf.mtu and link.mtu != conf.mtu:
        _check_failed(f"interface {expected.name} has MTU {link.mtu}, not {conf.mtu}")
    if not link.up:
        _check_failed(f"interface {expected.name} is down")
    have = {a.interface for a in cont.addresses(link.index)}
    for ip in prev.ips:
        if ip.interface == index and ipaddress.ip_interface(ip.address) not in have:
            _check_failed(f"address {ip.address} is missing from {expected.name}")
    routes = cont.routes(table=None)
    gateways = _gateways(prev.ips)
    for route in prev.routes:
        dst = ipaddress.ip_network(route.dst, strict=False)
        gw = route.gw or gateways.get(dst.version)
        want_gw = ipaddress.ip_address(gw) if gw else None
        if not any(r.network == dst and want_gw in (None, r.gateway_ip) for r in routes):
            via = f" via {gw}" if gw else ""
            _check_failed(f"route to {dst}{via} is missing from {expected.sandbox}")


def _check_host(host: Rtnl, conf: BridgeConf, prev: Result, container_id: str, ifname: str) -> None:
    bridge = host.link(conf.bridge)
    if bridge is None or bridge.kind != "bridge":
        _check_failed(f"bridge {conf.bridge} is missing")
    host_name = host_veth_name(container_id, ifname)
    if not any(i.name == host_name for i in prev.interfaces):
        _check_failed(f"prevResult does not list the host interface {host_name}")
    veth = host.link(host_name)
    if veth is None:
        _check_failed(f"host interface {host_name} is missing")
    if veth.master != bridge.index:
        _check_failed(f"host interface {host_name} is not attached to {conf.bridge}")
    if conf.hairpin_mode and not veth.hairpin:
        _check_failed(f"hairpin mode is off on {host_name}")


def cmd_status(request: PluginRequest) -> None:
    conf = BridgeConf.from_config(request.config)
    if conf.ipam_type is not None:
        _ipam(conf, request)


def cmd_gc(request: PluginRequest) -> None:
    conf = BridgeConf.from_config(request.config)
    if conf.ipam_type is not None:
        _ipam(conf, request)


HANDLERS: dict[Command, Handler] = {
    Command.ADD: cmd_add,
    Command.DEL: cmd_del,
    Command.CHECK: cmd_check,
    Command.STATUS: cmd_status,
    Command.GC: cmd_gc,
}


def run(command: str, env: Mapping[str, str], stdin: bytes, host_netns: NsRef) -> tuple[int, bytes]:
    return dispatch(HANDLERS, command, env, stdin, host_netns)


def main() -> int:
    return plugin_main(run)
