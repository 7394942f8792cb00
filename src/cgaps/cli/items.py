"""``cgaps items``: build a run directory's items table from a suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import field_help, options_from
from cgaps.config import RunConfig


@options_from(RunConfig, "data_dir", "limit", "seed", "chain_of_thought")
def items(
    suite: str = typer.Argument(..., help=field_help(RunConfig, "suite")),
    out: Path = typer.Option(
        ..., "--out", help="Run directory to write items.parquet and run.json into.", file_okay=False
    ),
    *,
    options: dict[str, Any],
) -> None:
    """Load a suite and write RUN_DIR/items.parquet (prompts, references, answer types)."""
    from cgaps.pipeline import items_run

    items_run(out, RunConfig(suite=suite, **options))
