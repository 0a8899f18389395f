"""The oracle's semantics, rule by rule, on small hand-made clusters."""

from __future__ import annotations

from typing import Any

import pytest

from kubewire.policy.errors import PolicyInputError
from kubewire.policy.evaluate import Cause, allowed
from kubewire.policy.views import (
    ContainerPort,
    ExternalView,
    NamespaceView,
    PodView,
    PolicyView,
)

WEB = PodView("shop", "web", "10.244.0.10", "n1", {"app": "web"},
              (ContainerPort("http", 8080), ContainerPort("dns", 53, "UDP")))
API = PodView("shop", "api", "10.244.0.11", "n1", {"app": "api"}, (ContainerPort("http", 9090),))
OTHER = PodView("lab", "client", "10.244.1.20", "n2", {"app": "api"})
OUTSIDE = ExternalView("192.0.2.7")
NAMESPACES = [NamespaceView("shop", {"team": "a"}), NamespaceView("lab", {"team": "b"})]


def pol(spec: dict[str, Any], name: str = "p", namespace: str = "shop") -> PolicyView:
    return PolicyView.from_k8s({"metadata": {"name": name, "namespace": namespace},
                                "spec": {"podSelector": {}, **spec}})


def ok(src: Any, dst: Any, *policies: PolicyView, proto: str = "TCP", port: int = 8080) -> bool:
    return allowed(src, dst, proto, port, policies, NAMESPACES).allowed


def test_policy_types_default_as_the_api_server_does() -> None:
    assert pol({}).types == ("Ingress",)
    assert pol({"egress": [{}]}).types == ("Ingress", "Egress")
    assert pol({"egress": []}).types == ("Ingress",)  # empty list: no Egress
    assert pol({"policyTypes": ["Egress"], "ingress": [{}]}).types == ("Egress",)


def test_no_policy_means_everything_is_allowed() -> None:
    verdict = allowed(OTHER, WEB, "TCP", 1, [], NAMESPACES)
    assert verdict.allowed and verdict.ingress.cause is Cause.NOT_ISOLATED
    assert str(verdict) == "allowed: egress: not isolated; ingress: not isolated"


def test_isolation_and_the_reason_names_the_policy() -> None:
    deny = pol({}, "deny")
    verdict = allowed(OTHER, WEB, "TCP", 8080, [deny], NAMESPACES)
    assert not verdict.allowed
    assert verdict.reason == "isolated for ingress by shop/deny, no rule matches"
    assert ok(WEB, OTHER, deny)  # ingress isolation does not touch egress


def test_union_over_policies_and_rules() -> None:
    deny = pol({}, "deny")
    allow_api = pol({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}]},
                    "allow-api")
    verdict = allowed(API, WEB, "TCP", 8080, [deny, allow_api], NAMESPACES)
    assert verdict.allowed and verdict.ingress.allowed_by == "shop/allow-api ingress[0]"
    assert verdict.ingress.isolated_by == ("shop/allow-api", "shop/deny")


def test_pod_selector_alone_means_the_policy_namespace() -> None:
    p = pol({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}]})
    assert ok(API, WEB, p) and not ok(OTHER, WEB, p)  # OTHER has app=api, in lab


def test_namespace_and_pod_selector_in_one_peer_are_anded() -> None:
    both = pol({"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}},
                                       "podSelector": {"matchLabels": {"app": "web"}}}]}]})
    assert not ok(OTHER, WEB, both)
    either = pol({"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}},
                                        {"podSelector": {"matchLabels": {"app": "web"}}}]}]})
    assert ok(OTHER, WEB, either) and not ok(API, WEB, either)


def test_namespace_name_label_is_automatic() -> None:
    p = pol({"ingress": [{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "lab"}}}]}]})
    assert ok(OTHER, WEB, p) and not ok(API, WEB, p)
    # A namespace nobody listed still has its name label.
    assert allowed(OTHER, WEB, "TCP", 8080, [p]).allowed


def test_ip_block_matches_pods_and_outside_addresses_minus_except() -> None:
    p = pol({"ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16",
                                                "except": ["10.244.1.0/24"]}},
                                   {"ipBlock": {"cidr": "192.0.2.0/24"}}]}]})
    assert ok(API, WEB, p) and not ok(OTHER, WEB, p) and ok(OUTSIDE, WEB, p)
    assert not ok(ExternalView("198.51.100.1"), WEB, p)


