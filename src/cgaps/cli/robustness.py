"""``cgaps robustness RUN_DIR``: subsampling and adversarial ablation (docs/method.md section 4) into robustness.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.cli._common import RunDirArg, options_from
from cgaps.robustness.options import RobustnessOptions


@options_from(RobustnessOptions)
def robustness(run_dir: Path = RunDirArg, *, options: dict[str, Any]) -> None:
    """Check how stable the chi values are: seeded subsamples and adversarial item deletion."""
    from rich.table import Table

    from cgaps import rundir
    from cgaps.console import result
    from cgaps.robustness.core import robustness_run

    # RobustnessOptions checks the values (a bad one is a CGapsError naming the option)
    opts = RobustnessOptions(**options)
    out = robustness_run(run_dir, options=opts)
    sub, abl = out["subsampling"], out["ablation"]
    table = Table(title=f"{run_dir}: {rundir.ROBUSTNESS}")
    table.add_column("check")
    table.add_column("figure", justify="right")
    table.add_row(
        f"subsampling: mean std chi_model ({opts.repeats} x {1 - opts.drop:.0%})",
        f"{sub['mean_std_chi_model']:.4f}",
    )
    table.add_row("subsampling: mean std chi_bench", f"{sub['mean_std_chi_bench']:.4f}")
    for side in ("best", "worst"):
        a = abl[side]
        table.add_row(
            f"ablation {side} {a['concepts']}: median chi_model ({a['deleted_items']} items deleted)",
            f"{abl['median_before']:.4f} -> {a['median_after']:.4f} ({100 * a['change_rel']:+.1f}%)",
        )
    result(table)
