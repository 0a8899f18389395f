"""DnsApp: every server block of a Corefile, its plugin chains, listeners and HTTP endpoints.

A configuration becomes a *generation*: built plugins, one compiled chain per server block,
and a dispatch function per listen address. Starting, reloading and setting the cluster all
end in plain attribute assignments done without an ``await`` in between, so a query sees
either the old generation or the new one, never a mix, and none is dropped. Listeners on an
address both generations use are kept (their sockets never close); upstream sockets and
cache entries carry over when their config is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import os
import pickle
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from kubewire.dns.corefile import (
    CacheConfig,
    Corefile,
    CorefileError,
    ErrorsConfig,
    ForwardConfig,
    HealthConfig,
    HostPort,
    HostsConfig,
    KubernetesConfig,
    LoadbalanceConfig,
    LogConfig,
    PrometheusConfig,
    ReadyConfig,
    ReloadConfig,
    RewriteConfig,
    ServerConfig,
    in_zone,
    parse_corefile,
)
from kubewire.dns.views import PodView, ServiceView, SliceView
from kubewire.dns.zone import ClusterZone, build_zone
from kubewire.dnsserver.chain import (
    PLUGIN_ORDER,
    REFUSED,
    Handler,
    Observer,
    Pending,
    Request,
    Result,
    end_of_chain,
    name_text,
    question,
    reply,
)
from kubewire.dnsserver.errors import ListenError
from kubewire.dnsserver.forward import Forward, Upstream, resolv_conf_nameservers
from kubewire.dnsserver.http import HttpServer, Route
from kubewire.dnsserver.metrics import (
    Family,
    ServerMetrics,
    build_info,
    render,
    server_families,
)
from kubewire.dnsserver.plugins import (
    Cache,
    CacheStore,
    Errors,
    Hosts,
    Kubernetes,
    Loadbalance,
    Log,
    Rewrite,
    parse_hosts,
)
from kubewire.dnsserver.server import FALLBACK_TIMEOUT, DnsServer

Obj = Mapping[str, Any]
Address = tuple[str, int]
# Observers run in PLUGIN_ORDER too; these are the plugins that only watch replies.
_OBSERVERS = ("errors", "log", "prometheus")


@dataclass(frozen=True, slots=True)
class _Objects:
    """What the last ``set_cluster`` got, kept to build zones for a reloaded Corefile: as
    the DNS views only (a few fields each, not the Kubernetes JSON), and pods only as their
    namespaces, which is all the zone takes from them (``pods insecure``)."""

    services: list[ServiceView]
    slices: list[SliceView]
    namespaces: tuple[str, ...]
    nameserver_ips: tuple[str, ...] | None

    @classmethod
    def of(cls, services: Iterable[Obj | ServiceView], slices: Iterable[Obj | SliceView],
           pods: Iterable[Obj], namespaces: Iterable[str],
           nameserver_ips: Iterable[str] | None) -> _Objects:
        svcs = [s if isinstance(s, ServiceView) else ServiceView.from_k8s(s) for s in services]
        views = [s if isinstance(s, SliceView) else SliceView.from_k8s(s) for s in slices]
        spaces = {PodView.from_k8s(p).namespace for p in pods} | set(namespaces)
        return cls(svcs, views, tuple(sorted(spaces)),
                   tuple(nameserver_ips) if nameserver_ips is not None else None)


@dataclass(slots=True)
class _Generation:
    config: Corefile
    listeners: dict[Address, Handler] = field(default_factory=dict)
    keys: dict[str, Address] = field(default_factory=dict)  # "zone:port" -> listen address
    http: dict[Address, dict[str, Route]] = field(default_factory=dict)
    http_names: dict[str, Address] = field(default_factory=dict)
    kubernetes: list[Kubernetes] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)
    caches: list[tuple[str, Cache]] = field(default_factory=list)
    hosts: list[tuple[Hosts, str]] = field(default_factory=list)
    errors: list[Errors] = field(default_factory=list)
    reload: ReloadConfig | None = None
    lameduck: float = 0.0
    backstop: float = FALLBACK_TIMEOUT


def _compile(handlers: list[Any]) -> Handler:
    """Link handler plugins front to back; the last one's next is the end of the chain."""
    nxt: Handler = end_of_chain
    for h in reversed(handlers):
        h.next = nxt
        nxt = h.handle
    return nxt


