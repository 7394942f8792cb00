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
* **Swaps** (:func:`swaps`): the greedy's selection, improved by exchanging one chosen item for
  one unchosen pool item while some exchange raises f (the largest rise first; ties to the
  earlier chosen item, then the lower pool position), at most ``MAX_SWAPS_PER_ITEM`` × budget
  exchanges. Every exchange's rise is computed for all pool items at once from the coverage
  counts; :func:`swaps_reference` recomputes f for every pair and must pick the same.
  :func:`select` runs both and orders the result as the greedy would take it.
* **Baselines**: ``random`` (the same budget drawn uniformly from the eligible pool, seeded)
  and ``group`` (round-robin over the pool's metadata groups, its benchmarks or else its
  categories, a seeded shuffle within each: what a builder balancing sources would add).
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cgaps.config import RunConfig
from cgaps.scoring.core import ROUND, build_matrix, concept_table, percentile_of

ARMS = ("fill", "random", "group")
MAX_SWAPS_PER_ITEM = 10  # swaps() stops after this many exchanges per chosen item
# swaps() stops before a round would take its element operations past this (a round costs the
# chosen items x the nonzeros of both matrices; ~15 s here): a pool of millions of rows still ends
SWAP_WORK = 1_000_000_000


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
    swaps: int = 0  # exchanges select() made after the greedy
    converged: bool = True  # False when the exchange search stopped at a limit (one may still rise)


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
    start: list[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Selection:
    """Lazy greedy maximisation of f (module docstring).

    ``cover``: pool x missing targets, nonzero where the target is present; ``mass``: pool x
    under targets, ŝ'; ``deficit``: d_c per under target; ``eligible``: pool rows that may be
    chosen (default all); ``start``: rows taken first, in their order, before the greedy goes on."""
    cover, mass = sp.csr_matrix(cover), sp.csr_matrix(mass)
    cover.sort_indices()
    mass.sort_indices()
    g = _Gains(cover, mass, np.asarray(deficit, dtype=np.float64), w_missing, w_under)
    out = Selection([], [], [], [])
    for row in (start or [])[:budget]:
        gain, new, filled = g.take(int(row))
        out.rows.append(int(row))
        out.gains.append(gain)
        out.covers.append(new)
        out.fills.append(filled)
    allowed = (
        np.ones(cover.shape[0], dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool).copy()
    )
    allowed[out.rows] = False
    rows = np.flatnonzero(allowed)
    heap = [(-g.parts(int(r))[0], int(r)) for r in rows]
    heapq.heapify(heap)
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


def _value(done: np.ndarray, deficit: np.ndarray) -> np.ndarray:
    """min(1, mass / d) per under target."""
    return np.minimum(1.0, done / deficit)


def swaps(
    cover: sp.csr_matrix,
    mass: sp.csr_matrix,
    deficit: np.ndarray,
    rows: list[int],
    *,
    w_missing: float = 1.0,
    w_under: float = 0.5,
    eligible: np.ndarray | None = None,
    max_swaps: int | None = None,
    work: float = SWAP_WORK,
) -> tuple[list[int], int, bool]:
    """``rows`` improved by single exchanges (module docstring): the rows (an exchanged item takes
    the place of the one it replaces), the exchanges made, and whether the search ended because
    none rises (False: it stopped at ``max_swaps`` or ``work``)."""
    cover = sp.csr_matrix(sp.csr_matrix(cover) != 0, dtype=np.float64)
    mass = sp.csr_matrix(mass, dtype=np.float64)
    mass.eliminate_zeros()
    d = np.asarray(deficit, dtype=np.float64)
    n = cover.shape[0]
    allowed = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool).copy()
    chosen = list(rows)
    if not chosen:
        return chosen, 0, True
    limit = MAX_SWAPS_PER_ITEM * len(chosen) if max_swaps is None else max_swaps
    per_round = float(len(chosen)) * (cover.nnz + mass.nnz + n)
    cols_of_mass = mass.indices
    row_of_mass = np.repeat(np.arange(n), np.diff(mass.indptr))
    made = 0
    while True:
        if made >= limit or (made + 1) * per_round > work:
            return chosen, made, False
        count = np.asarray(cover[chosen].sum(axis=0)).ravel()
        filled = np.asarray(mass[chosen].sum(axis=0)).ravel()
        base_under = _value(filled, d)
        free = allowed.copy()
        free[chosen] = False
        best: tuple[float, int, int] | None = None  # (rise, position in chosen, pool row)
        for pos, i in enumerate(chosen):
            # without i: what it alone covered, and its mass
            ci = cover.indices[cover.indptr[i] : cover.indptr[i + 1]]
            left = count.copy()
            left[ci] -= 1.0
            loss_missing = float((left[ci] == 0).sum())
            without = filled.copy()
            lo, hi = mass.indptr[i], mass.indptr[i + 1]
            without[mass.indices[lo:hi]] -= mass.data[lo:hi]
            without = np.maximum(without, 0.0)  # float sums may leave a -0.0000001
            loss_under = float((base_under - _value(without, d)).sum())
            # with j added: missing targets j covers that nothing else left covers, and the
            # saturated mass j adds on top of what is left
            gain_missing = cover @ (left == 0).astype(np.float64)
            add = (
                np.minimum(d[cols_of_mass], without[cols_of_mass] + mass.data)
                - np.minimum(d[cols_of_mass], without[cols_of_mass])
            ) / d[cols_of_mass]
            gain_under = np.bincount(row_of_mass, weights=add, minlength=n)
            rise = np.round(
                w_missing * (gain_missing - loss_missing) + w_under * (gain_under - loss_under), ROUND
            )
            rise[~free] = -np.inf
            j = int(np.argmax(rise))  # the lowest pool row among the largest
            if rise[j] > 0 and (best is None or rise[j] > best[0]):
                best = (float(rise[j]), pos, j)
        if best is None:
            return chosen, made, True
        chosen[best[1]] = best[2]
        made += 1


