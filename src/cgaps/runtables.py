"""The one run loader: a run directory's tables, validated, as one object.

Every stage after extraction starts the same way: ``run.json`` (with ``n_concepts``), the
scored items and the saliency, each through the validating readers of :mod:`cgaps.rundir`,
so bad input fails with the file, the field and the fix named. Every table read here has its
column types checked against its schema (:mod:`cgaps.rundir.schemas`) on the file's Arrow
schema before a row is read, and everything is read before anything is written. The scoring and robustness
stages need only these. The report also needs what the scoring stage wrote and shows the
optional files when they are there; ``load_run(run_dir, results=True)`` reads those too:

* required: ``concepts.parquet`` and, with two or more benchmarks, ``overlap.parquet``; a
  missing one is an error naming ``cgaps score``;
* optional: ``labels.parquet`` (``cgaps label``), ``contexts.parquet`` (``cgaps extract``) and
  ``robustness.json`` (``cgaps robustness``); absent is None, present but damaged is an error
  saying which command rewrites it.

**Item codes** (``load_run(run_dir, coded=True)``, what the scoring and robustness stages
use): the saliency's ``item_id`` is a :class:`pandas.Categorical` whose categories are the
items' ids in items order, so its codes are the item rows (int32). A paper-scale run has ~50M
saliency rows over 100k items: as strings the column costs ~850 MB and every lookup hashes
50M strings; as codes it is 200 MB and the matrix is built from numpy arrays. The coded
reader (:func:`read_saliency_coded`, which :func:`load_run` tries first) reads the Parquet file one row group at a time with the
item ids dictionary-encoded (each distinct id is looked up once per dictionary, not once per
row) into preallocated int32 / int32 / float32 arrays, and checks what
:func:`cgaps.rundir.validate_saliency` checks on those arrays. Anything it does not take as it
is (another column type, nulls, an unknown id, a bad value, a duplicate) sends the file to
the plain reader, which then names the problem with the same message as ever, or converts
the odd types as it always did. ``tests/test_runtables_fast.py`` checks that both readers
give the same frame.

The config is not resolved here: the report reads the config it shows from the scoring
tables' metadata (``run.json`` for older tables) and renders a run written by another tool,
while the stages that compute call
:meth:`RunTables.config`, which validates the stored config (docs/method.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig, config_from_run
from cgaps.errors import CGapsError
from cgaps.rundir import schemas

_SCORE_FIX = "run `cgaps score RUN_DIR` to write it"
_RESCORE = "rerun `cgaps score RUN_DIR`"
# concepts.parquet columns read as float64 whatever the writer used (NaN for anything unreadable)
_CONCEPT_FLOATS = tuple(f.name for f in schemas.CONCEPTS_TABLE.schema if f.type == schemas.F64)


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
        if col in concepts.columns:  # the optional ones (p_value, p_min) are absent from older tables
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


_BLOCK = 1 << 22  # rows per block of the checks: a few tens of MB of temporaries at a time


def no_duplicate_pairs(rows: np.ndarray, cols: np.ndarray) -> bool:
    """True when the rows come grouped by item with concepts strictly increasing within each item
    and no item in two groups (what extraction writes): then no (item, concept) pair repeats.
    O(n) in blocks; False means "not shown", not "duplicated" (the caller checks another way)."""
    n = len(rows)
    if n < 2:
        return True
    groups = 1
    for start in range(0, n - 1, _BLOCK):
        stop = min(start + _BLOCK, n - 1)
        new_item = rows[start + 1 : stop + 1] != rows[start:stop]
        not_up = cols[start + 1 : stop + 1] <= cols[start:stop]
        if np.any(not_up > new_item):  # a concept not above the last one within an item
            return False
        groups += int(np.count_nonzero(new_item))
    return groups == int(np.count_nonzero(np.bincount(rows)))


def has_duplicate_pairs(rows: np.ndarray, cols: np.ndarray, n_concepts: int) -> bool:
    """Whether an (item row, concept) pair repeats: O(n) on grouped rows (what extraction writes,
    :func:`no_duplicate_pairs`), else a hash of the integer keys row x width + concept."""
    return (
        not no_duplicate_pairs(rows, cols)
        and pd.Index(rows.astype(np.int64) * n_concepts + cols).has_duplicates
    )


def read_saliency_coded(run_dir: str | Path, item_ids: pd.Index, n_concepts: int) -> pd.DataFrame | None:
    """The saliency with ``item_id`` as codes into ``item_ids`` (module docstring), or None when
    the file needs the plain reader (a missing or unreadable file, other column types, nulls,
    anything the validation would refuse)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(run_dir) / rundir.SALIENCY
    if not path.is_file() or not item_ids.is_unique:
        return None
    try:
        pf = pq.ParquetFile(path, read_dictionary=["item_id"])
        schema = pf.schema_arrow
    except Exception:  # the plain reader names the problem
        return None
    if sorted(schema.names) != sorted(rundir.SALIENCY_COLUMNS):
        return None
    id_type = schema.field("item_id").type
    if not (
        pa.types.is_dictionary(id_type)
        and (pa.types.is_string(id_type.value_type) or pa.types.is_large_string(id_type.value_type))
        and pa.types.is_integer(schema.field("concept").type)
        and pa.types.is_floating(schema.field("value").type)
    ):
        return None
    n = pf.metadata.num_rows
    rows = np.empty(n, dtype=np.int32)
    concept = np.empty(n, dtype=np.int32)
    value = np.empty(n, dtype=np.float32)
    lookup, seen = np.empty(0, dtype=np.int32), None  # row groups usually share one dictionary
    at = 0
    for g in range(pf.num_row_groups):
        table = pf.read_row_group(g)
        if table.num_rows == 0:
            continue
        if any(col.null_count for col in table.columns):
            return None
        stop = at + table.num_rows
        for chunk in table.column("item_id").chunks:
            if seen is None or not chunk.dictionary.equals(seen):
                seen = chunk.dictionary
                lookup = item_ids.get_indexer(pd.Index(seen.to_pylist(), dtype=item_ids.dtype)).astype(
                    np.int32
                )
            codes = lookup[chunk.indices.to_numpy()]
            if len(codes) and codes.min() < 0:  # an id that is not in items.parquet
                return None
            rows[at : at + len(codes)] = codes
            at += len(codes)
        con = table.column("concept").to_numpy()
        if len(con) and (con.min() < 0 or con.max() >= n_concepts):
            return None
        concept[stop - len(con) : stop] = con
        val = table.column("value").to_numpy()
        # the plain reader checks float64 values, then stores float32 (a value > 0 may round to 0)
        if not np.all(np.isfinite(val) & (val > 0)):
            return None
        value[stop - len(val) : stop] = val
        del table, con, val
    if at != n:
        return None
    if has_duplicate_pairs(rows, concept, n_concepts):
        return None
    columns = {
        "item_id": pd.Categorical.from_codes(rows, dtype=pd.CategoricalDtype(item_ids)),
        "concept": concept,
        "value": value,
    }
    return pd.DataFrame({name: columns[name] for name in schema.names}, copy=False)


