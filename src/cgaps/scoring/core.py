"""The chi tables of SPEC.md section 3, computed on a sparse items x concepts matrix.

Design
------
A suite is held as one CSR matrix ``S`` (items x concepts, raw saliency s_c(x), float64),
a score vector ``y`` and a benchmark code per item (:class:`SuiteMatrix`). Every per-scope
sum in section 3 is ``P @ M`` where ``P`` is a sparse indicator matrix (one row per scope:
each benchmark, then ``ALL``) and ``M`` is ``S`` with its nonzero values replaced by the
summand (``1``, ``s``, ``s^2``, ``s*y``, ``s*ybar(B(x))``, ``s_hat``, ``s*(y - chi)^2``).
Nothing loops over items or concepts; the few per-scope steps (ranking, BH) loop over the
scopes only. Robustness checks reuse :func:`chi_tables` on a row subset of the same matrix.

Rules where SPEC.md leaves a choice open (the plain reference implementation in
:mod:`cgaps.scoring.reference` applies the same rules independently):

* **Percentile** of chi_bench(c, S) among the m present concepts of S (n_c(S) > 0)::

      pct = 100 * (#{c' : v(c') < v(c)} + 0.5 * #{c' : v(c') == v(c)}) / m

  i.e. ``scipy.stats.percentileofscore(..., kind="mean")``, equivalently
  ``100 * (rank - 0.5) / m`` with average ranks. ``v`` is chi_bench rounded to
  :data:`ROUND` decimals so that ties do not depend on summation order.
  Status: ``under`` if pct < under_pct, ``over`` if pct > over_pct, else ``normal``
  (``missing`` if n_c(S) = 0).
* **Standard error** SE = sqrt(sum s (y - chi)^2 / sum s / n_eff), the squared deviations
  summed in a second pass (no cancellation). A weighted variance below :data:`VAR_EPS`
  counts as 0 (all scores of the firing items equal).
* **SE = 0** (all firing items of S have the same score): the sample variance says
  nothing, and taking it at face value would call every small all-correct concept a
  strength. The variance falls back to e(1 - e), the largest variance a score in [0, 1]
  with mean e can have (the null's binomial variance for 0/1 scores), so
  SE = sqrt(e(1 - e) / n_eff). If that is 0 too (e in {0, 1}), with d = chi_model - e:
  z = +inf if d > :data:`DIFF_EPS`, -inf if d < -DIFF_EPS, else 0 (p = 0.5: never a call).
* **p-values and BH**: p_weak = Phi(z), p_strong = 1 - Phi(z); each side is adjusted with
  Benjamini-Hochberg (:func:`cgaps.stats.bh_adjust`, i.e. scipy's
  ``false_discovery_control``) separately over the concepts of S with n_c(S) >= min_support.
  The side that applies is ``weak`` when z < 0, else ``strong``; ``q_value`` is that side's
  adjusted p (NaN when not tested) and ``gap`` is that side when z != 0 and q <= fdr.
* **Never firing in S**: support 0, chi_bench 0, chi_bench_raw 0, n_eff 0; chi_model,
  expected, ci_low, ci_high and q_value NaN; status ``missing``; gap empty.
* **Wilson interval** with n = n_eff and p = chi_model (scores may be fractional), clipped
  to [0, 1] (:func:`cgaps.stats.wilson`, the project's one Wilson formula).
* **Overlap**: Spearman over the concepts present in both benchmarks (values rounded to
  ROUND decimals, average ranks); NaN with fewer than 3 shared concepts or when either side
  is constant. Jaccard is NaN when neither benchmark has a firing concept.

Rows: scopes in sorted benchmark order, then ``ALL``; within a scope concepts 0..F-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.rundir import ALL_SCOPE, CONCEPT_COLUMNS, OVERLAP_COLUMNS
from cgaps.stats import bh_adjust, wilson

ROUND = 12  # decimals kept when ranking (status percentile, Spearman)
VAR_EPS = 1e-12  # weighted variance treated as 0 (scores agree to ~1e-6)
DIFF_EPS = 1e-9  # |chi_model - e| treated as 0 when SE = 0


@dataclass(frozen=True)
class SuiteMatrix:
    """A suite as arrays: the saliency matrix, the scores and the benchmark of each item."""

    saliency: sp.csr_matrix  # items x concepts, raw s_c(x) > 0, float64, canonical CSR
    scores: np.ndarray  # y(x), float64, one per row
    bench: np.ndarray  # benchmark code per row (index into `benchmarks`)
    benchmarks: tuple[str, ...]  # sorted benchmark names
    item_ids: np.ndarray

    @property
    def n_concepts(self) -> int:
        return self.saliency.shape[1]

    def subset(self, rows: np.ndarray) -> SuiteMatrix:
        """The same suite restricted to ``rows`` (benchmarks keep their codes)."""
        rows = np.asarray(rows)
        return SuiteMatrix(
            self.saliency[rows], self.scores[rows], self.bench[rows], self.benchmarks, self.item_ids[rows]
        )


def build_matrix(items: pd.DataFrame, saliency: pd.DataFrame, n_concepts: int) -> SuiteMatrix:
    """Turn the items table (with scores) and the sparse saliency table into a :class:`SuiteMatrix`."""
    ids = pd.Index(items["item_id"].astype(str))
    if not ids.is_unique:
        raise CGapsError("items: field 'item_id' has duplicates; item ids must be unique in the suite")
    y = pd.to_numeric(items["score"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all((y >= 0) & (y <= 1)):  # also catches NaN
        raise CGapsError("items: field 'score' must hold numbers in [0, 1] (no NaN)")
    names, bench = np.unique(items["benchmark"].astype(str).to_numpy(), return_inverse=True)
    rows = ids.get_indexer(saliency["item_id"].astype(str))
    if (rows < 0).any():
        raise CGapsError("saliency: field 'item_id' names items that are not in the items table")
    cols = saliency["concept"].to_numpy().astype(np.int64)
    vals = saliency["value"].to_numpy().astype(np.float64)
    if len(cols) and (cols.min() < 0 or cols.max() >= n_concepts):
        raise CGapsError(f"saliency: field 'concept' outside 0..{n_concepts - 1}")
    if not np.all(vals > 0) or not np.all(np.isfinite(vals)):
        raise CGapsError("saliency: field 'value' must hold finite values > 0 only")
    mat = sp.csr_matrix((vals, (rows, cols)), shape=(len(ids), n_concepts))
    if mat.nnz != len(vals):  # coo -> csr sums duplicates silently
        raise CGapsError(
            "saliency: duplicate (item_id, concept) rows; pool each concept to one value per item"
        )
    mat.sort_indices()
    return SuiteMatrix(mat, y, bench.astype(np.int64), tuple(str(n) for n in names), ids.to_numpy())


def _with_data(mat: sp.csr_matrix, data: np.ndarray) -> sp.csr_matrix:
    """``mat``'s sparsity pattern with other values (the summand of a per-scope sum)."""
    return sp.csr_matrix((data, mat.indices, mat.indptr), shape=mat.shape)


