"""The concept table as CSV: ``cgaps export RUN_DIR`` and the explorer's "CSV" link write the same file.

One row per concept x scope, the columns of :data:`EXPORT_COLUMNS`: the scoring table's figures
(``concepts.parquet``), Δ = χ_model − expected, the chance level and its test (:mod:`cgaps.chance`),
the call in words, and the concept's label. Both writers build their rows with
:func:`export_frame` and write them with :func:`to_csv`, so a file from one equals the file
from the other for the same filter (``tests/serve/test_serve.py`` checks it).

``gap`` keeps the table's values (``weak``, ``strong`` or empty); ``call`` says the same in the
report's words (``gap``, ``strength``, ``strength at chance`` or empty). Labels, ``phrase`` and
``format`` are included when ``labels.parquet`` has them (``phrase`` and ``format`` are
written by newer labels stages; older runs simply lack the columns).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.errors import CGapsError

EXPORT_COLUMNS = (
    "concept",
    "scope",
    "label",
    "phrase",
    "format",
    "call",
    "support",
    "chi_bench",
    "chi_bench_raw",
    "chi_model",
    "expected",
    "delta",
    "ci_low",
    "ci_high",
    "n_eff",
    "chance",
    "p_chance",
    "status",
    "gap",
    "q_value",
)
# filters by call: the words the explorer's gap selector and `cgaps export --gap` accept
GAP_FILTERS = ("weak", "strong", "strong_above_chance", "strong_at_chance", "none")


def call_words(gap: Any, at_chance: Any) -> str:
    """``weak`` -> 'gap', ``strong`` -> 'strength' (or 'strength at chance'), else ''."""
    if gap == "weak":
        return "gap"
    if gap == "strong":
        return "strength at chance" if bool(at_chance) else "strength"
    return ""


def gap_mask(gap: pd.Series, at_chance: pd.Series, which: str) -> pd.Series:
    """The rows one of :data:`GAP_FILTERS` keeps ('' keeps every row)."""
    if not which:
        return pd.Series(True, index=gap.index)
    if which not in GAP_FILTERS:
        raise CGapsError(f"gap filter {which!r}: choose one of {', '.join(GAP_FILTERS)}")
    chance = at_chance.fillna(False).astype(bool)
    return {
        "weak": gap == "weak",
        "strong": gap == "strong",
        "strong_above_chance": (gap == "strong") & ~chance,
        "strong_at_chance": (gap == "strong") & chance,
        "none": gap == "",
    }[which]


def export_frame(rows: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame:
    """The CSV's rows from concept x scope ``rows`` (the columns of ``concepts.parquet`` plus
    ``chance``, ``p_chance`` and ``at_chance``) and ``labels.parquet`` (or None), in ``rows``' order."""
    out = rows.reset_index(drop=True).copy()
    out["concept"] = out["concept"].astype(np.int64)
    out["gap"] = out["gap"].fillna("").astype(str)
    out["delta"] = out["chi_model"] - out["expected"]
    out["call"] = [call_words(g, c) for g, c in zip(out["gap"], out["at_chance"], strict=True)]
    for col in ("label", "phrase", "format"):
        out[col] = None
    if labels is not None and len(labels):
        lab = labels.drop_duplicates("concept").set_index(labels["concept"].astype(np.int64).to_numpy())
        for col in ("label", "phrase", "format"):
            if col in lab.columns:
                out[col] = out["concept"].map(lab[col]).to_numpy()
    out["format"] = [
        None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v) for v in out["format"]
    ]
    return out[list(EXPORT_COLUMNS)]


def to_csv(frame: pd.DataFrame) -> str:
    """The CSV text (UTF-8, one header line, NaN as an empty field, floats as Python writes them)."""
    return frame.to_csv(index=False, lineterminator="\n")


def export_run(run_dir: str | Path, *, scope: str = "", gap: str = "") -> pd.DataFrame:
    """The export rows of a scored run: every concept x scope (``scope``: one of them), ``gap``
    one of :data:`GAP_FILTERS`, in the table's order (scopes as ``concepts.parquet`` holds them)."""
    from cgaps.chance import run_chance
    from cgaps.report.build import table_config
    from cgaps.runtables import load_run

    run_dir = Path(run_dir)
    run = load_run(run_dir, results=True)
    assert run.concepts is not None  # results=True reads it or raises
    if scope and scope not in set(run.concepts["scope"]):
        raise CGapsError(
            f"{run_dir / rundir.CONCEPTS}: no scope {scope!r}; choose ALL or one of {', '.join(run.benchmarks)}"
        )
    chance = run_chance(run, table_config(run_dir))
    rows = run.concepts.reset_index(drop=True).assign(
        chance=chance["chance"].to_numpy(),
        p_chance=chance["p_chance"].to_numpy(),
        at_chance=chance["at_chance"].to_numpy(),
    )
    keep = gap_mask(rows["gap"], rows["at_chance"], gap)
    if scope:
        keep &= rows["scope"] == scope
    return export_frame(rows[keep.to_numpy()], run.labels)
