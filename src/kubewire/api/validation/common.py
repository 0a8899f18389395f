"""The per-manifest :class:`Checker` and the field checks every kind shares.

Every helper reports a problem through the checker and returns None, so a validator can carry
on and report every problem in a manifest at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.api.errors import ManifestError, ManifestWarning, show_value
from kubewire.api.kinds import KindInfo
from kubewire.api.loader import Manifest
from kubewire.api.names import label_key_problems, label_value_problems
from kubewire.api.objects import child_path

PROTOCOLS = ("TCP", "UDP", "SCTP")
PORT_NUMBER = "a port number (1-65535)"

NameRule = Callable[[str], list[str]]


class Checker:
    """Collects the problems of one manifest; every helper reports and returns None on error."""

    def __init__(
        self,
        manifest: Manifest,
        info: KindInfo,
        cluster: ClusterSpec,
        errors: list[ManifestError],
        warnings: list[ManifestWarning],
    ) -> None:
        self.manifest = manifest
        self.obj = manifest.obj
        self.info = info
        self.cluster = cluster
        self.errors = errors
        self.warnings = warnings

    def error(self, path: str, message: str) -> None:
        self.errors.append(self.manifest.error(path or None, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(self.manifest.warning(path or None, message))

    def _present(self, value: Any, path: str, required: str, expected: type, noun: str) -> bool:
        """Whether ``value`` is there and an ``expected``; absent values are an error only
        when ``required`` (the text says what belongs there)."""
        if value is None:
            if required:
                self.error(path, f"required field is missing; {required}")
            return False
        if not isinstance(value, expected):
            self.error(path, f"must be {noun}, got {show_value(value)}")
            return False
        return True

    def mapping(self, value: Any, path: str, *, required: str = "") -> Mapping[str, Any] | None:
        return value if self._present(value, path, required, Mapping, "a mapping") else None

    def sequence(self, value: Any, path: str, *, required: str = "") -> list[Any] | None:
        return value if self._present(value, path, required, list, "a list") else None

    def string(self, value: Any, path: str, *, required: str = "") -> str | None:
        # "" counts as absent, so `name: ""` is reported as a missing name.
        value = None if value == "" else value
        return value if self._present(value, path, required, str, "a string") else None

    def integer(self, value: Any, path: str, low: int, high: int | None, what: str) -> int | None:
        """An int in [low, high]; ``what`` describes the range, e.g. "a port number (1-65535)"."""
        in_range = is_int(value) and value >= low and (high is None or value <= high)
        if not in_range:
            self.error(path, f"must be {what}, got {show_value(value)}")
            return None
        return int(value)

    def port(self, value: Any, path: str, what: str = PORT_NUMBER) -> int | None:
        return self.integer(value, path, 1, 65535, what)

    def boolean(self, value: Any, path: str) -> bool | None:
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(path, f"must be true or false, got {show_value(value)}")
            return None
        return value

    def choice(self, value: Any, path: str, allowed: Iterable[str]) -> str | None:
        if value is None:
            return None
        allowed = tuple(allowed)
        if value not in allowed:
            supported = ", ".join(f'"{a}"' for a in allowed)
            self.error(
                path, f"unsupported value {show_value(value)}; supported values: {supported}"
            )
            return None
        return str(value)

    def names(self, value: str, path: str, rule: NameRule, what: str) -> bool:
        problems = rule(value)
        for problem in problems:
            self.error(path, f"{what} {show_value(value)}: {problem}")
        return not problems

    def unique_name(
        self, name: str | None, owner: str, rule: NameRule, what: str, seen: dict[str, str]
    ) -> None:
        """Check ``owner``'s ``.name``, which must differ from its siblings' (``seen`` maps
        each valid name to its first owner's path)."""
        path = f"{owner}.name"
        if name is None or not self.names(name, path, rule, what):
            return
        if name in seen:
            self.error(path, f'duplicate {what} "{name}" (also {seen[name]})')
        seen.setdefault(name, owner)

    def known_fields(self, value: Mapping[str, Any], path: str, known: tuple[str, ...]) -> None:
        for key in value:
            if key not in known:
                self.error(
                    child_path(path, str(key)),
                    f'unknown field "{key}"; expected one of: {", ".join(known)}',
                )


def is_int(value: Any) -> bool:
    # bool is an int subclass, but `replicas: true` is not a number.
    return isinstance(value, int) and not isinstance(value, bool)


def check_labels(c: Checker, value: Any, path: str, what: str = "label") -> dict[str, str]:
    """Check a label-style map (labels, selectors, nodeSelector); returns the valid entries."""
    labels = c.mapping(value, path)
    valid: dict[str, str] = {}
    if labels is None:
        return valid
    for key, label_value in labels.items():
        key_path = child_path(path, str(key))
        key_ok = c.names(str(key), key_path, label_key_problems, f"{what} key")
        if not isinstance(label_value, str):
            hint = (
                'write "" for an empty value'
                if label_value is None
                else f'quote it: "{show_value(label_value)}"'
            )
            c.error(
                key_path,
                f"{what} values must be strings, got {show_value(label_value)}; {hint}",
            )
            continue
        value_ok = c.names(label_value, key_path, label_value_problems, f"{what} value")
        if key_ok and value_ok:
            valid[str(key)] = label_value
    return valid


def check_ip(c: Checker, value: Any, path: str) -> ipaddress.IPv4Address | None:
    text = c.string(value, path)
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        c.error(path, f"must be an IP address, got {show_value(value)}")
        return None
    if not isinstance(address, ipaddress.IPv4Address):
        c.error(path, f"{text}: IPv6 is not supported yet; use an IPv4 address")
        return None
    return address
