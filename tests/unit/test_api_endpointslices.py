"""EndpointSlices written by hand: the kind, every rule, warnings; each error asserted with
its file, line, field and message."""

from __future__ import annotations

import textwrap

import pytest

from kubewire.api.errors import ManifestErrors
from kubewire.api.kinds import KINDS, resolve_kind, resolve_resource_type
from kubewire.api.loader import Manifest, load_text
from kubewire.api.validation import ValidationResult, validate

SLICE = textwrap.dedent(
    """\
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: ext-1
      labels:
        kubernetes.io/service-name: ext
    addressType: IPv4
    ports:
    - name: http
      port: 80
      protocol: TCP
    endpoints:
    - addresses: ["10.1.2.3"]
      conditions: {ready: true, serving: true, terminating: false}
      nodeName: node-1
      hostname: web-1
    - addresses: ["192.168.7.9"]
    """
)
# Line numbers in SLICE: 7 addressType, 9 ports[0] (10 port, 11 protocol),
# 13 endpoints[0] (14 conditions, 15 nodeName, 16 hostname), 17 endpoints[1].


def slice_with(replace: str = "", by: str = "") -> str:
    if replace:
        assert replace in SLICE, replace
    return SLICE.replace(replace, by, 1)


def check(text: str, source: str = "es.yaml") -> ValidationResult:
    return validate(load_text(text, source))


def test_kind_is_served_and_loadable() -> None:
    info = KINDS["EndpointSlice"]
    assert (info.api_version, info.group, info.namespaced) == (
        "discovery.k8s.io/v1",
        "discovery.k8s.io",
        True,
    )
    assert (info.singular, info.plural, info.short_names) == (
        "endpointslice",
        "endpointslices",
        (),
    )
    assert resolve_kind("EndpointSlice", "discovery.k8s.io/v1") is info
    names = ("endpointslice", "endpointslices", "EndpointSlice", "endpointslices.discovery.k8s.io")
    for name in names:
        assert resolve_resource_type(name) is info


def test_wrong_api_version_names_the_right_one() -> None:
    with pytest.raises(ManifestErrors) as caught:
        check(slice_with("discovery.k8s.io/v1", "v1"))
    (error,) = caught.value.errors
    assert (error.line, error.field) == (1, "apiVersion")
    assert 'served as apiVersion "discovery.k8s.io/v1"' in error.message


def test_valid_slice_passes_and_gets_the_default_namespace() -> None:
    result = check(SLICE)
    assert result.warnings == ()
    (manifest,) = result.manifests
    assert manifest.obj["metadata"]["namespace"] == "default"
    assert manifest.key.kind == "EndpointSlice"


def test_minimal_slice_with_no_endpoints_or_ports_is_valid() -> None:
    text = (
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: s, labels: {kubernetes.io/service-name: svc}}\naddressType: IPv4\n"
        "endpoints: []\n"
    )
    assert check(text).warnings == ()


