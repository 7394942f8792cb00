"""``cgaps robustness RUN_DIR``: subsampling and adversarial ablation (SPEC.md section 4) into robustness.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def robustness(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory with run.json, items.parquet and saliency.parquet.")
    ],
    repeats: Annotated[int, typer.Option(help="Subsampling repeats.")] = 100,
    drop: Annotated[float, typer.Option(help="Fraction of every benchmark dropped in each repeat.")] = 0.2,
    top: Annotated[
        int, typer.Option(help="Best / worst concepts whose most aligned items the ablation deletes.")
    ] = 100,
    max_delete: Annotated[
        float, typer.Option(help="At most this fraction of the suite is deleted by the ablation.")
    ] = 0.01,
) -> None:
    """Check how stable the chi values are: seeded subsamples and adversarial item deletion."""
    from rich.console import Console
    from rich.table import Table

    from cgaps import rundir
    from cgaps.errors import CGapsError
    from cgaps.robustness.core import robustness_run

    if repeats < 2 or not 0 <= drop < 1 or top < 1 or not 0 < max_delete < 1:
        raise CGapsError(
            f"need --repeats >= 2, 0 <= --drop < 1, --top >= 1 and 0 < --max-delete < 1; "
            f"got {repeats}, {drop}, {top}, {max_delete}"
        )
    result = robustness_run(run_dir, repeats=repeats, drop=drop, top=top, max_frac=max_delete)
    sub, abl = result["subsampling"], result["ablation"]
    table = Table(title=f"{run_dir}: {rundir.ROBUSTNESS}")
    table.add_column("check")
    table.add_column("figure", justify="right")
    table.add_row(
        f"subsampling: mean std chi_model ({repeats} x {1 - drop:.0%})", f"{sub['mean_std_chi_model']:.4f}"
    )
    table.add_row("subsampling: mean std chi_bench", f"{sub['mean_std_chi_bench']:.4f}")
    for side in ("best", "worst"):
        a = abl[side]
        table.add_row(
            f"ablation {side} {a['concepts']}: median chi_model ({a['deleted_items']} items deleted)",
            f"{abl['median_before']:.4f} -> {a['median_after']:.4f} ({100 * a['change_rel']:+.1f}%)",
        )
    Console().print(table)