def objective_reference(
    cover: sp.csr_matrix, mass: sp.csr_matrix, deficit: np.ndarray, *, w_missing: float, w_under: float
) -> Callable[[list[int]], float]:
    """f of the module docstring written out on dense arrays, for the plain references below."""
    cov = np.asarray(sp.csr_matrix(cover).todense()) != 0
    ms = np.asarray(sp.csr_matrix(mass).todense(), dtype=np.float64)
    d = np.asarray(deficit, dtype=np.float64)

    def f(chosen: list[int]) -> float:
        hit = cov[chosen].any(axis=0) if chosen else np.zeros(cov.shape[1], dtype=bool)
        got = ms[chosen].sum(axis=0) if chosen else np.zeros(ms.shape[1])
        return w_missing * float(hit.sum()) + w_under * float(np.minimum(1.0, got / d).sum())

    return f


def swaps_reference(
    cover: sp.csr_matrix,
    mass: sp.csr_matrix,
    deficit: np.ndarray,
    rows: list[int],
    *,
    w_missing: float = 1.0,
    w_under: float = 0.5,
    max_swaps: int | None = None,
) -> list[int]:
    """The plain search :func:`swaps` must equal: f written out and recomputed for every pair."""
    f = objective_reference(cover, mass, deficit, w_missing=w_missing, w_under=w_under)
    chosen = list(rows)
    limit = MAX_SWAPS_PER_ITEM * len(chosen) if max_swaps is None else max_swaps
    for _ in range(limit if chosen else 0):
        base = f(chosen)
        best_rise, best = 0.0, None
        for pos in range(len(chosen)):
            for j in range(cover.shape[0]):
                if j in chosen:
                    continue
                rise = round(f([*chosen[:pos], j, *chosen[pos + 1 :]]) - base, ROUND)
                if rise > best_rise:
                    best_rise, best = rise, (pos, j)
        if best is None:
            break
        chosen[best[0]] = best[1]
    return chosen


def select(
    cover: sp.csr_matrix,
    mass: sp.csr_matrix,
    deficit: np.ndarray,
    budget: int,
    *,
    w_missing: float = 1.0,
    w_under: float = 0.5,
    eligible: np.ndarray | None = None,
    improve: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Selection:
    """The fill arm: the greedy, then (``improve``) exchanges while one raises f; the result in the
    order the greedy takes its items, with each one's gain and evidence in that order. An item an
    exchange made redundant is dropped, and the greedy tops the selection up from the pool."""
    n = sp.csr_matrix(cover).shape[0]
    allowed = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    take = partial(greedy, cover, mass, deficit, budget, w_missing=w_missing, w_under=w_under)
    sel = take(eligible=allowed, progress=progress)
    if not improve or len(sel.rows) < budget:  # nothing more gains: f is already at its maximum
        return sel
    made = 0
    while True:  # a round either ends the search or raised f, so this ends
        rows, k, converged = swaps(
            cover, mass, deficit, sel.rows, eligible=allowed, w_missing=w_missing, w_under=w_under
        )
        made += k
        if k:
            keep = np.zeros(n, dtype=bool)
            keep[rows] = True
            sel = take(eligible=allowed, start=take(eligible=keep).rows)
        if not k or not converged or len(sel.rows) == len(rows) and set(sel.rows) == set(rows):
            sel.swaps, sel.converged = made, converged
            return sel


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
    f = objective_reference(cover, mass, deficit, w_missing=w_missing, w_under=w_under)
    chosen: list[int] = []
    while len(chosen) < budget:
        base = f(chosen)
        best, best_gain = -1, 0.0
        for r in range(cover.shape[0]):
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
