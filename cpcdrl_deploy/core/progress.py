"""Progress of long work, kept apart from how it is drawn.

The library reports counters through a ``Ticker``: ``tick(task, done,
total)``, ``total`` None when the amount of work is not known ahead (greedy's
scan). The CLI draws them with rich (already installed with typer), and passes
``no_ticker`` under ``--format json`` or when stderr is not a terminal, so
scripts and logs see no bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Ticker = Callable[[str, int, "int | None"], None]


def no_ticker(task: str, done: int, total: int | None) -> None:
    """The ticker that draws nothing."""


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Ticker]:
    """A ticker that draws one rich bar per task on stderr (elapsed time and ETA), or ``no_ticker``.

    Lines the command prints on stderr meanwhile appear above the bars (rich
    redirects stderr while the bars are live).
    """
    if not enabled:
        yield no_ticker
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), redirect_stderr=True) as bars:
        tasks: dict[str, TaskID] = {}

        def tick(task: str, done: int, total: int | None) -> None:
            if task not in tasks:
                tasks[task] = bars.add_task(escape(task), total=total)  # "[...]" would be read as rich markup
            bars.update(tasks[task], completed=done, total=total)

        yield tick
