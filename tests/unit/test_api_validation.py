"""Validation: every rule, each error asserted with its file, line, field and message."""

from __future__ import annotations

import textwrap

import pytest

from kubewire.api.errors import ManifestError, ManifestErrors
from kubewire.api.loader import Manifest, load_text
from kubewire.api.validation import ValidationResult, validate


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def check(text: str, source: str = "t.yaml") -> ValidationResult:
    return validate(load_text(dedent(text), source))


def errors_of(text: str, source: str = "t.yaml") -> list[ManifestError]:
    with pytest.raises(ManifestErrors) as caught:
        check(text, source)
    return list(caught.value.errors)


GOOD = """
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web, app.kubernetes.io/part-of: shop}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: In, values: [front]}]
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      containers:
      - name: web
        image: nginx
        command: [nginx, -g, daemon off;]
        ports:
        - {name: http, containerPort: 80}
        - {name: dns, containerPort: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: dns, port: 53, targetPort: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: example.com.
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: redis}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      initContainers: [{name: init, image: busybox}]
      containers: [{name: agent, image: agent}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: c, image: i}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: conf}
data: {a.conf: "x", KEY_2: ""}
binaryData: {blob: aGVsbG8=}
---
apiVersion: v1
kind: Pod
metadata: {name: solo.pod}
spec:
  nodeName: node-2
  hostNetwork: false
  containers: [{name: c, image: i}]
---
apiVersion: kubewire.dev/v1alpha1
kind: Cluster
metadata: {name: lab}
spec:
  nodes: 2
"""


def test_valid_input_passes_and_is_normalised() -> None:
    result = check(GOOD)
    assert result.warnings == ()
    assert result.cluster.name == "lab"
    assert [str(m.key) for m in result.manifests] == [
        "namespace/shop",
        "deployment/shop/web",
        "service/shop/web",
        "service/default/db",
        "service/default/ext",
        "statefulset/default/db",
        "daemonset/kube-system/agent",
        "replicaset/default/rs",
        "configmap/default/conf",
        "pod/default/solo.pod",
        "cluster/lab",
    ]
    service = result.manifests[3]
    assert service.obj["metadata"] == {"name": "db", "namespace": "default"}
    assert "namespace" not in result.manifests[0].obj["metadata"]
    # Normalising copies: positions are kept and the input is left alone.
    assert service.line_of("spec.clusterIP") == 44


def test_input_objects_are_not_mutated() -> None:
    (manifest,) = load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    result = validate([manifest])
    assert "namespace" not in manifest.obj["metadata"]
    assert result.manifests[0].obj["metadata"]["namespace"] == "default"


POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx
"""


def pod_with(container_lines: str = "", spec_lines: str = "", meta_lines: str = "") -> str:
    """POD with lines added to its metadata (from line 5), its spec (from line 6 when there
    are no metadata lines) or its only container (from line 9 when there are no others)."""
    return (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n"
        + meta_lines
        + "spec:\n"
        + spec_lines
        + "  containers:\n  - name: web\n    image: nginx\n"
        + container_lines
    )


# (id, manifest text, line, field, part of the message)
CASES: list[tuple[str, str, int, str | None, str]] = [
    # kinds
    ("unknown kind", "apiVersion: v1\nkind: Ingress\nmetadata: {name: a}\n", 2, "kind",
     'unknown kind "Ingress" (kubewire supports: BGPConfiguration, BGPPeer, Cluster, ConfigMap'),
    ("wrong apiVersion", "apiVersion: extensions/v1beta1\nkind: Deployment\n", 1, "apiVersion",
     'Deployment is served as apiVersion "apps/v1"'),
    ("missing kind", "apiVersion: v1\nmetadata: {name: a}\n", 1, "kind",
     "required field is missing"),
    ("node", "apiVersion: v1\nkind: Node\nmetadata: {name: n}\n", 2, "kind",
     "the cluster makes its nodes from the Cluster object's spec.nodes"),
    # metadata
    ("no name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {a: b}}\n", 3,
     "metadata.name", "required field is missing"),
    ("no metadata", "apiVersion: v1\nkind: ConfigMap\n", 1, "metadata",
     "required field is missing"),
    ("generateName", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: c-\n", 4,
     "metadata.generateName", "generateName is not supported"),
    ("bad subdomain name", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: My_Conf\n", 4,
     "metadata.name", 'ConfigMap name "My_Conf": must consist of lower case alphanumeric'),
    ("namespace name is a label", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a.b\n",
     4, "metadata.name", "lower case alphanumeric characters or '-'"),
    ("service name is DNS-1035", "apiVersion: v1\nkind: Service\nmetadata:\n  name: 1web\n"
     "spec: {ports: [{port: 80}]}\n", 4, "metadata.name", "start with an alphabetic character"),
    ("bad namespace", pod_with(meta_lines="  namespace: Shop\n"), 5, "metadata.namespace",
     'namespace "Shop": must consist of lower case'),
    ("namespace on cluster-scoped kind",
     "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  namespace: b\n", 5,
     "metadata.namespace", "Namespace is cluster-scoped and cannot be in a namespace"),
    ("unknown metadata field", pod_with(meta_lines="  lables: {a: b}\n"), 5, "metadata.lables",
     'unknown field "lables"'),
    ("unknown top-level field", POD + "specs: {}\n", 9, "specs", 'unknown field "specs"'),
    ("label key", pod_with(meta_lines="  labels:\n    -bad: x\n"), 6, "metadata.labels.-bad",
     'label key "-bad": name part must consist of alphanumeric'),
    ("label key prefix", pod_with(meta_lines="  labels:\n    Ex.com/a: x\n"), 6,
     "metadata.labels[Ex.com/a]", "prefix part must consist of lower case"),
    ("label value", pod_with(meta_lines="  labels:\n    app: web server\n"), 6,
     "metadata.labels.app", 'label value "web server"'),
    ("label value too long", pod_with(meta_lines=f"  labels:\n    app: {'v' * 64}\n"), 6,
     "metadata.labels.app", "no more than 63 characters"),
    ("label value not a string", pod_with(meta_lines="  labels:\n    version: 1\n"), 6,
     "metadata.labels.version", 'label values must be strings, got 1; quote it: "1"'),
    ("annotation value", pod_with(meta_lines="  annotations:\n    a: 1\n"), 6,
     "metadata.annotations.a", "annotation values must be strings"),
    # pods
    ("no containers", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n", 4,
     "spec.containers", "a pod needs at least one container"),
    ("empty containers",
     "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: []\n", 5,
     "spec.containers", "at least one container"),
    ("no spec", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", 1, "spec",
     "required field is missing"),
    ("dnsPolicy None needs a nameserver", pod_with(spec_lines="  dnsPolicy: None\n"), 5,
     "spec.dnsConfig.nameservers", 'required when dnsPolicy is "None"'),
    ("dnsConfig nameserver", pod_with(spec_lines="  dnsConfig: {nameservers: [ten]}\n"), 6,
     "spec.dnsConfig.nameservers[0]", 'must be an IP address, got "ten"'),
    ("dnsConfig four nameservers", pod_with(
        spec_lines="  dnsConfig: {nameservers: [1.1.1.1, 1.0.0.1, 8.8.8.8, 9.9.9.9]}\n"), 6,
     "spec.dnsConfig.nameservers", "must not have more than 3 nameservers (got 4)"),
    ("dnsConfig search", pod_with(spec_lines="  dnsConfig: {searches: [Bad_Domain]}\n"), 6,
     "spec.dnsConfig.searches[0]", "search domain"),
    ("dnsConfig option", pod_with(spec_lines="  dnsConfig: {options: [{value: '2'}]}\n"), 6,
     "spec.dnsConfig.options[0].name", "required field is missing"),
    ("hostNetwork", pod_with(spec_lines="  hostNetwork: true\n"), 6, "spec.hostNetwork",
     "hostNetwork is not supported: every kubewire pod gets its own network namespace"),
    ("duplicate container", pod_with("  - name: web\n    image: x\n"), 9,
     "spec.containers[1].name", 'duplicate container name "web" (also spec.containers[0])'),
    ("init container name clash",
     pod_with(spec_lines="  initContainers: [{name: web, image: i}]\n"), 6,
     "spec.initContainers[0].name", 'duplicate container name "web" (also spec.containers[0])'),
    ("container name", pod_with("  - name: Web_2\n    image: x\n"), 9,
     "spec.containers[1].name", 'container name "Web_2"'),
    ("no image", pod_with("  - name: side\n"), 9, "spec.containers[1].image",
     "required field is missing"),
    ("image not a string", pod_with("  - name: side\n    image: 3\n"), 10,
     "spec.containers[1].image", "must be a string, got 3"),
    ("command words", pod_with("    command: [sleep, 10]\n"), 9, "spec.containers[0].command[1]",
     "must be a string, got 10; quote it"),
    ("containerPort range", pod_with("    ports:\n    - containerPort: 70000\n"), 10,
     "spec.containers[0].ports[0].containerPort", "must be a port number (1-65535), got 70000"),
    ("containerPort missing", pod_with("    ports:\n    - name: http\n"), 10,
     "spec.containers[0].ports[0].containerPort", "must be a port number (1-65535), got null"),
    ("containerPort string", pod_with("    ports:\n    - containerPort: '80'\n"), 10,
     "spec.containers[0].ports[0].containerPort", 'got "80"'),
    ("protocol", pod_with("    ports:\n    - containerPort: 80\n      protocol: tcp\n"), 11,
     "spec.containers[0].ports[0].protocol",
     'unsupported value "tcp"; supported values: "TCP", "UDP", "SCTP"'),
    ("port name", pod_with("    ports:\n    - containerPort: 80\n      name: http--alt\n"), 11,
     "spec.containers[0].ports[0].name", "must not contain consecutive hyphens"),
    ("port name too long",
     pod_with("    ports:\n    - {containerPort: 80, name: a-very-long-name1}\n"), 10,
     "spec.containers[0].ports[0].name", "no more than 15 characters"),
    ("duplicate port name", pod_with(
        "    ports:\n    - {containerPort: 80, name: http}\n"
        "    - {containerPort: 81, name: http}\n"),
     11, "spec.containers[0].ports[1].name", 'duplicate port name "http"'),
    ("hostPort", pod_with("    ports:\n    - {containerPort: 80, hostPort: -1}\n"), 10,
     "spec.containers[0].ports[0].hostPort", "must be a port number"),
    ("unknown port field", pod_with("    ports:\n    - {containerPort: 80, prot: TCP}\n"), 10,
     "spec.containers[0].ports[0].prot", 'unknown field "prot"'),
    ("restartPolicy", pod_with(spec_lines="  restartPolicy: Sometimes\n"), 6,
     "spec.restartPolicy", 'unsupported value "Sometimes"'),
    ("hostname", pod_with(spec_lines="  hostname: Web\n"), 6, "spec.hostname", 'hostname "Web"'),
    ("nodeSelector", pod_with(spec_lines="  nodeSelector: {zone: 1}\n"), 6,
     "spec.nodeSelector.zone", "node selector values must be strings"),
]

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx
"""


