"""What a run could have found (cgaps.scoring.power, docs/method.md §3): the smallest detectable
effect against the test it stands for, the items needed, and the sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cgaps.config import RunConfig
from cgaps.scoring.core import build_matrix, score_tables
from cgaps.scoring.power import (
    detectable,
    detectable_sentence,
    items_needed,
    needed_sentence,
    run_power,
    summary_sentences,
)
from helpers import make_suite


def _binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1))


def test_detectable_drop_under_the_normal_approximation_is_where_the_test_reaches_the_bar():
    drop, rise = detectable(100, 0.6, 0.24, 1e-4, mc_below=10, floor=1e-6, binary=True)
    assert drop is not None and rise is not None
    # a concept on 100 items whose accuracy is `drop` below 0.6: z = -drop sqrt(n / v), p = 2 Phi(z)
    p = 2 * stats.norm.cdf(-drop * math.sqrt(100 / 0.24))
    assert p == pytest.approx(1e-4, rel=1e-9)
    assert rise == pytest.approx(drop)
    # more items, smaller detectable effects, as 1 / sqrt(n)
    drop4, _ = detectable(400, 0.6, 0.24, 1e-4, mc_below=10, floor=1e-6, binary=True)
    assert drop4 == pytest.approx(drop / 2)


def test_detectable_drop_with_few_items_is_the_exact_binomial_tail():
    n, mean, bar, floor = 12, 0.5, 1e-3, 1e-5
    drop, rise = detectable(n, mean, 0.25, bar, mc_below=10, floor=floor, binary=True)
    # by brute force: the largest number correct whose lower tail (doubled) is at most the bar
    ks = [k for k in range(n + 1) if 2 * max(_binom_cdf(k, n, mean), floor) <= bar]
    assert ks == [0]  # 0 of 12 right: 2 * 0.5^12 = 4.9e-4
    assert drop == pytest.approx(mean - max(ks) / n)
    assert rise == pytest.approx(1.0 - mean)  # 12 of 12 right, by symmetry
    # 10 items cannot reach the bar at all: 2 * 0.5^10 = 2e-3
    assert detectable(10, mean, 0.25, bar, mc_below=10, floor=floor, binary=True) == (None, None)
    # nor can any concept when the draws' resolution is above the bar
    assert detectable(12, mean, 0.25, bar, mc_below=10, floor=1e-3, binary=True) == (None, None)


def test_detectable_drop_cannot_go_below_zero_accuracy():
    drop, rise = detectable(30, 0.1, 0.09, 1e-5, mc_below=0, floor=0, binary=False)
    assert drop is None and rise is not None


def test_items_needed_inverts_the_detectable_drop():
    var, bar = 0.24, 2e-5
    n = items_needed(0.2, 0.1, var, bar)
    assert n is not None
    at = detectable(round(0.1 * n), 0.5, var, bar, mc_below=0, floor=0, binary=False)[0]
    below = detectable(round(0.1 * n) - 2, 0.5, var, bar, mc_below=0, floor=0, binary=False)[0]
    assert at is not None and below is not None
    assert at <= 0.2 + 1e-3 and below > 0.2
    assert items_needed(0.2, 0.1, 0.0, bar) is None


def test_sentences():
    scope = {
        "items": 240,
        "mean": 0.55,
        "variance": 0.2475,
        "hypotheses": 2000,
        "bar": 2.5e-5,
        "detectable": [
            {"support": 5, "drop": None, "rise": None},
            {"support": 10, "drop": None, "rise": None},
            {"support": 20, "drop": 0.48, "rise": None},
            {"support": 30, "drop": 0.39, "rise": 0.38},
        ],
    }
    assert detectable_sentence(scope) == (
        "With these items, a concept firing on 30 items is called when its accuracy is 39 points below "
        "expected (or 38 points above)."
    )
    assert detectable_sentence(scope, 10) == (
        "With these items, a concept firing on 10 items cannot be called whatever its accuracy; one on 20 "
        "items is called when its accuracy is 48 points below expected."
    )
    need = items_needed(0.2, 0.1, 0.2475, 2.5e-5)
    assert needed_sentence(scope, 240) == (
        f"A topic holding 10% of a benchmark's items, 20 points below expected, would be called with about "
        f"{need} items per benchmark (this run has 240)."
    )
    low = {**scope, "mean": 0.2, "detectable": [{"support": 30, "drop": None, "rise": 0.38}]}
    assert detectable_sentence(low) == (
        "With these items, a concept firing on 30 items is called a strength when its accuracy is 38 points "
        "above expected, and never a gap: the mean accuracy, 20%, leaves no room for a drop that large."
    )
    power = {"fdr": 0.05, "items_per_benchmark": 240, "scopes": {"ALL": scope}}
    lines = summary_sentences(power, calls=0)
    assert lines[0] == "Nothing was called a gap or a strength." and len(lines) == 3
    assert summary_sentences(power, calls=4) == [detectable_sentence(scope)]


def test_run_power_counts_the_kept_hypotheses():
    items, sal = make_suite(0)
    cfg = RunConfig(presence=0.0)
    m = build_matrix(items, sal, 200)
    concepts, _ = score_tables(m, cfg)
    power = run_power(m, cfg, concepts)
    assert set(power["scopes"]) == {"arith", "bias", "code", "ALL"}
    for scope, entry in power["scopes"].items():
        rows = concepts[concepts["scope"] == scope]
        assert entry["hypotheses"] == int(rows["q_value"].notna().sum())
        assert entry["bar"] == pytest.approx(cfg.fdr / entry["hypotheses"])
        sel = items if scope == "ALL" else items[items["benchmark"] == scope]
        assert entry["mean"] == pytest.approx(sel["score"].mean())
        assert entry["items"] == len(sel)
        drops = [r["drop"] for r in entry["detectable"] if r["drop"] is not None]
        assert drops == sorted(drops, reverse=True)  # more support, smaller detectable drop
    # the null variance of ALL is the mean over items of their benchmark's score variance
    var_b = items.groupby("benchmark")["score"].var(ddof=0)
    assert power["scopes"]["ALL"]["variance"] == pytest.approx(items["benchmark"].map(var_b).mean())
    assert np.isfinite(power["scopes"]["ALL"]["bar"])
