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
        "With these items, a concept firing on 30 items is called a gap when its accuracy is 39 points below "
        "expected (a strength when 38 points above)."
    )
    assert detectable_sentence(scope, 10) == (
        "With these items, a concept firing on 10 items cannot be called a gap whatever its accuracy: even "
        "none of them right, 55 points below the mean, does not pass this run's bar (p ≤ 2.5e-05, 2000 tests); "
        "one firing on 20 items is called a gap when its accuracy is 48 points below expected."
    )
    need = items_needed(0.2, 0.1, 0.2475, 2.5e-5)
    assert needed_sentence(scope, 240) == (
        f"A topic holding 10% of a benchmark's items, 20 points below expected, would be called with about "
        f"{need} items per benchmark (this run has 240)."
    )
    assert needed_sentence({**scope, "mean": 0.04}, 24) == (
        "A topic holding 10% of a benchmark's items, 20 points below expected, cannot occur here: the mean "
        "accuracy is 4%."
    )
    power = {"fdr": 0.05, "items_per_benchmark": 240, "scopes": {"ALL": scope, "arith": scope}}
    lines = summary_sentences(power, calls=0)
    assert lines == [
        "Nothing was called a gap or a strength.",
        detectable_sentence(scope),
        needed_sentence(scope, 240),
    ]
    assert summary_sentences(power, calls=4) == [detectable_sentence(scope)]
    assert summary_sentences(power, 0, "arith")[0] == "Nothing was called a gap or a strength in arith."
    assert summary_sentences(power, 0, "nowhere") == []


def test_sentences_of_a_real_run_put_gaps_below_expected():
    """run.json power of ALL in a 10-benchmark run of 240 items (SmolLM2, mean accuracy 0.275, 6,158
    hypotheses kept): on 30 items even 0 right is not enough for a gap (2 * 0.725^30 = 1.3e-4 > the
    bar), so the sentence must say so, never offer the strength's rise as the gap's effect."""
    n_items, mean, hyp = 240, 0.275, 6158
    bar = 0.05 / hyp
    var = 0.1447916666666667
    rows = []
    for n in (5, 10, 20, 30, 50, 100, 200):
        drop, rise = detectable(
            n, mean, var, bar, mc_below=RunConfig().mc_below, floor=1 / 280001, binary=True
        )
        rows.append({"support": n, "drop": drop, "rise": rise})
    assert 2 * (1 - mean) ** 30 > bar and rows[3]["drop"] is None and rows[3]["rise"] is not None
    assert rows[4]["drop"] == pytest.approx(stats.norm.isf(bar / 2) * math.sqrt(var / 50))
    scope = {
        "items": n_items,
        "mean": mean,
        "variance": var,
        "hypotheses": hyp,
        "bar": bar,
        "detectable": rows,
    }
    text = detectable_sentence(scope)
    assert text == (
        "With these items, a concept firing on 30 items cannot be called a gap whatever its accuracy: even "
        "none of them right, 28 points below the mean, does not pass this run's bar (p ≤ 8.1e-06, 6158 tests); "
        f"one firing on 50 items is called a gap when its accuracy is {round(100 * rows[4]['drop'])} points "
        f"below expected. A strength on 30 items is called when its accuracy is {round(100 * rows[3]['rise'])} "
        "points above expected."
    )
    assert "24 points below" in text and "42 points above" in text
    # nothing reachable at any tabulated support
    none = {**scope, "detectable": [{**r, "drop": None} for r in rows]}
    assert detectable_sentence(none).endswith(
        "(p ≤ 8.1e-06, 6158 tests), nor on up to 200 items. A strength on 30 items is called when its "
        f"accuracy is {round(100 * rows[3]['rise'])} points above expected."
    )


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
        called = int(rows["gap"].isin(["weak", "strong"]).sum())
        assert entry["calls"] == called
        assert entry["bar"] == pytest.approx(cfg.fdr * max(called, 1) / entry["hypotheses"])
        # the bar is the one BH reached: every call's p-value is within it, every p-value within it called
        p = rows["p_value"].to_numpy()
        is_call = rows["gap"].isin(["weak", "strong"]).to_numpy()
        assert (p[is_call] <= entry["bar"] * (1 + 1e-12)).all()
        assert not (np.nan_to_num(p[~is_call], nan=1.0) <= entry["bar"] * (1 - 1e-12)).any()
        sel = items if scope == "ALL" else items[items["benchmark"] == scope]
        assert entry["mean"] == pytest.approx(sel["score"].mean())
        assert entry["items"] == len(sel)
        drops = [r["drop"] for r in entry["detectable"] if r["drop"] is not None]
        assert drops == sorted(drops, reverse=True)  # more support, smaller detectable drop
    assert max(e["calls"] for e in power["scopes"].values()) > 1  # the bar BH reached is exercised
    # the null variance of ALL is the mean over items of their benchmark's score variance
    var_b = items.groupby("benchmark")["score"].var(ddof=0)
    assert power["scopes"]["ALL"]["variance"] == pytest.approx(items["benchmark"].map(var_b).mean())
    assert np.isfinite(power["scopes"]["ALL"]["bar"])
