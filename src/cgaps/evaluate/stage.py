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
  already in the table).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.seams import Generator, ScoreSource

if TYPE_CHECKING:
    from cgaps.scaleout.options import RayOptions


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
    run_dir: str | Path, cfg: RunConfig, generator: Generator | None = None, *, ray: RayOptions | None = None
) -> pd.DataFrame:
    """The evaluated model answers (or resumes answering) every item; grade and store the answers.

    With ``ray``, Ray workers that each load the model answer the same chunks
    (:mod:`cgaps.scaleout`), and the resume file is written here as in one process."""
    with rundir.writing(run_dir):
        return _evaluate_run(Path(run_dir), cfg, generator, ray)


def load_generator(cfg: RunConfig, generator: Generator | None = None) -> Generator:
    """The evaluated model of ``cfg`` (loaded unless given), set up for the evaluation; also what
    each Ray worker loads."""
    from cgaps.models import HFBackend
    from cgaps.models.backends import choose, open_generator

    if generator is None and cfg.model.startswith("openai://"):  # a served model (cgaps.models.openai)
        from cgaps.models.openai import OpenAIGenerator

        info(f"evaluating through {cfg.model}")
        generator = OpenAIGenerator(cfg.model, seed=cfg.seed)
    if generator is None:  # the backend cfg.backend picks (auto: printed with its reason)
        generator = open_generator(cfg, choose(cfg))
    if isinstance(generator, HFBackend):  # prompts past its context: docs/method.md §6 counts
        generator.context_overflow, generator.prompts_truncated = cfg.context_overflow, 0
    return generator


def _evaluate_run(
    run_dir: Path, cfg: RunConfig, generator: Generator | None, ray: RayOptions | None = None
) -> pd.DataFrame:
    from cgaps.config import BACKENDS
    from cgaps.evaluate.evaluator import OwnEvaluator, check_options
    from cgaps.models.backends import used_backend
    from cgaps.models.loading import loaded_record

    items = items_to_score(run_dir)  # a bad table is reported before the model loads
    check_options(items, cfg)
    t0 = time.perf_counter()
    with ExitStack() as stack:
        source: OwnEvaluator
        partial = run_dir / rundir.RESPONSES_PARTIAL
        if ray is not None:  # the workers load the model; the driver keeps the resume file
            from cgaps.scaleout.evaluate import evaluation_pool

            pool = stack.enter_context(evaluation_pool(cfg, ray))
            # describes the workers' model and the backend they resolved; never runs here
            generator = cast("Generator", pool.generator)
        else:
            generator = load_generator(cfg, generator)
        # the resume file records the backend that generates, not "auto"
        used = getattr(generator, "backend", None)
        ecfg = cfg.replace(backend=used) if used in BACKENDS else cfg
        if getattr(generator, "gen_dtype", None):  # and the dtype it generates in (HFBackend.generate_in)
            ecfg = ecfg.replace(dtype=getattr(generator, "gen_dtype"))  # noqa: B009
        source = pool.evaluator(ecfg, partial) if ray is not None else OwnEvaluator(generator, ecfg, partial)
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
        counts={
            "scored_items": int(len(items)),
            "prompts_truncated": int(getattr(generator, "prompts_truncated", 0)),
        },
        accuracy={b: {"n": int(r["count"]), "mean": float(r["mean"])} for b, r in acc.iterrows()},
        # where it ran is recorded beside the time, never with the inputs: it changes no answer
        timings={"evaluate_s": round(time.perf_counter() - t0, 2)}
        | ({"evaluate_ray_workers": pool.workers} if ray is not None else {}),
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
