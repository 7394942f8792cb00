"""``cgaps confirm RUN_DIR --pool POOL``: the run's calls tested again on fresh items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.cli._common import RunDirArg, options_from, run_config
from cgaps.confirm.config import ConfirmConfig
from cgaps.pools.config import PoolConfig


@options_from(ConfirmConfig, over="run.json")
@options_from(PoolConfig, into="pool_opts", over="run.json")
def confirm(run_dir: Path = RunDirArg, *, options: dict[str, Any], pool_opts: dict[str, Any]) -> None:
    """Is a gap real, or an accident of these items? Test each call again on fresh pool items.

    Writes RUN_DIR/confirmation.parquet: per call (and per random concept of matched support) the
    same score test on the fresh items alone, and whether it replicates.

    Examples:

        cgaps confirm runs/demo --pool heldout.yaml --per-concept 20
        cgaps confirm runs/demo --pool runs/other --responses answers.jsonl
    """
    from rich.table import Table

    from cgaps.confirm.core import rates
    from cgaps.confirm.stage import CONFIRMATION, confirm_run
    from cgaps.console import result

    # the run's confirm and fresh sections (run.json), then the options given here
    cfg = run_config(run_dir, {"confirm": options, "fresh": pool_opts})
    out = confirm_run(run_dir, cfg.confirm, cfg.fresh)
    table = Table(title=f"{run_dir / CONFIRMATION}: confirmed on fresh items")
    table.add_column("re-tested")
    table.add_column("calls", justify="right")
    table.add_column("tested", justify="right")
    table.add_column("replicated", justify="right")
    table.add_column("rate", justify="right")
    for name, r in rates(out).items():
        if r["calls"]:
            rate = "–" if r["rate"] is None else f"{r['rate']:.0%}"
            table.add_row(name, str(r["calls"]), str(r["tested"]), str(r["replicated"]), rate)
    result(table)
