"""The lab daemon: one long-lived process per lab that keeps the cluster network running.

It hosts the roles of DESIGN.md section 2 side by side but separately: the object store
(apiserver), the control plane (controllers + scheduler), one NodeAgent per node, and the
CNI plugin server. They talk only through the store. One process instead of one per node
keeps 50 nodes inside the memory budget; the built-in container servers live in a second
process (the pod server) so pod traffic never competes with the control loop.

CLI invocations reach the daemon over a Unix socket speaking newline-delimited JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.api.kinds import KINDS
from kubewire.cni.server import PluginServer
from kubewire.cni.shim import install_plugins
from kubewire.controllers import nodes as node_ctl
from kubewire.controllers.admission import pod_range_problems
from kubewire.kernel import hostlimits, netns
from kubewire.lab import announcer, blockipam, clusterdns, names, topology, tor, upstream
from kubewire.lab.agent import NodeAgent
from kubewire.lab.controlplane import ControlPlane
from kubewire.lab.servicecontrol import ServiceController
from kubewire.lab.state import LabDirs
from kubewire.store.store import NotFound, ObjectStore, key_of
from kubewire.workload import runner
from kubewire.workload.client import PodServerClient, spawn_server

log = logging.getLogger("kubewire.daemon")

EXTERNAL_HOST = "external"
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ApplyError(Exception):
    """An apply or delete request the daemon refused; nothing was changed."""


class LabDaemon:
    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.dirs = LabDirs.of(lab)
        saved = self.dirs.read_spec()
        self.cluster_obj: dict[str, Any] = saved["cluster"]
        self.spec = ClusterSpec.from_obj(self.cluster_obj)
        self.store = ObjectStore()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kw-pod")
        self.agents: dict[str, tuple[NodeAgent, asyncio.Task[None]]] = {}
        self.underlay: dict[str, IPv4Address] = {}
        self.control: ControlPlane | None = None
        self.services: ServiceController | None = None
        self.podserver_proc: subprocess.Popen[bytes] | None = None
        self.plugin_server: PluginServer | None = None
        self.upstream_dns: runner.ProcessRecord | None = None
        self.tor_bird: runner.ProcessRecord | None = None
        self._stop = asyncio.Event()

    # -- start-up ----------------------------------------------------------------
    async def start(self) -> None:
        runner.write_record(os.getpid(), self.dirs.pids / "daemon.json", sys.argv)
        for key, (old, new) in hostlimits.ensure_neighbour_capacity(names.state_root()).items():
            log.info("raised %s from %d to %d (the neighbour table is shared by every "
                     "namespace; see kubewire.kernel.hostlimits)", key, old, new)
        for ns in BUILTIN_NAMESPACES:
            self.store.put(_namespace(ns))
        for obj in clusterdns.addon_objects(self.spec):
            self._put_user_object(obj)
        if self.spec.network.backend == "bgp":
            self._put_user_object(blockipam.default_pool(self.spec.pod_cidr))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, topology.create_underlay, self.lab)
        # The "external client": a plain host on the underlay, outside the cluster, at the
        # underlay's first address (never given to a node).
        external = IPv4Interface(f"{next(self.spec.underlay_cidr.hosts())}/"
                                 f"{self.spec.underlay_cidr.prefixlen}")
        await loop.run_in_executor(self.pool, topology.add_host, self.lab, EXTERNAL_HOST,
                                   external)
        # The outside world's resolver (Unbound) on the external host: cluster DNS forwards
        # other names there, and it is the nodes' own resolver (dnsPolicy Default).
        # It starts in the background (half a second of Unbound start-up would otherwise
        # add to every `up`); a failure is logged, and names outside the cluster then fail.
        upstream_started = loop.run_in_executor(
            self.pool, functools.partial(
                upstream.start_upstream,
                netns.netns_path(names.host_netns(self.lab, EXTERNAL_HOST)), external.ip,
                self.dirs.root / "upstream", [self.spec.pod_cidr, self.spec.underlay_cidr],
                pid_file=self.dirs.pids / "upstream-dns.json"))
        if self.spec.network.backend == "bgp":
            # The external host is the rack's ToR router: BIRD, waiting for node sessions.
            self.tor_bird = await loop.run_in_executor(self.pool, functools.partial(
                tor.start_tor, netns.netns_path(names.host_netns(self.lab, EXTERNAL_HOST)),
                external.ip, self.spec.underlay_cidr, self.dirs.root / "tor",
                pid_file=self.dirs.pids / tor.RECORD_NAME))
        if self.spec.cni == "kubewire":
            sock = self.dirs.root / "cni.sock"
            self.plugin_server = PluginServer(sock, max_workers=8)
            self.plugin_server.start()
            install_plugins(self.dirs.bin, sys.executable, sock)
        self._start_podserver()
        self.control = ControlPlane(self.store, self.spec)
        self._control_task = asyncio.create_task(self.control.run())
        self.services = ServiceController(self.store, self.spec)
        self._services_task = asyncio.create_task(self.services.run())
        self._announcer_task = asyncio.create_task(self._announce())
        self._upstream_task = asyncio.create_task(self._upstream_ready(upstream_started))
        await self._set_nodes(self.spec)

    async def _upstream_ready(self, started: Awaitable[runner.ProcessRecord]) -> None:
        try:
            self.upstream_dns = await started
        except Exception:
            log.exception("the outside world's resolver (Unbound on host/external) did not "
                          "start: names outside the cluster domain will fail to resolve")

    def _start_podserver(self) -> None:
        sock = self.dirs.root / "podserver.sock"
        self.podserver_proc = spawn_server(sock, self.dirs.root / "podserver.log",
                                           python=sys.executable)
        runner.write_record(self.podserver_proc.pid, self.dirs.pids / "podserver.json",
                            ["kubewire.workload.server"])
        self.podserver = PodServerClient(sock)

    async def _announce(self) -> None:
        """Keep the external host's routes to LoadBalancer/external IPs current."""
        watch = self.store.watch(["Service", "EndpointSlice", "Node"])
        path = netns.netns_path(names.host_netns(self.lab, EXTERNAL_HOST))
        loop = asyncio.get_running_loop()
        applied: dict[str, tuple[str, ...]] | None = None
        try:
            async for _event in watch:
                await asyncio.sleep(0.01)
                watch.drain()
                node_ips = {n: str(ip) for n, ip in self.underlay.items()}
                desired = announcer.desired_routes(self.store.list("Service"),
                                                   self.store.list("EndpointSlice"), node_ips)
                if desired == applied:
                    continue  # most events (pod readiness, node status) change no route
                try:
                    await loop.run_in_executor(self.pool, announcer.sync_routes, path, desired)
                    applied = desired
                except Exception:
                    log.exception("announcing external addresses failed")
        finally:
            watch.close()

    # -- nodes -------------------------------------------------------------------
    async def _set_nodes(self, spec: ClusterSpec) -> None:
        wanted = {n.name: n for n in spec.nodes}
        for name in sorted(set(self.agents) - set(wanted)):
            await self._remove_node(name)
        addresses = node_ctl.allocate_underlay_addresses(
            spec.underlay_cidr, sorted(wanted), dict(self.underlay),
            reserved=spec.reserved_underlay)
        new = [n for n in spec.nodes if n.name not in self.agents]
        loop = asyncio.get_running_loop()
        prefix = spec.underlay_cidr.prefixlen
        await asyncio.gather(*(
            loop.run_in_executor(self.pool, topology.add_node, self.lab, n.name,
                                 IPv4Interface(f"{addresses[n.name]}/{prefix}"),
                                 next(spec.underlay_cidr.hosts()))
            for n in new))
        for n in new:
            self.underlay[n.name] = IPv4Address(str(addresses[n.name]))
            agent = NodeAgent(self.lab, n.name, dict(n.labels), self.underlay[n.name], spec,
                              self.store, self.store.put, self.pool, self.podserver,
                              dict(n.annotations))
            self.agents[n.name] = (agent, asyncio.create_task(agent.run()))

    async def _remove_node(self, name: str) -> None:
        agent, task = self.agents.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await agent.shutdown()
        for pod in self.store.list("Pod", where=lambda p: p["spec"].get("nodeName") == name):
            self.store.delete(*key_of(pod))
        with contextlib.suppress(NotFound):
            self.store.delete("Node", "", name)
        self.underlay.pop(name, None)
        await asyncio.get_running_loop().run_in_executor(
            self.pool, topology.remove_node, self.lab, name)

    # -- requests ----------------------------------------------------------------
    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "lab": self.lab, "pid": os.getpid()}
        if op == "apply":
            return await self.apply(request["objects"])
        if op == "delete":
            return self.delete([tuple(k) for k in request["keys"]],
                               bool(request.get("ignore_missing")))
        if op == "get":
            reply: dict[str, Any] = {"ok": True, "items": self.get(request)}
            if request["kind"] in ("EndpointSlice", "Service") and self.services is not None:
                ns = request.get("namespace")
                reply["notes"] = {k: v for k, v in sorted(self.services.explanations.items())
                                  if ns is None or k.startswith(f"{ns}/")}
            return reply
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "bgp":
            return self.bgp_status(request)
        if op == "wait":
            return await self.wait(float(request.get("timeout", 60)))
        if op == "shutdown":
            self._stop.set()
            return {"ok": True}
        return {"ok": False, "error": f"unknown request {op!r}"}

    async def apply(self, objects: list[dict[str, Any]]) -> dict[str, Any]:
        known_ns = {n["metadata"]["name"] for n in self.store.list("Namespace")}
        known_ns |= {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
        problems = []
        new_cluster: ClusterSpec | None = None
        for obj in objects:
            ns = obj["metadata"].get("namespace")
            if ns and ns not in known_ns:
                problems.append(f'{obj["kind"].lower()}/{obj["metadata"]["name"]}: namespaces '
                                f'"{ns}" not found')
            if obj["kind"] == "Pod" and (msg := self._pod_update_problem(obj)):
                problems.append(msg)
            if obj["kind"] == "Cluster":
                try:
                    new_cluster = self._check_cluster_change(obj)
                except ApplyError as exc:
                    problems.append(str(exc))
        if not problems and new_cluster is None:
            problems = self._pod_range_problems(objects)
        if not problems and self.services is not None:
            problems = self.services.admission_problems(objects)
        if problems:
            return {"ok": False, "error": "\n".join(problems)}
        results = []
        for obj in objects:
            if obj["kind"] == "Cluster":
                continue
            results.append(self._put_user_object(obj))
        if new_cluster is not None:
            changed = [n.name for n in new_cluster.nodes] != [n.name for n in self.spec.nodes]
            self.spec = new_cluster
            self.cluster_obj = next(o for o in objects if o["kind"] == "Cluster")
            self.dirs.write_spec({"cluster": self.cluster_obj})
            if self.control:
                self.control.spec = new_cluster
            if changed:
                await self._set_nodes(new_cluster)
            results.append({"object": f"cluster.kubewire.dev/{self.lab}",
                            "action": "configured" if changed else "unchanged"})
        return {"ok": True, "results": results}

    def _pod_range_problems(self, incoming: list[dict[str, Any]]) -> list[str]:
        """Would the store, with `incoming` applied, leave pods without an address?"""
        kinds = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Pod")
        merged = {key_of(o): o for k in kinds for o in self.store.list(k)}
        merged.update((key_of(o), o) for o in incoming if o["kind"] in kinds)
        pods = [o for k, o in merged.items() if k[0] == "Pod"]
        bound = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["spec"]["nodeName"]
                 for p in pods if p.get("spec", {}).get("nodeName")}
        return pod_range_problems(merged.values(), self.store.list("Node"), bound)

    def _check_cluster_change(self, obj: dict[str, Any]) -> ClusterSpec:
        new = ClusterSpec.from_obj(obj)
        if new.name != self.spec.name:
            raise ApplyError(f"Cluster {new.name!r} does not match this lab ({self.spec.name!r})")
        fixed = ("pod_cidr", "node_cidr_mask_size", "service_cidr", "underlay_cidr", "network",
                 "cni", "dns_domain", "load_balancer_cidr")
        for attr in fixed:
            if getattr(new, attr) != getattr(self.spec, attr):
                raise ApplyError(
                    f"Cluster field {attr} cannot change on a running lab "
                    f"({getattr(self.spec, attr)} -> {getattr(new, attr)}); "
                    "run `kubewire down` and `kubewire up` to rebuild it")
        return new

    def _put_user_object(self, obj: dict[str, Any]) -> dict[str, str]:
        kind, ns, name = key_of(obj)
        current = self.store.get(kind, ns, name)
        label = f"{kind.lower()}/{name}"
        meta = obj["metadata"]  # the request's own copy: ours to fill in
        if current is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            self.store.put(obj)
            return {"object": label, "action": "created"}
        meta["uid"] = current["metadata"].get("uid")
        if kind == "Service" and self.services is not None:
            obj = self.services.defaulted(obj)
            meta = obj["metadata"]
        if kind == "Pod" and "nodeName" in current["spec"]:
            obj["spec"].setdefault("nodeName", current["spec"]["nodeName"])
        same = all(obj.get(f) == current.get(f) for f in ("spec", "data")) and all(
            meta.get(f) == current["metadata"].get(f) for f in ("labels", "annotations"))
        if same:
            return {"object": label, "action": "unchanged"}
        self.store.put(obj)
        return {"object": label, "action": "configured"}

    def _pod_update_problem(self, obj: dict[str, Any]) -> str:
        """The apiserver forbids changing a pod's spec (labels and annotations may change)."""
        current = self.store.get(*key_of(obj))
        if current is None:
            return ""
        spec = dict(obj.get("spec", {}))
        spec.setdefault("nodeName", current["spec"].get("nodeName"))
        have = {k: v for k, v in current["spec"].items() if v is not None}
        spec = {k: v for k, v in spec.items() if v is not None}
        if spec == have:
            return ""
        return (f"pod/{obj['metadata']['name']}: pod updates may not change fields other than "
                "metadata labels and annotations; delete the pod and apply it again")

    def delete(self, keys: list[tuple[Any, ...]], ignore_missing: bool) -> dict[str, Any]:
        missing = [k for k in keys if self.store.get(*k) is None]
        if missing and not ignore_missing:
            return {"ok": False, "error": "\n".join(
                f'{k[0].lower()}s "{k[2]}" not found' + (f' in namespace "{k[1]}"' if k[1]
                                                           else "") for k in missing)}
        results = []
        for kind, ns, name in keys:
            if self.store.get(kind, ns, name) is None:
                continue
            if kind == "Namespace" and name in BUILTIN_NAMESPACES:
                return {"ok": False, "error": f"namespace {name} cannot be deleted"}
            if kind == "Namespace":
                for k in self.store.kinds():
                    for o in self.store.list(k, namespace=name):
                        self.store.delete(*key_of(o))
            self.store.delete(kind, ns, name)
            results.append({"object": f"{kind.lower()}/{name}", "action": "deleted"})
        return {"ok": True, "results": results}

    def get(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        kind = request["kind"]
        ns = request.get("namespace")
        name = request.get("name")
        if kind == "Cluster":
            return [self.cluster_obj]
        items = self.store.list(kind, namespace=ns)
        if name:
            items = [i for i in items if i["metadata"]["name"] == name]
        return items

    def status(self) -> dict[str, Any]:
        pods = self.store.list("Pod")
        ready = sum(1 for p in pods if _is_ready(p))
        completed = sum(1 for p in pods if p.get("status", {}).get("phase") == "Succeeded")
        failed = {f'{p["metadata"]["namespace"]}/{p["metadata"]["name"]}': why
                  for p in pods if (why := _failure(p))}
        return {
            "lab": self.lab,
            "nodes": len(self.store.list("Node")),
            "pods": len(pods),
            "ready": ready,
            "completed": completed,
            "failed": failed,
            "unschedulable": self.control.unschedulable if self.control else {},
            "warnings": [*(self.control.warnings if self.control else []),
                         *(self.services.warnings if self.services else [])],
            "backend": self.spec.network.backend,
            "cni": self.spec.cni,
        }

    async def wait(self, timeout: float) -> dict[str, Any]:
        """Wait until every pod is ready (or has failed, or cannot be scheduled)."""
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.02)  # let the control plane see the latest apply
        while True:
            st = self.status()
            settled = (st["ready"] + st["completed"] + len(st["failed"])
                       + len(st["unschedulable"]))
            nodes_ready = all(n.get("spec", {}).get("podCIDR") for n in self.store.list("Node"))
            if settled >= st["pods"] and nodes_ready and self._derived_settled():
                return {"ok": True, "done": True, **st}
            if time.monotonic() > deadline:
                return {"ok": True, "done": False, **st}
            # Each status pass walks every pod; at 1,000 pods polling faster shows up
            # in the daemon's CPU profile.
            await asyncio.sleep(0.2)

    def _derived_settled(self) -> bool:
        return all(c is not None and not c.busy() for c in (self.control, self.services))

    # -- serving -----------------------------------------------------------------
    async def serve(self) -> None:
        sock = self.dirs.socket
        sock.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._client, path=str(sock), limit=2**26)
        os.chmod(sock, 0o600)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        async with server:
            await self._stop.wait()
        self.shutdown()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if request.get("op") == "watch":
                    await self._stream_watch(request, writer)
                    return
                reply = await self.handle(request)
            except Exception as exc:
                log.exception("request failed")
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def _stream_watch(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        """List then watch, as a client of the API server does: one ``SYNC`` line with
        every object of the kinds asked for, then one line per event, until the client
        hangs up. A new store watch starts with every existing object queued as ADDED;
        those queued events are the list, so nothing falls between list and watch and
        nothing is sent twice."""
        kinds = [str(k) for k in request.get("kinds") or []]
        unknown = sorted(set(kinds) - set(KINDS))
        if not kinds or unknown:
            raise ApplyError(f"watch: unknown kinds {unknown}" if unknown else
                             "watch: give kinds, e.g. [\"Service\"]")
        watch = self.store.watch(kinds)
        try:
            items = [ev.obj for ev in watch.drain()]
            writer.write(json.dumps({"ok": True, "type": "SYNC", "items": items}).encode()
                         + b"\n")
            await writer.drain()
            while True:
                events = [await anext(watch), *watch.drain()]
                writer.write(b"".join(
                    json.dumps({"type": ev.type, "object": ev.obj}).encode() + b"\n"
                    for ev in events))
                await writer.drain()
        except (ConnectionError, BrokenPipeError):
            pass  # the watcher went away
        finally:
            watch.close()

    def bgp_status(self, request: dict[str, Any]) -> dict[str, Any]:
        """`kubewire bgp peers|routes`: every node's speaker, or one node's."""
        if self.spec.network.backend != "bgp":
            return {"ok": False, "error": f"lab {self.lab} routes with "
                    f"{self.spec.network.backend}, not bgp: no node runs a BGP speaker "
                    "(set spec.network.backend: bgp in the Cluster)"}
        node = request.get("node")
        if node is not None and node not in self.agents:
            return {"ok": False, "error": f'nodes "{node}" not found'}
        rows: list[dict[str, Any]] = []
        problems = {}
        for name, (agent, _) in sorted(self.agents.items()):
            if (node is not None and name != node) or agent.bgp is None:
                continue
            if agent.bgp.problem:
                problems[name] = agent.bgp.problem
            if request.get("what") == "routes":
                rows += agent.bgp.routes(request.get("prefix"))
            else:
                rows += agent.bgp.peers()
        return {"ok": True, "items": rows, "problems": problems}

    def shutdown(self) -> None:
        """Stop our own helpers; the kernel objects are removed by `kubewire down`."""
        if self.plugin_server:
            self.plugin_server.stop()
        if self.podserver_proc and self.podserver_proc.poll() is None:
            self.podserver_proc.terminate()
        if self.upstream_dns is not None:
            upstream.stop_upstream(self.upstream_dns)
        if self.tor_bird is not None:
            tor.stop_tor(self.tor_bird)


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                         "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def _failure(pod: dict[str, Any]) -> str:
    """Why a pod will not become ready by waiting (empty if it still may)."""
    st = pod.get("status", {})
    if st.get("reason") == "SandboxFailed":
        return str(st.get("message", "sandbox failed"))
    if st.get("phase") == "Failed":
        return "Failed: a container exited with an error and restartPolicy keeps it down"
    for c in st.get("containerStatuses", []):
        if c.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
            code = c.get("lastState", {}).get("terminated", {}).get("exitCode")
            return f"container {c['name']} is in CrashLoopBackOff (last exit code {code})"
    return ""


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


async def _main(lab: str) -> None:
    daemon = LabDaemon(lab)
    try:
        await daemon.start()
    except Exception:
        log.exception("lab start failed")
        daemon.shutdown()
        raise
    await daemon.serve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kubewire-daemon")
    parser.add_argument("--lab", required=True)
    args = parser.parse_args(argv)
    dirs = LabDirs.of(args.lab)
    logging.basicConfig(
        filename=dirs.daemon_log, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args.lab))


if __name__ == "__main__":
    main()

