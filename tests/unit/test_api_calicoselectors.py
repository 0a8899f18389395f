"""Calico selector expressions: parsing, evaluation, precedence, errors with columns, and a
property test against a tiny reference evaluator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubewire.api.calicoselectors import (
    All,
    And,
    CalicoSelectorError,
    Has,
    In,
    Not,
    Or,
    StringMatch,
    parse_calico_selector,
)

LABELS = {"app": "web", "tier": "front-end", "projectcalico.org/rr": "true", "empty": ""}


@pytest.mark.parametrize(("text", "expected"), [
    ("", True), ("   ", True), ("all()", True), ("!all()", False),
    ("has(app)", True), ("has(db)", False), ("!has(db)", True), ("! has(app)", False),
    ('app == "web"', True), ("app == 'web'", True), ('app == "db"', False),
    ('db == "web"', False),
    ('app != "db"', True), ('app != "web"', False), ('db != "x"', True),
    ('app in {"web", "db"}', True), ('app in {"db"}', False), ("app in {}", False),
    ('db in {"x"}', False),
    ('app not in {"db"}', True), ('app not in {"web"}', False), ('db not in {"x"}', True),
    ('tier starts with "front"', True), ('tier starts with "back"', False),
    ('tier ends with "end"', True), ('tier contains "nt-e"', True), ('tier contains "x"', False),
    ('db starts with ""', False), ('empty == ""', True), ("has(empty)", True),
    ("projectcalico.org/rr == 'true'", True),
    ('has(app) && app == "web"', True), ('has(app) && has(db)', False),
    ('has(db) || app == "web"', True),
    ('(has(db) || has(app)) && tier == "front-end"', True),
    # ! binds tightest, then &&, then ||.
    ("!has(app) || has(tier)", True),   # (!has(app)) || has(tier)
    ("!(has(app) || has(tier))", False),
    ("has(db) && has(app) || has(tier)", True),   # (has(db) && has(app)) || has(tier)
    ("has(db) && (has(app) || has(tier))", False),
    ("has(tier) || has(app) && has(db)", True),   # has(tier) || (has(app) && has(db))
    ("(has(tier) || has(app)) && has(db)", False),
    ("!!has(app)", True),
    ('all == "1"', False), ("has(all)", False),   # "all" and "has" are fine label keys
    ('index in {"a"}', False),
])
def test_evaluation(text: str, expected: bool) -> None:
    assert parse_calico_selector(text).matches(LABELS) is expected


def test_tree_shape_and_canonical_text() -> None:
    tree = parse_calico_selector("b in {'y', \"x\"} && (has(a) || !c == 'v') && d != \"w\"")
    assert tree == And((
        In("b", ("x", "y")),
        Or((Has("a"), Not(StringMatch("c", "==", "v")))),
        StringMatch("d", "!=", "w"),
    ))
    assert str(tree) == 'b in {"x", "y"} && (has(a) || !(c == "v")) && d != "w"'
    assert parse_calico_selector(str(tree)) == tree
    assert parse_calico_selector("") == All() == parse_calico_selector("all()")
    # Nested groups of the same operator flatten, so the text is canonical.
    assert parse_calico_selector("(has(a) && has(b)) && has(c)") == \
        parse_calico_selector("has(a) && (has(b) && has(c))")


def test_a_value_with_double_quotes_is_rendered_single_quoted() -> None:
    tree = parse_calico_selector("""a == 'say "hi"'""")
    assert str(tree) == """a == 'say "hi"'"""
    assert tree.matches({"a": 'say "hi"'})


def test_trees_are_frozen_and_hashable() -> None:
    tree = parse_calico_selector('has(a) && b in {"x"}')
    assert hash(tree) == hash(parse_calico_selector('has(a) && b in {"x"}'))
    assert isinstance(tree, And)
    with pytest.raises(AttributeError):
        tree.operands = ()


@pytest.mark.parametrize(("text", "column", "message"), [
    ("a ==", 5, 'expected a quoted string after "==", found the end of the selector'),
    ('a = "b"', 3, 'expected an operator after "a" (==, !=, in, not in'),
    ('a == b', 6, 'expected a quoted string after "==", found "b"'),
    ("(has(a)", 8, 'expected a closing ")"'),
    ("has(a) &&", 10, "expected a label key, found the end of the selector"),
    ("has(a) & has(b)", 8, 'expected "&&", "||" or the end of the selector, found "& has(b)"'),
    ('a in {"x" "y"}', 11, 'expected "," or "}"'),
    ('a in ("x")', 6, 'expected "{" after "in"'),
    ('a not {"x"}', 7, 'expected "in" after "not"'),
    ('a == "x', 6, "this string has no closing \""),
    ("&& a", 1, "expected a label key"),
    ("has()", 5, "expected a label key"),
    ("all(x)", 5, '")": all() takes no argument'),
    ("has(a) has(b)", 8, 'expected "&&", "||" or the end of the selector'),
    ('!= "x"', 1, 'expected a label key, "!", "(", "all()" or "has(" before "!="'),
    ("a == 'x' ||", 12, "expected a label key"),
])
def test_errors_name_the_column(text: str, column: int, message: str) -> None:
    with pytest.raises(CalicoSelectorError) as caught:
        parse_calico_selector(text)
    assert caught.value.column == column, str(caught.value)
    assert message in caught.value.message
    assert str(caught.value).startswith(f"column {column}: ")


# A reference: trees as tuples, rendered with every optional parenthesis and spacing choice,
# evaluated by a few lines that follow Calico's definitions directly.
KEYS = ["a", "b", "x.io/k", "all"]
VALUES = ["", "v", "w", "vw"]

Ref = tuple[Any, ...]


def _leaf() -> st.SearchStrategy[Ref]:
    key, value = st.sampled_from(KEYS), st.sampled_from(VALUES)
    return st.one_of(
        st.just(("all",)),
        st.tuples(st.just("has"), key),
        st.tuples(st.sampled_from(["==", "!=", "starts with", "ends with", "contains"]),
                  key, value),
        st.tuples(st.sampled_from(["in", "not in"]), key,
                  st.lists(value, max_size=3).map(tuple)),
    )


def _extend(children: st.SearchStrategy[Ref]) -> st.SearchStrategy[Ref]:
    return st.one_of(
        st.tuples(st.just("!"), children),
        st.tuples(st.sampled_from(["&&", "||"]), children, children),
    )


TREES = st.recursive(_leaf(), _extend, max_leaves=8)
LABEL_SETS = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4)


def ref_eval(tree: Ref, labels: dict[str, str]) -> bool:
    op = tree[0]
    if op == "all":
        return True
    if op == "has":
        return bool(tree[1] in labels)
    if op == "!":
        return not ref_eval(tree[1], labels)
    if op == "&&":
        return ref_eval(tree[1], labels) and ref_eval(tree[2], labels)
    if op == "||":
        return ref_eval(tree[1], labels) or ref_eval(tree[2], labels)
    key: str = tree[1]
    arg: Any = tree[2]
    got = labels.get(key)
    if op == "!=":
        return bool(got != arg)
    if op == "not in":
        return got is None or bool(got not in arg)
    if got is None:
        return False
    if op == "==":
        return bool(got == arg)
    if op == "in":
        return bool(got in arg)
    if op == "starts with":
        return got.startswith(arg)
    if op == "ends with":
        return got.endswith(arg)
    assert op == "contains"
    return arg in got


def render(tree: Ref, draw: Any, parent: str = "||") -> str:
    """Text for ``tree``; parentheses where precedence needs them, randomly elsewhere."""
    op = tree[0]
    quote = draw(st.sampled_from(['"', "'"]))
    if op == "all":
        text = "all()"
    elif op == "has":
        text = f"has({tree[1]})"
    elif op == "!":
        text = "!" + render(tree[1], draw, "!")
    elif op in ("&&", "||"):
        gap = draw(st.sampled_from([" ", "", "  "]))
        text = f"{render(tree[1], draw, op)}{gap}{op}{gap}{render(tree[2], draw, op)}"
    elif op in ("in", "not in"):
        text = f"{tree[1]} {op} {{{', '.join(quote + v + quote for v in tree[2])}}}"
    else:
        text = f"{tree[1]} {op} {quote}{tree[2]}{quote}"
    tight = {"||": 0, "&&": 1, "!": 2}
    needs = op in tight and op != "!" and tight[op] < tight[parent]
    # A comparison under "!" needs parentheses too: `!a == "v"` is `!(a == "v")` in Calico,
    # but writing them keeps the text unambiguous to a reader.
    needs = needs or (parent == "!" and op not in ("all", "has", "!"))
    if needs or (draw(st.booleans()) and draw(st.booleans())):
        text = f"({text})"
    return text


@settings(max_examples=300, deadline=None)
@given(tree=TREES, labels=st.lists(LABEL_SETS, min_size=1, max_size=4), data=st.data())
def test_matches_the_reference_evaluator(tree: Ref, labels: list[dict[str, str]],
                                         data: st.DataObject) -> None:
    text = render(tree, data.draw)
    parsed = parse_calico_selector(text)
    for label_set in labels:
        assert parsed.matches(label_set) is ref_eval(tree, label_set), text
    # str() is canonical: it parses back to the same tree.
    assert parse_calico_selector(str(parsed)) == parsed


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='ab()!&|=" {},.in', max_size=20))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse_calico_selector(text)
    except CalicoSelectorError as exc:
        assert 1 <= exc.column <= len(text) + 1
