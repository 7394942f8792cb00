"""Evaluate stage: any score source's responses and scores, written into items.parquet.

:func:`record_scores` is the one writer of the ``response`` and ``score`` columns: it hands the
run's items to a :class:`cgaps.seams.ScoreSource`, checks that every item got a response and a
score in [0, 1], and writes the table back. The commands pick the source:

* ``cgaps evaluate`` (:func:`evaluate_run`): :class:`~cgaps.evaluate.evaluator.OwnEvaluator`,
  the evaluated model answering, resumable; it also writes ``option_logliks.parquet`` (every
  option's log-likelihood of the items answered by log-likelihood) and records the settings that
  shape the answers (``EVAL_SETTINGS``) with its inputs, so a pipeline run with other settings
  evaluates again;
* ``cgaps grade`` (:func:`grade_run`): :class:`~cgaps.evaluate.responses.ResponsesFile`
  (``--responses``) or :class:`~cgaps.evaluate.responses.RecordedResponses` (the responses
  already in the table);
* ``cgaps import`` (:mod:`cgaps.importers`): :class:`~cgaps.importers.ImportedScores`, another
  tool's responses and scores.

Where the evaluated model answers is a :class:`cgaps.seams.ChunkRunner`'s business: this
process (:class:`cgaps.runner.InProcess`, the default) or Ray workers (``--ray``, which the
command line passes in as :class:`cgaps.scaleout.RayRunner`). The runner loads the model with
:func:`load_generator`; the driver sees it through the :class:`~cgaps.seams.Generator`
protocol only (on Ray, a :class:`GeneratorDescription` of the workers' model), plans the same
chunks and writes the resume file either way.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.runner import InProcess
from cgaps.seams import ChunkRunner, Generator, Messages, Progress, ScoreSource


def items_to_score(run_dir: str | Path) -> pd.DataFrame:
    """The run's items as a score source sees them: validated, except that ``response`` (when
    present) keeps a missing value as None, so "no response" stays apart from "responded with nothing"."""
    path = Path(run_dir) / rundir.ITEMS
    raw = rundir.read_table(path, "create it with `cgaps items SUITE --out RUN_DIR`")
    items = rundir.validate_items(raw, path)
    if "response" in raw.columns:  # validate_items turned a missing response into ""
        items["response"] = items["response"].where(raw["response"].notna().to_numpy(), None)
    return items


def record_scores(
    run_dir: str | Path, source: ScoreSource, items: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Score the run's items with ``source``; write ``response`` and ``score`` into items.parquet.

    ``items`` is :func:`items_to_score` of the run (read here when not given).
    """
    path = Path(run_dir) / rundir.ITEMS
    if items is None:
        items = items_to_score(run_dir)
    out = source.score(items)
    missing_cols = [c for c in ("item_id", "response", "score") if c not in out.columns]
    if missing_cols:
        raise CGapsError(
            f"{source.name}: gave no {', '.join(missing_cols)} column; a score source gives all three"
        )
    if out["item_id"].duplicated().any():
        raise CGapsError(
            f"{source.name}: item {out.loc[out['item_id'].duplicated(), 'item_id'].iloc[0]!r} scored twice"
        )
    score = pd.to_numeric(out["score"], errors="coerce")
    bad = ~score.between(0.0, 1.0)  # NaN is outside too
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise CGapsError(
            f"{source.name}: item {out['item_id'].iloc[row]!r} has score {out['score'].tolist()[row]!r}; "
            "a score is a number in [0, 1] (1 = correct)"
        )
    by_id = out.set_index("item_id")
    unscored = ~items["item_id"].isin(by_id.index)
    if unscored.any():
        raise CGapsError(
            f"{source.name}: no score for {int(unscored.sum())} item(s), e.g. "
            f"{items.loc[unscored, 'item_id'].iloc[0]!r}; a score source scores every item of the run"
        )
    items["response"] = items["item_id"].map(by_id["response"])
    items["score"] = items["item_id"].map(by_id["score"])
    rundir.validate_items(items, path, scored=True)
    rundir.write_table(items, path)
    return items


def evaluate_run(
    run_dir: str | Path,
    cfg: RunConfig,
    generator: Generator | None = None,
    *,
    runner: ChunkRunner | None = None,
) -> pd.DataFrame:
    """The evaluated model answers (or resumes answering) every item; grade and store the answers.

    ``generator``: a model already loaded, answering in this process. Otherwise ``runner``
    (default: :class:`~cgaps.runner.InProcess`) loads ``cfg.model`` where it computes, and the
    resume file is written here as in one process."""
    if generator is not None and runner is not None:
        raise ValueError("evaluate_run: give a loaded generator (it answers here) or a runner, not both")
    with rundir.writing(run_dir):
        return _evaluate_run(Path(run_dir), cfg, generator, runner or InProcess())


def load_generator(cfg: RunConfig, generator: Generator | None = None) -> Generator:
    """The evaluated model of ``cfg`` (loaded unless given), set up for the evaluation: what a
    :class:`~cgaps.seams.ChunkRunner` loads (in this process, or once on each Ray worker)."""
    from cgaps.models.backends import choose, open_generator

    if generator is None and cfg.model.startswith("openai://"):  # a served model (cgaps.models.openai)
        from cgaps.models.openai import OpenAIGenerator

        info(f"evaluating through {cfg.model}")
        generator = OpenAIGenerator(cfg.model, seed=cfg.seed)
    if generator is None:  # the backend cfg.backend picks (auto: printed with its reason)
        generator = open_generator(cfg, choose(cfg))
    generator.context_overflow = cfg.context_overflow  # prompts past its context: docs/method.md §6
    return generator


