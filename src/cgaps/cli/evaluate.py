"""``cgaps evaluate RUN_DIR``: the evaluated model's responses, graded into ``score``."""

from __future__ import annotations

from pathlib import Path

import typer

from cgaps.cli._common import RunDirArg, run_config


def evaluate(
    run_dir: Path = RunDirArg,
    model: str = typer.Option(None, help="Evaluated model: 'embedded', a hub id, a folder or a .gguf file."),
    max_new_tokens: int = typer.Option(None, help="Greedy generation budget per item."),
    batch_size: int = typer.Option(None, help="Items per batch."),
    mc_scoring: str = typer.Option(None, help="Multiple choice: 'generate' or 'loglik'."),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:N, mps."),
) -> None:
    """Generate responses (batched, greedy, chat template) and grade them."""
    from cgaps.evaluation import evaluate_run

    cfg = run_config(run_dir, model=model, max_new_tokens=max_new_tokens, batch_size=batch_size,
                     mc_scoring=mc_scoring, device=device)
    items = evaluate_run(run_dir, cfg)
    typer.echo(f"graded {len(items)} items; mean score {items['score'].mean():.3f}")


