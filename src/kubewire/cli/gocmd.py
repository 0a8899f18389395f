"""`kubewire go ...`: Go runtime tools that need no lab (traces, schedtrace, advice).

Each subcommand lives in its own module and is added to the group here.
"""

from __future__ import annotations

import click


@click.group(name="go")
def go() -> None:
    """Go scheduler and net poller: read traces and schedtrace output offline."""


# Subcommands, one module each.
from kubewire.cli.go_schedtrace import maxprocs, schedtrace  # noqa: E402
from kubewire.cli.go_trace import trace  # noqa: E402

go.add_command(trace)
go.add_command(schedtrace)
go.add_command(maxprocs)
