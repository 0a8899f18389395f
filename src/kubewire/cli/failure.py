"""The CLI's one user-facing error, shared by every command module."""

from __future__ import annotations

from typing import Any

import click

BAD_INPUT = 2


class Failure(click.ClickException):
    """A user-facing error: `error: MESSAGE` on stderr, exit code 2, nothing changed."""

    exit_code = BAD_INPUT

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)