# (id, text, line, field, part of the message)
CASES = [
    ("addressType missing", slice_with("addressType: IPv4\n"), 1, "addressType",
     'required field is missing; set it to "IPv4"'),
    ("addressType unknown", slice_with("IPv4\n", "IP\n"), 7, "addressType",
     'unsupported value "IP"; supported values: "IPv4", "IPv6", "FQDN"'),
    ("addressType IPv6", slice_with("IPv4\n", "IPv6\n"), 7, "addressType",
     "IPv6 EndpointSlices are not supported: kubewire serves IPv4 only"),
    ("addressType FQDN", slice_with("IPv4\n", "FQDN\n"), 7, "addressType",
     "FQDN EndpointSlices are not supported"),
    ("address garbage", slice_with('"10.1.2.3"', '"10.1.2.300"'), 13,
     "endpoints[0].addresses[0]", 'must be a valid IPv4 address, got "10.1.2.300"'),
    ("address IPv6", slice_with('"10.1.2.3"', '"fd00::1"'), 13,
     "endpoints[0].addresses[0]", 'must be a valid IPv4 address, got "fd00::1"'),
    ("address not a string", slice_with('"10.1.2.3"', "42"), 13,
     "endpoints[0].addresses[0]", "must be a string, got 42"),
    ("address loopback", slice_with('"10.1.2.3"', '"127.0.0.1"'), 13,
     "endpoints[0].addresses[0]", "127.0.0.1 may not be in the loopback range"),
    ("address unspecified", slice_with('"10.1.2.3"', '"0.0.0.0"'), 13,
     "endpoints[0].addresses[0]", "may not be unspecified"),
    ("address link-local", slice_with('"10.1.2.3"', '"169.254.1.1"'), 13,
     "endpoints[0].addresses[0]", "link-local range (169.254.0.0/16)"),
    ("address link-local multicast", slice_with('"10.1.2.3"', '"224.0.0.5"'), 13,
     "endpoints[0].addresses[0]", "link-local multicast range"),
    ("addresses empty", slice_with('["192.168.7.9"]', "[]"), 17, "endpoints[1].addresses",
     "must contain at least 1 address"),
    ("addresses missing", slice_with('- addresses: ["192.168.7.9"]', "- hostname: x"), 17,
     "endpoints[1].addresses", "required field is missing; an endpoint needs at least one"),
    ("addresses too many",
     slice_with('["192.168.7.9"]', "[" + ", ".join(f"10.0.0.{i}" for i in range(1, 102)) + "]"),
     17, "endpoints[1].addresses", "must have at most 100 addresses, got 101"),
    ("addresses not a list", slice_with('["192.168.7.9"]', "10.0.0.1"), 17,
     "endpoints[1].addresses", 'must be a list, got "10.0.0.1"'),
    ("endpoint not a mapping", slice_with('- addresses: ["192.168.7.9"]', "- 10.0.0.1"), 17,
     "endpoints[1]", "must be a mapping"),
    ("endpoint unknown field", slice_with("  hostname: web-1\n", "  hostname: web-1\n  ip: x\n"),
     17, "endpoints[0].ip", 'unknown field "ip"'),
    ("condition not a bool", slice_with("ready: true", 'ready: "true"'), 14,
     "endpoints[0].conditions.ready", 'must be true or false, got "true"'),
    ("condition serving", slice_with("serving: true", "serving: 1"), 14,
     "endpoints[0].conditions.serving", "must be true or false, got 1"),
    ("condition terminating", slice_with("terminating: false", "terminating: no-way"), 14,
     "endpoints[0].conditions.terminating", 'must be true or false, got "no-way"'),
    ("condition unknown", slice_with("terminating: false", "terminated: false"), 14,
     "endpoints[0].conditions.terminated", "expected one of: ready, serving, terminating"),
    ("nodeName rule", slice_with("nodeName: node-1", "nodeName: Node_1"), 15,
     "endpoints[0].nodeName", 'node name "Node_1": must consist of lower case'),
    ("hostname rule", slice_with("hostname: web-1", "hostname: web.1"), 16,
     "endpoints[0].hostname", 'hostname "web.1": must consist of lower case alphanumeric'),
    ("too many endpoints",
     slice_with("endpoints:\n", "endpoints:\n" + "- addresses: [10.0.0.1]\n" * 1000), 12,
     "endpoints", "must have at most 1000 endpoints, got 1002"),
    ("port range", slice_with("port: 80", "port: 0"), 10, "ports[0].port",
     "must be a port number (1-65535), got 0"),
    ("port too high", slice_with("port: 80", "port: 65536"), 10, "ports[0].port",
     "got 65536"),
    ("port not a number", slice_with("port: 80", "port: http"), 10, "ports[0].port",
     'must be a port number (1-65535), got "http"'),
    ("port protocol", slice_with("protocol: TCP", "protocol: ICMP"), 11, "ports[0].protocol",
     'unsupported value "ICMP"; supported values: "TCP", "UDP", "SCTP"'),
    ("port name rule", slice_with("name: http", "name: HTTP"), 9, "ports[0].name",
     'port name "HTTP": must consist of lower case alphanumeric characters'),
    ("port name too long", slice_with("name: http", "name: " + "p" * 64), 9, "ports[0].name",
     "must be no more than 63 characters"),
    ("port name duplicate",
     slice_with("endpoints:\n", "- {name: http, port: 81}\nendpoints:\n"), 12,
     "ports[1].name", 'duplicate port name "http" (also ports[0])'),
    ("unnamed port duplicate",
     slice_with("- name: http\n", "- port: 8080\n- name: http\n")
     .replace("endpoints:\n", "- {port: 81}\nendpoints:\n", 1), 13,
     "ports[2].name", "duplicate unnamed port (also ports[0])"),
    ("port unknown field", slice_with("protocol: TCP", "proto: TCP"), 11, "ports[0].proto",
     'unknown field "proto"; expected one of: name, protocol, port, appProtocol'),
    ("appProtocol rule", slice_with("protocol: TCP", "appProtocol: a/b/c"), 11,
     "ports[0].appProtocol", 'appProtocol "a/b/c"'),
    ("unknown top-level field", slice_with("addressType: IPv4\n", "addressType: IPv4\nspec: {}\n"),
     8, "spec", "expected one of: apiVersion, kind, metadata, addressType, endpoints, ports"),
    ("name rule", slice_with("name: ext-1", "name: Ext_1"), 4, "metadata.name",
     'EndpointSlice name "Ext_1"'),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_endpoint_slice_errors(text: str, line: int, field: str, message: str) -> None:
    with pytest.raises(ManifestErrors) as caught:
        check(text, "case.yaml")
    errors = caught.value.errors
    matching = [e for e in errors if e.field == field and message in e.message]
    assert matching, "\n".join(map(str, errors))
    assert (matching[0].source, matching[0].line) == ("case.yaml", line), str(matching[0])


def test_ipv6_slice_is_one_error_not_one_per_address() -> None:
    with pytest.raises(ManifestErrors) as caught:
        check(slice_with("IPv4\n", "IPv6\n").replace('"10.1.2.3"', '"fd00::1"'))
    assert [e.field for e in caught.value.errors] == ["addressType"]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        (slice_with("  labels:\n    kubernetes.io/service-name: ext\n"), 3,
         "metadata.labels[kubernetes.io/service-name]",
         "this EndpointSlice is not linked to a Service"),
        (slice_with("kubernetes.io/service-name: ext", "app: ext"), 5,
         "metadata.labels[kubernetes.io/service-name]",
         "without the kubernetes.io/service-name label no Service sends traffic"),
        (slice_with("nodeName: node-1", "nodeName: node-9"), 15, "endpoints[0].nodeName",
         'node "node-9" is not one of the cluster\'s nodes (node-1, node-2, node-3)'),
        (slice_with("  port: 80\n"), 9, "ports[0]",
         "no port number: kube-proxy ignores ports without one"),
    ],
)
def test_endpoint_slice_warnings(text: str, line: int, field: str, message: str) -> None:
    result = check(text)
    (warning,) = result.warnings
    assert (warning.source, warning.line, warning.field) == ("es.yaml", line, field)
    assert message in warning.message


def test_protocol_may_be_left_out() -> None:
    assert check(slice_with("  protocol: TCP\n")).warnings == ()


def test_slices_made_in_code_validate_too() -> None:
    obj = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "FQDN",
        "endpoints": [{"addresses": ["example.com"]}],
    }
    with pytest.raises(ManifestErrors) as caught:
        validate([Manifest(obj, "api")])
    (error,) = caught.value.errors
    assert str(error).startswith("api: addressType: FQDN EndpointSlices are not supported")


def test_duplicate_slices_are_refused() -> None:
    with pytest.raises(ManifestErrors) as caught:
        check(SLICE + "---\n" + SLICE)
    (error,) = caught.value.errors
    assert error.field == "metadata.name"
    assert "endpointslice/default/ext-1 is declared twice" in error.message
