"""``cgaps score RUN_DIR``: recompute concepts.parquet and overlap.parquet (SPEC.md section 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def score(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory with run.json, items.parquet and saliency.parquet.")
    ],
    min_support: Annotated[
        int | None, typer.Option(help="Concepts firing on fewer items are never called gaps.")
    ] = None,
    under_pct: Annotated[
        float | None, typer.Option(help="Percentile of chi_bench below which a concept is 'under'.")
    ] = None,
    over_pct: Annotated[
        float | None, typer.Option(help="Percentile of chi_bench above which a concept is 'over'.")
    ] = None,
    fdr: Annotated[
        float | None, typer.Option(help="Benjamini-Hochberg false discovery rate for gaps and strengths.")
    ] = None,
    ci_level: Annotated[
        float | None, typer.Option(help="Confidence level of the Wilson interval on chi_model.")
    ] = None,
) -> None:
    """Score concepts: benchmark coverage, model performance and gaps; knobs given here are saved into run.json."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from cgaps import rundir
    from cgaps.config import config_from_run
    from cgaps.scoring import score_run

    meta = rundir.read_run_json(run_dir)
    cfg = config_from_run(meta, run_dir).replace(
        min_support=min_support, under_pct=under_pct, over_pct=over_pct, fdr=fdr, ci_level=ci_level
    )
    concepts, _ = score_run(run_dir, cfg)
    # validated by score_run just above; the summary needs two columns only
    items = pd.read_parquet(Path(run_dir) / rundir.ITEMS, columns=["benchmark", "score"])

    table = Table(title=f"{run_dir}: {rundir.CONCEPTS}")
    for col in ("scope", "items", "accuracy", "% missing", "weak", "strong"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    for scope, rows in concepts.groupby("scope", sort=False):
        sel = items if scope == rundir.ALL_SCOPE else items[items["benchmark"] == scope]
        table.add_row(
            str(scope),
            str(len(sel)),
            f"{sel['score'].mean():.3f}",
            f"{100 * (rows['status'] == 'missing').mean():.1f}",
            str(int((rows["gap"] == "weak").sum())),
            str(int((rows["gap"] == "strong").sum())),
        )
    Console().print(table)
