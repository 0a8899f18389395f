"""Name rules Kubernetes applies to object names, label keys and values, and port names.

Each check returns a list of problems (empty when the value is valid) rather than raising, so a
validator can report every problem with one field at once, the way the API server does.
"""

from __future__ import annotations

import re

__all__ = [
    "DNS1035_LABEL_MAX_LENGTH",
    "DNS1123_LABEL_MAX_LENGTH",
    "DNS1123_SUBDOMAIN_MAX_LENGTH",
    "IANA_SVC_NAME_MAX_LENGTH",
    "LABEL_VALUE_MAX_LENGTH",
    "config_map_key_problems",
    "dns1035_label_problems",
    "dns1123_label_problems",
    "dns1123_subdomain_problems",
    "iana_svc_name_problems",
    "label_key_problems",
    "label_value_problems",
]

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
DNS1035_LABEL_MAX_LENGTH = 63
LABEL_VALUE_MAX_LENGTH = 63
QUALIFIED_NAME_MAX_LENGTH = 63
IANA_SVC_NAME_MAX_LENGTH = 15
CONFIG_MAP_KEY_MAX_LENGTH = 253

_DNS1123_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL)
_DNS1123_SUBDOMAIN_RE = re.compile(rf"{_DNS1123_LABEL}(?:\.{_DNS1123_LABEL})*")
_DNS1035_LABEL_RE = re.compile(r"[a-z](?:[-a-z0-9]*[a-z0-9])?")
# Label values and the name part of qualified names (label keys) share one alphabet.
_QUALIFIED_NAME_RE = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
_IANA_SVC_NAME_CHARS_RE = re.compile(r"[-a-z0-9]+")
_CONFIG_MAP_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")

_DNS1123_LABEL_FORMAT = (
    "must consist of lower case alphanumeric characters or '-', and must start and end with an "
    "alphanumeric character (e.g. 'my-name' or '123-abc')"
)
_DNS1123_SUBDOMAIN_FORMAT = (
    "must consist of lower case alphanumeric characters, '-' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'example.com')"
)
_DNS1035_LABEL_FORMAT = (
    "must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name' or 'abc-123')"
)
_QUALIFIED_NAME_FORMAT = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName', 'my.name' or '123-abc')"
)
_LABEL_VALUE_FORMAT = (
    "a valid label value must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character "
    "(e.g. 'MyValue', 'my_value' or '12345')"
)


def _too_long(value: str, limit: int) -> list[str]:
    if len(value) > limit:
        return [f"must be no more than {limit} characters (it has {len(value)})"]
    return []


def _pattern_problems(value: str, limit: int, pattern: re.Pattern[str], form: str) -> list[str]:
    """The shape most rules share: not empty, at most ``limit`` long, matching ``pattern``
    (``form`` says what it allows)."""
    if value == "":
        return ["must not be empty"]
    problems = _too_long(value, limit)
    if not pattern.fullmatch(value):
        problems.append(form)
    return problems


def dns1123_label_problems(value: str) -> list[str]:
    """RFC 1123 label: namespace names, Pod hostnames, container and Service port names."""
    return _pattern_problems(
        value, DNS1123_LABEL_MAX_LENGTH, _DNS1123_LABEL_RE, _DNS1123_LABEL_FORMAT
    )


def dns1123_subdomain_problems(value: str) -> list[str]:
    """RFC 1123 subdomain: the name rule for most kinds (Pods, Deployments, ConfigMaps...)."""
    return _pattern_problems(
        value, DNS1123_SUBDOMAIN_MAX_LENGTH, _DNS1123_SUBDOMAIN_RE, _DNS1123_SUBDOMAIN_FORMAT
    )


def dns1035_label_problems(value: str) -> list[str]:
    """RFC 1035 label: Service names, which must start with a letter to be DNS host names."""
    return _pattern_problems(
        value, DNS1035_LABEL_MAX_LENGTH, _DNS1035_LABEL_RE, _DNS1035_LABEL_FORMAT
    )


def label_key_problems(key: str) -> list[str]:
    """A qualified name: an optional DNS subdomain prefix and '/', then a name of 1-63 chars."""
    if key.count("/") > 1:
        return [
            "a qualified name must consist of a name with an optional DNS subdomain prefix and "
            "'/' (e.g. 'app' or 'example.com/app'); it has more than one '/'"
        ]
    prefix, slash, name = key.rpartition("/")
    problems: list[str] = []
    if slash:
        if prefix == "":
            problems.append("prefix part must not be empty")
        else:
            problems.extend(f"prefix part {p}" for p in dns1123_subdomain_problems(prefix))
    if name == "":
        problems.append("name part must not be empty")
        return problems
    if len(name) > QUALIFIED_NAME_MAX_LENGTH:
        problems.append(
            f"name part must be no more than {QUALIFIED_NAME_MAX_LENGTH} characters "
            f"(it has {len(name)})"
        )
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        problems.append(f"name part {_QUALIFIED_NAME_FORMAT}")
    return problems


def label_value_problems(value: str) -> list[str]:
    """Label values may be empty; otherwise the qualified-name alphabet, at most 63 chars."""
    if value == "":
        return []
    return _pattern_problems(value, LABEL_VALUE_MAX_LENGTH, _QUALIFIED_NAME_RE, _LABEL_VALUE_FORMAT)


def iana_svc_name_problems(value: str) -> list[str]:
    """RFC 6335 service name: container port names, which Services may target by name."""
    if value == "":
        return ["must not be empty"]
    problems = _too_long(value, IANA_SVC_NAME_MAX_LENGTH)
    if not _IANA_SVC_NAME_CHARS_RE.fullmatch(value):
        problems.append("must contain only lower case alphanumeric characters (a-z, 0-9) and '-'")
    if "--" in value:
        problems.append("must not contain consecutive hyphens")
    if not any("a" <= char <= "z" for char in value):
        # Without a letter a name could be mistaken for a port number (targetPort: "80").
        problems.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return problems


def config_map_key_problems(key: str) -> list[str]:
    """ConfigMap data keys become file names when mounted, hence the file-name alphabet."""
    problems = _pattern_problems(
        key,
        CONFIG_MAP_KEY_MAX_LENGTH,
        _CONFIG_MAP_KEY_RE,
        "must consist of alphanumeric characters, '-', '_' or '.'",
    )
    if key in (".", ".."):
        problems.append(f"must not be '{key}'")
    elif key.startswith(".."):
        problems.append("must not start with '..'")
    return problems
