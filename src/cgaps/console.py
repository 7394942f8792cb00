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
import re
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


# A line longer than this is cut (a 10 MB benchmark name in an error must not hang the terminal).
MAX_LINE = 2000
# C0 controls but tab and newline (carriage return too: it rewrites a terminal line), DEL, C1.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _control_picture(m: re.Match[str]) -> str:
    code = ord(m.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode control pictures: NUL -> ␀, ESC -> ␛
    return "\u2421" if code == 0x7F else "\ufffd"


def visible_controls(text: str) -> str:
    """``text`` with its control characters (NUL, ESC, DEL, C1; not tab or newline) replaced by
    visible symbols: benchmark text never drives a terminal (ANSI escapes) nor reaches an HTML
    page as raw control bytes. Every line this module prints goes through it; so does the report."""
    return _CONTROLS.sub(_control_picture, text)


def shorten(text: str, limit: int = MAX_LINE) -> str:
    """``text`` as it may be shown (a terminal line, a name in the explorer): control characters
    made visible (:func:`visible_controls`) and cut after ``limit`` characters, saying how many
    more there were, so a 10 MB name never reaches a screen whole."""
    text = visible_controls(text)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit:,} more characters)"
    return text


def _line(message: str) -> str:
    return shorten(message, MAX_LINE)


def info(message: str) -> None:
    """A status line for the user (stderr, so stdout stays machine-readable).

    ``[yellow]...[/yellow]``-style markup is allowed; the line is never wrapped.
    """
    get_console().print(_line(message), soft_wrap=True, highlight=False)


def error(message: str) -> None:
    """A one-line error (``error: ...``) on stderr; the message is printed verbatim (control
    characters made visible, cut after :data:`MAX_LINE` characters)."""
    get_console().print(
        f"error: {_line(message)}", style="red", markup=False, highlight=False, soft_wrap=True
    )


def result(renderable: Any) -> None:
    """What a command computed (a rich table, or a line of text) on stdout."""
    if isinstance(renderable, str):
        _stdout_console().print(visible_controls(renderable), markup=False, highlight=False, soft_wrap=True)
    else:
        _stdout_console().print(renderable)


# Seconds between the one-line progress updates printed when stderr is not a terminal.
PROGRESS_EVERY_S = 10.0


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows progress on stderr.

    On a terminal, a rich bar. Elsewhere (CI logs, ``nohup``, a pipe) a bar cannot redraw, so a
    plain line (done / total, rate, ETA) is printed every ``CGAPS_PROGRESS_EVERY`` seconds
    (default :data:`PROGRESS_EVERY_S`) while the work runs, and one when it ends: never minutes
    of silence. ``CGAPS_NO_PROGRESS=1`` turns both off.
    """
    if os.environ.get("CGAPS_NO_PROGRESS") == "1":
        yield _ignore
        return
    if not get_console().is_terminal:
        with _progress_lines(description, total, unit) as advance:
            yield advance
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=get_console(),
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


def _ignore(n: int = 1) -> None:
    """``advance`` when progress is off."""


def progress_line(description: str, done: int, total: int | None, unit: str, elapsed: float) -> str:
    """One progress update: ``extracting: 120/384 items (30%), 4.1 items/s, 1m05s left, 29s elapsed``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [f"{description}: {done}/{total} {unit}" if total else f"{description}: {done} {unit}"]
    if total:
        parts[0] += f" ({100 * done / total:.0f}%)"
    parts.append(f"{rate:.3g} {unit}/s")
    if total and rate > 0 and done < total:
        parts.append(f"{_duration((total - done) / rate)} left")
    parts.append(f"{_duration(elapsed)} elapsed")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@contextlib.contextmanager
def _progress_lines(description: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
    """The non-terminal progress of :func:`progress_bar`: a ticker thread prints a line every
    few seconds (even while one long batch runs), and a last line when the work ends."""
    import threading
    import time

    try:
        every = float(os.environ.get("CGAPS_PROGRESS_EVERY", PROGRESS_EVERY_S))
    except ValueError:
        every = PROGRESS_EVERY_S
    every = every if every > 0 else PROGRESS_EVERY_S
    start = time.monotonic()
    done = [0]
    stop = threading.Event()

    def line() -> None:
        info_plain(progress_line(description, done[0], total, unit, time.monotonic() - start))

    def tick() -> None:
        while not stop.wait(every):
            line()

    ticker = threading.Thread(target=tick, name="cgaps-progress", daemon=True)
    ticker.start()

    def advance(n: int = 1) -> None:
        done[0] += n

    try:
        yield advance
    finally:
        stop.set()
        ticker.join()
        if done[0]:
            line()


def info_plain(message: str) -> None:
    """A status line printed verbatim (no markup: benchmark text may hold brackets)."""
    get_console().print(_line(message), markup=False, highlight=False, soft_wrap=True)


class ConsoleHandler(logging.Handler):
    """Prints log records on the stderr console: INFO as plain status lines, WARNING and up named."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = _line(self.format(record))
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
    Also quiets the libraries underneath (:func:`quiet_third_party`).
    """
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.setLevel(level)
    quiet_third_party()


# progress bars of the libraries underneath: each reads its variable when it is imported
_THIRD_PARTY_PROGRESS = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")


def quiet_third_party() -> None:
    """Keep the libraries underneath (torch, transformers, huggingface_hub, datasets) out of the
    command's output; called by the CLI (:func:`setup_logging`), never at import.

    - Their ``FutureWarning`` and ``DeprecationWarning`` (e.g. transformers deprecating
      ``past_key_values`` inside a forward call) address the code that calls them, not the
      person running ``cgaps``, who can do nothing about them: always ignored. cgaps's own are kept.
    - With ``CGAPS_NO_PROGRESS=1`` their progress bars ("Loading weights", downloads, dataset
      maps) are turned off too, through the variables they read at import
      (:data:`_THIRD_PARTY_PROGRESS`, ``TRANSFORMERS_VERBOSITY=error``) and, for those already
      imported, their own switches; a variable the user set is left as it is.
    """
    import sys
    import warnings

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(?!cgaps\b)")
    if os.environ.get("CGAPS_NO_PROGRESS") != "1":
        return
    for name in _THIRD_PARTY_PROGRESS:
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
