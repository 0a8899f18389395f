"""Kubernetes' NetworkPolicy e2e truth tables as data, and the model they run on.

``upstream.yaml`` holds the cases (its header documents the format); this module loads
them, builds the x/y/z model of upstream's suite, plays a case's steps (policies applied,
updated and deleted, labels changed) and expands each expected matrix the way upstream
writes it (a default plus exceptions). Lab tests use the same ``Step`` objects: apply
``step.policies`` (manifests), set the labels, then measure ``step.checks`` and
``step.probes`` with real connections, substituting the lab's pod addresses with
``load_cases(ips=...)``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import yaml

from kubewire.policy.views import ContainerPort, NamespaceView, PodView

MODEL_NAMESPACES = ("x", "y", "z")
MODEL_PODS = ("a", "b", "c")
MODEL_NODES = ("node-1", "node-2", "node-3")
DNS = "kube-system/coredns"
_PLACEHOLDER = re.compile(r"\{ip:([a-z0-9-]+/[a-z0-9-]+)\}")


def _model_pods() -> tuple[PodView, ...]:
    ports = tuple(ContainerPort(f"serve-{port}-{proto.lower()}", port, proto)
                  for port in (80, 81) for proto in ("TCP", "UDP", "SCTP"))
    pods = []
    for i, (ns, name) in enumerate((ns, p) for ns in MODEL_NAMESPACES for p in MODEL_PODS):
        node = i % len(MODEL_NODES)  # spread, so cross-node paths are exercised too
        pods.append(PodView(ns, name, f"10.244.{node + 1}.{10 + i}", MODEL_NODES[node],
                            {"pod": name}, ports))
    pods.append(PodView("kube-system", "coredns", "10.244.1.53", MODEL_NODES[0],
                        {"k8s-app": "kube-dns"},
                        (ContainerPort("dns", 53, "UDP"), ContainerPort("dns-tcp", 53, "TCP"))))
    return tuple(pods)


MODEL_PODS_VIEWS = _model_pods()
MODEL_NAMESPACE_VIEWS = (*(NamespaceView(ns, {"ns": ns}) for ns in MODEL_NAMESPACES),
                         NamespaceView("kube-system"))
MATRIX_PODS = tuple(f"{ns}/{p}" for ns in MODEL_NAMESPACES for p in MODEL_PODS)


@dataclass(frozen=True, slots=True)
class Check:
    """One expected matrix: ``protocol``/``port`` for every ordered pair of MATRIX_PODS."""

    protocol: str
    port: int
    default: bool
    exceptions: tuple[tuple[str, str, bool], ...]

    def matrix(self) -> dict[tuple[str, str], bool]:
        """{(from, to): reachable} for every pair, self-pairs included (compare without)."""
        out = {(a, b): self.default for a in MATRIX_PODS for b in MATRIX_PODS}
        for src, dst, value in self.exceptions:
            for a, b in out:
                if _matches(src, a) and _matches(dst, b):
                    out[a, b] = value
        return out


def _matches(pattern: str, pod: str) -> bool:
    if pattern == "*":
        return True
    ns, _, name = pattern.partition("/")
    pns, _, pname = pod.partition("/")
    return ns in ("*", pns) and name in ("*", pname)


@dataclass(frozen=True, slots=True)
class Probe:
    src: str
    dst: str
    protocol: str
    port: int
    reachable: bool


@dataclass(frozen=True, slots=True)
class Step:
    """The cluster state after this step (all policies in force, all labels) and what to
    check in it."""

    policies: tuple[Mapping[str, Any], ...]
    pod_labels: Mapping[str, Mapping[str, str]]
    namespace_labels: Mapping[str, Mapping[str, str]]
    checks: tuple[Check, ...] = ()
    probes: tuple[Probe, ...] = ()

    def pods(self, base: tuple[PodView, ...] = MODEL_PODS_VIEWS) -> tuple[PodView, ...]:
        return tuple(replace(p, labels=self.pod_labels[p.key]) if p.key in self.pod_labels
                     else p for p in base)

    def namespaces(self, base: tuple[NamespaceView, ...] = MODEL_NAMESPACE_VIEWS
                   ) -> tuple[NamespaceView, ...]:
        return tuple(NamespaceView(ns.name, self.namespace_labels[ns.name])
                     if ns.name in self.namespace_labels else ns for ns in base)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    upstream: str
    steps: tuple[Step, ...] = field(default_factory=tuple)


def _substitute(value: Any, ips: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: ips[m.group(1)], value)
    if isinstance(value, list):
        return [_substitute(v, ips) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, ips) for k, v in value.items()}
    return value


def _manifest(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **raw}


def _steps(raw_steps: list[Mapping[str, Any]]) -> Iterator[Step]:
    policies: dict[tuple[str, str], Mapping[str, Any]] = {}
    pod_labels: dict[str, Mapping[str, str]] = {}
    ns_labels: dict[str, Mapping[str, str]] = {}
    for raw in raw_steps:
        delete = raw.get("delete")
        if delete == "all":
            policies.clear()
        for key in delete or () if delete != "all" else ():
            ns, _, name = str(key).partition("/")
            policies.pop((ns, name), None)
        for p in raw.get("apply") or ():
            meta = p["metadata"]
            policies[(meta["namespace"], meta["name"])] = _manifest(p)
        pod_labels.update(raw.get("pod_labels") or {})
        ns_labels.update(raw.get("namespace_labels") or {})
        checks = tuple(Check(str(c["protocol"]), int(c["port"]), bool(c["default"]),
                             tuple((str(a), str(b), bool(v)) for a, b, v in c["except"]))
                       for c in raw.get("expect") or ())
        probes = tuple(Probe(str(a), str(b), str(proto), int(port), bool(v))
                       for a, b, proto, port, v in raw.get("probes") or ())
        yield Step(tuple(policies[k] for k in sorted(policies)), dict(pod_labels),
                   dict(ns_labels), checks, probes)


def load_cases(ips: Mapping[str, str] | None = None) -> tuple[Case, ...]:
    """Every case, with ``{ip:ns/pod}`` replaced from ``ips`` (default: the model's).
    The result is shared between callers (cached): do not change its manifests."""
    addresses = ips if ips is not None else {
        p.key: p.ip for p in MODEL_PODS_VIEWS if p.ip is not None}
    return _load(tuple(sorted(addresses.items())))


@functools.lru_cache(maxsize=8)
def _load(addresses: tuple[tuple[str, str], ...]) -> tuple[Case, ...]:
    text = resources.files(__package__).joinpath("upstream.yaml").read_text()
    raw = _substitute(yaml.safe_load(text), dict(addresses))
    return tuple(Case(str(c["name"]), str(c["upstream"]), tuple(_steps(c["steps"])))
                 for c in raw)
