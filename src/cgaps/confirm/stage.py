"""``cgaps confirm``: draw fresh pool items for the run's calls, score them, test the calls again.

Steps, each through the stage that owns it, in the working run directory ``RUN_DIR/confirm/``
(resumable: a rerun continues where it stopped):

1. the run's calls (:mod:`cgaps.confirm.core`) and where each is present on the pool's prompts
   (:func:`cgaps.pools.coverage.prompt_coverage`; never an item of the run);
2. the drawn items written as a run directory's ``items.parquet``;
3. their scores: the own evaluator with the run's model settings (``--model`` to serve it, e.g.
   ``openai://``), or ``--responses`` graded (:mod:`cgaps.evaluate.stage`);
4. their saliency with the run's extraction settings, responses included as the run's span says
   (:func:`cgaps.extract.stage.extract_run`);
5. the test, written to ``RUN_DIR/confirmation.parquet`` (:data:`CONFIRMATION_COLUMNS`), with
   the scoring config, the digest of the ``concepts.parquet`` it tested and the summary (replication
   per family) in its schema metadata.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.config import SCORING_FIELDS, RunConfig
from cgaps.confirm import core
from cgaps.confirm.config import ConfirmConfig
from cgaps.console import info
from cgaps.errors import CGapsError, did_you_mean
from cgaps.pools.config import PoolConfig
from cgaps.pools.coverage import (
    Covered,
    Reader,
    empty_saliency,
    exclude_known,
    load_pool,
    presence_matrix,
    prompt_coverage,
    wanted_signature,
)
from cgaps.runtables import RunTables, load_run
from cgaps.scoring.core import SuiteMatrix, build_matrix, concept_max

CONFIRMATION = rundir.CONFIRMATION
CONFIRM_DIR = rundir.CONFIRM_DIR  # RUN_DIR/confirm: the fresh items' run directory
RESPONSES_COPY = "responses.jsonl"  # the drawn items' lines of --responses, graded there
CONFIRMATION_COLUMNS = rundir.columns(CONFIRMATION)  # cgaps.rundir.schemas


def run_scale(run: RunTables, cfg: RunConfig) -> np.ndarray:
    """m_c exactly as the scoring stage used it for the run's calls."""
    from cgaps.scoring.stage import concept_scale

    scale, _ = concept_scale(run, cfg)
    if scale is not None:
        return np.asarray(scale, dtype=np.float64)
    sal = run.saliency
    return concept_max(sal["concept"].to_numpy(), sal["value"].to_numpy(), run.n_concepts)


def current_themes(run_dir: Path) -> pd.DataFrame | None:
    """``themes.parquet`` when it was made from the current ``concepts.parquet`` (the same scoring
    config in both tables' metadata), else None."""
    from cgaps.labels.themes import THEMES

    path = run_dir / THEMES
    if not path.is_file():
        return None
    made = {k: v for k, v in (rundir.read_table_config(path) or {}).items() if k != "theme_cut"}
    if made != (rundir.read_table_config(run_dir / rundir.CONCEPTS) or {}):
        info(f"[yellow]{THEMES} was made before the last `cgaps score`; its themes are not re-tested")
        return None
    df = rundir.read_table(path, "rerun `cgaps label RUN_DIR`")
    df["gap"] = df["gap"].fillna("").astype(str)
    return df


def _labels(run: RunTables) -> dict[int, str]:
    if run.labels is None:
        return {}
    return {int(c): str(v) for c, v in zip(run.labels["concept"], run.labels["label"], strict=True)}


def confirm_run(run_dir: str | Path, opts: ConfirmConfig, pool_opts: PoolConfig) -> pd.DataFrame:
    """Test the run's calls again on fresh pool items; write and return ``confirmation.parquet``.

    Holds the run directory's writer lock (it writes ``confirmation.parquet`` there)."""
    run_dir = Path(run_dir)
    if pool_opts.pool is None and pool_opts.generator is None:
        raise CGapsError("confirm needs fresh items: give --pool (and/or --generator)")
    run = load_run(run_dir, results=True)
    with rundir.writing(run_dir):
        return _confirm(run_dir, run, opts, pool_opts)


