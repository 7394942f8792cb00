"""``cgaps evaluate RUN_DIR``: the evaluated model's responses, graded into ``score``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.cli._common import RunDirArg, options_from, run_config
from cgaps.config import RunConfig
from cgaps.scaleout.options import RayOptions


@options_from(
    RunConfig,
    "model",
    "max_new_tokens",
    "batch_size",
    "generate_batch_size",
    "mc_scoring",
    "chat_template",
    "context_overflow",
    "backend",
    "device",
    "dtype",
    over="run.json",
)
@options_from(RayOptions, into="ray_opts")
def evaluate(run_dir: Path = RunDirArg, *, options: dict[str, Any], ray_opts: dict[str, Any]) -> None:
    """Answer every item (greedy generation or option log-likelihoods, docs/benchmarks.md) and grade the answers."""
    from cgaps.console import result
    from cgaps.evaluate.stage import evaluate_run
    from cgaps.scaleout import ray_runner

    items = evaluate_run(run_dir, run_config(run_dir, options), runner=ray_runner(ray_opts))
    result(f"graded {len(items)} items; mean score {items['score'].mean():.3f}")