def deployment(replace: str = "", by: str = "", kind: str = "Deployment") -> str:
    text = dedent(DEPLOYMENT).replace("kind: Deployment", f"kind: {kind}")
    if replace:
        assert replace in text
        text = text.replace(replace, by)
    return text


CASES += [
    ("replicas", deployment("replicas: 2", 'replicas: "three"'), 6, "spec.replicas",
     'must be a non-negative integer, got "three"'),
    ("negative replicas", deployment("replicas: 2", "replicas: -1"), 6, "spec.replicas",
     "must be a non-negative integer, got -1"),
    ("no selector", deployment("  selector:\n    matchLabels:\n      app: web\n", ""), 5,
     "spec.selector", "required field is missing; set it to match the template's labels"),
    ("empty selector", deployment("  selector:\n    matchLabels:\n      app: web\n",
                                  "  selector: {}\n"), 7, "spec.selector",
     "empty selector is invalid for a Deployment"),
    ("selector operator", deployment("    matchLabels:\n      app: web\n",
                                     "    matchExpressions:\n    - {key: app, operator: Is}\n"),
     9, "spec.selector.matchExpressions[0].operator", "unsupported value"),
    ("selector mismatch", deployment("        app: web\n", "        app: api\n"), 12,
     "spec.template.metadata.labels",
     'selector does not match template labels: spec.selector "app=web"'),
    ("statefulset mismatch", deployment("        app: web\n", "        role: x\n",
                                        kind="StatefulSet"),
     12, "spec.template.metadata.labels", "selector does not match template labels"),
    ("no template", deployment("  template:\n    metadata:\n      labels:\n        app: web\n"
                               "    spec:\n      containers:\n      - name: web\n"
                               "        image: nginx\n", ""),
     5, "spec.template", "required field is missing; a Deployment needs a pod template"),
    ("template restartPolicy", deployment("      containers:", "      restartPolicy: Never\n"
                                          "      containers:"),
     15, "spec.template.spec.restartPolicy", 'Deployment pods must use "Always"'),
    ("template port", deployment("        image: nginx\n",
                                 "        image: nginx\n        ports: [{containerPort: 0}]\n"),
     18, "spec.template.spec.containers[0].ports[0].containerPort", "got 0"),
    ("template hostNetwork", deployment("      containers:",
                                        "      hostNetwork: true\n      containers:"),
     15, "spec.template.spec.hostNetwork", "hostNetwork is not supported"),
    ("statefulset name", deployment("name: web", "name: web.v2", kind="StatefulSet"), 4,
     "metadata.name", 'StatefulSet name "web.v2": must consist of lower case alphanumeric '
     "characters or '-'"),
    ("statefulset pod names", deployment("name: web", f"name: {'w' * 62}", kind="StatefulSet"),
     4, "metadata.name", "pod host names are DNS labels of at most 63"),
    ("serviceName", deployment("  replicas: 2\n", "  replicas: 2\n  serviceName: 1db\n",
                               kind="StatefulSet"),
     7, "spec.serviceName", 'Service name "1db"'),
]

SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
"""


def service(replace: str = "", by: str = "") -> str:
    text = dedent(SERVICE)
    if replace:
        assert replace in text
        text = text.replace(replace, by)
    return text


CASES += [
    ("service type", service("spec:\n", "spec:\n  type: Ingress\n"), 6, "spec.type",
     'unsupported value "Ingress"; supported values: "ClusterIP", "NodePort", "LoadBalancer", '
     '"ExternalName"'),
    ("no ports", service("  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n", ""),
     5, "spec.ports", "a Service needs at least one port"),
    ("port range", service("port: 80", "port: 0"), 10, "spec.ports[0].port",
     "must be a port number (1-65535), got 0"),
    ("targetPort range", service("targetPort: 8080", "targetPort: 65536"), 11,
     "spec.ports[0].targetPort", "a port number (1-65535) or a port name"),
    ("targetPort quoted number", service("targetPort: 8080", 'targetPort: "8080"'), 11,
     "spec.ports[0].targetPort", "write 8080 without quotes"),
    ("targetPort name", service("targetPort: 8080", "targetPort: HTTP"), 11,
     "spec.ports[0].targetPort", 'target port name "HTTP"'),
    ("service protocol", service("port: 80\n", "port: 80\n    protocol: ICMP\n"), 11,
     "spec.ports[0].protocol", 'unsupported value "ICMP"'),
    ("names required", service("    targetPort: 8080\n", "    targetPort: 8080\n  - port: 443\n"),
     12, "spec.ports[1].name", "ports must be named when a Service has more than one"),
    ("service duplicate port name", service("    targetPort: 8080\n",
                                    "    targetPort: 8080\n  - {name: http, port: 81}\n"),
     12, "spec.ports[1].name", 'duplicate port name "http"'),
    ("duplicate port", service("    targetPort: 8080\n",
                               "    targetPort: 8080\n  - {name: alt, port: 80}\n"),
     12, "spec.ports[1]", "duplicate port 80/TCP (also spec.ports[0])"),
    ("port name rule", service("name: http", "name: HTTP"), 9, "spec.ports[0].name",
     'port name "HTTP"'),
    ("clusterIP garbage", service("spec:\n", "spec:\n  clusterIP: 10.96.0.300\n"), 6,
     "spec.clusterIP", 'must be an IP address, got "10.96.0.300"'),
    ("clusterIP out of range", service("spec:\n", "spec:\n  clusterIP: 192.168.0.1\n"), 6,
     "spec.clusterIP", "192.168.0.1 is not in the service range 10.96.0.0/12"),
    ("clusterIP IPv6", service("spec:\n", "spec:\n  clusterIP: fd00::1\n"), 6,
     "spec.clusterIP", "IPv6 is not supported yet"),
    ("headless NodePort", service("spec:\n", "spec:\n  type: NodePort\n  clusterIP: None\n"),
     7, "spec.clusterIP", 'may be "None" (headless) only when type is ClusterIP'),
    ("nodePort on ClusterIP", service("port: 80\n", "port: 80\n    nodePort: 30080\n"), 11,
     "spec.ports[0].nodePort", "may not be used when type is ClusterIP"),
    ("nodePort range", service("spec:\n", "spec:\n  type: NodePort\n").replace(
        "port: 80\n", "port: 80\n    nodePort: 80\n"), 12, "spec.ports[0].nodePort",
     "must be in the range 30000-32767"),
    ("externalName missing", service("spec:\n", "spec:\n  type: ExternalName\n"), 5,
     "spec.externalName", "an ExternalName Service needs the DNS name it aliases"),
    ("selector value", service("app: web", "app: [web]"), 7, "spec.selector.app",
     "selector values must be strings"),
    ("externalTrafficPolicy", service("spec:\n", "spec:\n  externalTrafficPolicy: Local\n"), 6,
     "spec.externalTrafficPolicy", "may only be set when type is NodePort or LoadBalancer"),
    ("service unknown port field", service("port: 80", "prot: 80"), 10, "spec.ports[0].prot",
     'unknown field "prot"'),
    # ConfigMaps
    ("config key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  a/b: x\n", 5,
     "data[a/b]", "alphanumeric characters, '-', '_' or '.'"),
    ("config value", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  port: 80\n",
     5, "data.port", "ConfigMap values must be strings, got 80; quote it"),
    ("binaryData", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nbinaryData:\n  b: '*'\n",
     5, "binaryData.b", "base64"),
    ("data and binaryData",
     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\nbinaryData:\n  k: aGk=\n",
     6, "binaryData.k", 'key "k" is also in data'),
    # Cluster, through validate
    ("cluster overlap", "apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\n"
     "spec:\n  podCIDR: 10.96.0.0/16\n", 5, "spec.podCIDR", "overlaps serviceCIDR"),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_validation_errors(text: str, line: int, field: str | None, message: str) -> None:
    errors = errors_of(text, "case.yaml")
    matching = [e for e in errors if e.field == field and message in e.message]
    assert matching, "\n".join(map(str, errors))
    assert (matching[0].source, matching[0].line) == ("case.yaml", line), str(matching[0])


def test_duplicate_objects_name_both_locations() -> None:
    first = load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "a.yaml")
    second = load_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: default\n", "b.yaml"
    )
    with pytest.raises(ManifestErrors) as caught:
        validate(first + second)
    (error,) = caught.value.errors
    assert (error.source, error.line, error.field) == ("b.yaml", 4, "metadata.name")
    assert error.message == "configmap/default/c is declared twice: here and at a.yaml:1"


def test_same_name_in_other_namespace_or_kind_is_fine() -> None:
    check(
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: c, namespace: kube-system}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: c}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: c}
        spec: {ports: [{port: 1}]}
        """
    )


