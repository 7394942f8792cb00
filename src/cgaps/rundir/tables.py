"""The validating readers of items and saliency (their columns: :mod:`cgaps.rundir.schemas`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cgaps.errors import CGapsError
from cgaps.rundir.atomic import read_table
from cgaps.rundir.names import ALL_SCOPE, CONTROL_CHARS, ITEMS, MAX_NAME, SALIENCY
from cgaps.rundir.schemas import ITEM_COLUMNS, ITEM_REQUIRED, ITEM_SCORED, SALIENCY_COLUMNS

# ---------------------------------------------------------------- items


def validate_items(df: pd.DataFrame, path: str | Path, *, scored: bool = False) -> pd.DataFrame:
    """Check an items table; return it with canonical dtypes.

    ``scored`` also requires ``response`` and ``score`` with every score in [0, 1].
    """
    path = Path(path)
    missing = [c for c in ITEM_REQUIRED + (ITEM_SCORED if scored else ()) if c not in df.columns]
    if missing:
        hint = " (run `cgaps evaluate` or `cgaps grade` first)" if set(missing) <= set(ITEM_SCORED) else ""
        raise CGapsError(
            f"{path}: missing column(s) {', '.join(missing)}{hint}; required: {', '.join(ITEM_REQUIRED)}"
        )
    extra = [c for c in df.columns if c not in ITEM_COLUMNS]
    if extra:
        raise CGapsError(
            f"{path}: unknown column(s) {', '.join(map(str, extra))}; allowed: {', '.join(ITEM_COLUMNS)} "
            "(put other metadata into the JSON column 'meta')"
        )
    if len(df) == 0:
        raise CGapsError(f"{path}: the items table is empty; a suite needs at least one item per benchmark")
    df = df.copy()
    for col in ("item_id", "benchmark"):
        if df[col].isna().any():
            row = int(df[col].isna().to_numpy().nonzero()[0][0])
            raise CGapsError(f"{path}: row {row}: field '{col}' is empty; every item needs one")
        df[col] = df[col].astype(str)
    for col in ("item_id", "benchmark"):  # checked before anything prints a name or an id
        lengths = df[col].str.len()
        if (lengths > MAX_NAME).any():
            row = int((lengths > MAX_NAME).to_numpy().nonzero()[0][0])
            raise CGapsError(
                f"{path}: row {row}: field '{col}' is {int(lengths.iloc[row]):,} characters long; "
                f"names and ids have at most {MAX_NAME}"
            )
        controls = df[col].str.contains(CONTROL_CHARS, regex=True)
        if controls.any():
            row = int(controls.to_numpy().nonzero()[0][0])
            raise CGapsError(
                f"{path}: row {row}: field '{col}' holds a control character "
                f"({CONTROL_CHARS.sub('?', df[col].iloc[row])!r}); names and ids are printable text"
            )
    empty_bench = df["benchmark"].str.strip() == ""
    if empty_bench.any():
        row = int(empty_bench.to_numpy().nonzero()[0][0])
        raise CGapsError(
            f"{path}: row {row}: field 'benchmark' is blank; name the benchmark the item belongs to"
        )
    dup = df["item_id"].duplicated(keep=False)
    if dup.any():
        ids = df.loc[dup, "item_id"].unique()[:3]
        raise CGapsError(
            f"{path}: field 'item_id' has duplicates ({', '.join(map(repr, ids))}); item ids must be unique in the suite"
        )
    if ALL_SCOPE in set(df["benchmark"]):
        raise CGapsError(
            f"{path}: field 'benchmark' uses the reserved name {ALL_SCOPE!r}; rename that benchmark"
        )
    for col in ("prompt", "reference", "response"):
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    if "score" in df.columns:
        score = pd.to_numeric(df["score"], errors="coerce")
        bad = score.isna() | (score < 0) | (score > 1)
        if scored and bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise CGapsError(
                f"{path}: row {row} (item_id {df['item_id'].iloc[row]!r}): field 'score' is "
                f"{df['score'].iloc[row]!r}; scores must be numbers in [0, 1] (1 = correct), not NaN"
            )
        df["score"] = score.astype("float64")
    return df


def read_items(run_dir: str | Path, *, scored: bool = False) -> pd.DataFrame:
    path = Path(run_dir) / ITEMS
    df = read_table(path, "create it with `cgaps items SUITE --out RUN_DIR`")
    return validate_items(df, path, scored=scored)


# ---------------------------------------------------------------- saliency


def validate_saliency(
    df: pd.DataFrame, path: str | Path, item_ids: pd.Index | None, n_concepts: int
) -> pd.DataFrame:
    """Check a sparse saliency table against the items and the SAE width."""
    path = Path(path)
    missing = [c for c in SALIENCY_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in SALIENCY_COLUMNS]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown column(s) {', '.join(map(str, extra))}")
        raise CGapsError(f"{path}: {'; '.join(parts)}; the columns are exactly {', '.join(SALIENCY_COLUMNS)}")
    # shallow: under copy-on-write the caller's frame is never changed, and 50M rows are not copied
    df = df.copy(deep=False)
    df["item_id"] = df["item_id"].astype(str)
    concept = pd.to_numeric(df["concept"], errors="coerce")
    if concept.isna().any() or (concept != concept.round()).any():
        raise CGapsError(f"{path}: field 'concept' must hold integers (SAE latent indices)")
    bad = (concept < 0) | (concept >= n_concepts)
    if bad.any():
        raise CGapsError(
            f"{path}: field 'concept' has {int(concept[bad].iloc[0])}, outside 0..{n_concepts - 1} "
            f"(run.json n_concepts = {n_concepts}); the saliency was written with another SAE"
        )
    value = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    vals = value.to_numpy()
    badv = ~(vals > 0) | ~np.isfinite(vals)  # vectorised: paper-scale runs have ~50M rows (NaN > 0 is False)
    if badv.any():
        row = int(badv.nonzero()[0][0])
        raise CGapsError(
            f"{path}: row {row}: field 'value' is {df['value'].iloc[row]!r}; saliency rows hold finite values > 0 only"
        )
    df["concept"] = concept.astype("int32")
    df["value"] = value.astype("float32")
    if item_ids is not None:
        unknown = ~df["item_id"].isin(item_ids)
        if unknown.any():
            raise CGapsError(
                f"{path}: field 'item_id' has {df.loc[unknown, 'item_id'].iloc[0]!r}, which is not in {ITEMS}; "
                "saliency and items must come from the same run"
            )
    # duplicates on integer keys (item code x width + concept): a hash of ints, not of (str, int) rows
    codes = pd.factorize(df["item_id"])[0].astype(np.int64)
    if pd.Index(codes * n_concepts + df["concept"].to_numpy()).has_duplicates:
        raise CGapsError(
            f"{path}: duplicate (item_id, concept) rows; pool each concept to one value per item"
        )
    return df


def read_saliency(run_dir: str | Path, item_ids: pd.Index | None, n_concepts: int) -> pd.DataFrame:
    """The validated saliency (:func:`cgaps.runtables.load_run` reads it with item ids as codes)."""
    path = Path(run_dir) / SALIENCY
    df = read_table(path, "create it with `cgaps extract RUN_DIR`")
    return validate_saliency(df, path, item_ids, n_concepts)