def test_selectors_never_match_outside_addresses() -> None:
    p = pol({"ingress": [{"from": [{"namespaceSelector": {}}]}]})
    assert ok(OTHER, WEB, p) and not ok(OUTSIDE, WEB, p)
    assert ok(OUTSIDE, WEB, pol({"ingress": [{}]}))  # empty from: every source


def test_ports_numbers_ranges_protocols_and_empty() -> None:
    p = pol({"ingress": [{"ports": [{"port": 8080}, {"port": 9000, "endPort": 9010},
                                    {"protocol": "UDP"}]}]})
    assert ok(API, WEB, p, port=8080) and not ok(API, WEB, p, port=8081)
    assert ok(API, WEB, p, port=9010) and not ok(API, WEB, p, port=9011)
    assert ok(API, WEB, p, proto="UDP", port=1) and not ok(API, WEB, p, proto="SCTP", port=8080)
    everything = pol({"ingress": [{"from": [{"podSelector": {}}]}]})
    assert ok(API, WEB, everything, proto="SCTP", port=1)


def test_named_ports_resolve_on_the_destination_pod() -> None:
    p = pol({"ingress": [{"ports": [{"port": "http"}]}]})
    assert ok(API, WEB, p, port=8080) and not ok(API, WEB, p, port=9090)
    assert not ok(API, WEB, pol({"ingress": [{"ports": [{"port": "dns"}]}]}), proto="UDP",
                  port=53)  # the port is UDP, the policy port TCP by default
    assert ok(API, WEB, pol({"ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]}),
              proto="UDP", port=53)
    # Egress: the name is looked up on the destination, not on the selected source.
    egress = pol({"policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]})
    assert ok(WEB, API, egress, port=9090) and not ok(WEB, API, egress, port=8080)
    assert not ok(WEB, OUTSIDE, egress, port=8080)  # nothing to resolve against


def test_both_sides_must_allow() -> None:
    egress = pol({"policyTypes": ["Egress"],
                  "egress": [{"to": [{"namespaceSelector": {},
                                      "podSelector": {"matchLabels": {"app": "web"}}}]}]},
                 "out", "lab")
    ingress = pol({"ingress": [{"from": [{"namespaceSelector": {}}]}]}, "in")
    assert ok(OTHER, WEB, egress, ingress)
    verdict = allowed(OTHER, API, "TCP", 8080, [egress, ingress], NAMESPACES)
    assert not verdict.allowed
    assert verdict.reason == "isolated for egress by lab/out, no rule matches"


def test_pods_without_addresses_match_no_ip_block() -> None:
    pending = PodView("shop", "new", None, None, {"app": "api"})
    p = pol({"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})
    assert not ok(pending, WEB, p)


@pytest.mark.parametrize(("spec", "message"), [
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]: 10.1.0.0/24 is not inside cidr 10.0.0.0/16"),
    ({"ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]: a peer needs"),
    ({"egress": [{"ports": [{"port": "http", "endPort": 90}]}]},
     "spec.egress[0].ports[0].endPort"),
    ({"podSelector": {"matchLabels": {"a": 1}}},
     "spec.podSelector.matchLabels[a]: label values must be strings"),
])
def test_views_refuse_what_the_api_server_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyInputError) as caught:
        pol(spec)
    assert message in str(caught.value)


def test_pod_view_from_kubernetes_json() -> None:
    raw = {"metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
           "spec": {"nodeName": "n1", "containers": [
               {"name": "c", "ports": [{"name": "http", "containerPort": 8080},
                                       {"containerPort": 9000},
                                       {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
           "status": {"podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.0.5"}], "phase": "Running"}}
    pod = PodView.from_k8s(raw)
    assert (pod.ip, pod.node, dict(pod.labels)) == ("10.244.0.5", "n1", {"app": "web"})
    assert pod.named_port("http", "TCP") == 8080 and pod.named_port("dns", "UDP") == 53
    assert pod.named_port("dns", "TCP") is None
    raw["status"]["phase"] = "Succeeded"
    assert PodView.from_k8s(raw).ip is None
    ns = NamespaceView.from_k8s({"metadata": {"name": "shop", "labels": {"team": "a"}}})
    assert dict(ns.labels) == {"team": "a", "kubernetes.io/metadata.name": "shop"}
