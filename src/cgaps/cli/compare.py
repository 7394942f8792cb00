"""``cgaps compare RUN_A RUN_B --out DIR``: paired per-concept differences of two models' chi_model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import options_from
from cgaps.config import RunConfig


@options_from(RunConfig, "presence", "min_support", "fdr", over="run A's run.json")
def compare(
    run_a: Path = typer.Argument(
        ..., help="Run directory of model A (scored or at least extracted).", file_okay=False
    ),
    run_b: Path = typer.Argument(
        ..., help="Run directory of model B: same items, reader and SAE.", file_okay=False
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder to write compare.parquet and report.html into.", file_okay=False
    ),
    *,
    options: dict[str, Any],
) -> None:
    """Where model B beats model A and the reverse, concept by concept (paired test, BH per scope).

    Examples:

        cgaps compare runs/model-a runs/model-b --out runs/a-vs-b
    """
    from cgaps.compare import compare_runs
    from cgaps.console import result

    table = compare_runs(run_a, run_b, out, options)
    calls = table["call"].value_counts()
    result(
        f"wrote {out / 'compare.parquet'}: B better on {int(calls.get('b_better', 0))}, "
        f"A better on {int(calls.get('a_better', 0))} concept x scope rows"
    )
