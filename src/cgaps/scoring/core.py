"""The chi tables of docs/method.md §3, computed on a sparse items x concepts matrix.

Design
------
A suite is held as one CSR matrix ``S`` (items x concepts, raw saliency s_c(x), float64),
a score vector ``y`` and a benchmark code per item (:class:`SuiteMatrix`). Every per-scope
sum in section 3 is ``P @ M`` where ``P`` is a sparse indicator matrix (one row per scope:
each benchmark, then ``ALL``) and ``M`` is ``S`` with its nonzero values replaced by the
summand (``1``, ``s``, ``s^2``, ``s*y``, ``s*ybar(B(x))``, ``s_hat``, ``s^2 v(B(x))``).
Nothing loops over items or concepts; the few per-scope steps (ranking, BH, choosing the
Monte Carlo concepts) loop over the scopes only. Robustness checks reuse :func:`chi_tables` on a row subset of the same matrix.

Rules where the method leaves a choice open (the plain reference implementation in
:mod:`cgaps.scoring.reference` applies the same rules independently):

* **Percentile** of chi_bench(c, S) among the m present concepts of S (n_c(S) > 0)::

      pct = 100 * (#{c' : v(c') < v(c)} + 0.5 * #{c' : v(c') == v(c)}) / m

  i.e. ``scipy.stats.percentileofscore(..., kind="mean")``, equivalently
  ``100 * (rank - 0.5) / m`` with average ranks. ``v`` is chi_bench rounded to
  :data:`ROUND` decimals so that ties do not depend on summation order.
  Status: ``under`` if pct < under_pct, ``over`` if pct > over_pct, else ``normal``
  (``missing`` if n_c(S) = 0).
* **Presence** (config field ``presence`` = tau): :func:`build_matrix` drops every s_c(x) < tau * m_c
  before anything is summed, so support, chi_bench, chi_model, n_eff and the test all see the
  thresholded saliency. m_c is the concept's scale: the suite's max of s_c (default) or a
  reference max shipped with the SAE (``scale``); s_hat = s / m_c is clipped to 1 when a
  reference max is below the suite's.
* **Adjustment groups** (config field ``adjust_by``): the group g(x) an item's expected score comes from
  is its benchmark (``benchmark``), its (benchmark, category) pair (``category``: codes in the
  pairs' sorted order, :func:`adjustment_groups`) or the whole suite (``none``). Scopes stay the
  benchmarks and ALL; only mu, v, e and the resampling pools follow the groups.
* **Score test** (the null: given its group, an item's score does not depend on the concept).
  With mu(x) = ybar(g(x)) and v(x) = the population variance of g(x)'s scores,
  T = sum s (y - mu) and z = T / sqrt(sum s^2 v), sums over the items of S where c is present.
  The variance comes from the null, never from the firing items (a plug-in variance is ~0 when a
  few firing items agree, and then noise is called a gap). sum s^2 v = 0 means every firing item
  sits in a group whose scores are all equal, so T = 0 too: z = 0, never a call.
* **p-values.** Normal approximation, p_weak = Phi(z), p_strong = 1 - Phi(z), where the expected
  minority count n_eff * min(e, 1 - e) >= ``mc_below``. Below it (few items, or a benchmark near
  0 or 1 accuracy, where one correct item gives z ~ 7 but happens in 1 run of 10), a Monte Carlo
  p-value from the same statistic T: every item's score is redrawn from its own group's
  scores (with replacement, which has exactly the variance v), T* is recomputed for all such
  concepts of a scope at once as one sparse product per chunk of draws (only the items where
  they fire are drawn), and p = (1 + #{T* <= T}) / (1 + R) (>= for strong; ties count as
  extreme). The draws come in passes of 1,000, 20,000, ... (each 20x the last) up to R =
  ``mc_resamples``, by default 2 m / fdr for m tested hypotheses (concepts and themes; at least
  :data:`MC_AUTO_MIN`),
  so that the smallest p-value a concept can get, 1 / (R + 1), can still pass BH. Each pass is
  a fresh sample for the concepts whose previous pass found at most :data:`MC_CONTINUE` - 1
  draws as extreme (their p-value was at its resolution's floor); the p-value is that of the
  last pass a concept took part in. Under the null few concepts go on, so the large passes
  draw only the few items where those concepts fire. Only the hypotheses Tarone's rule keeps
  are drawn for. Draw chunk j of stream s and pass p comes from
  ``numpy.random.default_rng([seed, s, p, j])`` (:class:`NullSampler`), s the scope's number k
  for the concepts and K + 1 + k for the themes, so results do not depend on the machine.
  Measured calibration: see docs/results.md.
* **Themes** (:mod:`cgaps.scoring.themes` builds them from the saliency alone): an items x themes
  saliency matrix handed to :func:`score_tables`, tested with the same formulas; a theme's
  scale is its largest saliency.
* **Tarone's rule** (:func:`smallest_p`, :func:`tarone_keep`): p_min, the smallest two-sided
  p-value a hypothesis can get whatever its items' scores (every item at its group's lowest,
  or highest, score: Phi of that z, or for a Monte Carlo hypothesis the probability of drawing
  exactly that, at least 1 / (R + 1)); per scope, over concepts and themes together, the
  smallest K with #{p_min <= fdr / K} <= K, and only those hypotheses are kept.
* **BH**: one Benjamini-Hochberg adjustment (:func:`cgaps.stats.bh_adjust`, i.e. scipy's
  ``false_discovery_control``) per scope over the two-sided p-values 2 min(p_weak, p_strong)
  of the kept concepts and themes together; ``q_value`` is the adjusted value (NaN when not
  tested or not kept), ``p_value`` the two-sided p-value (NaN likewise), ``p_min`` the bound
  (NaN when not tested), and ``gap`` is ``weak`` (z < 0) or ``strong`` (z > 0) when q <= fdr.
  Gaps and strengths share the rate: two one-sided adjustments at fdr each called something
  on 4 of 20 null draws of the demo's saliency, where the method asks for at most 1.
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

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from cgaps.config import MC_FIRST_PASS, RunConfig
from cgaps.errors import CGapsError
from cgaps.rundir import ALL_SCOPE, CONCEPT_COLUMNS, OVERLAP_COLUMNS
from cgaps.runtables import has_duplicate_pairs
from cgaps.stats import bh_adjust, wilson

ROUND = 12  # decimals kept when ranking (status percentile, Spearman)
MC_CONTINUE = 10  # a concept with at most this many (+1) draws as extreme goes on to the next, larger pass
MC_CHUNK_CELLS = 20_000_000  # items x draws held at once (160 MB of float64)
MC_AUTO_MIN = 20_000  # the refining pass never draws fewer (mc_resamples = None)
_BLOCK = 1 << 22  # saliency rows per block of the presence test (float64 temporaries of ~30 MB)
TIE_EPS = 1e-9  # |T* - T| below this (relative to the concept's sum s) is a tie


@dataclass(frozen=True)
class SuiteMatrix:
    """A suite as arrays: the saliency matrix, the scores and the benchmark of each item."""

    saliency: sp.csr_matrix  # items x concepts, raw s_c(x) > 0, float64, canonical CSR
    scores: np.ndarray  # y(x), float64, one per row
    bench: np.ndarray  # benchmark code per row (index into `benchmarks`)
    benchmarks: tuple[str, ...]  # sorted benchmark names
    item_ids: np.ndarray
    scale: np.ndarray  # m_c per concept: the suite's max of the raw s_c, or a reference max
    # the adjustment group of each row (``adjust_by``: what mu(x), v(x) and e(c, S) are taken
    # from); None: the benchmark
    group: np.ndarray | None = None

    @property
    def n_concepts(self) -> int:
        return self.saliency.shape[1]

    @property
    def adjust(self) -> np.ndarray:
        """The adjustment group code of each row (the benchmark unless ``group`` says otherwise)."""
        return self.bench if self.group is None else self.group

    @property
    def n_groups(self) -> int:
        if self.group is None:
            return len(self.benchmarks)
        return int(self.group.max()) + 1 if len(self.group) else 0

    def subset(self, rows: np.ndarray) -> SuiteMatrix:
        """The same suite restricted to ``rows`` (benchmarks and groups keep their codes)."""
        rows = np.asarray(rows)
        return SuiteMatrix(
            self.saliency[rows],
            self.scores[rows],
            self.bench[rows],
            self.benchmarks,
            self.item_ids[rows],
            self.scale,
            None if self.group is None else self.group[rows],
        )

    def shat_data(self) -> np.ndarray:
        """s_hat = s / m_c of every nonzero of ``saliency`` (in its order), clipped to 1."""
        return np.minimum(self.saliency.data / self.scale[self.saliency.indices], 1.0)

    def shat_matrix(self) -> sp.csr_matrix:
        """ŝ (items x concepts): ``saliency`` on each concept's scale, clipped to 1 (:meth:`shat_data`
        in the matrix's own sparsity pattern)."""
        return sp.csr_matrix(
            (self.shat_data(), self.saliency.indices, self.saliency.indptr), shape=self.saliency.shape
        )

    def with_scores(self, scores: np.ndarray) -> SuiteMatrix:
        """The same saliency with other scores (null and planted draws in validation and tests)."""
        return dataclasses.replace(self, scores=np.asarray(scores, dtype=np.float64))


