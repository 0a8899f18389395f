"""The node agent: kubelet + container runtime + flannel, for one node.

It only lists and watches the store (through `StoreClient`) and programs its own node:
  * registers its Node (address on the underlay, VTEP MAC) and waits for a pod CIDR,
  * writes the node's CNI config once the pod CIDR is known (as flannel does),
  * keeps the cross-node routes in sync with every Node via the routing backend,
  * for each pod bound to it: sandbox (netns + UTS) -> CNI ADD -> containers -> status,
    and the reverse on deletion.
Kernel and process work runs in a shared thread pool; setns() is per thread, so pods
are set up concurrently without touching each other's namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.cni.protocol import CniError, NetworkConfigList
from kubewire.cni.runtime import CniRuntime, as_conflist, load_conflist
from kubewire.kernel import netns
from kubewire.lab import clusterdns, names, poddns
from kubewire.lab.bgpagent import BgpAgent
from kubewire.lab.blockipam import NodeBlocks
from kubewire.lab.cniconfig import (
    LOOPBACK_NETWORK,
    POD_NETWORK,
    loopback_network,
    write_pod_network,
)
from kubewire.lab.containers import Container, pod_status, should_restart
from kubewire.lab.policyagent import PolicyAgent
from kubewire.lab.state import LabDirs
from kubewire.proxy import NodeContext, ProxyCompiler, ProxyError
from kubewire.proxy.sync import ProxySyncer
from kubewire.routing import (
    VTEP_MAC_ANNOTATION,
    NodeInfo,
    get_backend,
    sync_node_network,
    vtep_mac_for,
)
from kubewire.routing.masquerade import sync_egress_masquerade
from kubewire.store.store import StoreClient
from kubewire.workload import runner
from kubewire.workload.client import PodServerClient
from kubewire.workload.containers import builtin_ports, decide
from kubewire.workload.readiness import probe, readiness_checks

log = logging.getLogger(__name__)


def _proxy_update_args(
    changes: dict[tuple[str, str, str], dict[str, Any] | None],
) -> dict[str, list[Any]]:
    """Watch events, reduced to the last state per object, as ProxyCompiler.update wants."""
    args: dict[str, list[Any]] = {"changed_services": [], "removed_services": [],
                                  "changed_slices": [], "removed_slices": []}
    for (kind, ns, name), obj in sorted(changes.items()):
        which = "services" if kind == "Service" else "slices"
        if obj is None:
            args[f"removed_{which}"].append((ns, name))
        else:
            args[f"changed_{which}"].append(obj)
    return args


def _ifname(network: NetworkConfigList) -> str:
    return "lo" if network.name == LOOPBACK_NETWORK else "eth0"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRecord:
    namespace: str
    name: str
    uid: str
    container_id: str
    netns_path: Path
    uts_path: Path
    pod_dir: Path
    pod: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # bind-mounted into its processes
    containers: list[Container] = field(default_factory=list)
    ip: str = ""
    start_time: str = ""
    published: dict[str, Any] = field(default_factory=dict)

    @property
    def restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy", "Always"))


class NodeAgent:
    def __init__(
        self,
        lab: str,
        node: str,
        labels: dict[str, str],
        underlay_ip: IPv4Address,
        spec: ClusterSpec,
        client: StoreClient,
        register: Any,
        pool: ThreadPoolExecutor,
        podserver: PodServerClient,
        annotations: dict[str, str] | None = None,
    ) -> None:
        self.lab = lab
        self.node = node
        self.labels = labels
        self.annotations = annotations or {}
        self.underlay_ip = underlay_ip
        self.spec = spec
        self.client = client
        self._register = register
        self.pool = pool
        self.podserver = podserver
        self.dirs = LabDirs.of(lab)
        self.node_dir = self.dirs.node(node)
        self.netns_path = netns.netns_path(names.node_netns(lab, node))
        self.pod_cidr: IPv4Network | None = None
        # The node's own resolver (what dnsPolicy Default gives pods): the outside world's
        # resolver on the external host, the underlay's first address.
        self.node_resolver = poddns.ResolverConfig(
            (str(next(spec.underlay_cidr.hosts())),), (), ())
        # The networks every pod joins, in ADD order: loopback first, as containerd does.
        self.networks: list[NetworkConfigList] = []
        self.cni = CniRuntime(self._plugin_dirs(), self.node_dir / "cache")
        self.pods: dict[str, PodRecord] = {}  # by pod uid
        self._seen: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervised: set[str] = set()  # uids of pods with real processes
        self._supervisor: asyncio.Task[None] | None = None
        self._pod_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._cidr_ready = asyncio.Event()
        self._routing_dirty = asyncio.Event()
        # kube-proxy's role: Services + EndpointSlices -> this node's nftables table.
        self.proxy_compiler = ProxyCompiler(
            NodeContext(node, (str(underlay_ip),), str(spec.pod_cidr),
                        service_cidr=str(spec.service_cidr)))
        self.proxy = ProxySyncer(self.netns_path)
        self._proxy_dirty = asyncio.Event()
        self._proxy_changes: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        # The network policy agent's role: NetworkPolicy -> this node's policy table.
        self.policy = PolicyAgent(node, client, self.netns_path, pool)
        # Calico's role in a bgp lab: a BGP speaker, and pod addresses from IPAM blocks.
        self.bgp: BgpAgent | None = None
        self.blocks: NodeBlocks | None = None
        if spec.network.backend == "bgp":
            self.bgp = BgpAgent(node, underlay_ip, client, self.netns_path, pool)
            self.blocks = NodeBlocks(node, client, spec.pod_cidr,
                                     self.node_dir / "ipam" / POD_NETWORK)
        self._block_lock = asyncio.Lock()
        self._starting = 0  # pods between the block check and their CNI ADD

    def _plugin_dirs(self) -> list[Path]:
        if self.spec.cni == "reference":
            return [Path("/usr/lib/cni"), Path("/opt/cni/bin")]
        return [self.dirs.bin]

    # -- lifecycle -------------------------------------------------------------
    def node_object(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    **self.labels,
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                },
                "annotations": {**self.annotations,
                                VTEP_MAC_ANNOTATION: vtep_mac_for(self.node)},
            },
            "spec": {},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": str(self.underlay_ip)},
                    {"type": "Hostname", "address": self.node},
                ],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubewire node agent is ready",
                                "lastTransitionTime": _now()}],
                "nodeInfo": {"kubeletVersion": "kubewire", "containerRuntimeVersion":
                             "kubewire://netns", "kubeProxyVersion": "", "operatingSystem":
                             "linux", "architecture": "amd64"},
            },
        }

    async def run(self) -> None:
        self._register(self.node_object())
        # Pods reach the outside world (the upstream resolver) with the node's address,
        # as flannel's ipMasq does: nothing outside knows a route back to pod addresses.
        await asyncio.get_running_loop().run_in_executor(
            self.pool, sync_egress_masquerade, self.netns_path, self.spec.pod_cidr)
        watch = self.client.watch(["Node", "Pod", "Service", "EndpointSlice", "ConfigMap"])
        loops = [asyncio.create_task(self._routing_loop()),
                 asyncio.create_task(self._proxy_loop()),
                 asyncio.create_task(self.policy.run())]
        if self.bgp is not None:
            loops.append(asyncio.create_task(self.bgp.run()))
            self._spawn(self._first_block())
        try:
            async for event in watch:
                for ev in [event, *watch.drain()]:
                    obj = ev.obj
                    if obj["kind"] == "Node":
                        self._on_node(ev.type, obj)
                    elif obj["kind"] == "ConfigMap":
                        self._on_config_map(obj)
                    elif obj["kind"] in ("Service", "EndpointSlice"):
                        # Only the last state per object matters for the next update.
                        meta = obj["metadata"]
                        key = (obj["kind"], meta["namespace"], meta["name"])
                        self._proxy_changes[key] = None if ev.type == "DELETED" else obj
                        self._proxy_dirty.set()
                    elif obj["spec"].get("nodeName") == self.node:
                        self._on_pod(ev.type, obj)
        finally:
            for task in loops:
                task.cancel()
            watch.close()

    # -- nodes and routing -----------------------------------------------------
    def _on_node(self, type_: str, node: dict[str, Any]) -> None:
        self._routing_dirty.set()
        if node["metadata"]["name"] != self.node or type_ == "DELETED":
            return
        cidr = node.get("spec", {}).get("podCIDR")
        if cidr and self.pod_cidr is None and self.blocks is None:
            self.pod_cidr = IPv4Network(cidr)
            net_d = write_pod_network(self.spec, self.dirs, self.node, self.pod_cidr)
            self.networks = [as_conflist(loopback_network(self.spec)), load_conflist(net_d)]
            self._cidr_ready.set()
            self._spawn(self._report_network_status())

    # -- IPAM blocks (bgp labs) ------------------------------------------------------
    async def _first_block(self) -> None:
        """A bgp lab's node addresses pods from its IPAM blocks, not from its podCIDR."""
        async with self._block_lock:
            try:
                self._ensure_blocks(0)
            except Exception:
                # Pods still go on to their own claim, which fails them with this message
                # (SandboxFailed), rather than waiting for ever without a word.
                log.exception("node %s could not claim an IPAM block", self.node)
                self._cidr_ready.set()
                return
        self._cidr_ready.set()
        self._spawn(self._report_network_status())

    def _ensure_blocks(self, starting: int) -> None:
        assert self.blocks is not None
        if self.blocks.ensure(starting) or not self.networks:
            net_d = write_pod_network(self.spec, self.dirs, self.node, self.blocks.mine())
            self.networks = [as_conflist(loopback_network(self.spec)), load_conflist(net_d)]

    async def _report_network_status(self) -> None:
        """Ask the pod network's plugins for STATUS (CNI 1.1) and report it on the Node,
        in the words the kubelet uses when its runtime's network is not ready."""
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.pool, self.cni.status, self.networks[-1], self.netns_path)
            ready, reason, message = "True", "KubeletReady", "kubewire node agent is ready"
        except CniError as exc:
            ready, reason = "False", "KubeletNotReady"
            message = ("container runtime network not ready: NetworkReady=false "
                       f"reason:NetworkPluginNotReady message:{exc}")
        mine = next((n for n in self.client.list("Node") if n["metadata"]["name"] == self.node),
                    None)
        if mine is None:
            return
        condition = {"type": "Ready", "status": ready, "reason": reason, "message": message,
                     "lastTransitionTime": _now()}
        self.client.update_status("Node", "", self.node,
                                  {**mine.get("status", {}), "conditions": [condition]})

    async def _routing_loop(self) -> None:
        backend = get_backend(self.spec.network.backend)
        while True:
            await self._routing_dirty.wait()
            await asyncio.sleep(0.01)
            self._routing_dirty.clear()
            infos = []
            for n in self.client.list("Node"):
                cidr = n.get("spec", {}).get("podCIDR")
                addr = next((a["address"] for a in n["status"]["addresses"]
                             if a["type"] == "InternalIP"), None)
                if cidr and addr:
                    infos.append(NodeInfo.for_node(
                        n["metadata"]["name"], addr, cidr,
                        vtep_mac=n["metadata"].get("annotations", {}).get(VTEP_MAC_ANNOTATION)))
            me = next((i for i in infos if i.name == self.node), None)
            if me is None:
                continue
            desired = backend.compile(me, infos, self.spec.network.mtu)
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self.pool, sync_node_network, self.netns_path, desired)
            except Exception:
                log.exception("routing sync failed on %s", self.node)

    # -- services (kube-proxy) ---------------------------------------------------
    PROXY_RESYNC_SECONDS = 30.0

    async def _proxy_loop(self) -> None:
        """Sync on every Service/EndpointSlice change, compiling only what changed (the
        watch says what), and do a full compile + resync periodically: it repairs rules
        someone changed by hand."""
        loop = asyncio.get_running_loop()
        last_full = 0.0  # the first pass is a full one, and it runs at once
        self._proxy_dirty.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proxy_dirty.wait(), self.PROXY_RESYNC_SECONDS)
            await asyncio.sleep(0.01)
            self._proxy_dirty.clear()
            changes, self._proxy_changes = self._proxy_changes, {}
            if self.proxy.applied is None and not self.client.list("Service"):
                continue  # no table until the first Service: a 50-node start-up saves 50 nft runs
            full = time.monotonic() - last_full >= self.PROXY_RESYNC_SECONDS
            try:
                if full:
                    # Compile off the event loop (seconds at 10k Services would stall every
                    # agent); the lists are snapshots, stored objects never change in place.
                    ruleset = await loop.run_in_executor(
                        self.pool, self.proxy_compiler.compile, self.client.list("Service"),
                        self.client.list("EndpointSlice"))
                    report = await loop.run_in_executor(self.pool, self.proxy.resync, ruleset)
                    last_full = time.monotonic()
                else:
                    ruleset = self.proxy_compiler.update(**_proxy_update_args(changes))
                    report = await loop.run_in_executor(self.pool, self.proxy.sync, ruleset)
                if report.changes:
                    log.info("proxy on %s: %s sync, %d changes in %.1f ms", self.node,
                             report.reason, report.changes, report.seconds * 1000)
            except ProxyError as exc:
                # The previous ruleset stays in force; the next pass is a full one.
                log.error("proxy sync on %s failed (will retry): %s", self.node, exc)
                last_full = 0.0
                await asyncio.sleep(1.0)
                self._proxy_dirty.set()

    # -- pods --------------------------------------------------------------------
    def _on_config_map(self, config_map: dict[str, Any]) -> None:
        """Refresh the projected configMap volumes of this node's pods, as the kubelet
        does (it takes up to a minute; here it is at once). Programs that watch their
        config file, like the DNS server's ``reload``, pick the change up."""
        meta = config_map["metadata"]
        for record in list(self.pods.values()):
            if record.namespace != meta["namespace"] or not any(
                    (v.get("configMap") or {}).get("name") == meta["name"]
                    for v in record.pod["spec"].get("volumes") or []):
                continue
            try:
                for c in record.containers:
                    self._project_volumes(record, c.spec)
            except OSError:
                log.exception("refreshing volumes of %s/%s", record.namespace, record.name)

    def _project_volumes(self, record: PodRecord, container: dict[str, Any]) -> dict[str, Path]:
        maps = {m["metadata"]["name"]: m for m in self.client.list(
            "ConfigMap", where=lambda m: m["metadata"]["namespace"] == record.namespace)}
        return clusterdns.project_config_maps(record.pod, container, maps, record.pod_dir)

    def _write_pod_files(self, record: PodRecord) -> None:
        """The pod's /etc/resolv.conf and /etc/hosts (bind-mounted into its processes)."""
        resolver = poddns.pod_resolver(record.pod, [str(self.spec.dns_service_ip)],
                                       self.spec.dns_domain, self.node_resolver)
        record.pod_dir.mkdir(parents=True, exist_ok=True)
        (record.pod_dir / "resolv.conf").write_text(resolver.render())
        (record.pod_dir / "hosts").write_text(
            poddns.pod_hosts(record.pod, record.ip, self.spec.dns_domain))
        record.files = names.pod_files(self.lab, record.namespace, record.name)

    def _on_pod(self, type_: str, pod: dict[str, Any]) -> None:
        # Keyed by uid: a pod deleted and re-created under the same name is a new pod,
        # and the per-name lock makes the old one's teardown finish before the new setup.
        meta = pod["metadata"]
        key, uid = (meta["namespace"], meta["name"]), meta.get("uid", "")
        if type_ == "DELETED":
            self._seen.discard(uid)
            self._spawn(self._serialised(key, self._teardown_pod(uid)))
        elif uid not in self._seen:
            self._seen.add(uid)
            self._spawn(self._serialised(key, self._setup_pod(pod)))

    def _spawn(self, work: Any) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serialised(self, key: tuple[str, str], work: Any) -> None:
        lock = self._pod_locks.setdefault(key, asyncio.Lock())
        async with lock:
            await work

    async def _setup_pod(self, pod: dict[str, Any]) -> None:
        await self._cidr_ready.wait()
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        if uid not in self._seen:
            return  # deleted before we got to it
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            if self.blocks is not None:
                async with self._block_lock:  # one claim at a time, counting pods in flight
                    self._ensure_blocks(self._starting)
                    self._starting += 1
            try:
                record = await loop.run_in_executor(self.pool, self._create_pod_sync, pod)
            finally:
                if self.blocks is not None:
                    self._starting -= 1
        except Exception as exc:
            log.exception("pod %s/%s failed", ns, name)
            self._set_failed(pod, f"{type(exc).__name__}: {exc}")
            return
        self.pods[uid] = record
        self._publish(record)
        log.info("pod %s/%s up in %.0f ms at %s", ns, name,
                 (time.monotonic() - started) * 1000, record.ip)
        if any(c.kind == "exec" for c in record.containers):
            self._supervised.add(uid)
            if self._supervisor is None:
                self._supervisor = asyncio.create_task(self._supervise())

    def _create_pod_sync(self, pod: dict[str, Any]) -> PodRecord:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        netns_name = names.pod_netns(self.lab, ns, name)
        record = PodRecord(
            namespace=ns, name=name, uid=meta.get("uid", ""), pod=pod, start_time=_now(),
            container_id=names.container_id(self.lab, ns, name, meta.get("uid", "")),
            netns_path=netns.netns_path(netns_name),
            uts_path=names.pod_uts_file(self.lab, ns, name),
            pod_dir=names.pod_dir(self.lab, ns, name),
        )
        hostname = pod["spec"].get("hostname") or name
        netns.create_netns(netns_name, record.uts_path, hostname[:63])
        try:
            # IgnoreUnknown first, as the CRI runtimes send it: the reference plugins
            # otherwise refuse the K8S_* keys they do not use.
            args = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": ns, "K8S_POD_NAME": name,
                    "K8S_POD_INFRA_CONTAINER_ID": record.container_id, "K8S_POD_UID": record.uid}
            ip = ""
            for network in self.networks:
                result = self.cni.add(network, record.container_id, str(record.netns_path),
                                      _ifname(network), args, host_netns=self.netns_path)
                for ipc in result.ips:
                    if ":" not in str(ipc.address):
                        ip = str(ipc.address).split("/")[0]
            record.ip = ip
            self._write_pod_files(record)
            self._start_containers(pod, record)
        except BaseException:
            self._destroy_sync(record)
            raise
        return record

    def _start_containers(self, pod: dict[str, Any], record: PodRecord) -> None:
        for c in pod["spec"].get("containers", []):
            log_path = names.container_log(self.lab, record.namespace, record.name, c["name"])
            log_path.parent.mkdir(parents=True, exist_ok=True)
            argv: tuple[str, ...] | None = None
            if clusterdns.is_coredns_image(c.get("image")) and not c.get("command"):
                argv = tuple(clusterdns.coredns_argv(
                    c, self._project_volumes(record, c), self.dirs.socket))
            if argv is not None or decide(c) == "exec":
                pid_file = self.dirs.pids / f"{record.namespace}_{record.name}_{c['name']}.json"
                container = Container(c["name"], c, "exec", log_path, pid_file,
                                      readiness_checks(c), argv=argv)
                record.containers.append(container)
                self._start_process(record, container)
            else:
                container = Container(c["name"], c, "builtin", log_path)
                record.containers.append(container)
                self.podserver.start(
                    id=self._builtin_id(record, container), pod=record.name,
                    namespace=record.namespace, node=self.node, podIP=record.ip,
                    netns=str(record.netns_path), container=c["name"],
                    ports=[p.to_wire() for p in builtin_ports(c)], log=str(log_path))
                container.running(ready=True)  # its sockets listen before start returns

    def _start_process(self, record: PodRecord, container: Container) -> None:
        container.process = runner.start_process(
            container.spec, pod=record.name, netns=record.netns_path, uts=record.uts_path,
            files=record.files, log=container.log, pid_file=container.pid_file,
            argv=container.argv)
        container.running(ready=not container.checks)

    @staticmethod
    def _builtin_id(record: PodRecord, container: Container) -> str:
        return f"{record.container_id}/{container.name}"

    async def _supervise(self) -> None:
        """The kubelet's sync loop for real processes: exits, restarts, readiness."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.25)
            for uid in sorted(self._supervised):
                record = self.pods.get(uid)
                if record is None:
                    self._supervised.discard(uid)
                    continue
                for c in record.containers:
                    if c.kind != "exec":
                        continue
                    await self._supervise_container(loop, record, c)
                self._publish(record)

    async def _supervise_container(self, loop: asyncio.AbstractEventLoop, record: PodRecord,
                                   c: Container) -> None:
        now = time.monotonic()
        if c.state == "running" and c.process is not None:
            code = c.process.popen.poll()
            if code is not None:
                restart = should_restart(record.restart_policy, code)
                c.exited(code, restart, now)
                log.info("container %s/%s/%s exited with %d%s", record.namespace, record.name,
                         c.name, code, " (back-off)" if restart else "")
            elif not c.ready:
                results = [await loop.run_in_executor(
                    self.pool, probe, record.netns_path, record.ip or "127.0.0.1", chk, 0.5)
                    for chk in c.checks]
                c.ready = all(results)
        elif c.state == "waiting" and c.restart_at and now >= c.restart_at:
            c.restarts += 1
            c.restart_at = 0.0
            await loop.run_in_executor(self.pool, self._start_process, record, c)

    async def _teardown_pod(self, uid: str) -> None:
        record = self.pods.pop(uid, None)
        if record is None:
            return
        await asyncio.get_running_loop().run_in_executor(self.pool, self._destroy_sync, record)

    def _destroy_sync(self, record: PodRecord) -> None:
        for c in record.containers:
            if c.kind == "builtin":
                try:
                    self.podserver.stop(self._builtin_id(record, c))
                except Exception:
                    log.exception("stopping %s", c.name)
        running = [c.process for c in record.containers if c.process is not None]
        if running:
            runner.kill_records([p.record for p in running])
            for p in running:
                p.popen.wait(timeout=5)  # reap, so no zombie is left behind
        for c in record.containers:
            if c.pid_file is not None:
                c.pid_file.unlink(missing_ok=True)
        for network in reversed(self.networks):
            try:
                self.cni.delete(network, record.container_id, str(record.netns_path),
                                _ifname(network), {}, host_netns=self.netns_path)
            except Exception:
                log.exception("CNI DEL for %s/%s", record.namespace, record.name)
        netns.delete_ns_file(record.netns_path)
        netns.delete_ns_file(record.uts_path)
        shutil.rmtree(record.pod_dir, ignore_errors=True)

    def _publish(self, record: PodRecord) -> None:
        status = pod_status(record.pod, record.containers, str(self.underlay_ip), record.ip,
                            record.start_time)
        if status != record.published:
            record.published = status
            self._write_status(record.pod, status)

    def _set_failed(self, pod: dict[str, Any], message: str) -> None:
        """A sandbox that could not be built: Pending with the reason, as the kubelet shows."""
        containers = [Container(c["name"], c, decide(c), Path()) for c in
                      pod["spec"].get("containers", [])]
        for c in containers:
            c.reason = "SandboxFailed"
        status = pod_status(pod, containers, str(self.underlay_ip), "", _now())
        status.update(phase="Pending", reason="SandboxFailed", message=message)
        self._write_status(pod, status)

    def _write_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.client.update_status("Pod", meta["namespace"], meta["name"], status)
        except Exception:
            log.debug("pod %s/%s vanished before its status was written", meta["namespace"],
                      meta["name"])

    async def shutdown(self) -> None:
        """Tear down every pod this agent made (used when a node is removed)."""
        for uid in list(self.pods):
            await self._teardown_pod(uid)
        await self.policy.shutdown()
        if self.bgp is not None:
            await self.bgp.stop()

