"""Progress for slow commands: a live bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, title: str, enabled: bool = True) -> None:
        self.title = title
        self.live = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self._rich: RichProgress | None = None
        self._task = TaskID(0)
        self._last_plain = time.monotonic()
        self._last_text = ""

    def __enter__(self) -> Progress:
        if self.live:
            self._rich = RichProgress(
                TextColumn("[bold]{task.fields[title]}[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.description}"), TimeElapsedColumn(), transient=True)
            self._rich.__enter__()
            self._task = self._rich.add_task("", total=None, title=self.title)
        return self

    def update(self, text: str, done: int | None = None, total: int | None = None) -> None:
        if self._rich is not None:
            self._rich.update(self._task, description=text, completed=done or 0, total=total)
            return
        now = time.monotonic()
        # Plain output: one line per stage, and at most one per second while counting.
        if self.enabled and text != self._last_text and (
                done is None or now - self._last_plain >= 1.0):
            print(f"{self.title}: {text}", file=sys.stderr, flush=True)
            self._last_plain = now
            self._last_text = text

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.__exit__(exc_type, exc, tb)