def concept_max(cols: np.ndarray, vals: np.ndarray, n_concepts: int) -> np.ndarray:
    """Each concept's max over saliency rows (0 where it never fires), as float64: the suite's
    concept scale when the SAE ships none. The max is exact in the stored dtype (numpy's fast
    path; 20x the float64 one on float32 values), then widened: the max of values widened
    exactly is the widened max."""
    out = np.zeros(n_concepts, dtype=vals.dtype)
    np.maximum.at(out, cols, vals)
    return out.astype(np.float64)


def item_rows(item_col: pd.Series, ids: pd.Index) -> np.ndarray:
    """The place in ``ids`` of each saliency row's item id (-1 for an id not there). A categorical
    column is looked up once per distinct id, not once per row, and when its categories are
    ``ids`` (``load_run(coded=True)``) its codes are the places."""
    if not isinstance(item_col.dtype, pd.CategoricalDtype):
        return ids.get_indexer(item_col.astype(str))
    codes = item_col.cat.codes.to_numpy()
    cats = item_col.cat.categories
    if cats.equals(ids):
        return codes
    lookup = ids.get_indexer(cats.astype(str)).astype(np.int32 if len(ids) < 2**31 else np.int64)
    return np.where(codes >= 0, lookup[codes], -1)


def adjustment_groups(items: pd.DataFrame, bench: np.ndarray, adjust_by: str) -> np.ndarray | None:
    """The adjustment group code of each item (module docstring, ``adjust_by``); None for
    ``benchmark`` (the benchmark codes themselves). ``category``: one group per (benchmark,
    category) pair, numbered in the pairs' sorted order (an item without a category forms the
    group of its benchmark and ""); ``none``: one group for the suite."""
    if adjust_by == "benchmark":
        return None
    if adjust_by == "none":
        return np.zeros(len(bench), dtype=np.int64)
    if adjust_by != "category":
        raise CGapsError(f"adjust_by is {adjust_by!r}; valid: benchmark, category, none")
    if "category" not in items.columns:
        raise CGapsError(
            "items: no field 'category', which adjust_by 'category' needs; give the items a category "
            "(cgaps import table --map category=PATH) or score with --adjust-by benchmark"
        )
    cat = items["category"].fillna("").astype(str).to_numpy()
    _, cat_code = np.unique(cat, return_inverse=True)
    pair = bench.astype(np.int64) * (int(cat_code.max()) + 1 if len(cat_code) else 1) + cat_code
    _, group = np.unique(pair, return_inverse=True)  # (benchmark, category) pairs in sorted order
    return group.astype(np.int64)