def _confirm(run_dir: Path, run: RunTables, opts: ConfirmConfig, pool_opts: PoolConfig) -> pd.DataFrame:
    t0 = time.perf_counter()
    # the run's reader stays the reader whatever model answers the fresh items (--model)
    cfg = run.config()
    cfg = cfg.replace(reader=cfg.reader_model)
    assert run.concepts is not None  # load_run(results=True)
    scopes = list(dict.fromkeys(run.concepts["scope"]))
    if opts.scope not in scopes:
        raise CGapsError(
            f"--scope {opts.scope!r} is not a scope of {run_dir}.{did_you_mean(opts.scope, scopes)} "
            f"Scopes: {', '.join(scopes)}"
        )
    table = run.concepts[run.concepts["scope"] == opts.scope].sort_values("concept")
    gap = table["gap"].to_numpy(object)
    support = table["support"].to_numpy(np.int64)
    called = np.flatnonzero(np.isin(gap, core.CALLS))
    if not len(called):
        info(f"[yellow]{run_dir}: no gap or strength is called in {opts.scope}; nothing but themes to test")
    chi, expected = table["chi_model"].to_numpy(np.float64), table["expected"].to_numpy(np.float64)
    ctrl, matched, ctrl_dir = core.matched_controls(
        support, chi, expected, gap, called, opts.controls, cfg.min_support, opts.seed
    )
    themes = current_themes(run_dir) if opts.themes else None
    theme_rows = pd.DataFrame()
    if themes is not None:
        theme_rows = themes[(themes["scope"] == opts.scope) & themes["gap"].isin(core.CALLS)].reset_index(
            drop=True
        )
    members = [np.asarray(json.loads(m), dtype=np.int64) for m in theme_rows.get("members", [])]

    # where each re-tested thing is present on the pool's prompts
    reader = Reader(cfg)
    want = wanted_signature(run_dir)
    work = run_dir / CONFIRM_DIR
    scale = run_scale(run, cfg)
    pool = _pool(run, pool_opts, opts, reader, want, work, called, scale)
    responses = None
    if opts.responses is not None:
        from cgaps.evaluate.responses import read_responses

        # lines for the run's own items may be there too (one file for both); any other id is a typo
        responses = read_responses(opts.responses, set(pool.items["item_id"]) | set(run.items["item_id"]))
        has = pool.items["item_id"].isin(set(responses)).to_numpy()
        info(
            f"--responses: {int(has.sum())} of {len(pool.items)} pool items have a response; only those are drawn"
        )
        pool = Covered(pool.items[has].reset_index(drop=True), pool.saliency, pool.where)
    if not len(pool.items):
        raise CGapsError("no fresh items: the pool holds only items of the run (or none with a response)")
    from cgaps.labels.themes import theme_matrix

    shat = presence_matrix(pool.items, pool.saliency[pool.saliency["item_id"].isin(set(pool.items["item_id"]))],
                           run.n_concepts, cfg.presence, scale)  # fmt: skip
    concept_cols = np.concatenate([called, ctrl]).astype(np.int64)
    drawn_c = core.draw_items(shat[:, concept_cols].tocsc(), opts.per_concept, opts.seed, concept_cols)
    drawn_t = core.draw_items(theme_matrix(shat, members).tocsc(), opts.per_concept, opts.seed + 1,
                              -1 - np.arange(len(members)))  # fmt: skip
    rows = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *drawn_c, *drawn_t]))
    if not len(rows):
        raise CGapsError(
            f"none of the {len(called)} calls is present on any of the {len(pool.items)} pool items; "
            "give a larger or closer pool"
        )
    fresh_items = pool.items.iloc[rows].reset_index(drop=True)
    info(
        f"{len(fresh_items)} fresh items for {len(called)} calls, {len(ctrl)} controls and {len(members)} themes"
    )
    fresh = _score_and_extract(work, fresh_items, cfg, opts, reader, responses)

    m = build_matrix(fresh.items, fresh.saliency, run.n_concepts, presence=cfg.presence, scale=scale)
    from cgaps.confirm.core import column_matrix, retest

    labels = _labels(run)
    parts = []
    run_q = table["q_value"].to_numpy(np.float64)
    for role, cols, direction, draws, match in (
        ("called", called, gap[called], drawn_c[: len(called)], np.full(len(called), -1)),
        ("control", ctrl, ctrl_dir, drawn_c[len(called) :], matched),
    ):
        if not len(cols):
            continue
        res = retest(column_matrix(m, cols), direction, cfg)
        parts.append(
            pd.DataFrame(
                {
                    "kind": "concept",
                    "id": cols.astype(np.int32),
                    "role": role,
                    "matched_to": np.asarray(match, dtype=np.int32),
                    "label": [labels.get(int(c), "") for c in cols],
                    "call": np.asarray(direction, dtype=object),
                    "support_run": support[cols],
                    "chi_model_run": chi[cols],
                    "expected_run": expected[cols],
                    "q_run": run_q[cols],
                    "drawn": np.array([len(d) for d in draws], dtype=np.int64),
                }
            ).join(res)
        )
    if members:
        tm = SuiteMatrix(theme_matrix(m.shat_matrix(), members), m.scores, m.bench, m.benchmarks, m.item_ids,
                         np.ones(len(members)))  # fmt: skip
        direction = theme_rows["gap"].to_numpy(object)
        res = retest(tm, direction, cfg)
        parts.append(
            pd.DataFrame(
                {
                    "kind": "theme",
                    "id": theme_rows["theme"].to_numpy(np.int32),
                    "role": "called",
                    "matched_to": np.full(len(members), -1, dtype=np.int32),
                    "label": theme_rows["label"].fillna("").astype(str).to_numpy(),
                    "call": direction,
                    "support_run": theme_rows["support"].to_numpy(np.int64),
                    "chi_model_run": theme_rows["chi_model"].to_numpy(np.float64),
                    "expected_run": theme_rows["expected"].to_numpy(np.float64),
                    "q_run": theme_rows["q_value"].to_numpy(np.float64),
                    "drawn": np.array([len(d) for d in drawn_t], dtype=np.int64),
                }
            ).join(res)
        )
    out = pd.concat(parts, ignore_index=True) if parts else _empty()
    out = out[list(CONFIRMATION_COLUMNS)]  # the schema's order (cgaps.rundir.schemas)
    summary = {
        "scope": opts.scope,
        "pool": pool_opts.pool,
        "fresh_items": len(fresh.items),
        "per_concept": opts.per_concept,
        "model": opts.model or cfg.model,
        "responses": opts.responses,
        "rates": core.rates(out),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    scoring_config = {
        **{k: getattr(cfg, k) for k in (*SCORING_FIELDS, "seed")},
        "concepts_digest": rundir.file_digest(run_dir / rundir.CONCEPTS),
        "confirm": summary,
    }
    rundir.write_table(out, run_dir / CONFIRMATION, scoring_config=scoring_config)
    rundir.record_completion(run_dir, "confirm", cfg.replace(confirm=opts, fresh=pool_opts), run.items)
    return out


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in CONFIRMATION_COLUMNS})


