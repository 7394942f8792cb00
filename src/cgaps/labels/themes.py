"""Themes: concepts grouped by what they fire on and what they write (docs/method.md §5).

A run calls hundreds of concepts gaps, many of them near-duplicates (a dozen latents for the
digit "2"). A theme is a cluster of concepts, scored as one concept:

- **Which concepts.** Those with support ≥ ``min_support`` in ``ALL`` (the ones that can be
  called at all), gaps and strengths first, at most :data:`MAX_THEME_CONCEPTS` (the distance
  matrix is quadratic).
- **Similarity** of concepts a and b combines two kinds of evidence, either of which is enough:
  co-activation, the cosine ρ of their thresholded normalised saliency ŝ' over the items, and
  the cosine κ of their decoder directions (clipped at 0):

      sim = 1 − (1 − ρ)(1 − κ),   distance = (1 − ρ)(1 − κ).

  Two latents with one decoder direction (near-duplicates) are close whatever their items; two
  latents that fire on the same items are close whatever their directions. Without decoder
  weights (saliency imported from another tool) κ = 0.
- **The cut.** Average-linkage agglomerative clustering (``scipy.cluster.hierarchy``), cut where
  the average distance between two clusters exceeds ``theme_cut`` (default 0.4: members are on
  average at least 60 % similar). Measured on the demo run (538 called concepts): cuts 0.3 /
  0.4 / 0.65 give 59 / 37 / 14 themes; 0.4 keeps dates, weekdays and reversed words apart
  while collapsing near-duplicates.
- **Scores.** A theme's saliency on an item is the max over its members of ŝ' (each member on
  its own scale, so no member dominates by its units); with it, χ_bench, χ_model, the Wilson
  interval, the score test and the Benjamini–Hochberg calls of §3 come from the same functions
  as the concepts' (:mod:`cgaps.scoring.core`), over the themes of each scope.
- **Words.** The theme's enrichment is :func:`cgaps.labels.evidence.enrichment` of its members'
  summed ŝ' (where its concepts' mass falls: the max over members would spread a theme of
  many near-duplicates over the union of their stray items, measured on the demo: 129
  date-arithmetic latents, each 95 % on that family, whose max covers 200 of 384 items); its
  tokens are its members' distinctive tokens, by how many members share them (then δ); its
  ``enrich_mass`` is its mass-weighted purity.

Rows of ``themes.parquet``: one per theme and scope (each benchmark, then ``ALL``), themes
numbered gap themes first (by q in ``ALL``), then strength themes, then the rest by support.
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
from cgaps.scoring.core import SuiteMatrix, chi_tables, concept_table

THEMES = rundir.THEMES  # the table's file name in a run directory
MAX_THEME_CONCEPTS = 4000
LINKAGE = "average"
THEME_COLUMNS = rundir.columns(THEMES)  # documented in cgaps.rundir.schemas


def theme_concepts(all_scope: pd.DataFrame, limit: int = MAX_THEME_CONCEPTS) -> np.ndarray:
    """The concepts clustered into themes: those called a gap or a strength in ALL (by q)."""
    called = all_scope[all_scope["gap"].isin(["weak", "strong"])]
    called = called.sort_values(["q_value", "concept"], kind="stable")
    return np.sort(called["concept"].to_numpy(np.int64)[:limit])


def _cosine_columns(x: sp.csr_matrix) -> np.ndarray:
    x = x.tocsc().astype(np.float64)
    gram = np.asarray((x.T @ x).todense())
    norm = np.sqrt(np.clip(np.diag(gram), 1e-30, None))
    return gram / norm[:, None] / norm[None, :]


def cluster(shat: sp.csr_matrix, w_dec: np.ndarray | None, cut: float) -> np.ndarray:
    """Cluster labels (0-based) of the columns of ``shat`` (items x concepts), by the distance of
    the module docstring; ``w_dec`` holds the same concepts' decoder rows (or None)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = shat.shape[1]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    dist = 1.0 - np.clip(_cosine_columns(shat), 0.0, 1.0)
    if w_dec is not None:
        w = w_dec / np.clip(np.linalg.norm(w_dec, axis=1, keepdims=True), 1e-30, None)
        dist *= 1.0 - np.clip(w @ w.T, 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, 1.0)
    tree = linkage(squareform(dist, checks=False), method=LINKAGE)
    return fcluster(tree, t=cut, criterion="distance").astype(np.int64) - 1


def theme_matrix(shat: sp.csr_matrix, groups: list[np.ndarray]) -> sp.csr_matrix:
    """items x themes: the max over each theme's member columns of ``shat``."""
    csc = shat.tocsc()
    cols = []
    for members in groups:
        sub = csc[:, members]
        cols.append(sp.csr_matrix(sub.max(axis=1)))
    return sp.hstack(cols, format="csr") if cols else sp.csr_matrix((shat.shape[0], 0))