def _scope_indicator(m: SuiteMatrix) -> sp.csr_matrix:
    """(K + 1) x n: row k selects benchmark k's items, the last row selects all items."""
    n, k = len(m.bench), len(m.benchmarks)
    rows = np.concatenate([m.bench, np.full(n, k)])
    cols = np.concatenate([np.arange(n), np.arange(n)])
    return sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(k + 1, n))


@dataclass
class ChiTables:
    """Per-scope sums and the chi values, arrays of shape (K + 1, F); row K is ``ALL``."""

    n_items: np.ndarray  # |S| per scope
    support: np.ndarray
    sum_s: np.ndarray
    sum_s2: np.ndarray
    chi_bench: np.ndarray
    chi_bench_raw: np.ndarray
    chi_model: np.ndarray
    expected: np.ndarray
    n_eff: np.ndarray
    var: np.ndarray  # weighted variance of y around chi_model (NaN where not firing)


def chi_tables(m: SuiteMatrix, col_max: np.ndarray | None = None, *, with_var: bool = True) -> ChiTables:
    """All per-scope sums of SPEC.md section 3 as sparse products.

    ``col_max`` is the suite-wide max of each concept used for s_hat (default: this
    matrix's own); robustness passes the full suite's so that subsets stay comparable.
    """
    s = m.saliency
    if s.shape[0] == 0:
        raise CGapsError("no items to score")
    row_of = np.repeat(np.arange(s.shape[0]), np.diff(s.indptr))  # row of each nonzero
    col = s.indices
    data = s.data
    y_nz = m.scores[row_of]
    # ybar(B) is the plain mean score of the benchmark (its items weigh equally).
    counts = np.bincount(m.bench, minlength=len(m.benchmarks)).astype(np.float64)
    ybar = np.bincount(m.bench, weights=m.scores, minlength=len(m.benchmarks)) / np.maximum(counts, 1)
    if col_max is None:
        col_max = np.asarray(s.max(axis=0).todense()).ravel()
    p = _scope_indicator(m)

    def scope_sum(values: np.ndarray) -> np.ndarray:
        return (p @ _with_data(s, values)).toarray()

    support = scope_sum(np.ones_like(data))
    sum_s = scope_sum(data)
    sum_s2 = scope_sum(data * data)
    sum_sy = scope_sum(data * y_nz)
    sum_sybar = scope_sum(data * ybar[m.bench][row_of])
    sum_shat = scope_sum(data / col_max[col])
    n_items = np.asarray(p.sum(axis=1)).ravel()

    fires = sum_s > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        chi_model = np.where(fires, sum_sy / sum_s, np.nan)
        expected = np.where(fires, sum_sybar / sum_s, np.nan)
        n_eff = np.where(fires, sum_s**2 / sum_s2, 0.0)
    chi_bench = sum_shat / n_items[:, None]
    chi_bench_raw = sum_s / n_items[:, None]

    var = np.full_like(chi_model, np.nan)
    if with_var:
        # Second pass: squared deviations from the scope's chi_model, each nonzero counted in
        # its benchmark's scope and in ALL (two summand arrays, one indicator product each).
        k = len(m.benchmarks)
        b_nz = m.bench[row_of]
        dev_b = data * (y_nz - chi_model[b_nz, col]) ** 2
        dev_all = data * (y_nz - chi_model[k, col]) ** 2
        sum_dev = (p[:k] @ _with_data(s, dev_b)).toarray()
        sum_dev_all = np.bincount(col, weights=dev_all, minlength=s.shape[1])
        sum_dev = np.vstack([sum_dev, sum_dev_all[None, :]])
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(fires, sum_dev / sum_s, np.nan)
    return ChiTables(
        n_items, support, sum_s, sum_s2, chi_bench, chi_bench_raw, chi_model, expected, n_eff, var
    )


