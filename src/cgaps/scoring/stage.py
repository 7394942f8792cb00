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
from cgaps.config import SCORING_KNOBS, RunConfig
from cgaps.errors import CGapsError
from cgaps.runtables import RunTables, load_run
from cgaps.sae import read_latent_scale
from cgaps.scoring.core import build_matrix, chi_tables, concept_table, overlap_table


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

    ``config`` overrides the config stored in run.json; the scoring knobs used are saved
    back into run.json's ``config`` so that the tables document how they were made, and
    into the schema metadata of both tables (:func:`cgaps.rundir.write_table`), which is
    what the report trusts: ``concepts.parquet`` is written last, so a kill between the
    writes leaves tables whose knobs disagree (refused by the report), never tables shown
    under another run's knobs.
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
    m = build_matrix(items, saliency, run.n_concepts, presence=cfg.presence, scale=scale)
    tables = chi_tables(m)
    concepts = concept_table(m, cfg, tables)
    overlap = overlap_table(m, tables)
    t2 = time.perf_counter()
    knobs = {k: getattr(cfg, k) for k in (*SCORING_KNOBS, "seed")}
    rundir.write_table(overlap, run_dir / rundir.OVERLAP, knobs=knobs)
    rundir.write_table(concepts, run_dir / rundir.CONCEPTS, knobs=knobs)
    all_rows = concepts[concepts["scope"] == rundir.ALL_SCOPE]
    rundir.update_run_json(
        run_dir,
        config=knobs,
        inputs={"score": rundir.stage_record(items, "score", run_dir=run_dir, config=cfg)},  # `cgaps status`
        counts={
            "concept_scale": scale_source,
            "scored_items": len(items),
            "saliency_rows": len(saliency),
            "concepts_firing": int((all_rows["support"] > 0).sum()),
            "gaps_weak": int((all_rows["gap"] == "weak").sum()),
            "gaps_strong": int((all_rows["gap"] == "strong").sum()),
        },
        timings={"score_read_s": round(t1 - t0, 3), "score_compute_s": round(t2 - t1, 3)},
    )
    return concepts, overlap
