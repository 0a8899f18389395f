"""Load manifests from files, directories and stdin, remembering where every field came from.

PyYAML's constructors throw positions away, so we compose the node graph (with the C parser
when it is available) and build the plain dicts ourselves, recording ``field path -> line`` on
the way. That is also where the JSON-compatibility rules live: string keys only, no
duplicate keys, no tags outside the JSON-like core, no infinities.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kubewire.api.errors import ManifestError, ManifestErrors, ManifestWarning
from kubewire.api.objects import ObjectKey, child_path, index_path, normalize_path, parent_path

__all__ = [
    "MANIFEST_SUFFIXES",
    "STDIN",
    "Manifest",
    "expand_paths",
    "load_paths",
    "load_text",
]

STDIN = "-"
STDIN_SOURCE = "<stdin>"
MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader semantics with the C parser when available and a memo for implicit tags.

    Resolving a plain scalar's tag runs a handful of regexes in Python for every key and
    value; manifests repeat the same few keys and values endlessly, so a memo saves about a
    fifth of the load time.
    """

    _resolved: dict[tuple[str, tuple[bool, bool]], str] = {}

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is not ScalarNode:
            return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]
        memo_key = (value, implicit)
        tag = self._resolved.get(memo_key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(self._resolved) < 65536:
                self._resolved[memo_key] = tag
        return tag


_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _MERGE, _MAP, _SEQ = (f"{_TAG}{t}" for t in ("timestamp", "merge", "map", "seq"))

# Guards against hostile input: aliases can expand a small file exponentially (a "billion
# laughs"), and deep nesting would exhaust the Python stack in the recursive builder.
MAX_NODES_PER_DOCUMENT = 1_000_000
MAX_DEPTH = 200


@dataclass(frozen=True, slots=True)
class Manifest:
    """One object from the input and where it came from.

    ``obj`` is plain JSON-compatible data; treat it as read-only (use :meth:`with_obj` to
    change it). ``positions`` maps canonical field paths to 1-based lines; it is empty and
    ``line`` is None for manifests made in code.
    """

    obj: dict[str, Any]
    source: str = "<memory>"
    line: int | None = None
    positions: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey.from_obj(self.obj)

    @property
    def location(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"

    def line_of(self, path: str) -> int | None:
        """Line of the field at ``path``, else of its nearest ancestor that has one."""
        current: str | None = normalize_path(path)
        while current is not None:
            line = self.positions.get(current)
            if line is not None:
                return line
            current = parent_path(current)
        return self.line

    def error(self, path: str | None, message: str) -> ManifestError:
        line = self.line if path is None else self.line_of(path)
        return ManifestError(self.source, line, path, message)

    def warning(self, path: str | None, message: str) -> ManifestWarning:
        line = self.line if path is None else self.line_of(path)
        return ManifestWarning(self.source, line, path, message)

    def with_obj(self, obj: dict[str, Any]) -> Manifest:
        """The same manifest (same positions) holding a changed object."""
        return Manifest(obj, self.source, self.line, self.positions)


class _AbortDocument(Exception):
    """Raised inside the builder when a document cannot be built any further."""


class _DocumentBuilder:
    """Turns one composed node graph into plain data plus a path -> line table."""

    _constructor = SafeConstructor()

    def __init__(self, source: str, errors: list[ManifestError]) -> None:
        self.source = source
        self.errors = errors
        self.node_budget = MAX_NODES_PER_DOCUMENT
        self._active: set[int] = set()  # ids of collections being built, to catch cycles

    def error(self, node: Node, path: str, message: str) -> None:
        self.errors.append(ManifestError(self.source, _line(node), path or None, message))

    def abort(self, node: Node, path: str, message: str) -> _AbortDocument:
        self.error(node, path, message)
        return _AbortDocument()

    def build(self, node: Node, path: str, positions: dict[str, int], depth: int = 0) -> Any:
        self.node_budget -= 1
        if self.node_budget < 0:
            raise self.abort(
                node,
                path,
                f"document expands to more than {MAX_NODES_PER_DOCUMENT} values; "
                "are aliases (*name) nested inside each other?",
            )
        if depth > MAX_DEPTH:
            raise self.abort(node, path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self._active:
            raise self.abort(node, path, "an alias refers to a node that contains it")
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, path, positions, depth)
            if isinstance(node, MappingNode):
                return self.mapping(node, path, positions, depth)
        finally:
            self._active.discard(id(node))
        raise self.abort(node, path, f"unsupported YAML node {type(node).__name__}")

    def scalar(self, node: ScalarNode, path: str) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _INT:
            return self._constructor.construct_yaml_int(node)
        if tag == _BOOL:
            return self._constructor.construct_yaml_bool(node)
        if tag == _NULL:
            return None
        if tag == _FLOAT:
            number = self._constructor.construct_yaml_float(node)
            if not math.isfinite(number):
                self.error(node, path, f"{node.value} cannot be represented in JSON; quote it")
            return number
        if tag == _TIMESTAMP:
            # Kubernetes' YAML decoder keeps timestamps as strings; so do we.
            return node.value
        self.error(node, path, f"unsupported YAML tag {_short(tag)}; use plain JSON-like values")
        return node.value

    def sequence(
        self, node: SequenceNode, path: str, positions: dict[str, int], depth: int
    ) -> list[Any]:
        if node.tag != _SEQ:
            self.error(node, path, f"unsupported YAML tag {_short(node.tag)}; use a plain list")
        items = []
        for index, item in enumerate(node.value):
            item_path = index_path(path, index)
            positions[item_path] = _line(item)
            items.append(self.build(item, item_path, positions, depth + 1))
        return items

    def mapping(
        self, node: MappingNode, path: str, positions: dict[str, int], depth: int
    ) -> dict[str, Any]:
        if node.tag != _MAP:
            self.error(node, path, f"unsupported YAML tag {_short(node.tag)}; use a plain mapping")
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        defined_at: dict[str, int] = {}
        self.node_budget -= len(node.value)
        for key_node, value_node in node.value:
            # The common case (a plain string key) is inlined: this loop is the hot path.
            if key_node.__class__ is ScalarNode and key_node.tag == _STR:
                key = key_node.value
            elif key_node.tag == _MERGE:
                self.merge(value_node, path, positions, depth, merged)
                continue
            else:
                key = self.key(key_node, path)
                if key is None:
                    continue
            line = key_node.start_mark.line + 1
            key_path = child_path(path, key)
            if key in defined_at:
                self.error(
                    key_node,
                    key_path,
                    f'duplicate key "{key}" (first defined at line {defined_at[key]}); '
                    "remove one of them",
                )
                continue
            defined_at[key] = line
            positions[key_path] = line
            if value_node.__class__ is ScalarNode:
                result[key] = self.scalar(value_node, key_path)
            else:
                result[key] = self.build(value_node, key_path, positions, depth + 1)
        # Merge keys (<<: *base) give defaults; keys written out in the mapping win.
        for key, value in merged.items():
            result.setdefault(key, value)
        return result

    def merge(
        self,
        node: Node,
        path: str,
        positions: dict[str, int],
        depth: int,
        merged: dict[str, Any],
    ) -> None:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, MappingNode):
                self.error(source, path, "a merge key (<<) takes a mapping or a list of them")
                continue
            # Build into a scratch table so merged defaults never shadow explicit positions.
            scratch: dict[str, int] = {}
            for key, value in self.build(source, path, scratch, depth + 1).items():
                merged.setdefault(key, value)
            for key_path, line in scratch.items():
                positions.setdefault(key_path, line)

    def key(self, node: Node, path: str) -> str | None:
        if not isinstance(node, ScalarNode):
            self.error(node, path, "mapping keys must be plain strings, not lists or mappings")
            return None
        if node.tag != _STR and node.value in ("", "~", "null", "Null", "NULL"):
            self.error(node, path, "mapping keys must not be null")
            return None
        # Non-string scalars (1:, true:) become their text, as Kubernetes turns them into
        # JSON object keys.
        return str(node.value)


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar_under(node: MappingNode, key: str) -> Any:
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            if isinstance(value_node, ScalarNode):
                return value_node.value
            return None
    return None


def _node_under(node: MappingNode, key: str) -> Node | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None


def _is_list_kind(kind: Any) -> bool:
    return isinstance(kind, str) and kind.endswith("List")


def _load_object(
    node: MappingNode,
    source: str,
    builder: _DocumentBuilder,
    out: list[Manifest],
    defaults: Mapping[str, str],
) -> None:
    """Append the object at ``node`` to ``out``, or its items if it is a List."""
    kind = _scalar_under(node, "kind")
    items = _node_under(node, "items")
    if _is_list_kind(kind) and items is not None:
        if not isinstance(items, SequenceNode):
            builder.error(items, "items", f"{kind} items must be a list of objects")
            return
        item_defaults: Mapping[str, str] = {}
        if kind != "List":
            # Typed lists (PodList) leave kind and apiVersion off their items.
            api_version = _scalar_under(node, "apiVersion")
            item_defaults = {"kind": kind.removesuffix("List")}
            if isinstance(api_version, str):
                item_defaults["apiVersion"] = api_version
        for index, item in enumerate(items.value):
            if not isinstance(item, MappingNode):
                builder.error(item, index_path("items", index), "list items must be objects")
                continue
            _load_object(item, source, builder, out, item_defaults)
        return
    positions: dict[str, int] = {"": _line(node)}
    obj = builder.build(node, "", positions)
    for key, value in defaults.items():
        obj.setdefault(key, value)
    out.append(Manifest(obj, source, _line(node), positions))


def _describe(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        return f"the scalar {node.value!r}"
    return type(node).__name__


def _yaml_error(source: str, exc: yaml.YAMLError) -> ManifestError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else int(mark.line) + 1
        parts = [part for part in (exc.context, exc.problem) if part]
        where = "" if mark is None else f" (column {int(mark.column) + 1})"
        return ManifestError(source, line, None, f"invalid YAML: {', '.join(parts)}{where}")
    return ManifestError(source, None, None, f"invalid YAML: {exc}")


def _reader_error(source: str, text: str, exc: yaml.reader.ReaderError) -> ManifestError:
    line = text.count("\n", 0, exc.position) + 1
    character = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return ManifestError(
        source, line, None, f"invalid YAML: {exc.reason} (character U+{ord(character):04X})"
    )


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


def _load_json(text: str, source: str) -> tuple[list[Manifest], list[ManifestError]]:
    """Fallback for JSON that is not valid YAML 1.1; positions are known only per document."""
    errors: list[ManifestError] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                errors.append(ManifestError(source, None, None, f'duplicate key "{key}"'))
            result[key] = value
        return result

    try:
        value = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        return [], [ManifestError(source, exc.lineno, None, f"invalid JSON: {exc.msg}")]
    line = text[: len(text) - len(text.lstrip())].count("\n") + 1
    if not isinstance(value, dict):
        return [], [ManifestError(source, line, None, "a manifest must be a JSON object")]
    if _is_list_kind(value.get("kind")) and isinstance(value.get("items"), list):
        manifests = [
            Manifest(item, source, line, {"": line})
            for item in value["items"]
            if isinstance(item, dict)
        ]
        return manifests, errors
    return [Manifest(value, source, line, {"": line})], errors


def _load_stream(text: str, source: str) -> tuple[list[Manifest], list[ManifestError]]:
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            if isinstance(node, ScalarNode) and node.tag == _NULL:
                continue  # an empty document between two "---" lines
            if not isinstance(node, MappingNode):
                errors.append(
                    ManifestError(
                        source,
                        _line(node),
                        None,
                        f"a manifest must be a mapping (an object with apiVersion and kind), "
                        f"got {_describe(node)}",
                    )
                )
                continue
            builder = _DocumentBuilder(source, errors)
            try:
                _load_object(node, source, builder, manifests, {})
            except _AbortDocument:
                continue
    except yaml.reader.ReaderError as exc:
        errors.append(_reader_error(source, text, exc))
    except yaml.YAMLError as exc:
        if _looks_like_json(text):
            json_manifests, json_errors = _load_json(text, source)
            if not json_errors or source.endswith(".json"):
                return json_manifests, json_errors
        errors.append(_yaml_error(source, exc))
    return manifests, errors


def load_text(text: str | bytes, source: str = STDIN_SOURCE) -> list[Manifest]:
    """Load every object in ``text`` (YAML or JSON, multi-document, Lists flattened).

    Raises ManifestErrors listing every problem found.
    """
    errors: list[ManifestError] = []
    manifests = _load_decoded(text, source, errors)
    if errors:
        raise ManifestErrors(errors)
    return manifests


def _load_decoded(text: str | bytes, source: str, errors: list[ManifestError]) -> list[Manifest]:
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            errors.append(ManifestError(source, line, None, "not UTF-8 text"))
            return []
    text = text.removeprefix("\ufeff")
    manifests, stream_errors = _load_stream(text, source)
    errors.extend(stream_errors)
    return manifests


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str | Path]:
    """What ``-f`` reads, in order: files as given, a directory's manifest files sorted by name
    (not recursing, like ``kubectl -f DIR``), and "-" for stdin. Missing paths raise."""
    errors: list[ManifestError] = []
    expanded = _expand(paths, errors)
    if errors:
        raise ManifestErrors(errors)
    return expanded


def _expand(
    paths: Iterable[str | os.PathLike[str]], errors: list[ManifestError]
) -> list[str | Path]:
    expanded: list[str | Path] = []
    for raw in paths:
        if raw == STDIN:
            expanded.append(STDIN)
            continue
        path = Path(raw)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()]
            files.sort(key=lambda p: p.name)
            expanded.extend(files)
        elif path.exists():
            expanded.append(path)
        else:
            errors.append(ManifestError(str(raw), None, None, "the path does not exist"))
    return expanded


def load_paths(
    paths: Iterable[str | os.PathLike[str]], *, stdin: TextIO | None = None
) -> list[Manifest]:
    """Load every object from files, directories and "-" (stdin), in order.

    Raises ManifestErrors with every problem in every file, so one run shows them all.
    """
    errors: list[ManifestError] = []
    manifests: list[Manifest] = []
    # Expand one argument at a time so errors come out in argument order.
    for path in (path for raw in paths for path in _expand([raw], errors)):
        if path == STDIN:
            text: str | bytes = (stdin if stdin is not None else sys.stdin).read()
            source = STDIN_SOURCE
        else:
            source = str(path)
            try:
                text = Path(path).read_bytes()
            except OSError as exc:
                errors.append(ManifestError(source, None, None, f"cannot read: {exc.strerror}"))
                continue
        manifests.extend(_load_decoded(text, source, errors))
    if errors:
        raise ManifestErrors(errors)
    return manifests
