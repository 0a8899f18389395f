"""kubectl-style tables and JSON/YAML output for `kubewire get`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from kubewire.api.selectors import LabelSelector, SelectorError

Obj = dict[str, Any]


def age(obj: Obj) -> str:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    secs = int((datetime.now(UTC) - then).total_seconds())
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def _ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def _pod_row(pod: Obj, wide: bool, _ctx: Ctx) -> list[str]:
    st = pod.get("status", {})
    statuses = st.get("containerStatuses", [])
    total = len(pod["spec"].get("containers", []))
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    row = [pod["metadata"]["name"], f"{ready}/{total}", _pod_status_word(pod), str(restarts),
           age(pod)]
    if wide:
        row += [st.get("podIP", "<none>"), pod["spec"].get("nodeName", "<none>")]
    return row


def _pod_status_word(pod: Obj) -> str:
    """The STATUS column as kubectl words it: a container's reason wins over the phase."""
    st = pod.get("status", {})
    if st.get("reason"):
        return str(st["reason"])
    phase = str(st.get("phase", "Pending"))
    for c in st.get("containerStatuses", []):
        state = c.get("state", {})
        waiting = state.get("waiting", {}).get("reason")
        if waiting and waiting != "ContainerCreating":
            return str(waiting)
        if "terminated" in state and phase not in ("Succeeded", "Failed"):
            return str(state["terminated"].get("reason", "Terminated"))
    if phase == "Succeeded":
        return "Completed"
    if phase == "Failed":
        return "Error"
    if phase == "Pending" and pod["spec"].get("nodeName"):
        return "ContainerCreating"
    return phase


def _node_row(node: Obj, wide: bool, _ctx: Ctx) -> list[str]:
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in node.get("status", {}).get("conditions", []))
    row = [node["metadata"]["name"], "Ready" if ready else "NotReady", "<none>", age(node),
           "kubewire"]
    if wide:
        ip = next((a["address"] for a in node.get("status", {}).get("addresses", [])
                   if a["type"] == "InternalIP"), "<none>")
        row += [ip, node.get("spec", {}).get("podCIDR", "<none>")]
    return row


def _ns_row(ns: Obj, _wide: bool, _ctx: Ctx) -> list[str]:
    return [ns["metadata"]["name"], ns.get("status", {}).get("phase", "Active"), age(ns)]


class Ctx:
    """Extra lookups some tables need (pods owned by a workload)."""

    def __init__(self, pods: Sequence[Obj] = ()) -> None:
        self.pods = pods

    def owned(self, obj: Obj) -> list[Obj]:
        uid = obj["metadata"].get("uid")
        kind = obj["kind"]
        out = []
        rs_uids = set()
        if kind == "Deployment":
            # Pods belong to the Deployment's ReplicaSets, whose names carry its name.
            name = obj["metadata"]["name"]
            out = [p for p in self.pods
                   if any(r.get("kind") == "ReplicaSet" and r.get("name", "").startswith(name + "-")
                          for r in p["metadata"].get("ownerReferences", []))
                   and p["metadata"]["namespace"] == obj["metadata"]["namespace"]]
            return out
        rs_uids.add(uid)
        return [p for p in self.pods
                if any(r.get("uid") in rs_uids or (r.get("kind") == kind and r.get("name") ==
                       obj["metadata"]["name"])
                       for r in p["metadata"].get("ownerReferences", []))
                and p["metadata"]["namespace"] == obj["metadata"]["namespace"]]


def _workload_row(obj: Obj, _wide: bool, ctx: Ctx) -> list[str]:
    pods = ctx.owned(obj)
    ready = sum(1 for p in pods if _ready(p))
    kind = obj["kind"]
    if kind == "DaemonSet":
        n = len(pods)
        return [obj["metadata"]["name"], str(n), str(n), str(ready), str(n), str(ready), age(obj)]
    want = obj["spec"].get("replicas", 1)
    if kind == "Deployment":
        return [obj["metadata"]["name"], f"{ready}/{want}", str(len(pods)), str(ready), age(obj)]
    if kind == "ReplicaSet":
        return [obj["metadata"]["name"], str(want), str(len(pods)), str(ready), age(obj)]
    return [obj["metadata"]["name"], f"{ready}/{want}", age(obj)]


def _svc_row(svc: Obj, wide: bool, _ctx: Ctx) -> list[str]:
    spec = svc.get("spec", {})
    kind = spec.get("type", "ClusterIP")
    ports = ",".join(
        f"{p.get('port')}" + (f":{p['nodePort']}" if p.get("nodePort") else "")
        + f"/{p.get('protocol', 'TCP')}" for p in spec.get("ports", []))
    ingress = [i.get("ip") or i.get("hostname", "")
               for i in svc.get("status", {}).get("loadBalancer", {}).get("ingress", []) or []]
    external = [*ingress, *(spec.get("externalIPs") or [])]
    if kind == "ExternalName":
        external_col = spec.get("externalName", "<none>")
    elif external:
        external_col = ",".join(external)
    else:
        external_col = "<pending>" if kind == "LoadBalancer" else "<none>"
    row = [svc["metadata"]["name"], kind, spec.get("clusterIP") or "<none>", external_col,
           ports or "<none>", age(svc)]
    if wide:
        selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
        row.append(selector or "<none>")
    return row


