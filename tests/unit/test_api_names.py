"""Name rules: a table of valid and invalid values, plus properties over generated names."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubewire.api.names import (
    config_map_key_problems,
    dns1035_label_problems,
    dns1123_label_problems,
    dns1123_subdomain_problems,
    iana_svc_name_problems,
    label_key_problems,
    label_value_problems,
)

Rule = Callable[[str], list[str]]

VALID: list[tuple[Rule, str]] = [
    (dns1123_label_problems, "a"),
    (dns1123_label_problems, "0"),
    (dns1123_label_problems, "123-abc"),
    (dns1123_label_problems, "a" * 63),
    (dns1123_subdomain_problems, "example.com"),
    (dns1123_subdomain_problems, "a-b.c-d.e"),
    (dns1123_subdomain_problems, ".".join(["a" * 63] * 3) + "." + "b" * 61),  # 253 chars
    (dns1035_label_problems, "my-name"),
    (dns1035_label_problems, "abc-123"),
    (label_key_problems, "app"),
    (label_key_problems, "MyKey_1.x"),
    (label_key_problems, "app.kubernetes.io/name"),
    (label_key_problems, "example.com/" + "k" * 63),
    (label_value_problems, ""),
    (label_value_problems, "MyValue"),
    (label_value_problems, "my_value.1-2"),
    (label_value_problems, "v" * 63),
    (iana_svc_name_problems, "http"),
    (iana_svc_name_problems, "http-alt-8080"),
    (iana_svc_name_problems, "a" * 15),
    (config_map_key_problems, "config.yaml"),
    (config_map_key_problems, "KEY_1-x"),
    (config_map_key_problems, ".hidden"),
]

# (rule, value, part of the expected message)
INVALID: list[tuple[Rule, str, str]] = [
    (dns1123_label_problems, "", "must not be empty"),
    (dns1123_label_problems, "Web", "lower case alphanumeric characters or '-'"),
    (dns1123_label_problems, "-web", "must start and end with an alphanumeric"),
    (dns1123_label_problems, "web-", "must start and end with an alphanumeric"),
    (dns1123_label_problems, "a.b", "lower case alphanumeric characters or '-'"),
    (dns1123_label_problems, "a" * 64, "no more than 63 characters (it has 64)"),
    (dns1123_subdomain_problems, "a..b", "lower case alphanumeric characters, '-' or '.'"),
    (dns1123_subdomain_problems, "a_b", "lower case alphanumeric characters, '-' or '.'"),
    (dns1123_subdomain_problems, "a." * 127, "no more than 253 characters"),
    (dns1035_label_problems, "1web", "start with an alphabetic character"),
    (dns1035_label_problems, "", "must not be empty"),
    (label_key_problems, "", "name part must not be empty"),
    (label_key_problems, "/app", "prefix part must not be empty"),
    (label_key_problems, "a/b/c", "more than one '/'"),
    (label_key_problems, "Example.com/app", "prefix part must consist of lower case"),
    (label_key_problems, "app-", "name part must consist of alphanumeric characters"),
    (label_key_problems, "k" * 64, "name part must be no more than 63 characters"),
    (label_key_problems, "example.com/", "name part must not be empty"),
    (label_value_problems, "-v", "must start and end with an alphanumeric"),
    (label_value_problems, "a b", "must be an empty string or consist of"),
    (label_value_problems, "v" * 64, "no more than 63 characters"),
    (iana_svc_name_problems, "", "must not be empty"),
    (iana_svc_name_problems, "8080", "at least one letter"),
    (iana_svc_name_problems, "Http", "only lower case alphanumeric"),
    (iana_svc_name_problems, "a--b", "consecutive hyphens"),
    (iana_svc_name_problems, "-http", "must not begin or end with a hyphen"),
    (iana_svc_name_problems, "a" * 16, "no more than 15 characters"),
    (config_map_key_problems, "a/b", "alphanumeric characters, '-', '_' or '.'"),
    (config_map_key_problems, "..", "must not be '..'"),
    (config_map_key_problems, "..data", "must not start with '..'"),
]


@pytest.mark.parametrize(("rule", "value"), VALID, ids=lambda v: getattr(v, "__name__", v))
def test_valid_values_have_no_problems(rule: Rule, value: str) -> None:
    assert rule(value) == []


@pytest.mark.parametrize(
    ("rule", "value", "expected"), INVALID, ids=lambda v: getattr(v, "__name__", str(v)[:20])
)
def test_invalid_values_say_why(rule: Rule, value: str, expected: str) -> None:
    problems = rule(value)
    assert problems, f"{rule.__name__}({value!r}) should fail"
    assert any(expected in problem for problem in problems), problems


_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
dns_labels = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(_ALNUM),
    st.text(alphabet=_ALNUM + "-", max_size=61),
    st.sampled_from(_ALNUM),
) | st.sampled_from(list(_ALNUM))


@given(dns_labels)
def test_constructed_labels_are_valid_labels_and_subdomains(label: str) -> None:
    assert dns1123_label_problems(label) == []
    assert dns1123_subdomain_problems(label) == []
    assert label_value_problems(label) == []
    assert label_key_problems(label) == []


@given(st.lists(dns_labels, min_size=1, max_size=4))
def test_dotted_labels_are_subdomains(labels: list[str]) -> None:
    assert dns1123_subdomain_problems(".".join(labels)) == []


@given(st.text(max_size=80))
def test_label_rules_nest(value: str) -> None:
    # A DNS-1035 label is a DNS-1123 label is a DNS-1123 subdomain.
    if not dns1035_label_problems(value):
        assert dns1123_label_problems(value) == []
    if not dns1123_label_problems(value):
        assert dns1123_subdomain_problems(value) == []
        assert "." not in value


@given(st.text(max_size=80))
def test_upper_case_is_never_a_dns_name(value: str) -> None:
    if any(char.isupper() for char in value):
        assert dns1123_subdomain_problems(value) != []


@given(dns_labels, dns_labels)
def test_prefixed_label_keys_are_valid(prefix: str, name: str) -> None:
    assert label_key_problems(f"{prefix}/{name}") == []
