"""NetworkPolicy as a loadable kind: every validation rule, each error asserted with its
field path and message."""

from __future__ import annotations

import textwrap

import pytest

from kubewire.api.errors import ManifestError, ManifestErrors
from kubewire.api.kinds import KINDS, resolve_kind, resolve_resource_type
from kubewire.api.loader import load_text
from kubewire.api.validation import validate

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchExpressions: [{key: tier, operator: In, values: [front]}]}
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}
    ports:
    - {protocol: TCP, port: 80}
    - {port: http}
    - {protocol: UDP, port: 30000, endPort: 32767}
    - {protocol: SCTP}
  egress:
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
  - {}
"""


def policy(replace: str = "", by: str = "") -> str:
    text = textwrap.dedent(POLICY).lstrip("\n")
    if replace:
        assert replace in text, replace
        text = text.replace(replace, by, 1)
    return text


def errors_of(text: str) -> list[ManifestError]:
    with pytest.raises(ManifestErrors) as caught:
        validate(load_text(text, "np.yaml"))
    return list(caught.value.errors)


def test_kind_is_registered() -> None:
    info = KINDS["NetworkPolicy"]
    assert info.namespaced and info.group == "networking.k8s.io"
    assert resolve_kind("NetworkPolicy", "networking.k8s.io/v1") is info
    for name in ("networkpolicies", "networkpolicy", "netpol", "networkpolicies.networking.k8s.io"):
        assert resolve_resource_type(name) is info


def test_valid_policy_passes() -> None:
    result = validate(load_text(policy(), "np.yaml"))
    assert [m.obj["kind"] for m in result.manifests] == ["NetworkPolicy"]


def test_empty_pod_selector_and_nothing_else_is_valid() -> None:
    text = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            "metadata: {name: deny}\nspec: {podSelector: {}}\n")
    result = validate(load_text(text, "np.yaml"))
    assert result.manifests[0].obj["metadata"]["namespace"] == "default"


# (id, replace, by, line, field, part of the message)
CASES: list[tuple[str, str, str, int, str | None, str]] = [
    ("no podSelector", "  podSelector:\n    matchLabels: {app: web}\n", "", 6,
     "spec.podSelector", "write podSelector: {} to select every pod"),
    ("selector operator", "matchLabels: {app: web}",
     "matchExpressions: [{key: app, operator: Is}]", 8,
     "spec.podSelector.matchExpressions[0].operator", "unsupported value"),
    ("selector value", "matchLabels: {app: web}", "matchLabels: {app: 'a b'}", 8,
     "spec.podSelector.matchLabels[app]", "label value"),
    ("policy type", "policyTypes: [Ingress, Egress]", "policyTypes: [Ingress, Outgoing]", 9,
     "spec.policyTypes[1]", 'unsupported value "Outgoing"; supported values: "Ingress", "Egress"'),
    ("duplicate policy type", "policyTypes: [Ingress, Egress]", "policyTypes: [Egress, Egress]",
     9, "spec.policyTypes[1]", 'duplicate policy type "Egress" (also spec.policyTypes[0])'),
    ("unknown spec field", "  policyTypes:", "  podSelectr: {}\n  policyTypes:", 9,
     "spec.podSelectr", 'unknown field "podSelectr"'),
    ("peer selector", "{matchLabels: {role: client}}", "{matchLabels: {role: [client]}}", 12,
     "spec.ingress[0].from[0].podSelector.matchLabels[role]", "label values must be strings"),
    ("ns selector", "{matchLabels: {team: a}}", "{matchLabels: {team: a}, matchFields: {}}", 13,
     "spec.ingress[0].from[1].namespaceSelector.matchFields", "unknown field"),
    ("empty peer", "    - podSelector: {matchLabels: {role: client}}\n", "    - {}\n", 12,
     "spec.ingress[0].from[0]", "a peer needs podSelector, namespaceSelector or ipBlock"),
    ("ipBlock with selector", "    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}",
     "    - ipBlock: {cidr: 10.0.0.0/16}\n      podSelector: {}", 15,
     "spec.ingress[0].from[2]", "ipBlock may not be combined with podSelector"),
    ("except outside", "except: [10.0.1.0/24]", "except: [10.1.0.0/16]", 15,
     "spec.ingress[0].from[2].ipBlock.except[0]", "10.1.0.0/16 is not inside cidr 10.0.0.0/16"),
    ("except equal", "except: [10.0.1.0/24]", "except: [10.0.0.0/16]", 15,
     "spec.ingress[0].from[2].ipBlock.except[0]", "is not inside cidr"),
    ("bad cidr", "cidr: 10.0.0.0/16", "cidr: 10.0.0.300/16", 15,
     "spec.ingress[0].from[2].ipBlock.cidr",
     'must be a CIDR such as 10.0.0.0/16, got "10.0.0.300/16"'),
    ("address, not cidr", "cidr: 10.0.0.0/16, except: [10.0.1.0/24]", "cidr: 10.0.0.1", 15,
     "spec.ingress[0].from[2].ipBlock.cidr", "must be a CIDR such as 10.0.0.1/32"),
    ("ipv6 cidr", "cidr: 10.0.0.0/16, except: [10.0.1.0/24]", "cidr: 'fd00::/64'", 15,
     "spec.ingress[0].from[2].ipBlock.cidr", "IPv6 is not supported yet"),
    ("no cidr", "{cidr: 10.0.0.0/16, except: [10.0.1.0/24]}", "{except: [10.0.1.0/24]}", 15,
     "spec.ingress[0].from[2].ipBlock.cidr", "required field is missing"),
    ("protocol", "{protocol: TCP, port: 80}", "{protocol: ICMP, port: 80}", 17,
     "spec.ingress[0].ports[0].protocol", 'unsupported value "ICMP"'),
    ("port range", "{protocol: TCP, port: 80}", "{protocol: TCP, port: 0}", 17,
     "spec.ingress[0].ports[0].port", "must be a port number (1-65535) or a port name, got 0"),
    ("quoted number", "{protocol: TCP, port: 80}", "{protocol: TCP, port: '80'}", 17,
     "spec.ingress[0].ports[0].port", "write 80 without quotes"),
    ("port name", "{port: http}", "{port: HTTP_1}", 18,
     "spec.ingress[0].ports[1].port", 'port name "HTTP_1"'),
    ("endPort below port", "endPort: 32767", "endPort: 20000", 19,
     "spec.ingress[0].ports[2].endPort",
     "must be greater than or equal to port (30000), got 20000"),
    ("endPort with name", "{port: http}", "{port: http, endPort: 90}", 18,
     "spec.ingress[0].ports[1].endPort", 'may not be used with the named port "http"'),
    ("endPort alone", "{protocol: SCTP}", "{protocol: SCTP, endPort: 90}", 20,
     "spec.ingress[0].ports[3].endPort", "may only be set together with a numeric port"),
    ("unknown port field", "{protocol: SCTP}", "{protocol: SCTP, endport: 9}", 20,
     "spec.ingress[0].ports[3].endport", 'unknown field "endport"'),
    ("egress uses to", "  - to: [", "  - from: [", 22, "spec.egress[0].from",
     'unknown field "from"; expected one of: to, ports'),
    ("rule not a mapping", "  - {}\n", "  - all\n", 24, "spec.egress[1]", "must be a mapping"),
]


@pytest.mark.parametrize(("replace", "by", "line", "field", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_errors(replace: str, by: str, line: int, field: str | None,
                           message: str) -> None:
    errors = errors_of(policy(replace, by))
    matching = [e for e in errors if e.field == field and message in e.message]
    assert matching, "\n".join(map(str, errors))
    assert matching[0].line == line, str(matching[0])


def test_every_problem_is_reported_at_once() -> None:
    text = policy("except: [10.0.1.0/24]", "except: [10.1.0.0/16]").replace(
        "{protocol: TCP, port: 80}", "{protocol: TCP, port: 0}")
    fields = {e.field for e in errors_of(text)}
    assert {"spec.ingress[0].from[2].ipBlock.except[0]",
            "spec.ingress[0].ports[0].port"} <= fields
