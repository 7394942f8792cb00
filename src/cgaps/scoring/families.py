"""Hierarchical testing over concept families (docs/method.md §3, "Calls").

Draft: the building blocks, with the variants the measurements compare as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats

from cgaps.stats import bh_adjust


@dataclass(frozen=True)
class Families:
    """A partition of (some of) the concepts: ``members[i]`` are the concept ids of family i."""

    members: tuple[np.ndarray, ...]
    n_concepts: int

    @property
    def of(self) -> np.ndarray:
        """The family of each concept (-1 for a concept in none)."""
        out = np.full(self.n_concepts, -1, dtype=np.int64)
        for i, cs in enumerate(self.members):
            out[cs] = i
        return out

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(c) for c in self.members], dtype=np.int64)


def cosine_distance(x: sp.csr_matrix, w_dec: np.ndarray | None) -> np.ndarray:
    """(1 - rho)(1 - kappa) between the columns of ``x`` (rho: cosine of the columns, kappa: the
    decoder rows' cosine, both clipped at 0), as a dense float64 matrix with a 0 diagonal."""
    xc = x.tocsc().astype(np.float64)
    gram = np.asarray((xc.T @ xc).todense())
    norm = np.sqrt(np.clip(np.diag(gram), 1e-30, None))
    dist = 1.0 - np.clip(gram / norm[:, None] / norm[None, :], 0.0, 1.0)
    if w_dec is not None:
        w = w_dec / np.clip(np.linalg.norm(w_dec, axis=1, keepdims=True), 1e-30, None)
        dist *= 1.0 - np.clip(w @ w.T, 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    return np.clip((dist + dist.T) / 2, 0.0, 1.0)


def cluster(x: sp.csr_matrix, w_dec: np.ndarray | None, cut: float, method: str = "average") -> np.ndarray:
    """0-based cluster labels of the columns of ``x``: ``method``-linkage cut at ``cut``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = x.shape[1]
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    dist = cosine_distance(x, w_dec)
    tree = linkage(squareform(dist, checks=False), method=method)
    return fcluster(tree, t=cut, criterion="distance").astype(np.int64) - 1


def build_families(
    shat: sp.csr_matrix,
    support: np.ndarray,
    min_support: int,
    cut: float,
    w_dec: np.ndarray | None = None,
    limit: int = 8192,
    method: str = "average",
) -> Families:
    """Families of the concepts with ALL-scope ``support`` >= ``min_support``: clusters of their
    thresholded ŝ' by co-activation (and decoder cosine); beyond ``limit`` concepts, the
    ``limit`` rarest are clustered and the rest are singletons."""
    f = shat.shape[1]
    eligible = np.flatnonzero(support >= min_support)
    order = eligible[np.argsort(support[eligible], kind="stable")]
    clustered = np.sort(order[:limit])
    rest = np.sort(order[limit:])
    labels = cluster(shat[:, clustered], None if w_dec is None else w_dec[clustered], cut, method)
    groups = [clustered[labels == k] for k in range(labels.max() + 1 if len(labels) else 0)]
    groups += [np.array([c]) for c in rest]
    groups.sort(key=lambda g: int(g[0]))
    return Families(tuple(groups), f)


def family_saliency(shat: sp.csr_matrix, fam: Families, how: str = "max") -> sp.csr_matrix:
    """items x families: the max (or the sum) over each family's members of ``shat``."""
    if how == "sum":
        rows = np.concatenate(fam.members) if fam.members else np.zeros(0, dtype=np.int64)
        cols = np.repeat(np.arange(len(fam.members)), fam.sizes)
        member_of = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(shat.shape[1], len(fam.members)))
        return sp.csr_matrix(shat @ member_of)
    # max: per family, the max over its member columns, by a segmented reduction over the
    # (item, family) pairs of the members' nonzeros
    of = fam.of
    coo = shat.tocoo()
    keep = of[coo.col] >= 0
    r, c, v = coo.row[keep], of[coo.col[keep]], coo.data[keep]
    key = r.astype(np.int64) * len(fam.members) + c
    order = np.lexsort((-v, key))
    key, v = key[order], v[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key, v = key[first], v[first]
    return sp.csr_matrix(
        (v, (key // len(fam.members), key % len(fam.members))), shape=(shat.shape[0], len(fam.members))
    )


def simes(p: np.ndarray) -> float:
    """Simes' combination of p-values: min_j p_(j) n / j."""
    p = np.sort(p)
    return float(min(1.0, np.min(p * len(p) / np.arange(1, len(p) + 1)))) if len(p) else 1.0


def hierarchical_q(
    p_family: np.ndarray, p_concept: np.ndarray, family_of: np.ndarray, tested_family: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Bogomolov (2014) with BH at both levels, as adjusted values.

    ``p_family[i]``: family i's p-value (NaN where not tested); ``p_concept``/``family_of``: the
    tested concepts of the scope and their family. Returns the families' BH q-values and the
    concepts' adjusted values: the smallest level alpha at which the concept is called, i.e. its
    family is selected by BH at alpha among the M tested families (R(alpha) selected) and its
    within-family BH q-value is <= alpha R(alpha) / M.
    """
    q_fam = np.full(len(p_family), np.nan)
    idx = np.flatnonzero(tested_family)
    q_fam[idx] = bh_adjust(p_family[idx])
    m_fam = len(idx)
    q_out = np.full(len(p_concept), np.nan)
    if not m_fam:
        return q_fam, q_out
    alphas = np.unique(q_fam[idx])  # breakpoints of R(alpha)
    r_at = np.searchsorted(np.sort(q_fam[idx]), alphas, side="right")  # R at each breakpoint
    score = alphas * r_at  # increasing in the breakpoint
    order = np.argsort(family_of, kind="stable")
    fam_sorted = family_of[order]
    starts = np.flatnonzero(np.r_[True, fam_sorted[1:] != fam_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for a, b in zip(starts, ends, strict=True):
        rows = order[a:b]
        i = fam_sorted[a]
        q_w = bh_adjust(p_concept[rows])
        k0 = int(np.searchsorted(alphas, q_fam[i], side="left"))  # first breakpoint where i is selected
        need = q_w * m_fam
        # first breakpoint k >= k0 with alpha_k R_k >= q_w M: called there at alpha_k; just before it,
        # at the level q_w M / R_{k-1} (if that breakpoint already selects i)
        k = np.maximum(np.searchsorted(score, need, side="left"), k0)
        val = np.where(k < len(alphas), alphas[np.minimum(k, len(alphas) - 1)], np.inf)
        prev = k - 1
        ok = prev >= k0
        alt = np.where(ok, need / r_at[np.maximum(prev, 0)], np.inf)
        alt = np.where(ok & (alt >= alphas[np.maximum(prev, 0)]), alt, np.inf)
        q_out[rows] = np.minimum(1.0, np.minimum(val, alt))
    return q_fam, q_out


def p_min_two_sided(z_min_weak: np.ndarray, z_max_strong: np.ndarray) -> np.ndarray:
    """Smallest two-sided p-value the normal approximation can give (Tarone's bound)."""
    return np.minimum(1.0, 2 * np.minimum(stats.norm.cdf(z_min_weak), stats.norm.sf(z_max_strong)))
