"""Loading manifests: documents, Lists, files, directories, stdin, positions and YAML errors."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from kubewire.api import loader
from kubewire.api.errors import ManifestError, ManifestErrors, ManifestWarning
from kubewire.api.loader import Manifest, expand_paths, load_paths, load_text


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def only_error(text: str | bytes, source: str = "t.yaml") -> ManifestError:
    with pytest.raises(ManifestErrors) as caught:
        load_text(text, source)
    assert len(caught.value.errors) == 1, str(caught.value)
    return caught.value.errors[0]


POD = dedent(
    """
    # a comment first, so the object starts on line 2
    apiVersion: v1
    kind: Pod
    metadata:
      name: web
      labels:
        app.kubernetes.io/name: web
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - containerPort: 80
        - name: https
          containerPort: 443
    """
)


def test_positions_and_line_of_nested_fields() -> None:
    (pod,) = load_text(POD, "pod.yaml")
    assert pod.source == "pod.yaml"
    assert pod.line == 2
    assert pod.obj["spec"]["containers"][0]["ports"][1] == {"name": "https", "containerPort": 443}
    cases = {
        "": 2,
        "kind": 3,
        "metadata.name": 5,
        "metadata.labels[app.kubernetes.io/name]": 7,
        "spec.containers[0]": 10,
        "spec.containers[0].image": 11,
        "spec.containers[0].ports[0].containerPort": 13,
        "spec.containers[0].ports[1]": 14,
        "spec.containers[0].ports[1].containerPort": 15,
        # Absent fields fall back to the nearest ancestor that exists.
        "spec.containers[0].ports[1].protocol": 14,
        "spec.containers[0].env[3].name": 10,
        "spec.hostNetwork": 8,
        "status.phase": 2,
    }
    assert {path: pod.line_of(path) for path in cases} == cases


def test_manifest_made_in_code_has_no_lines() -> None:
    manifest = Manifest({"kind": "Pod"})
    assert manifest.line is None
    assert manifest.line_of("spec.containers") is None
    assert str(manifest.error("spec", "boom")) == "<memory>: spec: boom"


def test_error_and_warning_point_at_the_field() -> None:
    (pod,) = load_text(POD, "pod.yaml")
    assert pod.error("spec.containers[0].image", "bad") == ManifestError(
        "pod.yaml", 11, "spec.containers[0].image", "bad"
    )
    warning = pod.warning("metadata.name", "hm")
    assert warning == ManifestWarning("pod.yaml", 5, "metadata.name", "hm")
    assert pod.location == "pod.yaml:2"


def test_multiple_documents_skip_empty_ones() -> None:
    text = dedent(
        """
        ---
        kind: A
        ---
        ---
        # only a comment
        ---
        kind: B
        ...
        ---
        kind: C
        """
    )
    manifests = load_text(text, "m.yaml")
    assert [(m.obj["kind"], m.line) for m in manifests] == [("A", 2), ("B", 7), ("C", 10)]


def test_list_is_flattened_with_item_positions() -> None:
    text = dedent(
        """
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata:
            name: a
        - kind: List
          items:
          - kind: ConfigMap
            metadata: {name: nested}
        """
    )
    service, config_map = load_text(text, "list.yaml")
    assert service.obj == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}
    assert service.line == 4
    assert service.line_of("metadata.name") == 7
    assert config_map.obj["metadata"] == {"name": "nested"}
    assert config_map.line == 10


def test_typed_list_gives_items_their_kind() -> None:
    text = dedent(
        """
        apiVersion: v1
        kind: PodList
        items:
        - metadata: {name: a}
        - kind: Pod
          apiVersion: v1
          metadata: {name: b}
        """
    )
    first, second = load_text(text)
    assert first.obj == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}
    assert second.obj["metadata"]["name"] == "b"


def test_scalars_follow_yaml_1_1_and_kubernetes() -> None:
    text = dedent(
        """
        s: text
        i: 0x10
        f: 1.5
        b: yes
        n: ~
        t: 2001-12-14
        q: "80"
        1: numeric key
        merged:
          <<: {a: 1, b: 2}
          b: 3
        """
    )
    (obj,) = (m.obj for m in load_text(text))
    assert obj == {
        "s": "text",
        "i": 16,
        "f": 1.5,
        "b": True,
        "n": None,
        "t": "2001-12-14",
        "q": "80",
        "1": "numeric key",
        "merged": {"b": 3, "a": 1},
    }
    json.dumps(obj)  # plain JSON-compatible data


def test_json_documents_load_with_tabs_and_lists() -> None:
    text = '{\n\t"kind": "List",\n\t"items": [{"kind": "Pod", "metadata": {"name": "p"}}]\n}\n'
    (pod,) = load_text(text, "x.json")
    assert pod.obj == {"kind": "Pod", "metadata": {"name": "p"}}
    assert pod.line_of("metadata.name") == 3


def test_bytes_with_bom_are_decoded() -> None:
    (manifest,) = load_text("\ufeffkind: Pod\n".encode())
    assert manifest.obj == {"kind": "Pod"}


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("kind: Pod\nmetadata:\n  name: a\n  name: b\n", 4, "metadata.name",
         'duplicate key "name" (first defined at line 3)'),
        ("a: [1, 2\nb: 3\n", 2, None, "invalid YAML: while parsing a flow sequence"),
        ("kind: Pod\nmetadata: name: x\n", 2, None, "invalid YAML: mapping values are not allowed"),
        ("kind: Pod\n  bad indent: 1\n", 2, None, "invalid YAML"),
        ("a: *missing\n", 1, None, "found undefined alias"),
        ("- kind: Pod\n", 1, None, "must be a mapping (an object with apiVersion and kind), got"),
        ("just text\n", 1, None, "got the scalar 'just text'"),
        ("a: !!binary aGk=\n", 1, "a", "unsupported YAML tag !!binary"),
        ("a: !Ref x\n", 1, "a", "unsupported YAML tag !Ref"),
        ("a: !!set {x}\n", 1, "a", "unsupported YAML tag !!set"),
        ("a: .inf\n", 1, "a", ".inf cannot be represented in JSON"),
        ("? [1]\n: x\n", 1, None, "mapping keys must be plain strings"),
        ("~: x\n", 1, None, "mapping keys must not be null"),
        ("a: &x [*x]\n", 1, "a[0]", "an alias refers to a node that contains it"),
        ("kind: List\nitems: {a: 1}\n", 2, "items", "List items must be a list of objects"),
        ("kind: List\nitems:\n- 1\n", 3, "items[0]", "list items must be objects"),
        ("a: 1\n\x07\n", 2, None, "control characters are not allowed (character U+0007)"),
        (b"a: 1\nb: \xff\n", 2, None, "not UTF-8 text"),
    ],
)
def test_load_errors_name_file_line_and_field(
    text: str | bytes, line: int, field: str | None, message: str
) -> None:
    error = only_error(text, "bad.yaml")
    assert (error.source, error.line, error.field) == ("bad.yaml", line, field)
    assert message in error.message


def test_error_text_format() -> None:
    error = only_error("kind: Pod\nkind: Service\n", "web.yaml")
    assert str(error) == (
        'web.yaml:2: kind: duplicate key "kind" (first defined at line 1); remove one of them'
    )


def test_invalid_json_file_reports_json_line() -> None:
    error = only_error('{\n  "kind": "Pod"\n  "x": 1\n}\n', "bad.json")
    assert error.line == 3
    assert error.message.startswith("invalid JSON")


def test_alias_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_NODES_PER_DOCUMENT", 1000)
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]
    error = only_error("\n".join(levels) + "\n")
    assert "expands to more than 1000 values" in error.message


def test_every_document_error_is_reported() -> None:
    with pytest.raises(ManifestErrors) as caught:
        load_text("a: 1\na: 2\n---\n- x\n---\nb: 1\nb: 2\n", "m.yaml")
    assert [(e.line, e.field) for e in caught.value.errors] == [(2, "a"), (4, None), (7, "b")]
    assert str(caught.value).count("\n") == 2  # one line per error


# --- files, directories, stdin ---------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_directory_is_read_sorted_and_not_recursively(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "kind: B\n")
    write(tmp_path / "a.yml", "kind: A\n")
    write(tmp_path / "c.json", '{"kind": "C"}')
    write(tmp_path / "notes.txt", "kind: Ignored\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "d.yaml", "kind: Nested\n")
    assert [Path(p).name for p in expand_paths([tmp_path])] == ["a.yml", "b.yaml", "c.json"]
    manifests = load_paths([tmp_path])
    assert [m.obj["kind"] for m in manifests] == ["A", "B", "C"]
    assert manifests[1].source == str(tmp_path / "b.yaml")


def test_paths_keep_argument_order_and_read_stdin(tmp_path: Path) -> None:
    second = write(tmp_path / "z.yaml", "kind: FromFile\n")
    stdin = io.StringIO("kind: FromStdin\n---\nkind: Again\n")
    manifests = load_paths(["-", second], stdin=stdin)
    assert [(m.obj["kind"], m.source, m.line) for m in manifests] == [
        ("FromStdin", "<stdin>", 1),
        ("Again", "<stdin>", 3),
        ("FromFile", str(second), 1),
    ]


def test_errors_from_all_files_are_collected(tmp_path: Path) -> None:
    bad_one = write(tmp_path / "one.yaml", "a: 1\na: 2\n")
    bad_two = write(tmp_path / "two.yaml", "x: [\n")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ManifestErrors) as caught:
        load_paths([bad_one, missing, bad_two])
    sources = [(Path(e.source).name, e.line) for e in caught.value.errors]
    assert sources == [("one.yaml", 2), ("missing.yaml", None), ("two.yaml", 2)]
    missing_error = next(e for e in caught.value.errors if e.source == str(missing))
    assert "does not exist" in missing_error.message


def test_ten_thousand_objects_load() -> None:
    # Timing lives in the benchmark; this keeps the fast path honest about the result.
    doc = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  labels: {{app: web}}\n"
    manifests = load_text("---\n".join(doc.format(i=i) for i in range(10_000)), "many.yaml")
    assert len(manifests) == 10_000
    assert manifests[-1].obj["metadata"]["name"] == "p9999"
    assert manifests[-1].line == 9999 * 6 + 1
