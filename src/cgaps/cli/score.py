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
    from cgaps.chance import group_table, record_strengths_at_chance
    from cgaps.config import config_from_run
    from cgaps.console import info, result
    from cgaps.scoring import score_run

    meta = rundir.read_run_json(run_dir)
    cfg = config_from_run(meta, run_dir).replace(**options)
    concepts, _ = score_run(run_dir, cfg)
    # the strengths at chance level (cgaps.chance), on the saliency the scores just used; their
    # count goes into run.json for `cgaps status`
    at_chance, run = record_strengths_at_chance(run_dir, cfg, concepts)
    groups = group_table(run.items, cfg.fdr).set_index("group")
    items = run.items

    table = Table(title=f"{run_dir}: {rundir.CONCEPTS}")
    for col in ("scope", "items", "accuracy", "chance", "% missing", "gaps", "strengths", "at chance"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    for scope, rows in concepts.groupby("scope", sort=False):
        sel = items if scope == rundir.ALL_SCOPE else items[items["benchmark"] == scope]
        strong = (rows["gap"] == "strong").to_numpy()
        chance = groups["chance"].get(str(scope), float("nan"))
        table.add_row(
            str(scope),
            str(len(sel)),
            f"{sel['score'].mean():.3f}",
            "–" if pd.isna(chance) else f"{chance:.3f}",
            f"{100 * (rows['status'] == 'missing').mean():.1f}",
            str(int((rows["gap"] == "weak").sum())),
            str(int(strong.sum())),
            str(int((strong & at_chance[rows.index.to_numpy()]).sum())),
        )
    result(table)
    info(
        "gaps: the model does significantly worse where the concept fires than its benchmarks predict "
        "(gap = weak); strengths: better (strong); at chance: strengths no better than guessing on their items"
    )
