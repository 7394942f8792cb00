"""The two statistical rules the project uses in several places: Wilson intervals and BH.

One implementation of each, used by the scoring stage (``concepts.parquet``), the report's
accuracy table and ``scripts/accuracy_table.py`` (docs/method.md §3).

* **Wilson score interval.** Two entry points, one formula. :func:`wilson` takes a proportion
  and a *continuous* number of trials: chi_model is a saliency-weighted mean, so its "number
  of trials" is the effective sample size n_eff, not an integer. :func:`wilson_counts` takes
  integer counts (k successes out of n) and asks scipy
  (``binomtest(k, n).proportion_ci(method="wilson")``); on integer inputs the two agree
  (``tests/scoring/test_scoring.py`` checks it). :func:`mean_interval` picks between them for a set of
  item scores: counts when every score is 0 or 1, else the mean score on n items (partial
  credit has no integer count).
* **Benjamini-Hochberg.** :func:`bh_adjust` is ``scipy.stats.false_discovery_control`` plus the
  two edge cases scipy does not take: an empty set of p-values, and NaN (see the function).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def wilson(p: np.ndarray | float, n: np.ndarray | float, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a proportion ``p`` observed on ``n`` trials (n may be fractional).

    Element-wise; clipped to [0, 1]. NaN where ``p`` is NaN or ``n`` is 0 (no observation).
    """
    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = 1 + z**2 / n
        center = (p + z**2 / (2 * n)) / denom
        half = z / denom * np.sqrt(np.maximum(p * (1 - p), 0) / n + z**2 / (4 * n**2))
    return np.clip(center - half, 0, 1), np.clip(center + half, 0, 1)


def wilson_counts(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson interval of k successes in n trials (scipy's ``binomtest``); NaN for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def mean_interval(scores: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Wilson interval of the mean of item scores in [0, 1].

    0/1 scores are counts (:func:`wilson_counts`); with partial credit the interval is
    :func:`wilson` of the mean on len(scores) items. NaN for no scores.
    """
    y = np.asarray(scores, dtype=np.float64)
    if y.size == 0 or not np.isfinite(y).all():
        return math.nan, math.nan
    if np.isin(y, (0.0, 1.0)).all():
        return wilson_counts(int(y.sum()), y.size, level)
    lo, hi = wilson(np.float64(y.mean()), np.float64(y.size), level)
    return float(lo), float(hi)


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1).

    ``scipy.stats.false_discovery_control``, except: no p-values give an empty array, and a
    NaN among them makes every q NaN (the number of tests is then unknown, so nothing may be
    called significant; the scoring stage never passes NaN: tested concepts fire).
    """
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    if np.isnan(p).any():
        return np.full(p.shape, np.nan)
    # a copy: for a single p-value scipy hands back its input array itself
    return np.array(stats.false_discovery_control(p), dtype=np.float64, copy=True)
