"""What a benchmark misses, and which pool items cover it: the arithmetic of ``cgaps fill``.

Everything here works on arrays; :mod:`cgaps.fill.stage` reads and writes the folders. The
rules (docs/method.md §7):

* **Coverage** of a benchmark B (:func:`coverage`): support, χ_bench and status of every concept
  in B, by the scoring stage's own functions (:func:`cgaps.scoring.core.build_matrix` and
  :func:`~cgaps.scoring.core.concept_table`) on B's items alone, at the run's presence and on the
  command's fixed concept scale. Coverage does not depend on scores, so the items get y = 0.
* **Targets** (:func:`targets`): the concepts present in the reference (the run's suite, or a
  reference run) that B misses (support 0) or under-represents (status ``under``). Under is a
  percentile, so some concepts are always under; what is comparable before and after is the
  benchmark's *under threshold* θ_B, the smallest χ_bench of a present concept that is not
  under: a concept is under when present with χ_bench < θ_B (:func:`under_threshold`).
* **Objective** (weighted saturated coverage; both terms monotone submodular):

      f(X) = Σ_{c ∈ M} w_m · 1[c present in some x ∈ X]
           + Σ_{c ∈ U} w_u · min(1, Σ_{x ∈ X} ŝ'_c(x) / d_c)

  with M the missing targets, U the under targets, ŝ' the thresholded normalised saliency,
  and d_c = θ_B (|B| + budget) − |B| χ_bench(c, B) the ŝ' mass that lifts c to θ_B in the
  augmented benchmark.
* **Greedy** (:func:`greedy`): add the item with the largest marginal gain (ties to the lower
  pool position; gains compared at 12 decimals), until the budget is spent or nothing gains.
  For a monotone submodular f this is within 1 − 1/e of the best selection (Nemhauser, Wolsey
  & Fisher 1978). Gains only shrink as X grows, so a stale gain is an upper bound and the
  lazy evaluation of Minoux (1978) picks exactly what the plain loop picks
  (``tests/fill/test_fill.py`` checks it against :func:`greedy_reference`).
* **Baselines**: ``random`` (the same budget drawn uniformly from the eligible pool, seeded)
  and ``group`` (round-robin over the pool's metadata groups, its benchmarks or else its
  categories, a seeded shuffle within each: what a builder balancing sources would add).
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cgaps.config import RunConfig
from cgaps.scoring.core import ROUND, build_matrix, concept_table, percentile_of

ARMS = ("fill", "random", "group")


@dataclass(frozen=True)
class Coverage:
    """One benchmark's coverage (arrays over the F concepts) and its ŝ' matrix."""

    n_items: int
    support: np.ndarray
    chi_bench: np.ndarray
    status: np.ndarray  # missing / under / normal / over
    shat: sp.csr_matrix  # items x concepts, thresholded, on the fixed scale, clipped to 1


def coverage(
    items: pd.DataFrame, saliency: pd.DataFrame, n_concepts: int, cfg: RunConfig, scale: np.ndarray
) -> Coverage:
    """Coverage of ``items`` taken as one benchmark (module docstring)."""
    one = items[["item_id"]].assign(benchmark="B", score=0.0)
    m = build_matrix(one, saliency, n_concepts, presence=cfg.presence, scale=scale)
    table = concept_table(m, cfg)
    rows = table[table["scope"] == "B"]
    return Coverage(
        len(items),
        rows["support"].to_numpy(np.int64),
        rows["chi_bench"].to_numpy(np.float64),
        rows["status"].to_numpy(object),
        m.shat_matrix(),
    )


def under_threshold(cov: Coverage, under_pct: float) -> float:
    """θ_B: the smallest χ_bench of a present concept that is not under (inf when all are)."""
    present = cov.support > 0
    values = cov.chi_bench[present]
    if not len(values):
        return float("inf")
    not_under = percentile_of(values) >= under_pct
    return float(np.round(values[not_under], ROUND).min()) if not_under.any() else float("inf")


def shares(support: np.ndarray, chi_bench: np.ndarray, theta: float) -> dict[str, float]:
    """Missing share (support 0) and under share (present, χ_bench below θ_B) of all F concepts."""
    f = len(support)
    under = (support > 0) & (np.round(chi_bench, ROUND) < theta)
    return {"missing": float((support == 0).sum() / f), "under": float(under.sum() / f)}


@dataclass(frozen=True)
class Targets:
    missing: np.ndarray  # concept ids, ascending
    under: np.ndarray
    deficit: np.ndarray  # per under target, the ŝ' mass that lifts it to θ_B (d_c)
    theta: float


def targets(cov: Coverage, reference_present: np.ndarray, budget: int, under_pct: float) -> Targets:
    """The concepts to cover (module docstring): missing or under in B, present in the reference."""
    theta = under_threshold(cov, under_pct)
    missing = np.flatnonzero((cov.support == 0) & reference_present)
    under = np.flatnonzero((cov.status == "under") & reference_present)
    deficit = theta * (cov.n_items + budget) - cov.n_items * cov.chi_bench[under]
    keep = deficit > 0  # always, unless θ is inf (no present concept above the under percentile)
    return Targets(missing, under[keep], deficit[keep], theta)


@dataclass
class Selection:
    rows: list[int]  # pool rows, in the order chosen
    gains: list[float]  # the marginal gain of each
    covers: list[
        np.ndarray
    ]  # per chosen row: the missing targets (positions in Targets.missing) it covered first
    fills: list[np.ndarray]  # per chosen row: the under targets (positions) it added mass to


class _Gains:
    """Marginal gains of pool rows against the coverage reached so far."""

    def __init__(
        self,
        cover: sp.csr_matrix,
        mass: sp.csr_matrix,
        deficit: np.ndarray,
        w_missing: float,
        w_under: float,
    ):
        self.cover, self.mass, self.deficit = cover, mass, deficit
        self.w_missing, self.w_under = w_missing, w_under
        self.covered = np.zeros(cover.shape[1], dtype=bool)
        self.filled = np.zeros(mass.shape[1])

    def parts(self, row: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        c = self.cover.indices[self.cover.indptr[row] : self.cover.indptr[row + 1]]
        new = c[~self.covered[c]]
        lo, hi = self.mass.indptr[row], self.mass.indptr[row + 1]
        u, v = self.mass.indices[lo:hi], self.mass.data[lo:hi]
        d, done = self.deficit[u], self.filled[u]
        add = (np.minimum(d, done + v) - np.minimum(d, done)) / d
        gain = self.w_missing * len(new) + self.w_under * float(add.sum())
        return round(gain, ROUND), new, u[add > 0], v

    def take(self, row: int) -> tuple[float, np.ndarray, np.ndarray]:
        gain, new, filled, _ = self.parts(row)
        lo, hi = self.mass.indptr[row], self.mass.indptr[row + 1]
        self.covered[new] = True
        np.add.at(self.filled, self.mass.indices[lo:hi], self.mass.data[lo:hi])
        return gain, new, filled


def greedy(
    cover: sp.csr_matrix,
    mass: sp.csr_matrix,
    deficit: np.ndarray,
    budget: int,
    *,
    w_missing: float = 1.0,
    w_under: float = 0.5,
    eligible: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> Selection:
    """Lazy greedy maximisation of f (module docstring).

    ``cover``: pool x missing targets, nonzero where the target is present; ``mass``: pool x
    under targets, ŝ'; ``deficit``: d_c per under target; ``eligible``: pool rows that may be
    chosen (default all)."""
    cover, mass = sp.csr_matrix(cover), sp.csr_matrix(mass)
    cover.sort_indices()
    mass.sort_indices()
    g = _Gains(cover, mass, np.asarray(deficit, dtype=np.float64), w_missing, w_under)
    rows = np.arange(cover.shape[0]) if eligible is None else np.flatnonzero(eligible)
    heap = [(-g.parts(int(r))[0], int(r)) for r in rows]
    heapq.heapify(heap)
    out = Selection([], [], [], [])
    while heap and len(out.rows) < budget:
        _, row = heapq.heappop(heap)
        key = (-g.parts(row)[0], row)
        if heap and key > heap[0]:  # another row may gain more (its stale gain is an upper bound)
            heapq.heappush(heap, key)
            continue
        if key[0] >= 0:  # the best remaining row gains nothing: every reachable target is covered
            break
        gain, new, filled = g.take(row)
        out.rows.append(row)
        out.gains.append(gain)
        out.covers.append(new)
        out.fills.append(filled)
        if progress is not None:
            progress(1)
    return out


def greedy_reference(
    cover: sp.csr_matrix,
    mass: sp.csr_matrix,
    deficit: np.ndarray,
    budget: int,
    *,
    w_missing: float = 1.0,
    w_under: float = 0.5,
) -> list[int]:
    """The plain greedy the lazy one must equal: every gain recomputed from scratch at every step,
    from dense arrays, with the objective written out."""
    cov = np.asarray(sp.csr_matrix(cover).todense()) > 0
    ms = np.asarray(sp.csr_matrix(mass).todense(), dtype=np.float64)
    d = np.asarray(deficit, dtype=np.float64)

    def f(chosen: list[int]) -> float:
        hit = cov[chosen].any(axis=0) if chosen else np.zeros(cov.shape[1], dtype=bool)
        got = ms[chosen].sum(axis=0) if chosen else np.zeros(ms.shape[1])
        return w_missing * float(hit.sum()) + w_under * float(np.minimum(1.0, got / d).sum())

    chosen: list[int] = []
    while len(chosen) < budget:
        base = f(chosen)
        best, best_gain = -1, 0.0
        for r in range(cov.shape[0]):
            if r in chosen:
                continue
            gain = round(f([*chosen, r]) - base, ROUND)
            if gain > best_gain:
                best, best_gain = r, gain
        if best < 0:
            break
        chosen.append(best)
    return chosen


def _rng(seed: int, arm: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(arm.encode())])


def random_selection(n_pool: int, budget: int, seed: int) -> list[int]:
    """``budget`` pool rows drawn uniformly without replacement (seeded), in drawing order."""
    return [int(r) for r in _rng(seed, "random").permutation(n_pool)[:budget]]


def group_column(pool: pd.DataFrame) -> str | None:
    """The pool's metadata groups: its benchmarks when it has several, else its categories, else none."""
    if pool["benchmark"].nunique() > 1:
        return "benchmark"
    if "category" in pool.columns and pool["category"].fillna("").astype(str).nunique() > 1:
        return "category"
    return None


def group_selection(groups: pd.Series, budget: int, seed: int) -> list[int]:
    """Round-robin over the groups (sorted by name), one item of each in turn, each group's items
    in a seeded random order: the same number from every source while they last."""
    rng = _rng(seed, "group")
    queues = []
    for _, idx in sorted(groups.astype(str).groupby(groups.astype(str)).groups.items()):
        queues.append(list(rng.permutation(np.asarray(idx, dtype=np.int64))))
    out: list[int] = []
    while len(out) < budget and any(queues):
        for q in queues:
            if q and len(out) < budget:
                out.append(int(q.pop(0)))
    return out


def predicted(
    cov: Coverage, pool_shat: sp.csr_matrix, rows: list[int], theta: float
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Support and χ_bench of every concept in B plus the pool ``rows``, from the pool's own
    saliency, and the shares they give."""
    added = pool_shat[rows] if rows else sp.csr_matrix((0, pool_shat.shape[1]))
    support = cov.support + np.asarray((added > 0).sum(axis=0)).ravel().astype(np.int64)
    mass = cov.chi_bench * cov.n_items + np.asarray(added.sum(axis=0)).ravel()
    chi = mass / (cov.n_items + len(rows))
    return support, chi, shares(support, chi, theta)