def test_only_one_cluster() -> None:
    text = "apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c%d}\n"
    with pytest.raises(ManifestErrors) as caught:
        validate(load_text(text % 1, "a.yaml") + load_text(text % 2, "b.yaml"))
    (error,) = caught.value.errors
    assert (error.source, error.line, error.field) == ("b.yaml", 2, "kind")
    assert "only one Cluster object is allowed; another is declared at a.yaml:1" in error.message


def test_cluster_settings_apply_to_other_objects() -> None:
    errors = errors_of(
        """
        apiVersion: kubewire.dev/v1alpha1
        kind: Cluster
        metadata: {name: c}
        spec: {serviceCIDR: 10.32.0.0/24}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: s}
        spec:
          clusterIP: 10.96.0.10
          ports: [{port: 53}]
        """
    )
    (error,) = errors
    assert (error.line, error.field) == (10, "spec.clusterIP")
    assert "not in the service range 10.32.0.0/24" in error.message


def test_shared_cluster_ip_and_node_port_are_refused() -> None:
    errors = errors_of(
        """
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec:
          type: NodePort
          clusterIP: 10.96.0.10
          ports: [{port: 53, nodePort: 30053}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: b}
        spec:
          type: NodePort
          clusterIP: 10.96.0.10
          ports: [{port: 53, nodePort: 30053}]
        """
    )
    assert [(e.line, e.field) for e in errors] == [
        (14, "spec.clusterIP"),
        (15, "spec.ports[0].nodePort"),
    ]
    assert "10.96.0.10 is already used by service/default/a (t.yaml:1)" in errors[0].message
    assert "nodePort 30053/TCP is already used by service/default/a" in errors[1].message


