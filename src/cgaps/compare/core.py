"""Paired comparison of two models' chi_model on the same items (``cgaps compare``).

Design
------
Two runs A and B of the same items, read by the same reader model and SAE, differ only in
who answered: their scores y_a, y_b (and, with ``span`` response/both, the responses the
reader saw, hence slightly different saliency). For every concept c and scope S (each
benchmark, then ``ALL``) the question is whether the model B does better or worse than A on
the items where c is present.

* **Common weights.** Both runs' saliency is thresholded on one concept scale (the SAE's
  reference max when run A's SAE ships one, else the larger of the two suites' maxima) with
  the presence config field (docs/method.md §2), and the pair is weighted by w_c(x) = (s'_a + s'_b) / 2.
  With ``span=prompt`` both runs have the same saliency, w = s', and chi_model_a and
  chi_model_b below are exactly each run's own chi_model (docs/method.md §3).
* **Values.** chi_model_a = sum w y_a / sum w, chi_model_b = sum w y_b / sum w,
  delta = chi_model_b - chi_model_a = sum w d / sum w with d(x) = y_b(x) - y_a(x).
* **Paired test** (a sign-flip randomisation test, the paired analogue of the scoring stage's
  score test). Null: for every item, the two models' scores are exchangeable (which model
  got which score is a coin flip). Given the items, T = sum w d has mean 0 and variance
  V = sum w^2 d^2 under that null, so z = T / sqrt(V) and a two-sided normal p-value. Items
  where both models agree (d = 0) add nothing. With k discordant items (d != 0) the exact
  sign-flip test can never give a p-value below 2^(1 - k); the normal approximation can (k = 4
  identical flips: 0.046 against the exact 0.125), so p is floored at 2^(1 - k). V = 0 means
  no discordant item: z = 0, p = 1.
* **Beyond the scope's own difference** (``delta_expected``, ``q_adjusted``, ``call_adjusted``).
  The raw test calls every concept a global change touches (a shorter token budget that
  hurts everywhere is "A better" on every frequent concept). The adjusted call asks the
  question of docs/method.md §3 instead: is the concept's paired difference unlike its
  benchmark's mean paired difference? It is the scoring stage's own score test, run by
  :func:`cgaps.scoring.core.concept_table` on the weights w with "scores" (d + 1) / 2 (a linear
  map into [0, 1], which leaves z unchanged): expected difference e = sum w dbar(B(x)) / sum w,
  the null variance from d's spread within each benchmark, Monte Carlo p-values where the
  normal approximation is poor, one BH per scope. ``delta_expected`` = 2 e - 1.
* **BH.** One Benjamini-Hochberg adjustment (:func:`cgaps.stats.bh_adjust`) per scope over
  the concepts present (in either run) on at least ``min_support`` items; ``call`` is
  ``b_better`` (delta > 0) or ``a_better`` (delta < 0) when q <= ``fdr``, else empty. Two
  identical runs have d = 0 everywhere and call nothing.

Every sum is one sparse product with the scope indicator of :mod:`cgaps.scoring.core`, as in
the scoring stage; :func:`cgaps.compare.reference` in the tests loops over concepts instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from cgaps.config import RunConfig
from cgaps.rundir import ALL_SCOPE, columns
from cgaps.scoring.core import SuiteMatrix, _scope_indicator, _with_data, concept_max, concept_table
from cgaps.stats import bh_adjust

COMPARE = "compare.parquet"
COMPARE_REPORT = "report.html"
COMPARE_COLUMNS = columns(COMPARE)  # documented in cgaps.rundir.schemas
CALLS = ("a_better", "b_better", "")


@dataclass(frozen=True)
class PairedConfig:
    min_support: int = 5
    fdr: float = 0.05


def paired_table(a: SuiteMatrix, b: SuiteMatrix, cfg: RunConfig) -> pd.DataFrame:
    """The compare table of two suites on the same rows (same item order, same benchmarks);
    ``cfg``: min_support, fdr and the Monte Carlo config of the adjusted test."""
    scoring_config = PairedConfig(min_support=cfg.min_support, fdr=cfg.fdr)
    if not np.array_equal(a.item_ids, b.item_ids) or a.benchmarks != b.benchmarks:
        raise ValueError("paired_table needs both suites on the same items in the same order")
    w = ((a.saliency + b.saliency) * 0.5).tocsr()
    w.sort_indices()
    row_of = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    d = (b.scores - a.scores)[row_of]
    data = w.data
    p = _scope_indicator(a)

    def scope_sum(values: np.ndarray) -> np.ndarray:
        return (p @ _with_data(w, values)).toarray()

    support = scope_sum(np.ones_like(data))
    discordant = scope_sum((d != 0).astype(np.float64))
    sum_w = scope_sum(data)
    sum_wya = scope_sum(data * a.scores[row_of])
    sum_wyb = scope_sum(data * b.scores[row_of])
    stat = scope_sum(data * d)
    var = scope_sum(data * data * d * d)
    fires = sum_w > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        chi_a = np.where(fires, sum_wya / sum_w, np.nan)
        chi_b = np.where(fires, sum_wyb / sum_w, np.nan)
        z = np.where(var > 0, stat / np.sqrt(var), 0.0)
    p_val = 2.0 * stats.norm.sf(np.abs(z))
    floor = np.power(2.0, 1.0 - discordant)  # the exact sign-flip test's smallest p-value
    p_val = np.minimum(np.maximum(p_val, floor), 1.0)
    p_val = np.where(fires, p_val, np.nan)
    q = np.full_like(p_val, np.nan)
    for k in range(p_val.shape[0]):
        tested = support[k] >= scoring_config.min_support
        q[k, tested] = bh_adjust(p_val[k, tested])
    delta = chi_b - chi_a
    called = q <= scoring_config.fdr  # NaN compares False
    call = np.where(called & (delta > 0), "b_better", np.where(called & (delta < 0), "a_better", ""))
    n_scopes, n_concepts = chi_a.shape
    scopes = [*a.benchmarks, ALL_SCOPE]
    # the scoring stage's score test on the paired differences (module docstring)
    diff = SuiteMatrix(w, (b.scores - a.scores + 1.0) / 2.0, a.bench, a.benchmarks, a.item_ids, a.scale)
    adj = concept_table(diff, cfg)
    adj_call = np.where(adj["gap"] == "strong", "b_better", np.where(adj["gap"] == "weak", "a_better", ""))
    table = pd.DataFrame(
        {
            "concept": np.tile(np.arange(n_concepts, dtype=np.int32), n_scopes),
            "scope": np.repeat(scopes, n_concepts),
            "chi_model_a": chi_a.ravel(),
            "chi_model_b": chi_b.ravel(),
            "delta": delta.ravel(),
            "q_value": q.ravel(),
            "call": call.ravel(),
            "support": support.ravel().astype(np.int64),
            "discordant": discordant.ravel().astype(np.int64),
            "z": np.where(fires, z, np.nan).ravel(),
            "p_value": p_val.ravel(),
            "delta_expected": 2.0 * adj["expected"].to_numpy() - 1.0,
            "q_adjusted": adj["q_value"].to_numpy(),
            "call_adjusted": adj_call,
        },
        columns=list(COMPARE_COLUMNS),
    )
    return table


def common_scale(a: pd.DataFrame, b: pd.DataFrame, n_concepts: int) -> np.ndarray:
    """The larger of the two suites' per-concept maxima (the scale when the SAE ships none), from
    their validated saliency tables."""
    ma, mb = (concept_max(s["concept"].to_numpy(), s["value"].to_numpy(), n_concepts) for s in (a, b))
    return np.maximum(ma, mb)