def member_mass(shat: sp.csr_matrix, groups: list[np.ndarray]) -> sp.csr_matrix:
    """items x themes: the sum over each theme's members of ``shat`` (where its concepts' mass falls)."""
    rows = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    cols = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    member_of = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(shat.shape[1], len(groups)))
    return sp.csr_matrix(shat @ member_of)


def build_themes(
    m: SuiteMatrix,
    concepts: pd.DataFrame,
    cfg: RunConfig,
    groups: dict[str, pd.Series],
    tokens: pd.DataFrame,
    w_dec: np.ndarray | None,
    cut: float,
    enrich_p: float,
) -> pd.DataFrame:
    """The themes table (module docstring) of a suite matrix ``m`` thresholded at the run's
    presence, its ``concepts`` table, the items' metadata ``groups``
    (:func:`cgaps.labels.evidence.item_groups`), the distinctive ``tokens``
    (:func:`cgaps.labels.evidence.distinctive_tokens`) and the decoder rows ``w_dec`` [F, d]."""
    shat = m.shat_matrix()
    all_scope = concepts[concepts["scope"] == rundir.ALL_SCOPE].set_index("concept")
    chosen = theme_concepts(all_scope.reset_index())
    # gaps and strengths are clustered apart: a theme never mixes the two calls
    labels = np.zeros(len(chosen), dtype=np.int64)
    offset = 0
    for call in ("weak", "strong"):
        part = (all_scope.loc[chosen, "gap"] == call).to_numpy()
        if part.any():
            cs = chosen[part]
            labels[part] = cluster(shat[:, cs], None if w_dec is None else w_dec[cs], cut) + offset
            offset = int(labels[part].max()) + 1
    order_key = all_scope.loc[chosen]
    # members, strongest call first: gaps by q, then strengths, then by support
    members: list[np.ndarray] = []
    for k in range(labels.max() + 1 if len(labels) else 0):
        cs = chosen[labels == k]
        sub = order_key.loc[cs]
        rank = sub.assign(
            called=~sub["gap"].isin(["weak", "strong"]), q=sub["q_value"].fillna(2.0)
        ).sort_values(["called", "q", "support"], ascending=[True, True, False], kind="stable")
        members.append(rank.index.to_numpy(np.int64))
    tm = SuiteMatrix(
        theme_matrix(shat, members),
        m.scores,
        m.bench,
        m.benchmarks,
        m.item_ids,
        np.ones(len(members)),
    )
    if not members:
        return pd.DataFrame(columns=list(THEME_COLUMNS))
    table = concept_table(tm, cfg, chi_tables(tm)).rename(columns={"concept": "theme"})
    mass = member_mass(shat, members)
    enrich = evidence.enrichment(mass, groups)
    spread: dict[int, str] = {}
    for facet, cols in enrich.groupby("enrich_facet").groups.items():
        if facet in groups:
            idx = np.asarray(cols, dtype=np.int64)
            for t, rows in zip(idx, evidence.group_shares(mass[:, idx], groups[facet]), strict=True):
                spread[int(t)] = json.dumps(rows, ensure_ascii=False)
    theme_tokens = _theme_tokens(tokens, members)
    rows_all = table[table["scope"] == rundir.ALL_SCOPE].reset_index(drop=True)
    call_rank = rows_all["gap"].map({"weak": 0, "strong": 1}).fillna(2)
    order = (
        rows_all.assign(call=call_rank, q=rows_all["q_value"].fillna(2.0))
        .sort_values(["call", "q", "support", "theme"], ascending=[True, True, False, True], kind="stable")[
            "theme"
        ]
        .to_numpy()
    )
    new_id = np.empty(len(members), dtype=np.int32)
    new_id[order] = np.arange(len(members), dtype=np.int32)
    words = {}
    for t in range(len(members)):
        e = enrich.iloc[t]
        words[t] = evidence.compose_label(
            theme_tokens[t], [], e["enrich_group"], e["enrich_mass"], e["enrich_p"], enrich_p
        )
    table = table.merge(enrich.rename(columns={"concept": "theme"}), on="theme", how="left")
    table["label"] = table["theme"].map(words)
    table["n_members"] = table["theme"].map(lambda t: len(members[t])).astype(np.int32)
    table["members"] = table["theme"].map(lambda t: json.dumps([int(c) for c in members[t]]))
    table["tokens"] = table["theme"].map(lambda t: json.dumps(theme_tokens[t], ensure_ascii=False))
    table["spread"] = table["theme"].map(lambda t: spread.get(int(t), "[]"))
    table["theme"] = new_id[table["theme"].to_numpy()]
    scope_order = {s: i for i, s in enumerate([*m.benchmarks, rundir.ALL_SCOPE])}
    table = table.sort_values(
        ["scope", "theme"], key=lambda s: s.map(scope_order) if s.name == "scope" else s, kind="stable"
    )
    return table[list(THEME_COLUMNS)].reset_index(drop=True)


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
