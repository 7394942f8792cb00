"""Options shared by several subcommands, and the config they resolve to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

RunDirArg = typer.Argument(..., help="Run directory (see SPEC section 6).", file_okay=False)


def config_option(name: str, *flags: str) -> Any:
    """A command-line override of RunConfig field ``name``; its help is the field's own.

    The default None means "not given": the value stored in run.json (or the YAML) stays.
    """
    from cgaps.config import field_help

    return typer.Option(None, *flags, help=field_help()[name])


def run_config(run_dir: Path, **overrides: Any):  # noqa: ANN201 - RunConfig imported lazily
    """The config stored in the run's run.json, with command-line overrides (None = not given)."""
    from cgaps import rundir
    from cgaps.config import RunConfig, config_from_run

    path = run_dir / rundir.RUN_JSON
    base = config_from_run(rundir.read_run_json(run_dir), run_dir) if path.exists() else RunConfig()
    return base.replace(**overrides)
