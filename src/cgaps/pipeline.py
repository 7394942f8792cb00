"""``cgaps run`` and ``cgaps demo``: every pipeline stage of the graph that is not done, in order.

The stages and what they read and write are declared once in :mod:`cgaps.stages`; whether a
stage is done is decided by the same rule ``cgaps status`` shows (:mod:`cgaps.runstate`: the
digests of what it read and the config it ran with, recorded in ``run.json``). So a rerun of a
finished run does nothing, a copied run is as current as its original, changing one score
reruns scoring and what reads its tables, and an interrupted stage resumes from its own
working files (evaluation's responses, extraction's shards). The config of the run is written
into ``run.json`` first, so every stage follows it, and its sections (``label``, ``report``,
``robustness``, ``validate``) reach their stages.

This module sits above every stage: it maps each stage name to the code that runs it
(:data:`RUNNERS`, checked against the graph), loads the models once and hands the reader the
evaluation loaded to the stages that need it. The whole pipeline holds the run directory's
writer lock. ``force`` first deletes every file the stages write (:data:`cgaps.stages.RUN_FILES`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaps import rundir, stages
from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.items.stage import items_run
from cgaps.runstate import RunState

if TYPE_CHECKING:
    from cgaps.seams import ChunkRunner, ResidualReader

__all__ = ["RUNNERS", "items_run", "run_pipeline"]


@dataclass
class _Run:
    """What the stages of one pipeline run share: the config, the models loaded so far, and the
    chunk runner of evaluation and extraction (None: this process, with the models loaded here)."""

    run_dir: Path
    cfg: RunConfig
    runner: ChunkRunner | None
    backend: Any = None  # the model loaded last (evaluated model or reader), reused where it fits
    backend_name: str | None = None
    extracted: bool = False
    loaded: dict[str, Any] = field(default_factory=dict)

    def model(self, name: str) -> Any:
        from cgaps.models import load_backend

        if self.backend is None or self.backend_name != name:
            info(f"loading model {name}")
            self.backend = load_backend(name, self.cfg.device, self.cfg.dtype)
            self.backend_name = name
        return self.backend

    def reader_in_memory(self) -> ResidualReader | None:
        """The reader, when the pipeline has it loaded already (the labels stage otherwise loads it)."""
        return self.backend if self.backend_name == self.cfg.reader_model else None


def _items(run: _Run) -> None:
    if not (run.run_dir / rundir.ITEMS).exists():
        items_run(run.run_dir, run.cfg)


def _evaluate(run: _Run) -> None:
    from cgaps.evaluate.stage import evaluate_run

    if run.runner is not None:  # the runner loads the model where it computes, not this process
        evaluate_run(run.run_dir, run.cfg, runner=run.runner)
        return
    from cgaps.models.backends import choose, open_generator

    # the generation backend cfg.backend picks; transformers reuses this model
    evaluate_run(run.run_dir, run.cfg, open_generator(run.cfg, choose(run.cfg), run.model(run.cfg.model)))


def _extract(run: _Run) -> None:
    from cgaps.extract.stage import extract_run

    if run.runner is not None:
        extract_run(run.run_dir, run.cfg, runner=run.runner)
    else:
        extract_run(run.run_dir, run.cfg, run.model(run.cfg.reader_model))


def _score(run: _Run) -> None:
    from cgaps.chance import record_strengths_at_chance
    from cgaps.scoring import score_run

    score_run(run.run_dir, run.cfg)
    record_strengths_at_chance(run.run_dir, run.cfg)  # for `cgaps status`, as `cgaps score` does


def _label(run: _Run) -> None:
    from cgaps.labels.stage import label_run

    label_run(run.run_dir, run.cfg.label, backend=run.reader_in_memory())


def _robustness(run: _Run) -> None:
    from cgaps.robustness.core import robustness_run

    robustness_run(run.run_dir, run.cfg, run.cfg.robustness)


def _validate(run: _Run) -> None:
    from cgaps.validate.core import validate_run

    validate_run(run.run_dir, run.cfg.validate)


def _confirm(run: _Run) -> None:
    from cgaps.confirm.stage import confirm_run

    confirm_run(run.run_dir, run.cfg.confirm, run.cfg.fresh)


def _report(run: _Run) -> None:
    from cgaps.report.build import build_report

    build_report(run.run_dir, options=run.cfg.report)


# How each stage of the graph runs inside the pipeline (its command runs the same library code).
RUNNERS: dict[str, Callable[[_Run], None]] = {
    "items": _items,
    "evaluate": _evaluate,
    "extract": _extract,
    "score": _score,
    "label": _label,
    "robustness": _robustness,
    "validate": _validate,
    "confirm": _confirm,
    "report": _report,
}
if set(RUNNERS) != set(stages.BY_NAME):  # the graph is the list; this only says how to run each
    raise AssertionError(f"pipeline runners {sorted(RUNNERS)} != stages {sorted(stages.BY_NAME)}")


def clear_run(run_dir: Path) -> None:
    """Delete every file the stages write (:data:`cgaps.stages.RUN_FILES`); other files stay."""
    rundir.clear_run(run_dir)


def _check_same_run(run_dir: Path, cfg: RunConfig) -> None:
    """A run directory holds one suite and one evaluated model: another is refused, not mixed in."""
    if not (run_dir / rundir.RUN_JSON).exists():
        return
    stored = rundir.read_run_json(run_dir).get("config", {})
    for key in ("suite", "limit", "seed", "model"):
        if key in stored and stored[key] != getattr(cfg, key):
            raise CGapsError(
                f"{run_dir}: holds a run with {key}={stored[key]!r}, not {getattr(cfg, key)!r}; "
                "choose another --out or pass --force to start over"
            )


def run_pipeline(
    cfg: RunConfig, run_dir: str | Path, *, force: bool = False, runner: ChunkRunner | None = None
) -> dict[str, float]:
    """Run every pipeline stage that is not done (and the optional ones ``cfg.also_run`` names);
    return the wall time per stage run (seconds; a stage that was current is not listed).

    Without ``runner`` every stage runs in this process and a model is loaded once for the stages
    that share it. With one (``--ray``: :class:`cgaps.scaleout.RayRunner`, which the command line
    builds), evaluation and extraction run where it computes; it is entered for the whole
    pipeline, so a Ray cluster it starts serves both stages."""
    run_dir = Path(run_dir)
    with rundir.writing(run_dir):
        if runner is None:
            return _run_stages(_Run(run_dir, cfg, None), force)
        with runner:
            return _run_stages(_Run(run_dir, cfg, runner), force)


def _run_stages(run: _Run, force: bool) -> dict[str, float]:
    run_dir, cfg = run.run_dir, run.cfg
    if force:
        clear_run(run_dir)
    _check_same_run(run_dir, cfg)
    times: dict[str, float] = {}
    t = time.perf_counter()
    _items(run)
    stored = rundir.read_run_json(run_dir).get("config", {})
    # keep what extraction resolved (the SAE's own layer) when the config leaves it open
    resolved = {"layer": stored.get("layer")} if cfg.layer is None and stored.get("layer") is not None else {}
    rundir.update_run_json(run_dir, config={**cfg.to_dict(), **resolved})
    times["items"] = time.perf_counter() - t

    wanted = [*stages.PIPELINE, *cfg.optional_stages]
    for s in stages.STAGES:
        if s.name == "items" or s.name not in wanted:
            continue
        state = RunState(run_dir).state(s.name)  # read afresh: the stage before may have changed it
        if state.state == "done":
            info(f"{s.name}: done, skipped ({state.reason})")
            continue
        if state.state == "stale":
            info(f"{s.name}: {state.reason}; running it again")
        t = time.perf_counter()
        RUNNERS[s.name](run)
        times[s.name] = time.perf_counter() - t
    rundir.update_run_json(run_dir, timings={f"pipeline_{k}_s": round(v, 2) for k, v in times.items()})
    return times