def _pool(
    run: RunTables,
    pool_opts: PoolConfig,
    opts: ConfirmConfig,
    reader: Reader,
    want: dict[str, Any] | None,
    work: Path,
    called: np.ndarray,
    scale: np.ndarray,
) -> Covered:
    """The pool's items (never the run's) with their prompt-span saliency, generated drafts included."""
    parts: list[Covered] = []
    if pool_opts.pool is not None:
        items, source = load_pool(
            pool_opts.pool, data_dir=pool_opts.data_dir, limit=pool_opts.pool_limit, seed=opts.seed
        )
        items, excluded = exclude_known(items, run.items)
        if excluded:
            info(f"--pool: {excluded} item(s) of the run left out (same id, or same prompt)")
        if len(items):
            parts.append(prompt_coverage(items, work / "pool", reader, want=want, source=source, what="pool"))
    if pool_opts.generator is not None:
        from cgaps.pools.generated import generate_pool

        gen, _ = generate_pool(
            run.path,
            called,
            pool_opts,
            work / "generated",
            reader,
            run.config(),
            scale,
            _labels(run),
            seed=opts.seed,
        )
        gen_items, _ = exclude_known(gen.items, run.items)
        parts.append(Covered(gen_items, gen.saliency, gen.where))
    if not parts:
        return Covered(pd.DataFrame(columns=["item_id"]), empty_saliency(), work)
    return Covered(
        pd.concat([p.items for p in parts], ignore_index=True),
        pd.concat([p.saliency for p in parts], ignore_index=True),
        work,
    )


def _score_and_extract(
    work: Path,
    items: pd.DataFrame,
    cfg: RunConfig,
    opts: ConfirmConfig,
    reader: Reader,
    responses: dict[str, str] | None,
) -> Covered:
    """The fresh items' scores and saliency, through the evaluate (or grade) and extract stages in
    ``work``; a rerun reuses what is still current."""
    from cgaps.evaluate.stage import evaluate_run, grade_run
    from cgaps.extract.stage import extract_run
    from cgaps.pools.coverage import POOL_COLUMNS

    ecfg = cfg.replace(model=opts.model) if opts.model else cfg
    items = rundir.validate_items(items[[c for c in POOL_COLUMNS if c in items.columns]], "fresh items")
    work.mkdir(parents=True, exist_ok=True)
    with rundir.writing(work):
        held = None
        if (work / rundir.ITEMS).is_file():
            try:
                held = rundir.read_items(work)
            except CGapsError:
                held = None
        same = held is not None and rundir.items_digest(held, "evaluate") == rundir.items_digest(
            items, "evaluate"
        )
        if not same:
            rundir.write_table(items, work / rundir.ITEMS)
            for name in (rundir.SALIENCY,):
                (work / name).unlink(missing_ok=True)
            held = items
        rundir.update_run_json(work, config=ecfg.to_dict())
    assert held is not None
    scored = "score" in held.columns and held["score"].notna().all()
    if responses is not None:
        wanted = {i: responses[i] for i in items["item_id"]}
        lines = "".join(
            json.dumps({"item_id": i, "response": r}, ensure_ascii=False) + "\n" for i, r in wanted.items()
        )
        path = work / RESPONSES_COPY
        fresh_file = not path.is_file() or path.read_text(encoding="utf-8") != lines
        if fresh_file:
            rundir.write_text(lines, path)
        if fresh_file or not scored:
            grade_run(work, path)
    elif not (scored and rundir.stage_is_current(work, "evaluate", held)):
        evaluate_run(work, ecfg)
    scored_items = rundir.read_items(work, scored=True)
    if not ((work / rundir.SALIENCY).is_file() and rundir.stage_is_current(work, "extract", scored_items)):
        backend, sae = reader.get()
        extract_run(work, ecfg, backend, sae)  # ecfg: the run's reader, whoever answered
    width = rundir.n_concepts(rundir.read_run_json(work), work)
    sal = rundir.read_saliency(work, pd.Index(scored_items["item_id"]), width)
    return Covered(scored_items, sal, work)