@dataclass
class GeneratorDescription:
    """The evaluated model as the driver sees it when a runner's workers hold it: a
    :class:`~cgaps.seams.Generator` that says what it is (name, backend, dtype, what was loaded)
    and answers nothing. The truncated prompts are counted per chunk by the workers."""

    name: str
    backend: str
    generation_dtype: str | None
    loaded: dict[str, Any] | None
    context_overflow: str = "truncate"
    prompts_truncated: int = 0

    def generate(
        self,
        conversations: Sequence[Messages | str],
        max_new_tokens: int | Sequence[int],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[str]:
        raise CGapsError("the workers hold the evaluated model; this driver-side copy only describes it")

    def loglikelihood(
        self,
        requests: Sequence[tuple[Messages | str, str]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> list[float]:
        raise CGapsError("the workers hold the evaluated model; this driver-side copy only describes it")


def describe_generator(generator: Generator) -> Generator:
    """What a worker tells the driver about the generator it loaded (:class:`GeneratorDescription`)."""
    return GeneratorDescription(
        generator.name,
        generator.backend,
        generator.generation_dtype,
        generator.loaded,
        generator.context_overflow,
    )


def _evaluate_run(
    run_dir: Path, cfg: RunConfig, generator: Generator | None, runner: ChunkRunner
) -> pd.DataFrame:
    from cgaps.config import BACKENDS
    from cgaps.evaluate.evaluator import OwnEvaluator, check_options
    from cgaps.models.backends import used_backend
    from cgaps.models.loading import loaded_record

    items = items_to_score(run_dir)  # a bad table is reported before the model loads
    check_options(items, cfg)
    t0 = time.perf_counter()
    load = functools.partial(load_generator, generator=generator)
    with runner.start("evaluation", cfg, load, describe_generator) as chunks:
        # the model here, or on a runner's workers what each of them loaded (which must agree)
        kinds = {
            (g.name, g.backend, g.generation_dtype, str((g.loaded or {}).get("dtype"))) for g in chunks.models
        }
        if len(kinds) > 1:  # nodes that resolve `auto` differently would answer differently
            raise CGapsError(
                f"the {chunks.name} workers loaded the model differently ({sorted(kinds, key=str)}); "
                "give --backend and --dtype explicitly, or use nodes of one kind"
            )
        generator = chunks.model
        # the resume file records the backend that generates, not "auto", and the dtype it
        # generates in (HFBackend.generate_in)
        ecfg = cfg.replace(backend=generator.backend) if generator.backend in BACKENDS else cfg
        if generator.generation_dtype:
            ecfg = ecfg.replace(dtype=generator.generation_dtype)
        source = OwnEvaluator(chunks, ecfg, run_dir / rundir.RESPONSES_PARTIAL)
        items = record_scores(run_dir, source, items)
    options_path = run_dir / rundir.OPTION_LOGLIKS
    if source.options is not None and len(source.options):
        rundir.write_table(source.options, options_path)
    else:  # all generated: an older table would describe other answers
        options_path.unlink(missing_ok=True)
    source.discard_partial()  # only now: items.parquet holds every response
    acc = items.groupby("benchmark")["score"].agg(["count", "mean"])
    rundir.update_run_json(
        run_dir,
        inputs={
            "evaluate": rundir.stage_record(
                items,
                "evaluate",
                config=cfg,
                # the backend that generated (models.backends.backend_change compares it)
                backend_used=used_backend(generator),
            )
        },
        config=cfg.to_dict(),
        model=loaded_record(generator, "evaluated"),  # what was really loaded, not only its name
        counts={"scored_items": int(len(items)), "prompts_truncated": source.prompts_truncated},
        accuracy={b: {"n": int(r["count"]), "mean": float(r["mean"])} for b, r in acc.iterrows()},
        # where it ran is recorded beside the time, never with the inputs: it changes no answer
        timings={"evaluate_s": round(time.perf_counter() - t0, 2)}
        | ({f"evaluate_{chunks.name}_workers": chunks.workers} if chunks.workers else {}),
    )
    return items


def grade_run(run_dir: str | Path, responses: str | Path | None = None) -> pd.DataFrame:
    """Grade the responses of a JSONL file (``responses``), or those already in items.parquet."""
    from cgaps.evaluate.responses import RecordedResponses, ResponsesFile

    with rundir.writing(run_dir):
        source: ScoreSource = (
            ResponsesFile(responses) if responses is not None else RecordedResponses(run_dir)
        )
        items = record_scores(run_dir, source)
        if responses is not None:  # the option log-likelihoods belonged to the replaced responses
            (Path(run_dir) / rundir.OPTION_LOGLIKS).unlink(missing_ok=True)
    means = items.groupby("benchmark", sort=False)["score"].mean()
    rundir.update_run_json(
        run_dir,
        # the responses now answer these items (the pipeline does not evaluate them again)
        inputs={"evaluate": rundir.stage_record(items, "evaluate")},
        counts={"graded": {str(k): int(v) for k, v in items.groupby("benchmark", sort=False).size().items()}},
    )
    info("mean score: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    return items
