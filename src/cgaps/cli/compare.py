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

    Prints one line per scope (benchmarks, then ALL) with the counts the page and the explorer's
    Compare view show: Δ = B − A; "B better" / "A better" by the paired test, and against the
    benchmarks' mean Δ.

    Examples:

        cgaps compare runs/model-a runs/model-b --out runs/a-vs-b
    """
    import pandas as pd

    from cgaps import rundir
    from cgaps.compare import COMPARE, compare_runs, summary, summary_line
    from cgaps.console import info, result

    table = compare_runs(run_a, run_b, out, options)
    # validated by compare_runs just above; the counts need three columns
    items = [
        pd.read_parquet(r / rundir.ITEMS, columns=["item_id", "benchmark", "score"]) for r in (run_a, run_b)
    ]
    for row in summary(table, *items):
        result(summary_line(row))
    info(f"wrote {out / COMPARE} and {out / 'report.html'}")
