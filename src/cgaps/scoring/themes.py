"""Themes at scoring time: groups of concepts that fire on the same items, tested as one
hypothesis beside the concepts (docs/method.md §3, "Themes"; §5 adds their words).

A planted weakness on a topic of 30 items is seen by dozens of concepts, each on part of those
items: none of them alone reaches a bar set by thousands of tests, but together they carry
the topic. A theme is such a group, built from the saliency alone, so it can enter the test
without looking at the scores:

- **Which concepts.** Those with support >= ``min_support`` in ``ALL`` (the ones that can be
  tested), at most :data:`MAX_CLUSTERED` of them: beyond that, the rarest (those least able to
  pass alone) are clustered and the others stay on their own. The quadratic distance matrix
  of 8,192 concepts is 0.5 GB, which keeps scoring at the paper's scale within its memory.
- **Similarity** of concepts a and b: ρ, the cosine of their thresholded normalised saliency
  ŝ' over the items (co-activation), and κ, the cosine of their decoder directions clipped at
  0 when the run's SAE is at hand; distance (1 − ρ)(1 − κ), so either kind of evidence joins
  them and near-duplicate latents collapse.
- **The cut.** Average-linkage agglomerative clustering (``scipy.cluster.hierarchy``) cut at
  ``theme_cut``: members are on average at least 1 − cut similar. Clusters of one concept are
  no theme (the concept is its own hypothesis).
- **A theme's saliency** on an item is the sum of its members' ŝ' (where the members' mass
  falls: an item on which many members fire weighs more than one where a single stray member
  does). Its support, χ values, interval and score test come from the same functions as a
  concept's (:func:`cgaps.scoring.core.score_tables`).
- **Numbering.** The structure numbers themes by ALL-scope support, largest first (ties:
  smallest member); the tables renumber them as they are shown (:func:`number_themes`): gap
  themes first by q, then strength themes, then the rest by support.

Nothing here reads the scores: the null draws of ``cgaps validate`` reuse one structure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.scoring.core import TEST_COLUMNS, ChiTables, SuiteMatrix, chi_tables, score_tables

THEME_TESTS = rundir.THEME_TESTS  # written by `cgaps score` (one row per theme and scope)
THEME_TEST_COLUMNS = ("theme", "scope", "n_members", "members", *TEST_COLUMNS)
MAX_CLUSTERED = 8192
LINKAGE = "average"


@dataclass(frozen=True)
class ThemeSet:
    """Themes of a run: ``members[i]`` are theme i's concept ids (ascending), two or more each."""

    members: tuple[np.ndarray, ...]
    n_concepts: int

    def __len__(self) -> int:
        return len(self.members)

    def theme_of(self) -> np.ndarray:
        """The theme of each concept, -1 for a concept in none."""
        out = np.full(self.n_concepts, -1, dtype=np.int32)
        for i, cs in enumerate(self.members):
            out[cs] = i
        return out

    def membership(self) -> sp.csr_matrix:
        """concepts x themes, 1 where the concept is a member."""
        rows = np.concatenate(self.members) if self.members else np.zeros(0, dtype=np.int64)
        cols = np.repeat(np.arange(len(self.members)), [len(c) for c in self.members])
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(self.n_concepts, len(self.members)))

    def saliency(self, shat: sp.csr_matrix) -> sp.csr_matrix:
        """items x themes: the sum of each theme's members' ŝ' (``shat``, items x concepts)."""
        out = sp.csr_matrix(shat @ self.membership())
        out.sort_indices()
        return out


