"""``cgaps items``: build a run directory's items table from a suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import field_help, options_from
from cgaps.config import RunConfig, command_fields


@options_from(RunConfig, *(f for f in command_fields("items") if f != "suite"))
def items(
    suite: str = typer.Argument(..., help=field_help(RunConfig, "suite")),
    out: Path = typer.Option(
        ..., "--out", help="Run directory to write items.parquet and run.json into.", file_okay=False
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace the items of a run that holds later stages (they are marked stale; see cgaps status).",
    ),
    *,
    options: dict[str, Any],
) -> None:
    """Load a suite and write RUN_DIR/items.parquet (prompts, references, answer types).

    Into a run that already holds responses, saliency or scores made from other items, this
    is refused unless --force; the same items again are kept as they are.

    Examples:

        cgaps items probes --out runs/p

        cgaps items paper10 --data-dir ../shared/benchmarks --limit 100 --out runs/p10

        cgaps items my_benchmark.yaml --out runs/mine
    """
    from cgaps.items.stage import items_run

    items_run(out, RunConfig(suite=suite, **options), force=force)