def build_matrix(
    items: pd.DataFrame,
    saliency: pd.DataFrame,
    n_concepts: int,
    *,
    presence: float = 0.0,
    scale: np.ndarray | None = None,
    adjust_by: str = "benchmark",
) -> SuiteMatrix:
    """Turn the items table (with scores) and the sparse saliency table into a :class:`SuiteMatrix`.

    ``presence`` drops every s_c(x) < presence * m_c (the thresholded saliency s' of the
    module docstring); ``scale`` is m_c (default: each concept's max over the suite);
    ``adjust_by`` names the grouping the expected scores come from.
    """
    ids = pd.Index(items["item_id"].astype(str))
    if not ids.is_unique:
        raise CGapsError("items: field 'item_id' has duplicates; item ids must be unique in the suite")
    y = pd.to_numeric(items["score"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all((y >= 0) & (y <= 1)):  # also catches NaN
        raise CGapsError("items: field 'score' must hold numbers in [0, 1] (no NaN)")
    names, bench = np.unique(items["benchmark"].astype(str).to_numpy(), return_inverse=True)
    rows = item_rows(saliency["item_id"], ids)
    if len(rows) and rows.min() < 0:
        raise CGapsError("saliency: field 'item_id' names items that are not in the items table")
    cols = saliency["concept"].to_numpy()
    # float32 as stored: widened to float64 (exactly) only for the rows presence keeps, in blocks
    vals = saliency["value"].to_numpy()
    if vals.dtype.kind not in "fiu":  # e.g. numbers as objects: converted as before
        vals = vals.astype(np.float64)
    if len(cols) and (cols.min() < 0 or cols.max() >= n_concepts):
        raise CGapsError(f"saliency: field 'concept' outside 0..{n_concepts - 1}")
    if not np.all(vals > 0) or not np.all(np.isfinite(vals)):
        raise CGapsError("saliency: field 'value' must hold finite values > 0 only")
    # duplicates checked over every row, before presence drops any
    if has_duplicate_pairs(rows, cols, n_concepts):
        raise CGapsError(
            "saliency: duplicate (item_id, concept) rows; pool each concept to one value per item"
        )
    if scale is None:
        scale = concept_max(cols, vals, n_concepts)
    scale = np.asarray(scale, dtype=np.float64)
    if scale.shape != (n_concepts,) or not np.all(np.isfinite(scale)) or np.any(scale < 0):
        raise CGapsError(f"concept scale: expected {n_concepts} finite values >= 0, got shape {scale.shape}")
    if presence > 0 and len(vals):
        # thresholded before the matrix is built: at paper scale presence keeps a fifth of ~50M
        # rows, and only that fifth is ever sorted into CSR; the test runs in float64, in blocks
        keep = np.empty(len(vals), dtype=bool)
        for start in range(0, len(vals), _BLOCK):
            block = slice(start, start + _BLOCK)
            col_scale = scale[cols[block]]
            keep[block] = (col_scale > 0) & (vals[block].astype(np.float64) >= presence * col_scale)
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    vals = vals.astype(np.float64)
    mat = sp.csr_matrix((vals, (rows, cols)), shape=(len(ids), n_concepts))
    mat.sort_indices()
    bench = bench.astype(np.int64)
    group = adjustment_groups(items, bench, adjust_by)
    return SuiteMatrix(mat, y, bench, tuple(str(n) for n in names), ids.to_numpy(), scale, group)


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
    stat: np.ndarray  # T = sum s (y - mu): the score statistic
    null_var: np.ndarray  # sum s^2 v: T's variance under the null


def benchmark_moments(m: SuiteMatrix) -> tuple[np.ndarray, np.ndarray]:
    """ybar(g) and the population variance v(g) of each adjustment group's scores (its items weigh
    equally); the groups are the benchmarks unless ``adjust_by`` chose another grouping."""
    g, n = m.adjust, m.n_groups
    counts = np.maximum(np.bincount(g, minlength=n).astype(np.float64), 1)
    ybar = np.bincount(g, weights=m.scores, minlength=n) / counts
    dev = m.scores - ybar[g]  # second pass: no cancellation in E[y^2] - E[y]^2
    var = np.bincount(g, weights=dev * dev, minlength=n) / counts
    return ybar, var


def chi_tables(m: SuiteMatrix) -> ChiTables:
    """All per-scope sums of docs/method.md §3 as sparse products.

    s_hat uses the matrix's ``scale``, which a row subset keeps: robustness subsets stay on the
    full suite's scale.
    """
    s = m.saliency
    if s.shape[0] == 0:
        raise CGapsError("no items to score")
    row_of = np.repeat(np.arange(s.shape[0]), np.diff(s.indptr))  # row of each nonzero
    data = s.data
    y_nz = m.scores[row_of]
    ybar, var_b = benchmark_moments(m)
    mu_nz = ybar[m.adjust][row_of]
    p = _scope_indicator(m)

    def scope_sum(values: np.ndarray) -> np.ndarray:
        return (p @ _with_data(s, values)).toarray()

    support = scope_sum(np.ones_like(data))
    sum_s = scope_sum(data)
    sum_s2 = scope_sum(data * data)
    sum_sy = scope_sum(data * y_nz)
    sum_sybar = scope_sum(data * mu_nz)
    sum_shat = scope_sum(m.shat_data())
    stat = scope_sum(data * (y_nz - mu_nz))
    null_var = scope_sum(data * data * var_b[m.adjust][row_of])
    n_items = np.asarray(p.sum(axis=1)).ravel()

    fires = sum_s > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        chi_model = np.where(fires, sum_sy / sum_s, np.nan)
        expected = np.where(fires, sum_sybar / sum_s, np.nan)
        n_eff = np.where(fires, sum_s**2 / sum_s2, 0.0)
    chi_bench = sum_shat / n_items[:, None]
    chi_bench_raw = sum_s / n_items[:, None]
    return ChiTables(
        n_items,
        support,
        sum_s,
        sum_s2,
        chi_bench,
        chi_bench_raw,
        chi_model,
        expected,
        n_eff,
        np.where(fires, stat, np.nan),
        np.where(fires, null_var, np.nan),
    )


def percentile_of(values: np.ndarray) -> np.ndarray:
    """Percentile (the rule in the module docstring) of each value among ``values``."""
    ranks = stats.rankdata(np.round(values, ROUND), method="average")
    return 100.0 * (ranks - 0.5) / len(values)


def z_scores(t: ChiTables) -> np.ndarray:
    """z = T / sqrt(sum s^2 v) (module docstring); 0 where the null variance is 0, NaN where not firing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = t.stat / np.sqrt(t.null_var)
    return np.where(t.null_var > 0, z, np.where(np.isnan(t.stat), np.nan, 0.0))


def mc_concepts(t: ChiTables, cfg: RunConfig) -> np.ndarray:
    """(K + 1) x F mask: the tested concepts whose p-value comes from Monte Carlo, not the normal."""
    with np.errstate(invalid="ignore"):
        minority = t.n_eff * np.minimum(t.expected, 1 - t.expected)
        return (t.support >= cfg.min_support) & (t.null_var > 0) & (minority < cfg.mc_below)


@dataclass(frozen=True)
class NullSampler:
    """Draws null scores for a fixed set of item rows: each item's score redrawn from all
    scores of its own benchmark, with replacement, centred on the benchmark mean.

    The pools and means are computed once here, not per chunk of draws. The protocol (the
    reference re-implements it): chunk j of stream (scope, pass) comes from
    ``default_rng([seed, scope, pass, j])``; within a chunk, benchmarks in sorted order, each
    filling its items of the rows in row order."""

    positions: tuple[np.ndarray, ...]  # per benchmark: where its items sit among the rows
    pools: tuple[np.ndarray, ...]  # per benchmark: all its scores
    means: np.ndarray  # ybar(B)
    n_rows: int

    @classmethod
    def for_rows(cls, m: SuiteMatrix, rows: np.ndarray) -> NullSampler:
        ybar, _ = benchmark_moments(m)
        group_of = m.adjust[rows]
        positions = tuple(np.flatnonzero(group_of == g) for g in range(m.n_groups))
        pools = tuple(m.scores[m.adjust == g] for g in range(m.n_groups))
        return cls(positions, pools, ybar, len(rows))

    def draws(self, seed: int, stream: tuple[int, int], chunk: int, size: int) -> np.ndarray:
        """Chunk ``chunk`` of the stream: n_rows x size centred draws y* - ybar(B), in row order
        (the plain form of :meth:`draws_grouped`, which the Monte Carlo uses)."""
        rng = np.random.default_rng([seed, *stream, chunk])
        out = np.empty((self.n_rows, size))
        for idx, pool, mean in zip(self.positions, self.pools, self.means, strict=True):
            if len(idx):
                out[idx] = pool[rng.integers(0, len(pool), size=(len(idx), size))] - mean
        return out

    def order(self) -> np.ndarray:
        """The rows of :meth:`draws_grouped`'s result: benchmark by benchmark, row order within one."""
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in self.positions])

    def draws_grouped(self, seed: int, stream: tuple[int, int], chunk: int, size: int) -> np.ndarray:
        """The same draws as :meth:`draws` with the rows in :meth:`order`: each benchmark's draws
        land in one contiguous block (one ``take`` per benchmark instead of a gather, a subtraction
        and a scatter over rows spread through the chunk); the random numbers are the same ones."""
        rng = np.random.default_rng([seed, *stream, chunk])
        out = np.empty((self.n_rows, size))
        at = 0
        for idx, pool, mean in zip(self.positions, self.pools, self.means, strict=True):
            if len(idx):
                # (pool - mean)[i] is pool[i] - mean, bit for bit
                centred = pool - mean
                np.take(
                    centred, rng.integers(0, len(pool), size=(len(idx), size)), out=out[at : at + len(idx)]
                )
                at += len(idx)
        return out