def distances(shat: sp.csr_matrix, w_dec: np.ndarray | None) -> np.ndarray:
    """(1 − ρ)(1 − κ) between the columns of ``shat`` (module docstring), dense float64, 0 on the
    diagonal, symmetric up to rounding (the clustering reads the upper triangle); ``w_dec``: the
    same concepts' decoder rows, or None (κ = 0)."""
    x = shat.tocsc().astype(np.float64)
    # in place: at 8,192 concepts each n x n temporary is 0.5 GB
    dist = (x.T @ x).toarray()
    norm = np.sqrt(np.clip(np.diag(dist).copy(), 1e-300, None))
    dist /= norm[:, None]
    dist /= norm[None, :]
    np.clip(dist, 0.0, 1.0, out=dist)
    np.subtract(1.0, dist, out=dist)
    if w_dec is not None:
        w = np.asarray(w_dec, dtype=np.float64)
        w = w / np.clip(np.linalg.norm(w, axis=1, keepdims=True), 1e-300, None)
        dist *= 1.0 - np.clip(w @ w.T, 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def cluster(shat: sp.csr_matrix, w_dec: np.ndarray | None, cut: float) -> np.ndarray:
    """0-based cluster labels of the columns of ``shat``: average linkage cut at ``cut``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = shat.shape[1]
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    condensed = squareform(distances(shat, w_dec), checks=False)  # the square matrix is freed here
    tree = linkage(condensed, method=LINKAGE)
    return fcluster(tree, t=cut, criterion="distance").astype(np.int64) - 1


def theme_structure(m: SuiteMatrix, cfg: RunConfig, w_dec: np.ndarray | None = None) -> ThemeSet:
    """The themes of a suite matrix at the run's presence (module docstring); ``w_dec``: the
    SAE's decoder rows [F, d] (None: co-activation only)."""
    shat = m.shat_matrix()
    support = np.diff(shat.tocsc().indptr)
    eligible = np.flatnonzero(support >= cfg.min_support)
    rarest_first = eligible[np.argsort(support[eligible], kind="stable")]
    clustered = np.sort(rarest_first[:MAX_CLUSTERED])
    labels = cluster(shat[:, clustered], None if w_dec is None else w_dec[clustered], cfg.theme_cut)
    groups = [clustered[labels == k] for k in range(int(labels.max()) + 1 if len(labels) else 0)]
    groups = [g for g in groups if len(g) > 1]
    theme_support = np.diff(ThemeSet(tuple(groups), m.n_concepts).saliency(shat).tocsc().indptr)
    order = sorted(range(len(groups)), key=lambda i: (-theme_support[i], int(groups[i][0])))
    return ThemeSet(tuple(groups[i] for i in order), m.n_concepts)


def number_themes(
    themes: ThemeSet, concepts: pd.DataFrame, tests: pd.DataFrame
) -> tuple[ThemeSet, pd.DataFrame, pd.DataFrame]:
    """The themes renumbered as the tables show them: gap themes first (by q in ``ALL``), then
    strength themes (by q), then the rest by support (largest first); ``concepts``' ``theme``
    column and ``tests``' ``theme`` follow."""
    all_rows = tests[tests["scope"] == rundir.ALL_SCOPE].set_index("theme")
    call = all_rows["gap"].map({"weak": 0, "strong": 1}).fillna(2)
    key = pd.DataFrame(
        {"call": call, "q": all_rows["q_value"].fillna(2.0), "support": -all_rows["support"]},
        index=all_rows.index,
    )
    order = key.sort_values(["call", "q", "support"], kind="stable").index.to_numpy(np.int64)
    new_id = np.empty(len(themes), dtype=np.int32)
    new_id[order] = np.arange(len(themes), dtype=np.int32)
    renumbered = ThemeSet(tuple(themes.members[i] for i in order), themes.n_concepts)
    concepts = concepts.copy()
    old = concepts["theme"].to_numpy()
    concepts["theme"] = np.full(len(old), -1, dtype=np.int32)
    concepts.loc[old >= 0, "theme"] = new_id[old[old >= 0]]
    tests = tests.copy()
    tests["theme"] = new_id[tests["theme"].to_numpy()]
    scope_order = {name: i for i, name in enumerate(dict.fromkeys(tests["scope"]))}
    tests = tests.sort_values(
        ["scope", "theme"],
        key=lambda col: col.map(scope_order) if col.name == "scope" else col,
        kind="stable",
    ).reset_index(drop=True)
    return renumbered, concepts, tests


def theme_test_table(themes: ThemeSet, tests: pd.DataFrame, concepts: pd.DataFrame) -> pd.DataFrame:
    """``theme_tests.parquet``: the themes' test rows (:func:`cgaps.scoring.core.score_tables`)
    with their members, strongest member first (called ones by q, then by |z| of the ALL scope:
    lowest p-value), as JSON."""
    all_rows = concepts[concepts["scope"] == "ALL"].set_index("concept")
    p = all_rows["p_value"].fillna(2.0)
    q = all_rows["q_value"].fillna(2.0)
    members = []
    for cs in themes.members:
        ranked = sorted(cs.tolist(), key=lambda c: (q.at[c], p.at[c], c))
        members.append(json.dumps(ranked))
    out = tests.copy()
    out["n_members"] = out["theme"].map(lambda i: len(themes.members[i])).astype(np.int32)
    out["members"] = pd.Series([members[i] for i in out["theme"]], index=out.index, dtype=object)
    return out[list(THEME_TEST_COLUMNS)]


def score_with_themes(
    m: SuiteMatrix, cfg: RunConfig, t: ChiTables | None = None
) -> tuple[ThemeSet, pd.DataFrame, pd.DataFrame]:
    """The calls of docs/method.md §3 on a suite matrix: its themes (:func:`theme_structure`), the
    concepts table and ``theme_tests.parquet``'s table, themes numbered as shown."""
    t = chi_tables(m) if t is None else t
    themes = theme_structure(m, cfg)
    concepts, tests = score_tables(m, cfg, t, themes.saliency(m.shat_matrix()), themes.theme_of())
    assert tests is not None
    themes, concepts, tests = number_themes(themes, concepts, tests)
    return themes, concepts, theme_test_table(themes, tests, concepts)
