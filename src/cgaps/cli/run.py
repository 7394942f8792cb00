"""``cgaps run CONFIG.yaml`` and ``cgaps demo``: the whole pipeline in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from cgaps.cli._common import config_option


def _summary(run_dir: Path, times: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run_dir} — wall time per stage")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, secs in times.items():
        table.add_row(stage, f"{secs:.1f}")
    table.add_row("total", f"{sum(times.values()):.1f}", style="bold")
    console = Console(stderr=True)
    console.print(table)
    console.print(f"report: {run_dir / 'report.html'}")


def run(
    config: Path = typer.Argument(
        ..., help="YAML config (keys: the fields of cgaps.config.RunConfig).", dir_okay=False
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run directory to write (resumed if it exists).", file_okay=False
    ),
    suite: str = config_option("suite"),
    data_dir: str = config_option("data_dir"),
    limit: int = config_option("limit"),
    model: str = config_option("model"),
    sae: str = config_option("sae"),
    device: str = config_option("device"),
    force: bool = typer.Option(False, help="Start over: delete this run's stage outputs first."),
) -> None:
    """Run every stage (items, evaluate, extract, score, report), skipping the ones already done."""
    from cgaps.config import load_yaml
    from cgaps.pipeline import run_pipeline

    cfg = load_yaml(config).replace(
        suite=suite, data_dir=data_dir, limit=limit, model=model, sae=sae, device=device
    )
    _summary(out, run_pipeline(cfg, out, force=force))


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory.", file_okay=False),
    data_dir: str = typer.Option(
        None,
        help="With the paper's benchmarks in their original layouts, run paper10 instead of the probe suite.",
    ),
    limit: int = typer.Option(
        None, help="Items per benchmark (default: all probes; 20 per benchmark of paper10)."
    ),
    force: bool = typer.Option(False, help="Start over."),
) -> None:
    """The embedded default end to end: SmolLM2-135M-Instruct, its shipped SAE, the probe suite."""
    from cgaps.config import RunConfig
    from cgaps.pipeline import run_pipeline

    if data_dir:
        cfg = RunConfig(suite="paper10", data_dir=data_dir, limit=limit or 20, max_new_tokens=128)
    else:
        cfg = RunConfig(suite="probes", limit=limit, max_new_tokens=48)
    _summary(out, run_pipeline(cfg, out, force=force))
