"""``cgaps fill RUN_DIR --benchmark NAME --pool POOL``: items that cover what a benchmark misses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import RunDirArg, options_from
from cgaps.fill.config import FillConfig
from cgaps.pools.config import PoolConfig


@options_from(FillConfig)
@options_from(PoolConfig, into="pool_opts")
def fill(
    run_dir: Path = RunDirArg,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for the selection (default RUN_DIR/fill/BENCHMARK, where the report and explorer find it).",
        file_okay=False,
    ),
    *,
    options: dict[str, Any],
    pool_opts: dict[str, Any],
) -> None:
    """Choose pool items that cover the concepts a benchmark misses or under-represents.

    Writes the choice as a benchmark spec file (selection.yaml, each item with the concepts it
    covers), a coverage table and fill.json; --verify extracts the augmented benchmark again and
    measures it against a random and a by-group selection of the same budget.

    Examples:

        cgaps fill runs/paper10 --benchmark gsm8k --pool runs/paper10 --verify
        cgaps fill runs/demo --benchmark probes --pool paper10 --data-dir ../shared/benchmarks --pool-limit 50
    """
    from rich.table import Table

    from cgaps.console import result
    from cgaps.fill.stage import default_out, fill_run

    opts = FillConfig(**options)
    if out is not None:  # the default, RUN_DIR/fill/BENCHMARK, is this run's own
        from cgaps import rundir

        rundir.check_output(out, "--out", owner=run_dir)
    summary = fill_run(run_dir, opts, PoolConfig(**pool_opts), out)
    table = Table(
        title=f"{opts.benchmark}: {summary['selected']} of {summary['pool_items']} pool items chosen"
    )
    table.add_column("selection")
    table.add_column("missing share", justify="right")
    table.add_column("under share", justify="right")
    before = summary.get("verify", {}).get("before", summary["before"])
    table.add_row("before", f"{before['missing']:.1%}", f"{before['under']:.1%}")
    for arm, rec in summary["arms"].items():
        fig = rec.get("measured", rec["predicted"])
        kind = "measured" if "measured" in rec else "predicted"
        table.add_row(f"+ {arm} ({kind})", f"{fig['missing']:.1%}", f"{fig['under']:.1%}")
    result(table)
    result(f"wrote {out or default_out(run_dir, opts.benchmark)}")
