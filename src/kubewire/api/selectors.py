"""Kubernetes label selectors: parse, validate, match and render.

Three spellings of one idea, as Kubernetes has them:

* ``metav1.LabelSelector`` (``matchLabels`` + ``matchExpressions``), used by Deployments,
  NetworkPolicies and most newer APIs: :meth:`LabelSelector.from_dict`.
* a plain ``key: value`` map, used by Services, ReplicationControllers and ``nodeSelector``:
  :meth:`LabelSelector.from_map` and :func:`service_selector`.
* the string form of ``kubectl get -l``: :func:`parse_selector_string`.

All of them become the same immutable :class:`LabelSelector`, whose ``str()`` is the canonical
string form (requirements sorted by key, values sorted), so two selectors that render the same
select the same objects.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubewire.api.names import dns1123_subdomain_problems, label_value_problems

__all__ = [
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "parse_selector_string",
    "service_selector",
    "validate_label_key",
    "validate_label_value",
]


class SelectorError(ValueError):
    """A selector that Kubernetes would reject.

    ``field`` is the path inside the selector (``matchExpressions[1].values``), empty for string
    selectors, where ``message`` names the column instead.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class Operator(enum.Enum):
    """Requirement operators; values are the spellings used in ``matchExpressions``."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    # Equals/NotEquals only come from matchLabels, plain maps and the string form; keeping them
    # apart from In/NotIn lets str() give back what the user wrote (app=web, not app in (web)).
    EQUALS = "Equals"
    NOT_EQUALS = "NotEquals"


# Sort order of operators for the same key: only needs to be total and fixed.
_OPERATOR_RANK = {op: rank for rank, op in enumerate(Operator)}

# How many distinct values each operator takes (min, max); guards direct construction.
_VALUE_COUNTS = {
    Operator.IN: (1, 1 << 30),
    Operator.NOT_IN: (1, 1 << 30),
    Operator.EXISTS: (0, 0),
    Operator.DOES_NOT_EXIST: (0, 0),
    Operator.EQUALS: (1, 1),
    Operator.NOT_EQUALS: (1, 1),
}

_EXPRESSION_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def validate_label_key(key: str) -> str | None:
    """Return why ``key`` is not a valid label key (a qualified name), or None if it is.

    The rules are those of :mod:`names`; the message is one line, for a selector's error.
    """
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return f"label key {key!r}: prefix part must be non-empty"
        if dns1123_subdomain_problems(prefix):
            return (
                f"label key {key!r}: prefix part must be a lowercase DNS subdomain "
                "(e.g. 'example.com'), at most 253 characters"
            )
    if not name:
        return f"label key {key!r}: name part must be non-empty"
    # The name part follows the label value rule (one alphabet, at most 63), and is not empty.
    if label_value_problems(name):
        return (
            f"label key {key!r}: name part must be at most 63 characters of alphanumerics, "
            "'-', '_' or '.', starting and ending with an alphanumeric (e.g. 'app' or "
            "'app.kubernetes.io/name')"
        )
    return None


def validate_label_value(value: str) -> str | None:
    """Return why ``value`` is not a valid label value, or None if it is (empty is valid)."""
    if label_value_problems(value):
        return (
            f"label value {value!r}: must be empty or at most 63 characters of alphanumerics, "
            "'-', '_' or '.', starting and ending with an alphanumeric"
        )
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ANDed condition on one label key. ``values`` is sorted and free of duplicates."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        values = tuple(sorted(set(self.values)))
        object.__setattr__(self, "values", values)
        wanted = _VALUE_COUNTS[self.operator]
        if not wanted[0] <= len(values) <= wanted[1]:
            raise ValueError(
                f"{self.operator.value} requirement on {self.key!r} takes "
                f"{wanted[0]}..{wanted[1]} distinct values, got {len(values)}"
            )

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if op in (Operator.IN, Operator.EQUALS):
            return self.key in labels and labels[self.key] in self.values
        # NotIn and != hold for objects that lack the key altogether, as in Kubernetes.
        return self.key not in labels or labels[self.key] not in self.values

    def sort_key(self) -> tuple[str, int, tuple[str, ...]]:
        return (self.key, _OPERATOR_RANK[self.operator], self.values)

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if op is Operator.EQUALS:
            return f"{self.key}={self.values[0]}"
        if op is Operator.NOT_EQUALS:
            return f"{self.key}!={self.values[0]}"
        word = "in" if op is Operator.IN else "notin"
        return f"{self.key} {word} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """An immutable label selector: ``requirements`` ANDed together.

    No requirements means "everything". ``matches_nothing`` is the separate state Kubernetes
    gives a null selector (``LabelSelectorAsSelector(nil)``), which no label set satisfies.
    """

    requirements: tuple[Requirement, ...] = ()
    matches_nothing: bool = False

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.requirements, key=Requirement.sort_key))
        object.__setattr__(self, "requirements", ordered)

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(matches_nothing=True)

    @classmethod
    def from_map(cls, selector: Mapping[str, str] | None) -> LabelSelector:
        """A plain ``key: value`` map (every pair must match). Empty or None selects everything.

        That is the set semantics (``labels.SelectorFromSet``) and the right reading of
        ``nodeSelector``. A Service is different: see :func:`service_selector`.
        """
        return cls(tuple(_map_requirements(selector or {}, "")))

    @classmethod
    def from_dict(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """A ``metav1.LabelSelector``. None is the null selector and matches nothing; ``{}``
        matches everything. Raises :class:`SelectorError` for what the API server rejects.
        """
        if selector is None:
            return cls.nothing()
        if not isinstance(selector, Mapping):
            raise SelectorError("", f"must be a mapping, got {type(selector).__name__}")
        unknown = sorted(set(selector) - {"matchLabels", "matchExpressions"})
        if unknown:
            raise SelectorError(
                unknown[0], "unknown field; a label selector has matchLabels and matchExpressions"
            )
        match_labels = selector.get("matchLabels") or {}
        if not isinstance(match_labels, Mapping):
            raise SelectorError("matchLabels", "must be a mapping of label key to value")
        requirements = _map_requirements(match_labels, "matchLabels")
        expressions = selector.get("matchExpressions") or []
        if not isinstance(expressions, list):
            raise SelectorError("matchExpressions", "must be a list of {key, operator, values}")
        for index, expression in enumerate(expressions):
            requirements.append(_expression_requirement(expression, f"matchExpressions[{index}]"))
        return cls(tuple(requirements))

    @property
    def is_everything(self) -> bool:
        return not self.matches_nothing and not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.matches_nothing:
            return False
        return all(requirement.matches(labels) for requirement in self.requirements)

    def with_requirement(self, requirement: Requirement) -> LabelSelector:
        return LabelSelector((*self.requirements, requirement), self.matches_nothing)

    def __str__(self) -> str:
        # Kubernetes renders both Everything and Nothing as ""; we keep them apart so messages
        # do not claim a null selector selects everything. "<nothing>" does not parse back.
        if self.matches_nothing:
            return "<nothing>"
        return ",".join(str(requirement) for requirement in self.requirements)


def service_selector(selector: Mapping[str, str] | None) -> LabelSelector | None:
    """The selector of a Service's ``spec.selector``, or None when the Service has none.

    Kubernetes drops an empty map on the way through the API (``omitempty``), so ``{}`` and a
    missing selector are the same thing: a Service without a selector, whose endpoints are
    managed by hand. Returning None (not "everything") is what keeps the EndpointSlice
    controller from pointing such a Service at every pod in the namespace.
    """
    if not selector:
        return None
    return LabelSelector.from_map(selector)


def _map_requirements(selector: Mapping[str, Any], path: str) -> list[Requirement]:
    requirements = []
    for key, value in selector.items():
        field = f"{path}[{key}]" if path else f"[{key}]"
        if not isinstance(key, str):
            raise SelectorError(field, "label keys must be strings")
        if not isinstance(value, str):
            raise SelectorError(
                field,
                f"label values must be strings, got {type(value).__name__} {value!r} "
                "(quote numbers and booleans in YAML)",
            )
        _check(field, validate_label_key(key))
        _check(field, validate_label_value(value))
        requirements.append(Requirement(key, Operator.EQUALS, (value,)))
    return requirements


def _expression_requirement(expression: Any, path: str) -> Requirement:
    if not isinstance(expression, Mapping):
        raise SelectorError(path, "must be a mapping with key, operator and values")
    unknown = sorted(set(expression) - {"key", "operator", "values"})
    if unknown:
        raise SelectorError(f"{path}.{unknown[0]}", "unknown field; expected key, operator, values")
    key = expression.get("key")
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{path}.key", "required: the label key to test")
    _check(f"{path}.key", validate_label_key(key))
    operator_name = expression.get("operator")
    operator = _EXPRESSION_OPERATORS.get(operator_name) if isinstance(operator_name, str) else None
    if operator is None:
        supported = ", ".join(f'"{name}"' for name in sorted(_EXPRESSION_OPERATORS))
        raise SelectorError(
            f"{path}.operator",
            f"unsupported value {operator_name!r}: supported values: {supported}",
        )
    values = expression.get("values")
    if values is None:
        values = []
    if not isinstance(values, list):
        raise SelectorError(f"{path}.values", "must be a list of strings")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise SelectorError(
                f"{path}.values[{index}]",
                f"must be a string, got {type(value).__name__} {value!r} "
                "(quote numbers and booleans in YAML)",
            )
        _check(f"{path}.values[{index}]", validate_label_value(value))
    if operator in (Operator.IN, Operator.NOT_IN) and not values:
        raise SelectorError(
            f"{path}.values", f"must be specified when operator is '{operator.value}'"
        )
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        raise SelectorError(
            f"{path}.values",
            f"may not be specified when operator is '{operator.value}' (remove values)",
        )
    return Requirement(key, operator, tuple(values))


def _check(field: str, problem: str | None) -> None:
    if problem is not None:
        raise SelectorError(field, problem)


# --- the string form (kubectl -l) -------------------------------------------------------------

# Characters that end an identifier. Everything else that is not whitespace belongs to one,
# so keys like app.kubernetes.io/name need no quoting; validation catches the rest.
_SPECIAL = frozenset("!=(),<>")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident", "=", "==", "!=", "!", "(", ")", ",", "<", ">", "end"
    text: str
    column: int  # 1-based, for messages


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char in _SPECIAL:
            pair = text[i : i + 2]
            if pair in ("==", "!="):
                tokens.append(_Token(pair, pair, i + 1))
                i += 2
            else:
                tokens.append(_Token(char, char, i + 1))
                i += 1
            continue
        start = i
        while i < len(text) and not text[i].isspace() and text[i] not in _SPECIAL:
            i += 1
        tokens.append(_Token("ident", text[start:i], start + 1))
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.position = 0

    def peek(self) -> _Token:
        return self.tokens[self.position]

    def take(self) -> _Token:
        token = self.tokens[self.position]
        if token.kind != "end":
            self.position += 1
        return token

    def fail(self, token: _Token, expected: str) -> SelectorError:
        found = "end of input" if token.kind == "end" else repr(token.text)
        return SelectorError(
            "",
            f"in selector {self.text!r} at column {token.column}: found {found}, "
            f"expected {expected}",
        )

    def parse(self) -> LabelSelector:
        if self.peek().kind == "end":
            return LabelSelector.everything()
        requirements = [self.requirement()]
        while True:
            token = self.take()
            if token.kind == "end":
                return LabelSelector(tuple(requirements))
            if token.kind != ",":
                raise self.fail(token, "',' between requirements or end of selector")
            requirements.append(self.requirement())

    def requirement(self) -> Requirement:
        token = self.take()
        if token.kind == "!":
            key = self.key(self.take())
            return Requirement(key, Operator.DOES_NOT_EXIST)
        key = self.key(token)
        op_token = self.peek()
        if op_token.kind in (",", "end"):
            return Requirement(key, Operator.EXISTS)
        self.take()
        if op_token.kind in ("=", "=="):
            return Requirement(key, Operator.EQUALS, (self.single_value(),))
        if op_token.kind == "!=":
            return Requirement(key, Operator.NOT_EQUALS, (self.single_value(),))
        if op_token.kind == "ident" and op_token.text in ("in", "notin"):
            operator = Operator.IN if op_token.text == "in" else Operator.NOT_IN
            return Requirement(key, operator, self.value_list())
        if op_token.kind in ("<", ">"):
            raise SelectorError(
                "",
                f"in selector {self.text!r} at column {op_token.column}: '{op_token.text}' "
                "(Gt/Lt) is only valid in node selectors; use =, !=, in, notin or exists",
            )
        raise self.fail(op_token, "'=', '==', '!=', 'in', 'notin', ',' or end of selector")

    def key(self, token: _Token) -> str:
        if token.kind != "ident":
            raise self.fail(token, "a label key")
        self.validate(token, validate_label_key(token.text))
        return token.text

    def single_value(self) -> str:
        # key= with nothing after it is legal: it selects the empty value.
        token = self.peek()
        if token.kind != "ident":
            if token.kind in (",", "end"):
                return ""
            raise self.fail(token, "a label value")
        self.take()
        self.validate(token, validate_label_value(token.text))
        return token.text

    def value_list(self) -> tuple[str, ...]:
        opening = self.take()
        if opening.kind != "(":
            raise self.fail(opening, "'(' to start the value list, as in 'env in (a,b)'")
        values = []
        # Items may be empty: "(a,)" holds "" and "a", "()" holds just "" (as Kubernetes reads it).
        expecting_value = True
        while True:
            token = self.take()
            if token.kind == ")":
                if expecting_value:
                    values.append("")
                return tuple(values)
            if token.kind == ",":
                if expecting_value:
                    values.append("")
                expecting_value = True
                continue
            if token.kind == "ident" and expecting_value:
                self.validate(token, validate_label_value(token.text))
                values.append(token.text)
                expecting_value = False
                continue
            raise self.fail(token, "a value, ',' or ')'")

    def validate(self, token: _Token, problem: str | None) -> None:
        if problem is not None:
            raise SelectorError(
                "", f"in selector {self.text!r} at column {token.column}: {problem}"
            )


def parse_selector_string(text: str) -> LabelSelector:
    """Parse the ``kubectl -l`` form, e.g. ``app=web,tier!=db,env in (a,b),!x,y``.

    Supports ``=``, ``==``, ``!=``, ``in``, ``notin``, ``key`` (exists) and ``!key``; an empty
    string selects everything. Raises :class:`SelectorError` naming the column.
    """
    return _Parser(text).parse()
