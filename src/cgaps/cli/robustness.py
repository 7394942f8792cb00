"""``cgaps robustness RUN_DIR [--against OTHER_RUN]``: subsampling, adversarial ablation and the
SAE swap (docs/method.md section 4) into robustness.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import RunDirArg, options_from, section_config
from cgaps.robustness.config import RobustnessConfig


@options_from(RobustnessConfig, over="run.json")
def robustness(
    run_dir: Path = RunDirArg,
    against: Path | None = typer.Option(
        None,
        "--against",
        help="A second run on the same items and scores, read through another SAE: adds the SAE-swap check.",
    ),
    *,
    options: dict[str, Any],
) -> None:
    """Check how stable the chi values are: seeded subsamples, adversarial item deletion and, with --against, a second SAE.

    Examples:

        cgaps robustness runs/p

        cgaps robustness runs/p --repeats 20 --against runs/p-other-sae
    """
    from rich.table import Table

    from cgaps import rundir
    from cgaps.console import result
    from cgaps.robustness.core import robustness_run

    # RobustnessConfig checks the values (a bad one is a CGapsError naming the option)
    opts = section_config(run_dir, "robustness", options)
    out = robustness_run(run_dir, options=opts, against=against)
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
    swap = out["sae_swap"]
    if swap is not None:
        dist = swap["distributions"]["ALL"]
        ks = dist["chi_model"]["ks"]
        table.add_row(
            f"SAE swap: KS chi_model / chi_bench ({swap['width_a']} vs {swap['width_b']} latents)",
            f"{ks:.3f} / {dist['chi_bench']['ks']:.3f}" if ks is not None else "n/a",
        )
        order = swap["missing_share_order"]["rho"]
        table.add_row(
            "SAE swap: Spearman of per-benchmark missing shares",
            f"{order:.3f}" if order is not None else "n/a",
        )
        match = swap["matching"]
        if match is not None:
            rho = match["spearman_chi_model"]["rho"]
            table.add_row(
                f"SAE swap: Spearman of matched chi_model ({match['spearman_chi_model']['pairs']} pairs)",
                f"{rho:.3f}" if rho is not None else "n/a",
            )
    result(table)