def test_all_errors_come_at_once_in_file_order() -> None:
    first = load_text(dedent(pod_with(spec_lines="  hostNetwork: true\n")), "b.yaml")
    second = load_text("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\n", "a.yaml")
    with pytest.raises(ManifestErrors) as caught:
        validate(first + second)
    assert [(e.source, e.line) for e in caught.value.errors] == [
        ("b.yaml", 6),
        ("a.yaml", 1),  # spec is missing: reported at the object
        ("a.yaml", 3),
    ]
    assert str(caught.value).splitlines()[0] == (
        "b.yaml:6: spec.hostNetwork: hostNetwork is not supported: every kubewire pod gets its "
        "own network namespace; remove hostNetwork (or set it to false)"
    )


def test_undeclared_namespace_is_one_warning() -> None:
    result = check(
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: a, namespace: prod}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: b, namespace: prod}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: c, namespace: kube-system}
        """
    )
    (warning,) = result.warnings
    assert (warning.source, warning.line, warning.field) == ("t.yaml", 3, "metadata.namespace")
    assert 'namespace "prod" is not declared by a Namespace object' in warning.message
    assert "used by 2 objects" in warning.message


@pytest.mark.parametrize(
    ("spec_lines", "container_lines", "line", "field", "message"),
    [
        ("  nodeName: node-9\n", "", 6, "spec.nodeName",
         'node "node-9" is not one of the cluster\'s nodes (node-1, node-2, node-3)'),
        ("", "    ports: [{containerPort: 80}]\n  - name: b\n    image: i\n"
         "    ports: [{containerPort: 80}]\n",
         12, "spec.containers[1].ports[0]", "duplicate port definition 80/TCP"),
    ],
)
def test_pod_warnings(
    spec_lines: str, container_lines: str, line: int, field: str, message: str
) -> None:
    result = validate(load_text(pod_with(container_lines, spec_lines), "p.yaml"))
    (warning,) = result.warnings
    assert (warning.source, warning.line, warning.field) == ("p.yaml", line, field)
    assert message in warning.message


def test_statefulset_without_its_service_warns() -> None:
    result = validate(
        load_text(deployment("  replicas: 2\n", "  replicas: 2\n  serviceName: db\n",
                             kind="StatefulSet"), "s.yaml")
    )
    (warning,) = result.warnings
    assert (warning.line, warning.field) == (7, "spec.serviceName")
    assert 'no Service "db" in namespace "default"' in warning.message


def test_manifests_made_in_code_validate_too() -> None:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}
    with pytest.raises(ManifestErrors) as caught:
        validate([Manifest(obj, "api")])
    (error,) = caught.value.errors
    assert str(error) == (
        "api: spec.containers: required field is missing; a pod needs at least one container"
    )
