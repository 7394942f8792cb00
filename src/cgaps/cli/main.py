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
  and library callers of :data:`app` get the exception object itself;
- an operating-system error (disk full, permissions, a read-only folder) exits with status 1
  in :func:`main`, as one line naming the file (every run file is written atomically, so what
  was complete is kept);
- Ctrl-C exits with status 130 and one line saying that completed work is kept.
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
from typer.core import TyperCommand, TyperGroup

from cgaps import stages

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


INTERRUPTED = 130  # the shell's status for a command stopped by SIGINT (128 + 2)


def interrupted_line() -> str:
    """The one line of a command stopped by Ctrl-C."""
    return (
        "interrupted: the work completed so far is kept (every run file is written whole or not at "
        "all); run the command again to resume"
    )


class _Group(TyperGroup):
    """The ``cgaps`` command group: click's errors as one line (see the module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_as_flags(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED) from None  # the line is said once, in main

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
        if rv == INTERRUPTED:
            # Ctrl-C in the command, or in typer's parsing or teardown around it (typer turns
            # those into exit 130 without a word): say what the interrupted command left
            error(interrupted_line())
            sys.exit(INTERRUPTED)
        # without standalone mode, click returns the exit code of `--help` or typer.Exit
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def _flags_as_flags(params: list[Any]) -> list[Any]:
    """A flag's help shows the flag, not a ``<bool>`` value it does not take."""
    for p in params:
        if getattr(p, "is_flag", False) and getattr(p, "metavar", None) is None:
            p.metavar = ""
    return params


class _Command(TyperCommand):
    """A ``cgaps`` command (:func:`_flags_as_flags`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_as_flags(super().get_params(ctx))


class _Typer(typer.Typer):
    """The commands of ``cgaps`` are :class:`_Command`s."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        from cgaps.console import result

        result(f"cgaps {version('competency-gaps')}")
        raise typer.Exit()


app = _Typer(
    name="cgaps",
    cls=_Group,
    help="Competency Gaps: which SAE concepts a benchmark misses, and which ones a model fails on.\n\n"
    "Start with `cgaps demo`, then `cgaps status RUN_DIR` and `cgaps serve RUN_DIR`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Competency Gaps: which SAE concepts a benchmark misses, and which ones a model fails on."""


# The commands, in the order `cgaps --help` lists them: the whole pipeline, then every stage of
# the graph (cgaps.stages: a stage's command is its name, in cgaps/cli/NAME.py), then the others.
# Each is (command name, module under cgaps.cli, function).
COMMANDS = [
    ("run", "run", "run"),
    ("demo", "run", "demo"),
    *((s.name, s.name, s.name) for s in stages.STAGES),
    ("grade", "grade", "grade"),
    ("fill", "fill", "fill"),
    ("status", "status", "status"),
    ("serve", "serve", "serve"),
    ("export", "export", "export"),
    ("compare", "compare", "compare"),
    ("train-sae", "train_sae", "train_sae"),
    ("schema", "schema", "schema"),
]

# Every command that writes a folder holds its writer lock (cgaps.rundir.writing) for the whole
# command: the stages and the other writers. The parameter that names the folder; the stages'
# library functions lock again inside (the lock is re-entrant), so a caller of the library is
# safe too.
LOCKED = {
    **{s.name: "run_dir" for s in stages.STAGES if s.name != "items"},
    "items": "out",
    "grade": "run_dir",
    "train-sae": "out",
    "compare": "out",  # its own folder; it refuses a folder inside a run (cgaps.rundir.places)
}


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


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error at a stage boundary: the file, what went wrong and
    what to do. Every run file is written atomically, so whatever was complete is kept."""
    import errno

    where = f"{e.filename}: " if e.filename else ""
    what = e.strerror or str(e)
    fixes = {
        errno.ENOSPC: "free some space and run the command again: completed work is kept",
        errno.EDQUOT: "free some space and run the command again: completed work is kept",
        errno.EACCES: "check the permissions of that path, or write the run elsewhere (--out)",
        errno.EPERM: "check the permissions of that path, or write the run elsewhere (--out)",
        errno.EROFS: "the file system is read-only: write the run elsewhere (--out)",
    }
    fix = fixes.get(e.errno or 0, "check that path and run the command again: completed work is kept")
    return f"{where}{what}; {fix}"


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
    except OSError as e:  # disk full, permissions, a read-only folder: one line naming the file
        error(os_error_line(e))
        sys.exit(1)
