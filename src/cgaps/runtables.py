"""The one run loader: a run directory's tables, validated, as one object.

Every stage after extraction starts the same way: ``run.json`` (with ``n_concepts``), the
scored items and the saliency, each through the validating readers of :mod:`cgaps.rundir`,
so bad input fails with the file, the field and the fix named. The scoring and robustness
stages need only these. The report also needs what the scoring stage wrote and shows the
optional files when they are there; ``load_run(run_dir, results=True)`` reads those too:

* required: ``concepts.parquet`` and, with two or more benchmarks, ``overlap.parquet``; a
  missing one is an error naming ``cgaps score``;
* optional: ``labels.parquet``, ``contexts.parquet`` (both written by ``cgaps extract``) and
  ``robustness.json`` (``cgaps robustness``); absent is None, present but damaged is an error
  saying which command rewrites it.

The config is not resolved here: the report reads the knobs it shows from the scoring
tables' metadata (``run.json`` for older tables) and renders a run written by another tool,
while the stages that compute call
:meth:`RunTables.config`, which validates the stored config (docs/method.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig, config_from_run
from cgaps.errors import CGapsError

_SCORE_FIX = "run `cgaps score RUN_DIR` to write it"
_RESCORE = "rerun `cgaps score RUN_DIR`"
# concepts.parquet columns read as float64 whatever the writer used (NaN for anything unreadable)
_CONCEPT_FLOATS = (
    "chi_bench",
    "chi_bench_raw",
    "chi_model",
    "expected",
    "n_eff",
    "ci_low",
    "ci_high",
    "q_value",
)


@dataclass
class RunTables:
    """The validated tables of a run directory; the ``results=True`` ones are None otherwise."""

    path: Path
    meta: dict[str, Any]
    n_concepts: int
    items: pd.DataFrame
    saliency: pd.DataFrame
    concepts: pd.DataFrame | None = None
    overlap: pd.DataFrame | None = None  # None with a single benchmark and no file
    labels: pd.DataFrame | None = None
    contexts: pd.DataFrame | None = None
    robustness: dict[str, Any] | None = None

    @property
    def benchmarks(self) -> list[str]:
        """Benchmark names in order of first appearance in the items (the suite's order)."""
        return list(dict.fromkeys(self.items["benchmark"]))

    def config(self, override: RunConfig | None = None) -> RunConfig:
        """``override`` when given, else the config stored in run.json (validated)."""
        return override if override is not None else config_from_run(self.meta, self.path)


def _check_columns(df: pd.DataFrame, path: Path, columns: tuple[str, ...], fix: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CGapsError(f"{path}: missing column(s) {', '.join(missing)}; {fix}")
    return df


def _read_concepts(run_dir: Path, benchmarks: list[str]) -> pd.DataFrame:
    path = run_dir / rundir.CONCEPTS
    concepts = _check_columns(rundir.read_table(path, _SCORE_FIX), path, rundir.CONCEPT_COLUMNS, _RESCORE)
    concepts = concepts.copy()
    concepts["scope"] = concepts["scope"].astype(str)
    concepts["gap"] = concepts["gap"].fillna("").astype(str)
    concepts["status"] = concepts["status"].astype(str)
    for col in _CONCEPT_FLOATS:
        concepts[col] = pd.to_numeric(concepts[col], errors="coerce").astype("float64")
    scopes = set(concepts["scope"])
    absent = [s for s in [rundir.ALL_SCOPE, *benchmarks] if s not in scopes]
    if absent:
        raise CGapsError(
            f"{path}: no rows for scope(s) {', '.join(map(repr, absent))}; the table is older than "
            f"{rundir.ITEMS} — {_RESCORE}"
        )
    return concepts


def _optional_table(run_dir: Path, name: str, columns: tuple[str, ...], stage: str) -> pd.DataFrame | None:
    path = run_dir / name
    if not path.exists():
        return None
    return _check_columns(rundir.read_table(path, stage), path, columns, f"rerun {stage} or delete the file")


def load_run(run_dir: str | Path, *, results: bool = False) -> RunTables:
    """Read and validate a run directory; ``results`` adds the scoring outputs and optional files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CGapsError(
            f"{run_dir}: not a directory; pass the run directory written by `cgaps run` or `cgaps score`"
        )
    meta = rundir.read_run_json(run_dir)
    width = rundir.n_concepts(meta, run_dir)
    items = rundir.read_items(run_dir, scored=True)
    benchmarks = list(dict.fromkeys(items["benchmark"]))
    # concepts before saliency: a run that was never scored says so before anything else
    concepts = _read_concepts(run_dir, benchmarks) if results else None
    saliency = rundir.read_saliency(run_dir, pd.Index(items["item_id"]), width)
    run = RunTables(run_dir, meta, width, items, saliency, concepts)
    if not results:
        return run
    path = run_dir / rundir.OVERLAP
    if path.exists() or len(benchmarks) > 1:
        run.overlap = _check_columns(
            rundir.read_table(path, _SCORE_FIX), path, rundir.OVERLAP_COLUMNS, _RESCORE
        )
    extract = "`cgaps extract RUN_DIR`"  # writes the contexts and the provisional labels
    run.labels = _optional_table(run_dir, rundir.LABELS, rundir.LABEL_COLUMNS, extract)
    run.contexts = _optional_table(run_dir, rundir.CONTEXTS, rundir.CONTEXT_COLUMNS, extract)
    path = run_dir / rundir.ROBUSTNESS
    if path.exists():
        run.robustness = rundir.read_json_file(path, "rerun `cgaps robustness RUN_DIR` or delete the file")
    return run
