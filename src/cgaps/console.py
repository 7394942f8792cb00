"""The one output rule: progress, status and errors on stderr; a command's result on stdout.

- :func:`info`, :func:`error`, :func:`progress_bar` and the records of the ``cgaps`` loggers
  (once :func:`setup_logging` ran) all go through ONE rich console on stderr, so a
  user who redirects stdout still sees what is happening, and nothing interleaves.
- :func:`result` prints what a command computed (the score and robustness tables, the
  one-line outcome of ``evaluate`` / ``extract``) on stdout, so it can be piped or saved.

Both consoles are created on first use (no output objects at import time) and resolve
``sys.stdout`` / ``sys.stderr`` when they print, so redirections made later (tests,
``contextlib.redirect_stderr``) are honoured. Plain messages are printed without rich markup
or highlighting and never wrapped: a line stays one line in a log file.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

LOGGER = "cgaps"  # the parent of every module's logging.getLogger(__name__)


@functools.cache
def get_console() -> Console:
    """The stderr console of progress and status (rich is imported on first use)."""
    from rich.console import Console

    return Console(stderr=True)


@functools.cache
def _stdout_console() -> Console:
    from rich.console import Console

    return Console()


def info(message: str) -> None:
    """A status line for the user (stderr, so stdout stays machine-readable).

    ``[yellow]...[/yellow]``-style markup is allowed; the line is never wrapped.
    """
    get_console().print(message, soft_wrap=True, highlight=False)


def error(message: str) -> None:
    """A one-line error (``error: ...``) on stderr; the message is printed verbatim."""
    get_console().print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)


def result(renderable: Any) -> None:
    """What a command computed (a rich table, or a line of text) on stdout."""
    if isinstance(renderable, str):
        _stdout_console().print(renderable, markup=False, highlight=False, soft_wrap=True)
    else:
        _stdout_console().print(renderable)


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
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=get_console(),
        disable=disable,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


class ConsoleHandler(logging.Handler):
    """Prints log records on the stderr console: INFO as plain status lines, WARNING and up named."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            style = None
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
                style = "yellow" if record.levelno == logging.WARNING else "red"
            get_console().print(message, style=style, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # a broken stream must not take the command down (logging's own rule)
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Show the ``cgaps`` loggers' records (INFO and up) on the stderr console; idempotent.

    Called by the CLI, never at import: a library user keeps their own logging setup.
    Records still propagate to the root logger, so pytest's ``caplog`` and a user's
    handlers see them too (the root has no handler in a plain ``cgaps`` process).
    """
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.setLevel(level)