def percentile_of(values: np.ndarray) -> np.ndarray:
    """Percentile (SPEC rule in the module docstring) of each value among ``values``."""
    ranks = stats.rankdata(np.round(values, ROUND), method="average")
    return 100.0 * (ranks - 0.5) / len(values)


def z_scores(t: ChiTables) -> np.ndarray:
    """z = (chi_model - e) / SE, with the SE = 0 rule of the module docstring; NaN where not firing."""
    d = t.chi_model - t.expected
    var = np.where(t.var < VAR_EPS, t.expected * (1 - t.expected), t.var)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(var / t.n_eff)
        z = d / se
    degenerate = se == 0
    z = np.where(degenerate, np.where(d > DIFF_EPS, np.inf, np.where(d < -DIFF_EPS, -np.inf, 0.0)), z)
    return z


def compute_scores(
    items: pd.DataFrame, saliency: pd.DataFrame, n_concepts: int, cfg: RunConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The concepts table (every concept in every scope) and the benchmark-overlap table."""
    m = build_matrix(items, saliency, n_concepts)
    t = chi_tables(m)
    return concept_table(m, cfg, t), overlap_table(m, t)


def concept_table(m: SuiteMatrix, cfg: RunConfig, t: ChiTables | None = None) -> pd.DataFrame:
    t = chi_tables(m) if t is None else t
    n_scopes, f = t.chi_model.shape
    z = z_scores(t)
    ci_low, ci_high = wilson(t.chi_model, t.n_eff, cfg.ci_level)
    status = np.full((n_scopes, f), "missing", dtype=object)
    q_value = np.full((n_scopes, f), np.nan)
    gap = np.full((n_scopes, f), "", dtype=object)
    p_weak = stats.norm.cdf(z)
    p_strong = stats.norm.sf(z)
    for k in range(n_scopes):  # per-scope ranking and BH: a loop over scopes only
        present = t.support[k] > 0
        pct = percentile_of(t.chi_bench[k, present])
        status[k, present] = np.where(
            pct < cfg.under_pct, "under", np.where(pct > cfg.over_pct, "over", "normal")
        )
        tested = t.support[k] >= cfg.min_support
        q_weak = bh_adjust(p_weak[k, tested])
        q_strong = bh_adjust(p_strong[k, tested])
        zk = z[k, tested]
        q = np.where(zk < 0, q_weak, q_strong)
        q_value[k, tested] = q
        gap[k, tested] = np.where((zk != 0) & (q <= cfg.fdr), np.where(zk < 0, "weak", "strong"), "")
    scopes = [*m.benchmarks, ALL_SCOPE]
    df = pd.DataFrame(
        {
            "concept": np.tile(np.arange(f, dtype=np.int32), n_scopes),
            "scope": np.repeat(np.array(scopes, dtype=object), f),
            "support": t.support.ravel().round().astype(np.int64),
            "chi_bench": t.chi_bench.ravel(),
            "chi_bench_raw": t.chi_bench_raw.ravel(),
            "chi_model": t.chi_model.ravel(),
            "expected": t.expected.ravel(),
            "n_eff": t.n_eff.ravel(),
            "ci_low": ci_low.ravel(),
            "ci_high": ci_high.ravel(),
            "status": status.ravel(),
            "gap": gap.ravel(),
            "q_value": q_value.ravel(),
        }
    )
    return df[list(CONCEPT_COLUMNS)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.round(a, ROUND), np.round(b, ROUND)
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def overlap_table(m: SuiteMatrix, t: ChiTables) -> pd.DataFrame:
    """Jaccard of the firing sets and Spearman of chi over shared concepts, for each pair a < b."""
    rows = []
    k = len(m.benchmarks)
    present = t.support[:k] > 0
    for i in range(k):
        for j in range(i + 1, k):
            both = present[i] & present[j]
            union = int((present[i] | present[j]).sum())
            rows.append(
                {
                    "a": m.benchmarks[i],
                    "b": m.benchmarks[j],
                    "jaccard": int(both.sum()) / union if union else float("nan"),
                    "spearman_chi_model": _spearman(t.chi_model[i, both], t.chi_model[j, both]),
                    "spearman_chi_bench": _spearman(t.chi_bench[i, both], t.chi_bench[j, both]),
                }
            )
    df = pd.DataFrame(rows, columns=list(OVERLAP_COLUMNS))
    return df.astype(
        {"a": object, "b": object, "jaccard": float, "spearman_chi_model": float, "spearman_chi_bench": float}
    )