def coded_item_ids(saliency: pd.DataFrame, item_ids: pd.Index) -> pd.DataFrame:
    """``saliency`` (plain reader) with ``item_id`` as codes into ``item_ids`` (unique, holding
    every id of the saliency: the plain reader has checked it)."""
    out = saliency.copy(deep=False)
    out["item_id"] = pd.Categorical(saliency["item_id"], categories=item_ids)
    return out


def load_run(run_dir: str | Path, *, results: bool = False, coded: bool = False) -> RunTables:
    """Read and validate a run directory; ``results`` adds the scoring outputs and optional files;
    ``coded`` reads the saliency's item ids as codes into the items (module docstring)."""
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
    ids = pd.Index(items["item_id"])
    saliency = read_saliency_coded(run_dir, ids, width) if coded else None
    if saliency is None:
        saliency = rundir.read_saliency(run_dir, ids, width)
        saliency = coded_item_ids(saliency, ids) if coded else saliency
    run = RunTables(run_dir, meta, width, items, saliency, concepts)
    if not results:
        return run
    path = run_dir / rundir.OVERLAP
    if path.exists() or len(benchmarks) > 1:
        run.overlap = _check_columns(
            rundir.read_table(path, _SCORE_FIX), path, rundir.OVERLAP_COLUMNS, _RESCORE
        )
    run.labels = _optional_table(run_dir, rundir.LABELS, rundir.LABEL_COLUMNS, "`cgaps label RUN_DIR`")
    run.contexts = _optional_table(
        run_dir, rundir.CONTEXTS, rundir.CONTEXT_COLUMNS, "`cgaps extract RUN_DIR`"
    )
    path = run_dir / rundir.ROBUSTNESS
    if path.exists():
        run.robustness = rundir.read_json_file(path, "rerun `cgaps robustness RUN_DIR` or delete the file")
    return run
