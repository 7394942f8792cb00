"""``cgaps items``: build a run directory's items table from a suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import field_help, options_from
from cgaps.config import RunConfig

# The RunConfig fields that decide the items (with `suite`); `cgaps items` records exactly these.
ITEM_FIELDS = ("data_dir", "limit", "seed", "chain_of_thought")


@options_from(RunConfig, *ITEM_FIELDS)
def items(
    suite: str = typer.Argument(..., help=field_help(RunConfig, "suite")),
    out: Path = typer.Option(
        ..., "--out", help="Run directory to write items.parquet and run.json into.", file_okay=False
    ),
    *,
    options: dict[str, Any],
) -> None:
    """Load a suite and write RUN_DIR/items.parquet (prompts, references, answer types)."""
    from cgaps import rundir
    from cgaps.console import info
    from cgaps.items import load_suite

    cfg = RunConfig(suite=suite, **options)
    info(f"loading {suite} ...")
    df = load_suite(
        cfg.suite,
        data_dir=cfg.data_dir,
        limit=cfg.limit,
        seed=cfg.seed,
        chain_of_thought=cfg.chain_of_thought,
    )
    rundir.write_table(df, out / rundir.ITEMS)
    counts = {str(k): int(v) for k, v in df.groupby("benchmark", sort=False).size().items()}
    rundir.update_run_json(
        out,
        config={name: getattr(cfg, name) for name in ("suite", *ITEM_FIELDS)},
        counts={"items": counts},
    )
    info(
        f"wrote {len(df)} items ({', '.join(f'{k} {v}' for k, v in counts.items())}) to {out / rundir.ITEMS}"
    )
