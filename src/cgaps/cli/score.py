"""``cgaps score RUN_DIR``: recompute concepts.parquet and overlap.parquet (docs/method.md section 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.cli._common import RunDirArg, options_from
from cgaps.config import RunConfig, command_fields


@options_from(RunConfig, *command_fields("score"), over="run.json")
def score(run_dir: Path = RunDirArg, *, options: dict[str, Any]) -> None:
    """Score concepts: benchmark coverage, model performance and gaps; the config given here is saved into run.json.

    Examples:

        cgaps score runs/p

        cgaps score runs/p --presence 0.3 --fdr 0.1
    """
    import pandas as pd
    from rich.table import Table

    from cgaps import rundir
    from cgaps.config import config_from_run
    from cgaps.console import result
    from cgaps.scoring import score_run

    meta = rundir.read_run_json(run_dir)
    cfg = config_from_run(meta, run_dir).replace(**options)
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
    result(table)
