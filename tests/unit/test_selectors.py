"""Label selector semantics, validation and the string form."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubewire.api.selectors import (
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    parse_selector_string,
    service_selector,
    validate_label_key,
    validate_label_value,
)

WEB = {"app": "web", "tier": "frontend", "env": "prod"}
DB = {"app": "db", "tier": "backend"}
BARE: dict[str, str] = {}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, WEB, True),
        ({}, BARE, True),
        ({"matchLabels": {}}, BARE, True),
        ({"matchLabels": {"app": "web"}}, WEB, True),
        ({"matchLabels": {"app": "web"}}, DB, False),
        ({"matchLabels": {"app": "web"}}, BARE, False),
        ({"matchLabels": {"app": "web", "env": "prod"}}, WEB, True),
        ({"matchLabels": {"app": "web", "env": "dev"}}, WEB, False),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]},
            DB,
            True,
        ),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}, DB, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, BARE, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, DB, True),
        (
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
            WEB,
            False,
        ),
        # NotIn holds when the key is absent altogether.
        (
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
            BARE,
            True,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, WEB, True),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, DB, False),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, DB, True),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, WEB, False),
        ({"matchExpressions": [{"key": "env", "operator": "Exists", "values": []}]}, WEB, True),
        # Requirements are ANDed, including matchLabels with matchExpressions.
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}],
            },
            WEB,
            False,
        ),
        (
            {
                "matchLabels": {"tier": "backend"},
                "matchExpressions": [{"key": "env", "operator": "DoesNotExist"}],
            },
            DB,
            True,
        ),
        ({"matchLabels": {"empty": ""}}, {"empty": ""}, True),
        ({"matchLabels": {"empty": ""}}, BARE, False),
    ],
)
def test_from_dict_matches(
    selector: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert LabelSelector.from_dict(selector).matches(labels) is expected


def test_null_selector_matches_nothing_and_empty_matches_everything() -> None:
    assert not LabelSelector.from_dict(None).matches(WEB)
    assert not LabelSelector.from_dict(None).matches(BARE)
    assert not LabelSelector.nothing().matches(BARE)
    assert LabelSelector.from_dict({}).is_everything
    assert not LabelSelector.nothing().is_everything
    assert LabelSelector.nothing() != LabelSelector.everything()
    assert str(LabelSelector.nothing()) == "<nothing>"
    assert str(LabelSelector.everything()) == ""


@pytest.mark.parametrize(
    ("selector", "field", "fragment"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
         "matchExpressions[0].values", "must be specified when operator is 'In'"),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn"}]},
         "matchExpressions[0].values", "must be specified when operator is 'NotIn'"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"},
                               {"key": "b", "operator": "Exists", "values": ["x"]}]},
         "matchExpressions[1].values", "may not be specified when operator is 'Exists'"),
        ({"matchExpressions": [{"key": "b", "operator": "DoesNotExist", "values": ["x"]}]},
         "matchExpressions[0].values", "may not be specified when operator is 'DoesNotExist'"),
        ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
         "matchExpressions[0].operator", "supported values"),
        ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
         "matchExpressions[0].operator", "unsupported value 'Gt'"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key", "required"),
        ({"matchExpressions": [{"key": "-bad", "operator": "Exists"}]},
         "matchExpressions[0].key", "name part"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]},
         "matchExpressions[0].values[0]", "must be a string"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "bad value"]}]},
         "matchExpressions[0].values[1]", "label value"),
        ({"matchExpressions": {"key": "a"}}, "matchExpressions", "must be a list"),
        ({"matchLabels": {"app": 3}}, "matchLabels[app]", "quote numbers"),
        ({"matchLabels": {"app": True}}, "matchLabels[app]", "must be strings"),
        ({"matchLabels": {"Example.com/app": "x"}}, "matchLabels[Example.com/app]", "prefix"),
        ({"matchLabels": {"app": "x" * 64}}, "matchLabels[app]", "at most 63"),
        ({"matchLabels": ["app"]}, "matchLabels", "must be a mapping"),
        ({"matchLabel": {"app": "web"}}, "matchLabel", "unknown field"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "value": ["x"]}]},
         "matchExpressions[0].value", "unknown field"),
    ],
)  # fmt: skip
def test_from_dict_rejects_what_the_api_server_rejects(
    selector: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(SelectorError) as caught:
        LabelSelector.from_dict(selector)
    assert caught.value.field == field
    assert fragment in caught.value.message
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("app", True),
        ("app.kubernetes.io/name", True),
        ("a", True),
        ("A_b-c.d", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("", False),
        ("/app", False),
        ("example.com/", False),
        ("Example.com/app", False),
        ("a/b/c", False),
        ("-app", False),
        ("app-", False),
        ("ap p", False),
    ],
)
def test_label_key_validation(key: str, valid: bool) -> None:
    assert (validate_label_key(key) is None) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("", True),
        ("web", True),
        ("v1.2_3-x", True),
        ("-x", False),
        ("x" * 64, False),
        ("a b", False),
    ],
)
def test_label_value_validation(value: str, valid: bool) -> None:
    assert (validate_label_value(value) is None) is valid


def test_from_map_and_service_selector() -> None:
    assert LabelSelector.from_map({"app": "web"}).matches(WEB)
    assert not LabelSelector.from_map({"app": "web"}).matches(DB)
    # A plain map with nothing in it is the empty set of requirements: everything.
    assert LabelSelector.from_map({}).is_everything
    assert LabelSelector.from_map(None).is_everything
    # A Service with an empty or missing selector has no selector at all.
    assert service_selector({}) is None
    assert service_selector(None) is None
    selector = service_selector({"app": "web"})
    assert selector is not None
    assert selector.matches(WEB)
    with pytest.raises(SelectorError) as caught:
        service_selector({"app": "not valid"})
    assert caught.value.field == "[app]"


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", WEB, True),
        ("   ", BARE, True),
        ("app=web", WEB, True),
        ("app==web", WEB, True),
        ("app = web", WEB, True),
        ("app=web", DB, False),
        ("app!=web", DB, True),
        ("app!=web", WEB, False),
        ("app!=web", BARE, True),
        ("env in (prod,dev)", WEB, True),
        ("env in (dev)", WEB, False),
        ("env notin (dev)", WEB, True),
        ("env notin (dev)", BARE, True),
        ("env notin (prod)", WEB, False),
        ("env", WEB, True),
        ("env", DB, False),
        ("!env", DB, True),
        ("!env", WEB, False),
        ("app=web,tier!=db,env in (a,prod),!x,tier", WEB, True),
        ("app=web,tier!=db,env in (a,b),!x,tier", WEB, False),
        ("app=", {"app": ""}, True),
        ("app=", WEB, False),
        ("app==", {"app": ""}, True),
        ("app in ()", {"app": ""}, True),
        ("app in (web,)", {"app": ""}, True),
        ("app.kubernetes.io/name=web", {"app.kubernetes.io/name": "web"}, True),
        ("in=notin", {"in": "notin"}, True),
    ],
)
def test_parse_selector_string_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector_string(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("app=web,", "column 9: found end of input, expected a label key"),
        (",app", "column 1: found ',', expected a label key"),
        ("app=web tier=db", "column 9: found 'tier', expected ',' between requirements"),
        ("app in web", "expected '(' to start the value list"),
        ("app in (a", "found end of input, expected a value, ',' or ')'"),
        ("app in (a b)", "found 'b', expected a value"),
        ("app foo", "found 'foo', expected '=', '==', '!=', 'in', 'notin'"),
        ("app>3", "'>' (Gt/Lt) is only valid in node selectors"),
        ("!app=web", "found '=', expected ','"),
        ("-bad=x", "column 1: label key '-bad'"),
        ("app=-bad", "column 5: label value '-bad'"),
    ],
)
def test_parse_selector_string_errors(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector_string(text)
    assert fragment in caught.value.message
    assert repr(text) in caught.value.message


@pytest.mark.parametrize(
    ("selector", "rendered"),
    [
        (LabelSelector.from_map({"tier": "web", "app": "x"}), "app=x,tier=web"),
        (parse_selector_string("z, !y, x notin (b,a,b), w!=v, u==t"),
         "u=t,w!=v,x notin (a,b),!y,z"),
        (LabelSelector.from_dict({"matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]}]}), "env in (dev,prod)"),
        (parse_selector_string("a in (,x)"), "a in (,x)"),
    ],
)  # fmt: skip
def test_str_is_canonical(selector: LabelSelector, rendered: str) -> None:
    assert str(selector) == rendered
    assert parse_selector_string(rendered) == selector


def test_equal_selectors_compare_and_hash_equal_regardless_of_order() -> None:
    first = parse_selector_string("b=1,a=2,c in (y,x)")
    second = parse_selector_string("c in (x,y,x),a=2,b=1")
    assert first == second
    assert hash(first) == hash(second)


def test_requirement_rejects_wrong_value_counts() -> None:
    with pytest.raises(ValueError):
        Requirement("a", Operator.EQUALS, ("x", "y"))
    with pytest.raises(ValueError):
        Requirement("a", Operator.IN, ())
    with pytest.raises(ValueError):
        Requirement("a", Operator.EXISTS, ("x",))


# --- property: the canonical string form round-trips ------------------------------------------

_KEYS = st.sampled_from(["a", "b", "app.kubernetes.io/name", "x-y"])
_VALUES = st.sampled_from(["", "1", "web", "v.2"])


@st.composite
def _requirements(draw: st.DrawFn) -> Requirement:
    operator = draw(st.sampled_from(list(Operator)))
    key = draw(_KEYS)
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        return Requirement(key, operator)
    if operator in (Operator.EQUALS, Operator.NOT_EQUALS):
        return Requirement(key, operator, (draw(_VALUES),))
    return Requirement(key, operator, tuple(draw(st.lists(_VALUES, min_size=1, max_size=3))))


_SELECTORS = st.builds(LabelSelector, st.lists(_requirements(), max_size=4).map(tuple))
_LABEL_SETS = st.dictionaries(_KEYS, _VALUES, max_size=4)


@given(_SELECTORS, st.lists(_LABEL_SETS, min_size=1, max_size=8))
def test_parse_of_str_selects_the_same_label_sets(
    selector: LabelSelector, label_sets: list[dict[str, str]]
) -> None:
    reparsed = parse_selector_string(str(selector))
    assert reparsed == selector
    for labels in label_sets:
        assert reparsed.matches(labels) == selector.matches(labels)


@given(_SELECTORS, _LABEL_SETS)
def test_selector_is_the_and_of_its_requirements(
    selector: LabelSelector, labels: dict[str, str]
) -> None:
    assert selector.matches(labels) == all(r.matches(labels) for r in selector.requirements)
