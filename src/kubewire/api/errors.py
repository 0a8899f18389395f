"""Errors and warnings about manifests, each pointing at a file, a line and a field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "ApiError",
    "KindError",
    "ManifestError",
    "ManifestErrors",
    "ManifestWarning",
    "UnknownResourceTypeError",
    "format_location",
    "show_value",
]


def show_value(value: object, limit: int = 60) -> str:
    """A value as the user wrote it, JSON-spelled and shortened, for "got ..." in messages."""
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_location(source: str, line: int | None, field: str | None, message: str) -> str:
    """``web.yaml:12: spec.replicas: message``, dropping the parts that are unknown."""
    where = source if line is None else f"{source}:{line}"
    if field:
        return f"{where}: {field}: {message}"
    return f"{where}: {message}"


class ApiError(Exception):
    """Base of every error raised by kubewire.api."""


class ManifestError(ApiError):
    """One problem in one manifest: where it is and what is wrong."""

    def __init__(self, source: str, line: int | None, field: str | None, message: str) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.message = message
        super().__init__(format_location(source, line, field, message))

    def __str__(self) -> str:
        return format_location(self.source, self.line, self.field, self.message)

    def __repr__(self) -> str:
        return (
            f"ManifestError(source={self.source!r}, line={self.line!r}, field={self.field!r}, "
            f"message={self.message!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ManifestError):
            return NotImplemented
        return (self.source, self.line, self.field, self.message) == (
            other.source,
            other.line,
            other.field,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.source, self.line, self.field, self.message))


class ManifestErrors(ApiError):
    """Every problem found in the input, so the user can fix them all in one pass."""

    def __init__(self, errors: Iterable[ManifestError]) -> None:
        self.errors: tuple[ManifestError, ...] = tuple(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)

    def __iter__(self) -> Iterator[ManifestError]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)


@dataclass(frozen=True, slots=True)
class ManifestWarning:
    """Something kubewire accepts but the user probably did not mean."""

    source: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        return format_location(self.source, self.line, self.field, self.message)


class KindError(ApiError):
    """A kind/apiVersion pair kubewire does not serve; ``field`` is "kind" or "apiVersion"."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


class UnknownResourceTypeError(ApiError):
    """A resource type name on the command line (``kubewire get foo``) that means nothing."""
