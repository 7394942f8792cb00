"""``cgaps evaluate RUN_DIR``: the evaluated model's responses, graded into ``score``."""

from __future__ import annotations

from pathlib import Path

import typer

from cgaps.cli._common import RunDirArg, config_option, run_config


def evaluate(
    run_dir: Path = RunDirArg,
    model: str = config_option("model"),
    max_new_tokens: int = config_option("max_new_tokens"),
    batch_size: int = config_option("batch_size"),
    mc_scoring: str = config_option("mc_scoring"),
    device: str = config_option("device"),
) -> None:
    """Generate responses (batched, greedy, chat template) and grade them."""
    from cgaps.evaluate.stage import evaluate_run

    cfg = run_config(
        run_dir,
        model=model,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        mc_scoring=mc_scoring,
        device=device,
    )
    items = evaluate_run(run_dir, cfg)
    typer.echo(f"graded {len(items)} items; mean score {items['score'].mean():.3f}")
