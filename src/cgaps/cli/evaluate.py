"""``cgaps evaluate RUN_DIR``: the evaluated model's responses, graded into ``score``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cgaps.cli._common import RunDirArg, options_from, run_config
from cgaps.config import RunConfig, command_fields
from cgaps.scaleout.config import RayConfig


@options_from(RunConfig, *command_fields("evaluate"), over="run.json")
@options_from(RayConfig, into="ray_opts")
def evaluate(run_dir: Path = RunDirArg, *, options: dict[str, Any], ray_opts: dict[str, Any]) -> None:
    """Answer every item (greedy generation or option log-likelihoods, docs/benchmarks.md) and grade the answers.

    Examples:

        cgaps evaluate runs/p

        cgaps evaluate runs/p --model openai://127.0.0.1:8080/v1/my-model --mc-scoring generate

        cgaps evaluate runs/p --ray --ray-workers 4
    """
    from cgaps.console import result
    from cgaps.evaluate.stage import evaluate_run
    from cgaps.scaleout import ray_runner

    items = evaluate_run(run_dir, run_config(run_dir, options), runner=ray_runner(ray_opts))
    result(f"graded {len(items)} items; mean score {items['score'].mean():.3f}")
