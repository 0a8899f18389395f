"""The node's BGP agent: what calico-node's BIRD and confd do, for one node.

It lists and watches Nodes, BGPConfiguration, BGPPeers, BlockAffinities, Services and
EndpointSlices, compiles the node's plan (`kubewire.bgpnet.plan_node`: who to peer with,
which AS, reflector or not) and runs a `kubewire.bgpd.Speaker` whose sockets live in the
node's namespace. It announces the node's pod address blocks and the Service prefixes the
BGPConfiguration asks for (`bgpnet.service_prefixes`), and installs every learned route in
the node's kernel (`routing.bgproutes`: proto 186, ECMP over equal paths).

Changes are applied live, as BIRD applies a reconfiguration: a new or removed peer touches
only that session (`Speaker.set_neighbors`), a new block or Service prefix is one announce or
withdraw. Only a change of the node's own AS, router ID, cluster ID or port restarts the
speaker. Kernel routes are written in batches off the event loop, coalesced while a batch
is in flight; every 30 s the proto-186 table is compared with the Loc-RIB and repaired.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from kubewire.bgp.rib import RibChange
from kubewire.bgpd import Speaker, SpeakerConfig, originations
from kubewire.bgpnet import (
    SECRETS_NAMESPACE,
    BgpNetError,
    BgpNode,
    BgpSettings,
    NodePlan,
    PeerSpec,
    plan_node,
    service_prefixes,
)
from kubewire.kernel import netns
from kubewire.routing.bgproutes import (
    BgpRoute,
    BgpRouteProgrammer,
    routes_from_changes,
    routes_from_loc_rib,
)
from kubewire.store.store import StoreClient

log = logging.getLogger(__name__)

WATCHED = ("Node", "BGPConfiguration", "BGPPeer", "BlockAffinity", "Service", "EndpointSlice",
           "Secret")
SETTLE_SECONDS = 0.02
RESYNC_SECONDS = 30.0
# Up to this many equal paths become one ECMP route (BIRD's `merge paths` has no limit
# either; 16 is the kernel's practical maximum worth spreading over).
MULTIPATH = 16


class BgpAgent:
    def __init__(self, node: str, underlay_ip: IPv4Address, client: StoreClient,
                 netns_path: Path, pool: ThreadPoolExecutor) -> None:
        self.node = node
        self.underlay_ip = underlay_ip
        self.client = client
        self.netns_path = netns_path
        self.pool = pool
        self.speaker: Speaker | None = None
        self.plan: NodePlan | None = None
        self.problem = ""  # why there is no plan, for `kubewire bgp peers`
        # Service and EndpointSlice churn (every pod's readiness) matters only while the
        # BGPConfiguration advertises Service addresses; otherwise it costs no replan.
        self._advertises_services = True
        self._announced: set[IPv4Network] = set()
        self._own = frozenset({underlay_ip})  # next hops that are this node: never routes
        self._pending: dict[IPv4Network, BgpRoute | None] = {}
        self._kernel_dirty = asyncio.Event()
        self._dirty = asyncio.Event()
        self.programmer = BgpRouteProgrammer(netns_path)

    # -- the loop ------------------------------------------------------------------
    async def run(self) -> None:
        watch = self.client.watch(WATCHED)
        tasks = [asyncio.create_task(self._plan_loop()), asyncio.create_task(self._kernel_loop())]
        try:
            async for event in watch:
                if self._relevant([event, *watch.drain()]):
                    self._dirty.set()
        finally:
            for task in tasks:
                task.cancel()
            watch.close()
            await self.stop()
            self.close()

    def _relevant(self, events: Sequence[Any]) -> bool:
        for ev in events:
            kind = ev.obj["kind"]
            if kind == "BlockAffinity" and ev.obj.get("spec", {}).get("node") != self.node:
                continue
            if kind == "Secret" and ev.obj["metadata"].get("namespace") != SECRETS_NAMESPACE:
                continue
            if kind in ("Service", "EndpointSlice") and not self._advertises_services:
                continue
            return True
        return False

    async def _plan_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(SETTLE_SECONDS)
            self._dirty.clear()
            try:
                await self._apply_plan()
            except Exception as exc:  # e.g. the speaker cannot listen: say so in `bgp peers`
                self.problem = f"the BGP speaker could not apply its plan: {exc}"
                log.exception("BGP on %s: applying the plan failed", self.node)

    async def stop(self) -> None:
        if self.speaker is not None:
            speaker, self.speaker = self.speaker, None
            await speaker.stop()

    def close(self) -> None:
        """Release the route programmer's netlink socket (it pins the node namespace)."""
        self.programmer.close()

    # -- plan ------------------------------------------------------------------------
    def _compile(self) -> tuple[NodePlan, set[IPv4Network]] | None:
        nodes = []
        for obj in self.client.list("Node"):
            try:
                nodes.append(BgpNode.from_node(obj))
            except BgpNetError as exc:  # a node without an address yet: not a peer yet
                log.debug("BGP on %s: %s", self.node, exc)
        configs = self.client.list("BGPConfiguration")
        default = next((c for c in configs if c["metadata"]["name"] == "default"), None)
        try:
            settings = BgpSettings.from_obj(default)
            self._advertises_services = bool(
                settings.service_cluster_ips or settings.service_external_ips
                or settings.service_load_balancer_ips)
            peers = [PeerSpec.from_obj(o) for o in self.client.list("BGPPeer")]
            if not any(n.name == self.node for n in nodes):
                return None
            plan = plan_node(self.node, nodes, settings, peers, self._secrets())
            services = service_prefixes(self.node, settings, self.client.list("Service"),
                                        self.client.list("EndpointSlice"))
        except BgpNetError as exc:
            self.problem = str(exc)
            log.error("BGP on %s: %s", self.node, exc)
            return None
        self.problem = ""
        blocks = {IPv4Network(a["spec"]["cidr"]) for a in self.client.list(
            "BlockAffinity", where=lambda a: a.get("spec", {}).get("node") == self.node)}
        return plan, blocks | set(services)

    def _secrets(self) -> dict[str, dict[str, str]]:
        """kube-system's Secrets as the API server serves them: stringData merged into the
        base64-decoded data."""
        out = {}
        for secret in self.client.list("Secret", SECRETS_NAMESPACE):
            data = {k: base64.b64decode(v).decode(errors="replace")
                    for k, v in (secret.get("data") or {}).items()}
            data.update(secret.get("stringData") or {})
            out[secret["metadata"]["name"]] = data
        return out

    async def _apply_plan(self) -> None:
        compiled = self._compile()
        if compiled is None:
            return
        plan, adverts = compiled
        old = self.plan
        self.plan = plan
        if self.speaker is None or old is None or _identity(old) != _identity(plan):
            await self.stop()
            self._announced = set(adverts)
            self.speaker = Speaker(self._speaker_config(plan, adverts),
                                   socket_factory=self._socket, on_change=self._on_change)
            await self.speaker.start()
            log.info("BGP on %s: speaker up, AS %d, %d peers, announcing %d prefixes",
                     self.node, plan.asn, len(plan.neighbors), len(adverts))
            return
        if old.neighbors != plan.neighbors:
            self.speaker.set_neighbors(plan.to_neighbor_configs())
        for prefix in sorted(self._announced - adverts):
            self.speaker.withdraw(prefix)
        for prefix in sorted(adverts - self._announced):
            self.speaker.announce(prefix)
        self._announced = set(adverts)

    def _speaker_config(self, plan: NodePlan, adverts: set[IPv4Network]) -> SpeakerConfig:
        return SpeakerConfig(
            asn=plan.asn, router_id=plan.router_id, neighbors=plan.to_neighbor_configs(),
            listen=(self.underlay_ip,), port=plan.listen_port,
            originate=originations(*sorted(adverts)), cluster_id=plan.cluster_id,
            multipath=MULTIPATH)

    def _socket(self, family: int) -> socket.socket:
        # A socket stays in the namespace it was made in: the speaker runs on the daemon's
        # loop, its sessions in the node's namespace.
        with netns.entered(self.netns_path):
            return socket.socket(family, socket.SOCK_STREAM)

    # -- kernel routes ---------------------------------------------------------------
    def _on_change(self, changes: list[RibChange]) -> None:
        self._pending.update(routes_from_changes(changes, own=self._own))
        self._kernel_dirty.set()

    async def _kernel_loop(self) -> None:
        loop = asyncio.get_running_loop()
        resync = True  # first: drop proto-bgp routes a previous speaker left behind
        while True:
            if resync:
                # The Loc-RIB is read here, on the loop; the kernel is written in the pool.
                full = ({} if self.speaker is None else
                        routes_from_loc_rib(self.speaker.rib.loc, own=self._own))
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(self.pool, self.programmer.resync, full)
            resync = False
            try:
                await asyncio.wait_for(self._kernel_dirty.wait(), RESYNC_SECONDS)
            except TimeoutError:
                resync = True
            self._kernel_dirty.clear()
            batch, self._pending = self._pending, {}
            if resync or not batch:
                continue
            try:
                report = await loop.run_in_executor(self.pool, self.programmer.apply, batch)
                resync = not report.ok
            except Exception:
                log.exception("BGP on %s: programming kernel routes failed; a full resync "
                              "follows", self.node)
                resync = True

    # -- status ------------------------------------------------------------------------
    def peers(self) -> list[dict[str, Any]]:
        """`kubewire bgp peers` rows for this node (call on the daemon's loop)."""
        if self.speaker is None or self.plan is None:
            return []
        origins = {str(p.address): p.origin for p in self.plan.neighbors}
        rows = []
        for status in self.speaker.peers():
            row = status.to_dict()
            row["node"] = self.node
            row["origin"] = origins.get(status.address, "")
            rows.append(row)
        return rows

    def routes(self, prefix: str | None = None) -> list[dict[str, Any]]:
        if self.speaker is None:
            return []
        rows = []
        for status in self.speaker.routes(prefix):
            row = status.to_dict()
            row["node"] = self.node
            rows.append(row)
        return rows


def _identity(plan: NodePlan) -> tuple[Any, ...]:
    """What a running speaker cannot change without a restart."""
    return plan.asn, plan.router_id, plan.cluster_id, plan.listen_port