def _slice_row(sl: Obj, _wide: bool, _ctx: Ctx) -> list[str]:
    ports = ",".join(str(p.get("port")) for p in sl.get("ports") or []) or "<unset>"
    addresses = [a for ep in sl.get("endpoints") or [] for a in ep.get("addresses", [])]
    shown = ",".join(addresses[:3]) if addresses else "<unset>"
    if len(addresses) > 3:
        shown += f" + {len(addresses) - 3} more..."
    return [sl["metadata"]["name"], sl.get("addressType", ""), ports, shown, age(sl)]


def _cm_row(cm: Obj, _wide: bool, _ctx: Ctx) -> list[str]:
    return [cm["metadata"]["name"], str(len(cm.get("data", {}) or {})), age(cm)]


def _secret_row(secret: Obj, _wide: bool, _ctx: Ctx) -> list[str]:
    keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
    return [secret["metadata"]["name"], str(secret.get("type", "Opaque")), str(len(keys)),
            age(secret)]


def _netpol_row(pol: Obj, _wide: bool, _ctx: Ctx) -> list[str]:
    """kubectl's columns: the podSelector as a selector string, ``<none>`` when empty."""
    raw = (pol.get("spec") or {}).get("podSelector") or {}
    try:
        text = str(LabelSelector.from_dict(raw))
    except SelectorError:
        text = "<invalid>"
    return [pol["metadata"]["name"], text or "<none>", age(pol)]


def _bgpconfig_row(cfg: Obj, _wide: bool, _ctx: Ctx) -> list[str]:
    """calicoctl's columns; blanks are Calico's defaults (Info, mesh on, AS 64512)."""
    spec = cfg.get("spec") or {}
    mesh = spec.get("nodeToNodeMeshEnabled")
    return [cfg["metadata"]["name"], str(spec.get("logSeverityScreen", "Info")),
            "false" if mesh is False else "true", str(spec.get("asNumber", 64512)), age(cfg)]


def _bgppeer_row(peer: Obj, _wide: bool, _ctx: Ctx) -> list[str]:
    """calicoctl's columns; a node-to-node peer shows its peerSelector as the PEERIP."""
    spec = peer.get("spec") or {}
    nodes = spec.get("node") or spec.get("nodeSelector") or "(global)"
    remote = spec.get("peerIP") or spec.get("peerSelector") or "<none>"
    return [peer["metadata"]["name"], str(remote), str(nodes), str(spec.get("asNumber", "")),
            age(peer)]


def _ippool_row(pool: Obj, wide: bool, _ctx: Ctx) -> list[str]:
    spec = pool.get("spec") or {}
    row = [pool["metadata"]["name"], str(spec.get("cidr", "")),
           str(spec.get("nodeSelector") or "all()"), age(pool)]
    if wide:
        row += [str(spec.get("blockSize", 26)), str(bool(spec.get("natOutgoing"))).lower(),
                str(bool(spec.get("disabled"))).lower()]
    return row


Row = Callable[[Obj, bool, Ctx], list[str]]
TABLES: dict[str, tuple[list[str], list[str], Row]] = {
    "Pod": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["IP", "NODE"], _pod_row),
    "Node": (["NAME", "STATUS", "ROLES", "AGE", "VERSION"], ["INTERNAL-IP", "POD-CIDR"],
             _node_row),
    "Namespace": (["NAME", "STATUS", "AGE"], [], _ns_row),
    "Deployment": (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], [], _workload_row),
    "ReplicaSet": (["NAME", "DESIRED", "CURRENT", "READY", "AGE"], [], _workload_row),
    "StatefulSet": (["NAME", "READY", "AGE"], [], _workload_row),
    "DaemonSet": (["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
                  [], _workload_row),
    "Service": (["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], ["SELECTOR"],
                _svc_row),
    "EndpointSlice": (["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], [], _slice_row),
    "ConfigMap": (["NAME", "DATA", "AGE"], [], _cm_row),
    "Secret": (["NAME", "TYPE", "DATA", "AGE"], [], _secret_row),
    "NetworkPolicy": (["NAME", "POD-SELECTOR", "AGE"], [], _netpol_row),
    "BGPConfiguration": (["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER", "AGE"], [],
                         _bgpconfig_row),
    "BGPPeer": (["NAME", "PEERIP", "NODE", "ASN", "AGE"], [], _bgppeer_row),
    "IPPool": (["NAME", "CIDR", "SELECTOR", "AGE"], ["BLOCKSIZE", "NAT", "DISABLED"],
               _ippool_row),
}


def table(kind: str, items: Sequence[Obj], wide: bool, all_namespaces: bool, ctx: Ctx) -> str:
    if kind not in TABLES:
        headers, rows = ["NAME", "AGE"], [[o["metadata"]["name"], age(o)] for o in items]
    else:
        base, extra, row = TABLES[kind]
        headers = base + (extra if wide else [])
        rows = [row(o, wide, ctx) for o in items]
    if all_namespaces:
        headers = ["NAMESPACE", *headers]
        rows = [[o["metadata"].get("namespace", ""), *r] for o, r in zip(items, rows, strict=True)]
    return format_columns(headers, rows)


def format_columns(headers: list[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=False)).rstrip()
             for r in [headers, *rows]]
    return "\n".join(lines)


def as_list(items: Sequence[Obj]) -> Obj:
    return {"apiVersion": "v1", "kind": "List", "items": list(items),
            "metadata": {"resourceVersion": ""}}


def dump(obj: Obj, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=4)
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).rstrip()