def _observed(head: Handler, observers: list[Observer]) -> Handler:
    if not observers:
        return head
    obs = tuple(observers)

    def after(req: Request) -> Callable[[bytes], bytes]:
        def run(out: bytes) -> bytes:
            for o in obs:
                o(req, out)
            return out
        return run

    def serve(req: Request) -> Result:
        out = head(req)
        if isinstance(out, Pending):
            return out.then(after(req))
        for o in obs:
            o(req, out)
        return out
    return serve


def _router(sites: list[tuple[str, Handler]]) -> Handler:
    """Pick the server block with the longest zone that holds the name (CoreDNS's rule)."""
    if len(sites) == 1 and sites[0][0] == ".":
        return sites[0][1]  # the common case: no parsing at all
    ordered = sorted(sites, key=lambda s: -len(s[0]))

    def route(req: Request) -> Result:
        q = question(req.wire)
        name = name_text(q[0]) if q is not None else "."
        for zone, serve in ordered:
            if in_zone(name, zone):
                return serve(req)
        return reply(req.wire, REFUSED)
    return route


class DnsApp:
    """Runs a Corefile. ``host`` is where every server block listens (CoreDNS: all addresses).

    ``path`` names the Corefile on disk, which the ``reload`` plugin watches.
    """

    def __init__(self, corefile: str, *, path: str | None = None, host: str = "0.0.0.0",
                 env: Mapping[str, str] | None = None, log_stream: TextIO | None = None,
                 error_stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.host = host
        self._env = env
        self._filename = Path(path).name if path else "Corefile"
        self._log_stream = log_stream
        self._err = error_stream if error_stream is not None else sys.stderr
        self._clock = clock
        self._config = parse_corefile(corefile, self._filename, env)
        self._checksum = hashlib.sha512(corefile.encode()).hexdigest()
        self._gen: _Generation | None = None
        self._servers: dict[Address, DnsServer] = {}
        self._http: dict[Address, HttpServer] = {}
        self._upstreams: dict[tuple[str, int], Upstream] = {}
        self._caches: dict[tuple[str, CacheConfig], CacheStore] = {}
        self._metrics: dict[tuple[str, str], ServerMetrics] = {}
        self._objects: _Stored | None = None
        self._zones: dict[tuple[str, int, str], ClusterZone] = {}
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.reloads = 0
        self.reload_failures = 0

    # -- public --------------------------------------------------------------------------

    @property
    def config(self) -> Corefile:
        return self._config

    @property
    def ready(self) -> bool:
        """Every kubernetes plugin has a zone (after the first ``set_cluster``)."""
        return self._gen is not None and all(k.ready for k in self._gen.kubernetes)

    @property
    def ports(self) -> dict[str, int]:
        """Bound port per server key as written ("zone:port", e.g. ".:0")."""
        if self._gen is None:
            return {}
        return {k: self._servers[a].port for k, a in self._gen.keys.items()}

    @property
    def port(self) -> int:
        """The bound port of the first server block's first key."""
        return next(iter(self.ports.values()))

    @property
    def http_ports(self) -> dict[str, int]:
        """Bound port per HTTP plugin ("health", "ready", "prometheus")."""
        if self._gen is None:
            return {}
        return {n: self._http[a].port for n, a in self._gen.http_names.items()}

    def server(self, key: str | None = None) -> DnsServer:
        """The listener serving a server key (default: the first); for counters and tests."""
        assert self._gen is not None, "start() first"
        addr = self._gen.keys[key] if key is not None else next(iter(self._gen.keys.values()))
        return self._servers[addr]

    def set_cluster(self, services: Iterable[Obj], slices: Iterable[Obj] = (),
                    pods: Iterable[Obj] = (), *, namespaces: Iterable[str] = (),
                    nameserver_ips: Iterable[str] | None = None) -> None:
        """Rebuild every kubernetes plugin's zone from these objects and swap it in.

        ``namespaces``: more namespaces whose pod names answer (those of the objects always
        do). ``nameserver_ips`` (the apex NS glue) defaults to kube-system/kube-dns's
        ClusterIPs. Raises ``kubewire.dns.DnsInputError`` on an unreadable object; then
        nothing changes.
        """
        objects = _Objects.of(services, slices, pods, namespaces, nameserver_ips)
        zones: dict[tuple[str, int, str], ClusterZone] = {}
        kube = self._gen.kubernetes if self._gen is not None else []
        for k in kube:
            self._zone_for(k.cfg, objects, zones)
        self._swap_zones(_Stored(pickle.dumps(objects, protocol=pickle.HIGHEST_PROTOCOL)),
                         zones)

    async def update_cluster(self, services: Iterable[Obj], slices: Iterable[Obj] = (),
                             pods: Iterable[Obj] = (), *, namespaces: Iterable[str] = (),
                             nameserver_ips: Iterable[str] | None = None) -> None:
        """``set_cluster``, with the zones built in a forked child process.

        The event loop keeps answering from the old zone meanwhile (a 10k-Service build
        takes about a second), and the build's transient garbage, several times the zone's
        size, lives and dies in the child instead of fragmenting this process's heap: the
        parent only unpickles the finished zone, allocated compactly.
        """
        def produce() -> _Objects:
            return _Objects.of(services, slices, pods, namespaces, nameserver_ips)

        await self.update_cluster_from(produce)

    async def update_cluster_from(self, produce: Callable[[], _Objects]) -> None:
        """``update_cluster`` where even reading the objects happens in the child:
        ``produce()`` (e.g. parse a file into ``_Objects.of(...)``) runs there, so the
        Kubernetes JSON is never parsed in this process at all."""
        kube = self._gen.kubernetes if self._gen is not None else []
        wanted = {(k.cfg.domain, k.cfg.ttl, k.cfg.pods): k.cfg for k in kube}
        blob, built = await asyncio.to_thread(build_in_child, produce, list(wanted.values()))
        objects = _Stored(blob)
        zones = dict(zip(wanted, built, strict=True))
        # A reload may have changed the kubernetes configs while the child worked.
        for k in self._gen.kubernetes if self._gen is not None else []:
            self._zone_for(k.cfg, objects, zones)
        self._swap_zones(objects, zones)

    def _swap_zones(self, objects: _Stored,
                    zones: dict[tuple[str, int, str], ClusterZone]) -> None:
        kube = self._gen.kubernetes if self._gen is not None else []
        self._objects, self._zones = objects, zones
        for k in kube:
            k.zone = zones[(k.cfg.domain, k.cfg.ttl, k.cfg.pods)]
        _settle_heap()
        self._wake_ready()

    async def wait_ready(self) -> None:
        """Return once ``ready`` is true (after ``start`` and the first ``set_cluster``)."""
        while not self.ready:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ready_waiters.append(fut)
            await fut

    def _wake_ready(self) -> None:
        if self.ready:
            waiters, self._ready_waiters = self._ready_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def start(self) -> None:
        async with self._lock:
            await self._install(self._config)

    async def stop(self) -> None:
        gen = self._gen
        if gen is not None and gen.lameduck > 0:
            # CoreDNS's health lameduck: keep answering while load balancers notice.
            await asyncio.sleep(gen.lameduck)
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for server in list(self._servers.values()):
            await server.stop()
        for http in list(self._http.values()):
            await http.stop()
        self._servers.clear()
        self._http.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for up in self._upstreams.values():
            up.close()
        self._upstreams.clear()
        self._gen = None

    async def __aenter__(self) -> DnsApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def reload(self, text: str) -> None:
        """Serve ``text`` instead; raises ``CorefileError`` (or ``ListenError``) and keeps the
        old config when it cannot be served."""
        config = parse_corefile(text, self._filename, self._env)
        async with self._lock:
            await self._install(config)
            self._config = config
            self._checksum = hashlib.sha512(text.encode()).hexdigest()
            self.reloads += 1

    async def check_reload(self) -> bool:
        """One poll of the reload plugin: reload if the Corefile's checksum changed.

        A broken file is reported on stderr with its line and column and changes nothing.
        """
        if self.path is None:
            return False
        try:
            text = Path(self.path).read_text()
        except OSError as exc:
            self._err.write(f"[ERROR] plugin/reload: cannot read {self.path}: {exc}\n")
            return False
        if hashlib.sha512(text.encode()).hexdigest() == self._checksum:
            return False
        try:
            await self.reload(text)
        except (CorefileError, ListenError) as exc:
            self.reload_failures += 1
            # Remember it: a broken file is reported once, not on every poll.
            self._checksum = hashlib.sha512(text.encode()).hexdigest()
            self._err.write(f"[ERROR] plugin/reload: {exc}; the previous config keeps "
                            "serving\n")
            return False
        self._err.write(f"[INFO] plugin/reload: Running configuration SHA512 = "
                        f"{self._checksum}\n")
        return True

    # -- building a generation -------------------------------------------------------------

    def _zone_for(self, cfg: KubernetesConfig, objects: _Objects | _Stored,
                  cache: dict[tuple[str, int, str], ClusterZone]) -> ClusterZone:
        key = (cfg.domain, cfg.ttl, cfg.pods)
        if key not in cache:
            cache[key] = _build_zone(cfg, objects.load() if isinstance(objects, _Stored)
                                     else objects)
        return cache[key]

    def _addr(self, hp: HostPort) -> Address:
        host = hp.host or self.host
        return ("127.0.0.1" if host == "localhost" else host), hp.port

    def _build(self, config: Corefile) -> _Generation:
        gen = _Generation(config)
        sites: dict[Address, list[tuple[str, Handler]]] = {}
        for server in config.servers:
            head, observers_for = self._build_block(server, gen)
            for key in server.keys:
                label = f"dns://:{key.port}"
                addr = (self.host, key.port)
                gen.keys.setdefault(str(key), addr)
                serve = _observed(head, observers_for(label, key.zone))
                sites.setdefault(addr, []).append((key.zone, serve))
        gen.listeners = {addr: _router(s) for addr, s in sites.items()}
        if gen.forwards:
            gen.backstop = max(f.cfg.timeout for f in gen.forwards) + 1.0
        return gen

    def _build_block(self, server: ServerConfig, gen: _Generation) -> tuple[
            Handler, Callable[[str, str], list[Observer]]]:
        cfgs = dict(server.plugins)
        handlers: list[Any] = []
        label = f"dns://:{server.keys[0].port}"
        for name in PLUGIN_ORDER:
            cfg = cfgs.get(name)
            if cfg is None or name in _OBSERVERS:
                continue
            if isinstance(cfg, KubernetesConfig):
                k = Kubernetes(cfg)
                if self._objects is not None:
                    k.zone = self._zone_for(cfg, self._objects, self._zones)
                gen.kubernetes.append(k)
                handlers.append(k)
            elif isinstance(cfg, ForwardConfig):
                f = Forward(cfg, self._resolve_upstreams(cfg), self._clock)
                gen.forwards.append(f)
                handlers.append(f)
            elif isinstance(cfg, CacheConfig):
                store = self._caches.setdefault((label, cfg), CacheStore())
                c = Cache(cfg, store, self._clock)
                gen.caches.append((label, c))
                handlers.append(c)
            elif isinstance(cfg, HostsConfig):
                h = Hosts(cfg, self._read_hosts(cfg))
                gen.hosts.append((h, cfg.path))
                handlers.append(h)
            elif isinstance(cfg, RewriteConfig):
                handlers.append(Rewrite(cfg))
            elif isinstance(cfg, LoadbalanceConfig):
                handlers.append(Loadbalance())
            elif isinstance(cfg, HealthConfig):
                self._route(gen, "health", cfg.address, "/health",
                            lambda: (200, "text/plain", "OK"))
                gen.lameduck = max(gen.lameduck, cfg.lameduck)
            elif isinstance(cfg, ReadyConfig):
                self._route(gen, "ready", cfg.address, "/ready", self._ready_route)
            elif isinstance(cfg, ReloadConfig):
                gen.reload = cfg
            # loop is accepted and adds no handler (see README).
        head = _compile(handlers)
        errors = Errors(self._err) if isinstance(cfgs.get("errors"), ErrorsConfig) else None
        if errors is not None:
            gen.errors.append(errors)
        log_cfg = cfgs.get("log")
        log = Log(log_cfg, self._log_stream) if isinstance(log_cfg, LogConfig) else None
        prom = cfgs.get("prometheus")
        if isinstance(prom, PrometheusConfig):
            self._route(gen, "prometheus", prom.address, "/metrics", self._metrics_route)

        def observers(server_label: str, zone: str) -> list[Observer]:
            out: list[Observer] = []
            if errors is not None:
                out.append(errors)
            if log is not None:
                out.append(log)
            if isinstance(prom, PrometheusConfig):
                m = self._metrics.setdefault((server_label, zone),
                                             ServerMetrics(server_label, zone))
                out.append(m)
            return out
        return head, observers

    def _route(self, gen: _Generation, name: str, hp: HostPort, path: str,
               route: Route) -> None:
        addr = self._addr(hp)
        gen.http.setdefault(addr, {})[path] = route
        gen.http_names.setdefault(name, addr)

    def _resolve_upstreams(self, cfg: ForwardConfig) -> list[Upstream]:
        targets: list[tuple[str, int]] = []
        for t in cfg.to:
            if not t.path:
                targets.append((t.host, t.port))
                continue
            try:
                text = Path(t.path).read_text()
            except OSError as exc:
                raise CorefileError(f"forward: cannot read {t.path}: {exc.strerror}",
                                    t.line, t.col, self._filename) from None
            found = resolv_conf_nameservers(text)
            if not found:
                raise CorefileError(f"forward: no nameserver line in {t.path}", t.line, t.col,
                                    self._filename)
            targets += [(ip, 53) for ip in found]
        out = []
        for target in dict.fromkeys(targets):
            up = self._upstreams.get(target)
            if up is None:
                up = Upstream(*target)
            out.append(up)
        return out

    def _read_hosts(self, cfg: HostsConfig) -> list[tuple[str, tuple[str, ...]]]:
        try:
            return parse_hosts(Path(cfg.path).read_text())
        except OSError as exc:
            # CoreDNS only warns: inline entries still serve, and the file may appear later.
            self._err.write(f"[WARNING] plugin/hosts: cannot read {cfg.path}: {exc.strerror}\n")
            return []

    # -- HTTP routes -----------------------------------------------------------------------

    def _ready_route(self) -> tuple[int, str, str]:
        if self.ready:
            return 200, "text/plain", "OK"
        return 503, "text/plain", "kubernetes\n"  # CoreDNS lists the plugins not ready

    def _metrics_route(self) -> tuple[int, str, str]:
        families: list[Family] = [build_info()]
        families += server_families(self._metrics.values())
        gen = self._gen
        if gen is not None:
            for label, cache in gen.caches:
                families += cache.families(label)
            for f in gen.forwards:
                families += f.families()
            enabled = [("coredns_plugin_enabled", {"server": f"dns://:{k.port}",
                                                   "zone": k.zone, "name": n}, 1.0)
                       for s in gen.config.servers for k in s.keys for n, _ in s.plugins]
            families.append(("coredns_plugin_enabled", "gauge", "A metric that indicates "
                             "whether a plugin is enabled on per server and zone basis.",
                             enabled))
        families.append(("coredns_reload_failed_total", "counter", "Counter of the number of "
                         "failed reload attempts.",
                         [("coredns_reload_failed_total", {}, float(self.reload_failures))]))
        return 200, "text/plain; version=0.0.4; charset=utf-8", render(families)

    # -- installing a generation -----------------------------------------------------------

    async def _install(self, config: Corefile) -> None:
        gen = self._build(config)  # raises CorefileError before anything changes
        new_servers: dict[Address, DnsServer] = {}
        new_http: dict[Address, HttpServer] = {}
        try:
            for addr, dispatch in gen.listeners.items():
                if addr not in self._servers:
                    server = DnsServer(None, addr[0], addr[1], dispatch=dispatch,
                                       fallback_timeout=gen.backstop)
                    await server.start()
                    new_servers[addr] = server
            for addr in gen.http:
                if addr not in self._http:
                    http = HttpServer(*addr)
                    await http.start()
                    new_http[addr] = http
        except OSError as exc:
            for s in new_servers.values():
                await s.stop()
            for h in new_http.values():
                await h.stop()
            raise ListenError(f"cannot listen: {exc}; the previous config keeps serving "
                              "(pick another port, or bind below 1024 as root)") from None
        # The swap: no await from here to the end of the loop below.
        old = self._gen
        self._servers.update(new_servers)
        self._http.update(new_http)
        for addr, dispatch in gen.listeners.items():
            server = self._servers[addr]
            server.dispatch = dispatch
            server._fallback_timeout = gen.backstop
        for addr, routes in gen.http.items():
            self._http[addr].routes = routes
        used = {(u.host, u.port): u for f in gen.forwards for u in f.upstreams}
        retired = [u for k, u in self._upstreams.items() if k not in used]
        self._upstreams = used
        self._gen = gen
        gone = [a for a in self._servers if a not in gen.listeners]
        gone_http = [a for a in self._http if a not in gen.http]
        for a in gone:
            await self._servers.pop(a).stop()
        for a in gone_http:
            await self._http.pop(a).stop()
        if retired:
            # Queries in flight on a retired upstream still finish: close it after they could.
            self._spawn(self._close_later(retired, gen.backstop if old is None
                                          else old.backstop))
        self._restart_watcher(old, gen)
        self._wake_ready()
        for hosts, path in gen.hosts:
            if hosts.cfg.reload > 0:
                self._spawn(self._watch_hosts(hosts, path, hosts.cfg.reload, gen))

    async def _close_later(self, upstreams: list[Upstream], delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:  # stop() cancels this: the sockets still close
            for u in upstreams:
                if self._upstreams.get((u.host, u.port)) is not u:
                    u.close()

    def _restart_watcher(self, old: _Generation | None, gen: _Generation) -> None:
        if old is not None and old.reload == gen.reload and self._watcher is not None:
            return
        if self._watcher is not None:
            # Reload runs inside the watcher; it must not cancel itself mid-install.
            if self._watcher is not asyncio.current_task():
                self._watcher.cancel()
            self._watcher = None
        if gen.reload is not None and self.path is not None:
            self._watcher = asyncio.ensure_future(self._watch(gen.reload))

    async def _watch(self, cfg: ReloadConfig) -> None:
        while True:
            # CoreDNS waits interval plus up to jitter, so a fleet does not poll in step.
            await asyncio.sleep(cfg.interval + random.uniform(0, cfg.jitter))
            try:
                await self.check_reload()
            except Exception as exc:  # keep polling whatever one attempt hit
                self._err.write(f"[ERROR] plugin/reload: {exc}\n")
            if self._watcher is not asyncio.current_task():
                return  # the new config replaced this watcher (or dropped reload)

    async def _watch_hosts(self, hosts: Hosts, path: str, every: float,
                           gen: _Generation) -> None:
        seen = _stat(path)
        while self._gen is gen:
            await asyncio.sleep(every)
            now = _stat(path)
            if now != seen:
                seen = now
                hosts.load(self._read_hosts(hosts.cfg))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _settle_heap() -> None:
    """Move the zone (and the objects it came from) out of the cyclic GC's sight.

    A 10k-Service zone is ~1M tracked objects; every full collection would walk them all
    while queries wait. None of them form cycles, so refcounting still frees an old zone
    after a swap; ``freeze`` only stops the GC from rescanning them.
    """
    gc.collect()
    gc.freeze()
    _trim_heap()


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise): after a swap
    the old zone and the unpickling buffers are garbage."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


def _stat(path: str) -> tuple[float, int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_mtime, st.st_size


def cluster_objects(services: Iterable[Obj | ServiceView], slices: Iterable[Obj | SliceView] = (),
                    pods: Iterable[Obj] = (), namespaces: Iterable[str] = (),
                    nameserver_ips: Iterable[str] | None = None) -> _Objects:
    """What ``update_cluster_from``'s producer returns: the objects as compact views."""
    return _Objects.of(services, slices, pods, namespaces, nameserver_ips)


def _kube_dns_ips(services: list[ServiceView]) -> list[str]:
    for svc in services:
        if svc.name == "kube-dns" and svc.namespace == "kube-system":
            return list(svc.cluster_ips)
    return []


def _build_zone(cfg: KubernetesConfig, o: _Objects) -> ClusterZone:
    ns_ips = o.nameserver_ips
    if ns_ips is None:
        ns_ips = tuple(_kube_dns_ips(o.services))
    zone = build_zone(o.services, o.slices, (), cfg.domain, serial=int(time.time()),
                      namespaces=o.namespaces, nameserver_ips=ns_ips, ttl=cfg.ttl)
    if cfg.pods == "disabled":
        zone = replace(zone, pod_namespaces=frozenset())
    return zone


class _Stored:
    """The last objects, kept pickled. They are needed again only when a reloaded Corefile
    asks for a zone with other settings; the views of a 10k-Service cluster take ~30 MB
    live and ~5 MB pickled."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def load(self) -> _Objects:
        objects: _Objects = pickle.loads(self.blob)
        return objects


def build_in_child(produce: Callable[[], _Objects], configs: list[KubernetesConfig]
                   ) -> tuple[bytes, list[ClusterZone]]:
    """Run ``produce`` and build one zone per config in a forked child; unpickle the
    zones here (the views come back still pickled, see ``_Stored``).

    Runs in a worker thread (it blocks on the pipe). The child inherits what ``produce``
    needs by fork, writes the pickled result and exits without running any cleanup of ours.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build, write, leave
        code = 0
        try:
            os.close(read_fd)
            objects = produce()
            blob = pickle.dumps(objects, protocol=pickle.HIGHEST_PROTOCOL)
            data = pickle.dumps((blob, [_build_zone(c, objects) for c in configs]),
                                protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:  # report through the exit status only
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        # The child could not build (bad input): do it here, which raises the real error.
        objects = produce()
        return (pickle.dumps(objects, protocol=pickle.HIGHEST_PROTOCOL),
                [_build_zone(c, objects) for c in configs])
    result: tuple[bytes, list[ClusterZone]] = pickle.loads(data)
    return result


__all__ = ["DnsApp"]
