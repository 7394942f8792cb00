"""Rich progress bars for long stages, created lazily (no console at import time)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator


def _console():  # rich is imported lazily
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a bar on stderr (plain, line-free output when not a terminal)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    disable = os.environ.get("CGAPS_NO_PROGRESS") == "1"
    console = _console()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


def info(message: str) -> None:
    """A status line for the user (stderr, so stdout stays machine-readable)."""
    _console().print(message)
