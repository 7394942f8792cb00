"""Entry point of ``cgaps``.

Subcommand modules import only typer, the standard library and the import-light
:mod:`cgaps.config` at module level so that ``cgaps --help`` answers instantly; torch,
transformers and pandas load inside commands.

Errors reach the user as one line on stderr (:func:`cgaps.console.error`), never as a traceback:

- usage errors (unknown option or command, a bad value, a missing option, a run directory
  that is a file) exit with status 2. Typer (>= 0.26) raises the exceptions of the click it
  vendors as ``typer._click``; :class:`_Group` catches them where click would print its
  three-line usage block, so ``CliRunner`` tests see the same output as the terminal;
- a :class:`~cgaps.errors.CGapsError` (bad input files, bad config values) exits with
  status 2 in :func:`main`. Commands let it propagate out of the click group so that tests
  and library callers of :data:`app` get the exception object itself.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

# A usage line longer than this is left out of the error; `--help` shows it.
MAX_USAGE = 100


def usage_error_line(e: ClickException) -> str:
    """One line for a click usage error: the message, and the usage when it is short."""
    message = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    if ctx is None:
        return message
    usage = " ".join(ctx.get_usage().split()).removeprefix("Usage: ")
    hint = f"see `{ctx.command_path} --help`"
    return f"{message} (usage: {usage}; {hint})" if len(usage) <= MAX_USAGE else f"{message} ({hint})"


class _Group(TyperGroup):
    """The ``cgaps`` command group: click's errors as one line (see the module docstring)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        from cgaps.console import error, result, setup_logging

        setup_logging()
        try:
            # not standalone: click raises its errors instead of printing them in its own format
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:  # `cgaps` alone: the help (typer's rich help prints itself)
            text = e.ctx.get_help()
            if text:
                result(text)
            sys.exit(e.exit_code)
        except UsageError as e:
            error(usage_error_line(e))
            sys.exit(e.exit_code)
        except ClickException as e:
            error(" ".join(e.format_message().split()))
            sys.exit(e.exit_code)
        except typer.Abort:
            error("aborted")
            sys.exit(1)
        # without standalone mode, click returns the exit code of `--help` or typer.Exit
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    name="cgaps",
    cls=_Group,
    help="Competency Gaps: which SAE concepts a benchmark misses, and which ones a model fails on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (command name, module under cgaps.cli, function): the order is the pipeline's.
COMMANDS = [
    ("run", "run", "run"),
    ("demo", "run", "demo"),
    ("items", "items", "items"),
    ("evaluate", "evaluate", "evaluate"),
    ("grade", "grade", "grade"),
    ("extract", "extract", "extract"),
    ("score", "score", "score"),
    ("label", "label", "label"),
    ("robustness", "robustness", "robustness"),
    ("validate", "validate", "validate"),
    ("report", "report", "report"),
    ("serve", "serve", "serve"),
    ("train-sae", "train_sae", "train_sae"),
    ("compare", "compare", "compare"),
    ("fill", "fill", "fill"),
    ("confirm", "confirm", "confirm"),
    ("status", "status", "status"),
]

# Commands that write a folder but whose library function does not take its writer lock
# (cgaps.rundir.writing) itself: the parameter naming that folder. The pipeline's stages lock
# inside their library functions; these are locked here, around the whole command.
LOCKED = {"report": "run_dir", "robustness": "run_dir", "validate": "run_dir", "train-sae": "out"}


def _locked(func: Callable[..., Any], param: str) -> Callable[..., Any]:
    """``func`` holding the writer lock of the folder its argument ``param`` names, so a second
    process writing the same folder gets a one-line error naming the holder's pid.

    ``report --out`` outside the run directory writes nothing into it: no lock (the run may be
    read-only)."""

    @functools.wraps(func)  # keeps the signature typer reads the options from
    def command(**kwargs: Any) -> Any:
        from cgaps import rundir

        folder = Path(kwargs[param])
        out = kwargs.get("out") if param == "run_dir" else None
        if out is not None and Path(out).resolve().parent != folder.resolve():
            return func(**kwargs)
        created = not folder.exists()
        try:
            with rundir.writing(folder):
                return func(**kwargs)
        except BaseException:
            # a command that failed before writing anything leaves no empty folder behind
            if created and folder.is_dir() and [p.name for p in folder.iterdir()] == [rundir.LOCK]:
                (folder / rundir.LOCK).unlink()
                folder.rmdir()
            raise

    return command


for _name, _module, _func in COMMANDS:
    _command = getattr(importlib.import_module(f"cgaps.cli.{_module}"), _func)
    app.command(_name)(_locked(_command, LOCKED[_name]) if _name in LOCKED else _command)

# `cgaps import FORMAT ...`: one sub-command per format (lm-eval, inspect, table)
app.add_typer(importlib.import_module("cgaps.cli.import_").app, name="import")


def main() -> None:
    """The ``cgaps`` console script."""
    import os

    from cgaps.console import error
    from cgaps.errors import CGapsError

    # OpenMP threads that spin while waiting collapse throughput 5-10x when another process
    # shares the cores (measured: 16x32-token generation 53 s spinning vs 8 s passive on 2
    # busy cores); passive waiting costs nothing on an idle machine. Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    try:
        app()
    except CGapsError as e:
        error(str(e))
        sys.exit(2)