def mc_chunk_size(n_rows: int) -> int:
    """Draws per chunk: as many as fit :data:`MC_CHUNK_CELLS`, at most the first pass."""
    return max(1, min(MC_FIRST_PASS, MC_CHUNK_CELLS // max(n_rows, 1)))


def mc_resamples(cfg: RunConfig, n_tested: int) -> int:
    """Draws of the refining pass in all: ``mc_resamples``, or (None) enough that the smallest
    p-value, 1 / (R + 1), passes BH at ``fdr`` among n_tested concepts twice over."""
    if cfg.mc_resamples is not None:
        return cfg.mc_resamples
    return max(MC_AUTO_MIN, int(np.ceil(2 * n_tested / cfg.fdr)))


def _mc_counts(
    m: SuiteMatrix,
    t: ChiTables,
    k: int,
    cols: np.ndarray,
    seed: int,
    stage: int,
    draws_total: int,
    stream: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """#{T* <= T} and #{T* >= T} over ``draws_total`` draws for concepts ``cols`` of scope k.

    Only the items where these concepts fire are drawn (the others add 0 to T*)."""
    sub = m.saliency[:, cols]
    if k != len(m.benchmarks):
        sub = sp.diags((m.bench == k).astype(np.float64)) @ sub
        sub.eliminate_zeros()
    sub = sub.tocsr()
    rows = np.flatnonzero(np.diff(sub.indptr))
    block = sub[rows].T.tocsr()  # concepts x firing items
    obs = t.stat[k, cols]
    tol = TIE_EPS * np.maximum(t.sum_s[k, cols], 1.0)
    size = mc_chunk_size(len(rows))
    sampler = NullSampler.for_rows(m, rows)
    # the draws come benchmark by benchmark (NullSampler.draws_grouped): point each nonzero at its
    # item's new place and keep the nonzeros' order, so every T* is summed in the same order as
    # against draws in row order, bit for bit (csr_matvecs does not need sorted indices)
    place = np.empty(len(rows), dtype=block.indices.dtype)
    place[sampler.order()] = np.arange(len(rows), dtype=block.indices.dtype)
    block = sp.csr_matrix((block.data, place[block.indices], block.indptr), shape=block.shape)
    le = np.zeros(len(cols))
    ge = np.zeros(len(cols))
    for chunk in range(-(-draws_total // size)):
        n = min(size, draws_total - chunk * size)
        tstar = np.asarray(block @ sampler.draws_grouped(seed, (k + stream, stage), chunk, size)[:, :n])
        le += (tstar <= (obs + tol)[:, None]).sum(axis=1)
        ge += (tstar >= (obs - tol)[:, None]).sum(axis=1)
    return le, ge


def mc_passes(total: int) -> list[int]:
    """Sizes of the successive Monte Carlo passes up to ``total`` draws (each 20x the last)."""
    sizes = [MC_FIRST_PASS]
    while sizes[-1] < total:
        sizes.append(min(total, sizes[-1] * 20))
    return sizes


def p_values(
    m: SuiteMatrix,
    t: ChiTables,
    cfg: RunConfig,
    n_tests: np.ndarray | None = None,
    only: np.ndarray | None = None,
    stream: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z, p_weak and p_strong per scope and concept (the rules of the module docstring).

    ``n_tests``: the number of hypotheses of each scope, which sets the Monte Carlo resolution
    (default: the columns with support >= min_support); ``only``: a (K + 1) x F mask of the
    columns whose p-values are wanted (the others keep the normal approximation's: no draws);
    ``stream``: added to the scope's number in the draws' seeds (the themes draw their own)."""
    z = z_scores(t)
    p_weak, p_strong = stats.norm.cdf(z), stats.norm.sf(z)
    mc = mc_concepts(t, cfg)
    if only is not None:
        mc &= only
    if n_tests is None:
        n_tests = (t.support >= cfg.min_support).sum(axis=1)
    for k in range(mc.shape[0]):
        cols = np.flatnonzero(mc[k])
        if not len(cols):
            continue
        sizes = mc_passes(mc_resamples(cfg, int(n_tests[k])))
        pw, ps = np.ones(len(cols)), np.ones(len(cols))
        active = np.ones(len(cols), dtype=bool)
        for stage, size in enumerate(sizes):
            # a fresh sample for the concepts still near the floor of the last pass's resolution
            le, ge = _mc_counts(m, t, k, cols[active], cfg.seed, stage, size, stream)
            pw[active], ps[active] = (1 + le) / (1 + size), (1 + ge) / (1 + size)
            active &= np.minimum(pw, ps) * (1 + size) <= MC_CONTINUE
            if not active.any():
                break
        p_weak[k, cols], p_strong[k, cols] = pw, ps
    return z, p_weak, p_strong


# columns concepts.parquet carries beyond rundir.CONCEPT_COLUMNS (docs/method.md §3 and §6)
CONCEPT_EXTRA_COLUMNS = ("p_value", "p_min", "theme")
# the columns of a theme's test (theme_tests.parquet after `theme`, `scope`, `n_members`, `members`)
TEST_COLUMNS = (
    "support",
    "chi_bench",
    "chi_bench_raw",
    "chi_model",
    "expected",
    "n_eff",
    "ci_low",
    "ci_high",
    "status",
    "gap",
    "q_value",
    "p_value",
    "p_min",
)


def smallest_p(m: SuiteMatrix, t: ChiTables, cfg: RunConfig, n_tests: np.ndarray) -> np.ndarray:
    """(K + 1) x F: the smallest two-sided p-value each column could get in each scope, whatever
    the scores of its items (Tarone's bound; module docstring). NaN where support < min_support.

    The most extreme outcomes are every firing item at its group's lowest score (weak side) or
    highest (strong side). Under the normal approximation that is Phi(z) at that T; for a
    Monte Carlo column it is the probability that every redrawn score is at that extreme (the
    product over its items of the share of the group's scores at it), and never below the
    resolution 1 / (R + 1) of the draws.
    """
    s = m.saliency
    row_of = np.repeat(np.arange(s.shape[0]), np.diff(s.indptr))
    g = m.adjust
    n_g = m.n_groups
    ybar, _ = benchmark_moments(m)
    lo = np.full(n_g, np.inf)
    hi = np.full(n_g, -np.inf)
    np.minimum.at(lo, g, m.scores)
    np.maximum.at(hi, g, m.scores)
    counts = np.maximum(np.bincount(g, minlength=n_g), 1)
    share_lo = np.bincount(g, weights=(m.scores == lo[g]).astype(float), minlength=n_g) / counts
    share_hi = np.bincount(g, weights=(m.scores == hi[g]).astype(float), minlength=n_g) / counts
    lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 0.0)
    g_nz = g[row_of]
    p = _scope_indicator(m)

    def scope_sum(values: np.ndarray) -> np.ndarray:
        return (p @ _with_data(s, values)).toarray()

    t_lo = scope_sum(s.data * (lo[g_nz] - ybar[g_nz]))
    t_hi = scope_sum(s.data * (hi[g_nz] - ybar[g_nz]))
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt(t.null_var)
        z_lo = np.where(t.null_var > 0, t_lo / sd, 0.0)
        z_hi = np.where(t.null_var > 0, t_hi / sd, 0.0)
        # log of the probability that every item of the column is redrawn at its extreme
        log_lo = scope_sum(np.log(np.maximum(share_lo[g_nz], 1e-300)))
        log_hi = scope_sum(np.log(np.maximum(share_hi[g_nz], 1e-300)))
    normal = 2 * np.minimum(stats.norm.cdf(z_lo), stats.norm.sf(z_hi))
    floor = np.array([1.0 / (1 + mc_resamples(cfg, int(n))) for n in n_tests])[:, None]
    exact = 2 * np.maximum(np.exp(np.minimum(log_lo, log_hi)), floor)
    out = np.minimum(1.0, np.where(mc_concepts(t, cfg), exact, normal))
    return np.where(t.support >= cfg.min_support, out, np.nan)


def tarone_keep(p_min: np.ndarray, alpha: float) -> np.ndarray:
    """Tarone's rule as Gilbert (2005) applies it before Benjamini-Hochberg: the smallest K with
    #{i : p_min_i <= alpha / K} <= K; the hypotheses kept are those with p_min <= alpha / K."""
    ordered = np.sort(p_min)
    lo, hi = 1, max(len(ordered), 1)
    while lo < hi:  # #{p_min <= alpha / K} falls as K grows: the first K where it is <= K
        mid = (lo + hi) // 2
        if np.searchsorted(ordered, alpha / mid, side="right") <= mid:
            hi = mid
        else:
            lo = mid + 1
    return p_min <= alpha / lo


@dataclass
class Tests:
    """One table's per-scope test results (K + 1) x F: z, two-sided p, p_min, q (NaN: not kept)."""

    z: np.ndarray
    p: np.ndarray
    p_min: np.ndarray
    q: np.ndarray


def kept_hypotheses(p_mins: list[np.ndarray], fdr: float) -> list[np.ndarray]:
    """Per table (concepts, themes) a (K + 1) x F mask of the hypotheses Tarone's rule keeps: per
    scope, over the p_min of every table's tested columns (NaN: not tested) together."""
    keeps = [np.zeros(p.shape, dtype=bool) for p in p_mins]
    for k in range(p_mins[0].shape[0]):
        cols = [np.flatnonzero(~np.isnan(p[k])) for p in p_mins]
        kept = tarone_keep(np.concatenate([p[k, c] for p, c in zip(p_mins, cols, strict=True)]), fdr)
        at = 0
        for keep, c in zip(keeps, cols, strict=True):
            keep[k, c] = kept[at : at + len(c)]
            at += len(c)
    return keeps


def bh_scopes(ps: list[np.ndarray]) -> list[np.ndarray]:
    """Per scope, one Benjamini-Hochberg adjustment over the p-values of every table together
    (NaN: not a hypothesis); the q-values in the same shapes."""
    qs = [np.full(p.shape, np.nan) for p in ps]
    for k in range(ps[0].shape[0]):
        cols = [np.flatnonzero(~np.isnan(p[k])) for p in ps]
        q = bh_adjust(np.concatenate([p[k, c] for p, c in zip(ps, cols, strict=True)]))
        at = 0
        for qq, c in zip(qs, cols, strict=True):
            qq[k, c] = q[at : at + len(c)]
            at += len(c)
    return qs


def joint_tests(
    pairs: list[tuple[SuiteMatrix, ChiTables]], cfg: RunConfig, *, tarone: bool = True
) -> list[Tests]:
    """The calls of docs/method.md §3 over several tables of hypotheses of one suite (the
    concepts, the themes): per scope, Tarone's rule on their smallest achievable p-values, the
    p-values of the hypotheses kept (Monte Carlo only for those), then one Benjamini-Hochberg
    over them all (gaps and strengths share the false discovery rate). ``tarone=False`` keeps
    every tested hypothesis (the plain adjustment of :func:`concept_table`)."""
    n_tests = sum((t.support >= cfg.min_support).sum(axis=1) for _, t in pairs)
    p_mins = [smallest_p(m, t, cfg, n_tests) for m, t in pairs]
    keeps = kept_hypotheses(p_mins, cfg.fdr) if tarone else [~np.isnan(p) for p in p_mins]
    out = []
    for i, ((m, t), p_min, keep) in enumerate(zip(pairs, p_mins, keeps, strict=True)):
        # table i draws from streams i(K + 1) + scope: no two tables share random numbers
        z, p_weak, p_strong = p_values(m, t, cfg, n_tests, only=keep, stream=i * len(n_tests))
        p = np.where(keep, np.minimum(1.0, 2 * np.minimum(p_weak, p_strong)), np.nan)
        out.append(Tests(z, p, p_min, np.full(p.shape, np.nan)))
    for tests, q in zip(out, bh_scopes([x.p for x in out]), strict=True):
        tests.q = q
    return out


def _table(t: ChiTables, tests: Tests, cfg: RunConfig, scopes: list[str], key: str) -> pd.DataFrame:
    n_scopes, f = t.chi_model.shape
    ci_low, ci_high = wilson(t.chi_model, t.n_eff, cfg.ci_level)
    status = np.full((n_scopes, f), "missing", dtype=object)
    for k in range(n_scopes):  # per-scope ranking: a loop over scopes only
        present = t.support[k] > 0
        pct = percentile_of(t.chi_bench[k, present])
        status[k, present] = np.where(
            pct < cfg.under_pct, "under", np.where(pct > cfg.over_pct, "over", "normal")
        )
    with np.errstate(invalid="ignore"):
        called = (tests.z != 0) & (tests.q <= cfg.fdr)
    gap = np.where(called, np.where(tests.z < 0, "weak", "strong"), "").astype(object)
    return pd.DataFrame(
        {
            key: np.tile(np.arange(f, dtype=np.int32), n_scopes),
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
            "q_value": tests.q.ravel(),
            "p_value": tests.p.ravel(),
            "p_min": tests.p_min.ravel(),
        }
    )


def score_tables(
    m: SuiteMatrix,
    cfg: RunConfig,
    t: ChiTables | None = None,
    themes: sp.csr_matrix | None = None,
    theme_of: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The concepts table and, given ``themes`` (items x themes saliency, :mod:`cgaps.scoring.themes`),
    the themes' test table, with the calls of one joint procedure per scope (:func:`call_scopes`).
    ``theme_of``: the theme of each concept (-1: none), the concepts table's ``theme`` column."""
    t = chi_tables(m) if t is None else t
    scopes = [*m.benchmarks, ALL_SCOPE]
    tm = tt = None
    if themes is not None:
        # a theme's scale is its own largest saliency over the suite (its chi_bench stays in [0, 1])
        scale = concept_max(themes.tocoo().col, themes.tocoo().data, themes.shape[1])
        tm = SuiteMatrix(themes, m.scores, m.bench, m.benchmarks, m.item_ids, scale, m.group)
        tt = chi_tables(tm)
    pairs = [(m, t)] if tm is None or tt is None else [(m, t), (tm, tt)]
    parts = joint_tests(pairs, cfg)
    concepts = _table(t, parts[0], cfg, scopes, "concept")
    f = m.n_concepts
    concepts["theme"] = np.tile(
        (np.full(f, -1) if theme_of is None else np.asarray(theme_of)).astype(np.int32), len(scopes)
    )
    concepts = concepts[[*CONCEPT_COLUMNS, *CONCEPT_EXTRA_COLUMNS]]
    theme_table = None if tt is None else _table(tt, parts[1], cfg, scopes, "theme")
    return concepts, theme_table


def concept_table(m: SuiteMatrix, cfg: RunConfig, t: ChiTables | None = None) -> pd.DataFrame:
    """A concepts table with the plain adjustment: one Benjamini-Hochberg per scope over every
    tested concept, no themes, no Tarone's rule (``cgaps compare`` applies it to paired
    differences; the scoring stage's calls are :func:`score_tables`')."""
    t = chi_tables(m) if t is None else t
    (tests,) = joint_tests([(m, t)], cfg, tarone=False)
    concepts = _table(t, tests, cfg, [*m.benchmarks, ALL_SCOPE], "concept")
    concepts["theme"] = np.int32(-1)
    return concepts[[*CONCEPT_COLUMNS, *CONCEPT_EXTRA_COLUMNS]]


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
