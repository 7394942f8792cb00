"""Theme words: what the themes that ``cgaps score`` tested are about (docs/method.md §5).

The themes themselves (which concepts, their saliency, test and call) are made at scoring
time, by :mod:`cgaps.scoring.themes`, because they take part in the calls of §3: scoring writes
``theme_tests.parquet``. This module adds, per theme, what a reader needs to tell what it is:

- **Members**, strongest first (by q, then p-value in ``ALL``), as scoring ranked them.
- **Enrichment** (:func:`cgaps.labels.evidence.enrichment`) of the members' summed ŝ' (where the
  concepts' mass falls; a max over many near-duplicates would spread a theme over the union of
  their stray items), its ``enrich_mass`` the mass-weighted purity, and ``spread``: the groups of
  the enriched facet holding most of the mass (:func:`cgaps.labels.evidence.group_shares`).
- **Tokens**: the members' distinctive tokens, by how many members share them (then δ).
- **Label**: those words and the enriched group (:func:`cgaps.labels.evidence.compose_label`).
- **Format.** A theme is format when its members' format shares, weighted by their ŝ' mass,
  reach ``format_mass`` (:func:`cgaps.labels.format.theme_is_format`); its label says so.

Rows of ``themes.parquet``: those of ``theme_tests.parquet`` (one per theme and scope, themes
numbered gap themes first by q in ``ALL``, then strength themes, then the rest by support) with
the words beside them.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.labels import evidence
from cgaps.labels.format import mark_themes
from cgaps.scoring.core import SuiteMatrix
from cgaps.scoring.themes import ThemeSet, score_with_themes

THEMES = rundir.THEMES  # the table's file name in a run directory
# written now: every column of the schema (cgaps.rundir.schemas) ...
THEME_TABLE_COLUMNS = rundir.columns(THEMES)
# ... and what a reader may expect of any themes.parquet (those written before issue 19 lack the
# test's p-value and smallest achievable p-value)
THEME_COLUMNS = tuple(c for c in THEME_TABLE_COLUMNS if c not in ("p_value", "p_min"))


def theme_matrix(shat: sp.csr_matrix, members: list[np.ndarray]) -> sp.csr_matrix:
    """items x themes: each theme's saliency as scoring defines it, the sum over its members of
    ``shat`` (:meth:`cgaps.scoring.themes.ThemeSet.saliency`; docs/method.md §3)."""
    return ThemeSet(tuple(np.asarray(cs, dtype=np.int64) for cs in members), shat.shape[1]).saliency(shat)


def scored_themes(m: SuiteMatrix, cfg: RunConfig) -> pd.DataFrame:
    """``theme_tests.parquet`` as ``cgaps score`` makes it, for a run scored before it wrote one."""
    return score_with_themes(m, cfg)[2]


def build_themes(
    m: SuiteMatrix,
    tests: pd.DataFrame,
    groups: dict[str, pd.Series],
    tokens: pd.DataFrame,
    enrich_p: float,
    format_share: np.ndarray | None = None,
    format_mass: float = 0.5,
) -> pd.DataFrame:
    """The themes table (module docstring): the theme tests of ``cgaps score`` (``tests``, i.e.
    ``theme_tests.parquet``) with the words computed from the suite matrix ``m`` thresholded at
    the run's presence, the items' metadata ``groups`` (:func:`cgaps.labels.evidence.item_groups`)
    and the distinctive ``tokens`` (:func:`cgaps.labels.evidence.distinctive_tokens`).
    ``format_share`` (per concept, :func:`cgaps.labels.format.format_shares`) marks format
    themes (:func:`cgaps.labels.format.theme_is_format` at ``format_mass``); none without it."""
    all_rows = tests[tests["scope"] == rundir.ALL_SCOPE].sort_values("theme", kind="stable")
    if not len(all_rows):  # no theme: an empty table whose columns keep their types
        empty = tests.head(0).copy()
        for col in THEME_TABLE_COLUMNS:
            if col not in empty.columns:
                empty[col] = pd.Series(dtype=bool if col == "format" else object)
        return empty[list(THEME_TABLE_COLUMNS)].reset_index(drop=True)
    ids = all_rows["theme"].to_numpy(np.int64)
    members = [np.asarray(json.loads(raw), dtype=np.int64) for raw in all_rows["members"]]
    shat = m.shat_matrix()
    mass = theme_matrix(shat, members)
    enrich = evidence.enrichment(mass, groups)  # one row per theme, in ``ids`` order
    spread: dict[int, str] = {}
    for facet, cols in enrich.groupby("enrich_facet").groups.items():
        if facet in groups:
            idx = np.asarray(cols, dtype=np.int64)
            for t, rows in zip(idx, evidence.group_shares(mass[:, idx], groups[facet]), strict=True):
                spread[int(ids[t])] = json.dumps(rows, ensure_ascii=False)
    theme_tokens = _theme_tokens(tokens, members)
    words = {}
    for t in range(len(members)):
        e = enrich.iloc[t]
        words[int(ids[t])] = evidence.compose_label(
            theme_tokens[t], [], e["enrich_group"], e["enrich_mass"], e["enrich_p"], enrich_p
        )
    enrich = enrich.assign(concept=ids).rename(columns={"concept": "theme"})
    table = tests.merge(enrich, on="theme", how="left")
    table["label"] = table["theme"].map(words)
    as_json = {
        int(t): json.dumps(words_of, ensure_ascii=False)
        for t, words_of in zip(ids, theme_tokens, strict=True)
    }
    table["tokens"] = table["theme"].map(as_json)
    table["spread"] = table["theme"].map(lambda t: spread.get(int(t), "[]"))
    if format_share is not None:
        table = mark_themes(table, format_share, np.asarray(shat.sum(axis=0)).ravel(), format_mass)
    else:
        table["format"] = False
    return table[list(THEME_TABLE_COLUMNS)].reset_index(drop=True)


def _theme_tokens(tokens: pd.DataFrame, members: list[np.ndarray], k: int = 5) -> list[list[str]]:
    """Per theme, the members' distinctive tokens: shared by most members first, then by z."""
    by_concept: dict[int, list[tuple[str, float]]] = {}
    for c, tok, z in tokens[["concept", "token", "delta"]].itertuples(index=False):
        by_concept.setdefault(int(c), []).append((str(tok), float(z)))
    out = []
    for cs in members:
        shared: Counter[str] = Counter()
        best: dict[str, float] = {}
        for c in cs:
            for tok, z in by_concept.get(int(c), [])[:3]:
                shared[tok] += 1
                best[tok] = max(best.get(tok, -np.inf), z)
        out.append(sorted(shared, key=lambda t: (-shared[t], -best[t], t))[:k])
    return out


def summary(themes: pd.DataFrame) -> dict[str, Any]:
    """Counts for run.json: themes, and gap / strength themes in ALL."""
    all_rows = themes[themes["scope"] == rundir.ALL_SCOPE]
    return {
        "themes": len(all_rows),
        "themes_weak": int((all_rows["gap"] == "weak").sum()),
        "themes_strong": int((all_rows["gap"] == "strong").sum()),
    }
