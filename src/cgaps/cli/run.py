"""``cgaps run CONFIG.yaml`` and ``cgaps demo``: the whole pipeline in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import field_help, options_from
from cgaps.config import RunConfig
from cgaps.scaleout.config import RayConfig

# `cgaps demo`: the embedded model, SAE and probe suite end to end; with --data-dir, a
# small paper10 run. Short generation budgets keep it to minutes on a laptop CPU.
# Generation batches of 128: on a CPU a decoding step reads every weight whatever the batch, so
# wide batches take fewer steps (the demo's generation 24 s against 30 s with 32); extraction in
# batches of 32 (7 s against 8 s with 16). Both are speed-only knobs; docs/scaling.md, Generation.
DEMO_PROBES: dict[str, Any] = {
    "suite": "probes",
    "max_new_tokens": 48,
    "generate_batch_size": 128,
    "batch_size": 32,
}
DEMO_PAPER10: dict[str, Any] = {"suite": "paper10", "limit": 20, "max_new_tokens": 128}


def _summary(run_dir: Path, times: dict[str, float]) -> None:
    from rich.table import Table

    from cgaps import rundir
    from cgaps.console import get_console, info

    if not times or set(times) == {"items"}:
        info(f"{run_dir}: every stage is current; nothing to do (`cgaps status {run_dir}` shows why)")
        info(f"report: {run_dir / rundir.REPORT}")
        return
    table = Table(title=f"{run_dir} — wall time per stage run")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, secs in times.items():
        table.add_row(stage, f"{secs:.1f}")
    table.add_row("total", f"{sum(times.values()):.1f}", style="bold")
    get_console().print(table)
    info(f"report: {run_dir / rundir.REPORT}")


@options_from(RunConfig, over="the YAML file")
@options_from(RayConfig, into="ray_opts")
def run(
    config: Path | None = typer.Argument(
        None,
        help="YAML config: the fields of cgaps.config.RunConfig, and a mapping per stage section "
        "(label, robustness, validate, report). Optional: the options alone can describe a run.",
        dir_okay=False,
        metavar="CONFIG",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run directory to write (resumed if it exists).", file_okay=False
    ),
    force: bool = typer.Option(False, "--force", help="Start over: delete this run's stage outputs first."),
    *,
    options: dict[str, Any],
    ray_opts: dict[str, Any],
) -> None:
    """Run every stage that is not done yet (items, evaluate, extract, score, label, report, and the optional ones `also_run` names), by the rule `cgaps status` shows.

    Every field of the config can be given as an option too (a section's as --SECTION-FIELD);
    options override the YAML file, which overrides the defaults.

    Examples:

        cgaps run configs/gemma2-2b-it.yaml --data-dir benchmarks/ --out runs/gemma

        cgaps run --suite gsm8k,math --limit 100 --model embedded --out runs/small

        cgaps run cfg.yaml --out runs/a --presence 0.3 --label-enrich-p 0.01 --also-run validate
    """
    from cgaps.config import load_yaml
    from cgaps.pipeline import run_pipeline
    from cgaps.scaleout import ray_runner

    base = load_yaml(config) if config is not None else RunConfig()
    cfg = base.replace(**options)
    _summary(out, run_pipeline(cfg, out, force=force, runner=ray_runner(ray_opts)))


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory.", file_okay=False),
    data_dir: str | None = typer.Option(
        None,
        help="With the paper's benchmarks in their original layouts, run paper10 instead of the probe suite.",
    ),
    limit: int | None = typer.Option(
        None,
        help=f"{field_help(RunConfig, 'limit')} Default: all probes; {DEMO_PAPER10['limit']} per benchmark of paper10.",
    ),
    force: bool = typer.Option(False, "--force", help="Start over."),
    backend: str | None = typer.Option(None, help=f"{field_help(RunConfig, 'backend')} Default: auto."),
) -> None:
    """The embedded default end to end: SmolLM2-135M-Instruct, its shipped SAE, the probe suite.

    On a finished run it does nothing (every stage is current); see `cgaps status`.

    Examples:

        cgaps demo --out runs/demo

        cgaps demo --data-dir ../shared/benchmarks --limit 20 --out runs/paper10
    """
    from cgaps.pipeline import run_pipeline

    if data_dir:
        cfg = RunConfig(**{**DEMO_PAPER10, "data_dir": data_dir}).replace(limit=limit, backend=backend)
    else:
        cfg = RunConfig(**DEMO_PROBES).replace(limit=limit, backend=backend)
    _summary(out, run_pipeline(cfg, out, force=force))
