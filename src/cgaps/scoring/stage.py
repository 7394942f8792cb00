"""The scoring stage on a run directory: read, compute, write (docs/method.md §3 and §6).

It needs only ``run.json`` (with ``n_concepts``), ``items.parquet`` (scored) and
``saliency.parquet``, whoever wrote them, read by the one run loader
(:func:`cgaps.runtables.load_run`, with the saliency's item ids as int32 codes into the
items: ``coded=True``) through the validating helpers of :mod:`cgaps.rundir`, so bad input
fails with the file and field named.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.config import SCORING_FIELDS, RunConfig
from cgaps.errors import CGapsError
from cgaps.runtables import RunTables, load_run
from cgaps.sae import read_latent_scale
from cgaps.scoring.core import build_matrix, chi_tables, overlap_table
from cgaps.scoring.power import run_power
from cgaps.scoring.themes import THEME_TESTS, score_with_themes


def compute_scores(
    items: pd.DataFrame, saliency: pd.DataFrame, n_concepts: int, cfg: RunConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The concepts table (every concept in every scope, called with its themes as ``cgaps score``
    calls them) and the benchmark-overlap table, in memory (no run directory)."""
    m = build_matrix(items, saliency, n_concepts, presence=cfg.presence, adjust_by=cfg.adjust_by)
    t = chi_tables(m)
    return score_with_themes(m, cfg, t)[1], overlap_table(m, t)


def concept_scale(run: RunTables, cfg: RunConfig) -> tuple[np.ndarray | None, str]:
    """m_c of docs/method.md §2: the SAE's shipped reference max when the run was extracted with
    an SAE folder that has latent statistics, else None (the suite's own max); and a description."""
    if "sae" not in run.meta:  # saliency from another tool: no SAE folder to trust
        return None, "suite max"
    found = read_latent_scale(cfg.sae, run.n_concepts)
    if found is None:
        return None, "suite max"
    scale, source = found
    return scale, f"reference max from {source}"


def score_run(run_dir: str | Path, config: RunConfig | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute and write ``concepts.parquet`` and ``overlap.parquet``; return both tables.

    ``config`` overrides the config stored in run.json; the scoring config used are saved
    back into run.json's ``config`` so that the tables document how they were made, and
    into the schema metadata of both tables (:func:`cgaps.rundir.write_table`), which is
    what the report trusts: ``concepts.parquet`` is written last, so a kill between the
    writes leaves tables whose config disagree (refused by the report), never tables shown
    under another run's config.
    Holds the run directory's writer lock (:func:`cgaps.rundir.writing`).
    """
    with rundir.writing(run_dir):
        return _score_run(Path(run_dir), config)


def _score_run(run_dir: Path, config: RunConfig | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    t0 = time.perf_counter()
    run = load_run(run_dir, coded=True)  # item ids as codes: the matrix is built from arrays
    cfg = run.config(config)
    items, saliency = run.items, run.saliency
    if rundir.stage_is_current(run_dir, "extract", items, meta=run.meta) is False:
        # e.g. `cgaps grade --responses` changed what the saliency was extracted from
        raise CGapsError(
            f"{run_dir / rundir.SALIENCY}: extracted from other item texts than items.parquet holds now; "
            "run `cgaps extract RUN_DIR` (it redoes only the changed items) before scoring"
        )
    t1 = time.perf_counter()
    scale, scale_source = concept_scale(run, cfg)
    m = build_matrix(
        items, saliency, run.n_concepts, presence=cfg.presence, scale=scale, adjust_by=cfg.adjust_by
    )
    tables = chi_tables(m)
    _, concepts, theme_tests = score_with_themes(m, cfg, tables)
    overlap = overlap_table(m, tables)
    power = run_power(m, cfg, concepts, theme_tests)
    t2 = time.perf_counter()
    scoring_config = {k: getattr(cfg, k) for k in (*SCORING_FIELDS, "seed")}
    rundir.write_table(overlap, run_dir / rundir.OVERLAP, scoring_config=scoring_config)
    rundir.write_table(theme_tests, run_dir / THEME_TESTS, scoring_config=scoring_config)
    rundir.write_table(concepts, run_dir / rundir.CONCEPTS, scoring_config=scoring_config)
    all_rows = concepts[concepts["scope"] == rundir.ALL_SCOPE]
    all_themes = theme_tests[theme_tests["scope"] == rundir.ALL_SCOPE]
    rundir.update_run_json(
        run_dir,
        config=scoring_config,
        inputs={"score": rundir.stage_record(items, "score", run_dir=run_dir, config=cfg)},  # `cgaps status`
        counts={
            "concept_scale": scale_source,
            "scored_items": len(items),
            "saliency_rows": len(saliency),
            "concepts_firing": int((all_rows["support"] > 0).sum()),
            "gaps_weak": int((all_rows["gap"] == "weak").sum()),
            "gaps_strong": int((all_rows["gap"] == "strong").sum()),
            "themes_tested": len(all_themes),
            "theme_gaps_weak": int((all_themes["gap"] == "weak").sum()),
            "theme_gaps_strong": int((all_themes["gap"] == "strong").sum()),
        },
        power=power,
        timings={"score_read_s": round(t1 - t0, 3), "score_compute_s": round(t2 - t1, 3)},
    )
    return concepts, overlap
