"""Fast paths of scoring at scale against the plain recomputation they replace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cgaps.config import RunConfig
from cgaps.robustness.core import _SubsetSums, subsample_rows
from cgaps.scoring import core
from cgaps.scoring.core import build_matrix, chi_tables
from helpers import make_suite


@pytest.mark.parametrize("drop", [0.0, 0.2, 0.7])
@pytest.mark.parametrize("presence", [0.0, 0.4])
def test_subset_sums_equal_chi_tables_of_the_subset(drop, presence):
    items, sal = make_suite(3)
    m = build_matrix(items, sal, 200, presence=presence)
    sums = _SubsetSums(m)
    rng = np.random.default_rng(0)
    for _ in range(3):
        rows = subsample_rows(m, rng, drop)
        want = chi_tables(m.subset(rows))
        chi_model, chi_bench = sums.chi(rows)
        # NaN exactly where the concept does not fire in the subset, the values within rounding
        np.testing.assert_array_equal(np.isnan(chi_model), np.isnan(want.chi_model))
        np.testing.assert_allclose(chi_model, want.chi_model, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(chi_bench, want.chi_bench, rtol=1e-12, atol=1e-12)
        assert np.isnan(chi_model).any() and (chi_bench > 0).any()  # both cases are exercised


def test_build_matrix_takes_categorical_item_ids_alike():
    items, sal = make_suite(5)
    plain = build_matrix(items, sal, 200, presence=0.3)
    cat = sal.assign(item_id=pd.Categorical(sal["item_id"]))
    fast = build_matrix(items, cat, 200, presence=0.3)
    assert (plain.saliency != fast.saliency).nnz == 0
    np.testing.assert_array_equal(plain.scale, fast.scale)


def _mc_counts_plain(m, t, k, cols, seed, stage, draws_total, stream=0):
    """The Monte Carlo counts as they were before the grouped draws: draws in row order."""
    sub = m.saliency[:, cols]
    if k != len(m.benchmarks):
        sub = sp.diags((m.bench == k).astype(np.float64)) @ sub
        sub.eliminate_zeros()
    sub = sub.tocsr()
    rows = np.flatnonzero(np.diff(sub.indptr))
    block = sub[rows].T.tocsr()
    obs = t.stat[k, cols]
    tol = core.TIE_EPS * np.maximum(t.sum_s[k, cols], 1.0)
    size = core.mc_chunk_size(len(rows))
    sampler = core.NullSampler.for_rows(m, rows)
    le, ge = np.zeros(len(cols)), np.zeros(len(cols))
    for chunk in range(-(-draws_total // size)):
        n = min(size, draws_total - chunk * size)
        tstar = np.asarray(block @ sampler.draws(seed, (k + stream, stage), chunk, size)[:, :n])
        le += (tstar <= (obs + tol)[:, None]).sum(axis=1)
        ge += (tstar >= (obs - tol)[:, None]).sum(axis=1)
    return le, ge


def _shuffled_suite(seed):
    """make_suite's items come benchmark by benchmark; shuffled, benchmarks interleave in row order."""
    items, sal = make_suite(seed)
    return items.sample(frac=1.0, random_state=seed).reset_index(drop=True), sal


def test_grouped_draws_are_the_row_order_draws_regrouped():
    items, sal = _shuffled_suite(4)
    m = build_matrix(items, sal, 200)
    rows = np.flatnonzero(np.random.default_rng(1).random(len(items)) < 0.6)
    sampler = core.NullSampler.for_rows(m, rows)
    order = sampler.order()
    assert sorted(order) == list(range(len(rows))) and not np.all(np.diff(order) > 0)
    for chunk in range(3):
        plain = sampler.draws(7, (1, 2), chunk, 50)
        grouped = sampler.draws_grouped(7, (1, 2), chunk, 50)
        np.testing.assert_array_equal(grouped, plain[order])  # bit for bit


def test_monte_carlo_counts_and_p_values_bit_for_bit(monkeypatch):
    """Grouped draws and remapped nonzeros sum every T* in the same order: the counts and the
    p-values equal those of the row-order draws exactly (no tolerance)."""
    items, sal = _shuffled_suite(6)
    cfg = RunConfig(presence=0.2, mc_below=50.0, mc_resamples=5000)
    m = build_matrix(items, sal, 200, presence=cfg.presence)
    t = chi_tables(m)
    mc = core.mc_concepts(t, cfg)
    assert mc.sum() > 50  # the Monte Carlo path is exercised in every scope
    for k in range(mc.shape[0]):
        cols = np.flatnonzero(mc[k])
        for draws_total in (1000, 2345):  # a last chunk shorter than the others
            fast = core._mc_counts(m, t, k, cols, 3, 1, draws_total)
            plain = _mc_counts_plain(m, t, k, cols, 3, 1, draws_total)
            np.testing.assert_array_equal(fast[0], plain[0])
            np.testing.assert_array_equal(fast[1], plain[1])
    fast_p = core.p_values(m, t, cfg)
    monkeypatch.setattr(core, "_mc_counts", _mc_counts_plain)
    plain_p = core.p_values(m, t, cfg)
    for a, b in zip(fast_p, plain_p, strict=True):
        np.testing.assert_array_equal(a, b)


def test_build_matrix_scale_and_presence_as_in_float64():
    """The concept max taken in the stored float32 and the presence test in blocks give the
    matrix of the float64 computation they replace."""
    items, sal = make_suite(7)
    for presence in (0.0, 0.35):
        m = build_matrix(items, sal, 200, presence=presence)
        vals = sal["value"].to_numpy().astype(np.float64)
        cols = sal["concept"].to_numpy()
        scale = np.zeros(200)
        np.maximum.at(scale, cols, vals)
        np.testing.assert_array_equal(m.scale, scale)
        keep = (scale[cols] > 0) & (vals >= presence * scale[cols])
        rows = pd.Index(items["item_id"]).get_indexer(sal["item_id"])
        want = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=m.saliency.shape)
        want.sort_indices()
        assert m.saliency.dtype == np.float64 and m.saliency.nnz == keep.sum()
        np.testing.assert_array_equal(m.saliency.data, want.data)
        np.testing.assert_array_equal(m.saliency.indices, want.indices)
        np.testing.assert_array_equal(m.saliency.indptr, want.indptr)


@pytest.mark.parametrize("presence", [0.0, 0.4])
def test_ablation_chi_model_bit_for_bit(presence):
    """The ablation's recomputation on the kept rows equals chi_tables on the subset exactly."""
    from cgaps.robustness.core import chi_model_all

    items, sal = _shuffled_suite(8)
    m = build_matrix(items, sal, 200, presence=presence)
    rng = np.random.default_rng(2)
    for frac in (1.0, 0.97, 0.5, 0.05):
        keep = np.sort(rng.choice(len(items), size=int(frac * len(items)), replace=False))
        want = chi_tables(m.subset(keep)).chi_model[-1]
        got = chi_model_all(m, keep)
        np.testing.assert_array_equal(got, want)  # NaN where it does not fire, values exact
        assert np.isnan(got).any() or frac == 1.0


def test_running_moments_bit_for_bit():
    """The in-place Welford update against the np.where form it replaced."""
    from cgaps.robustness.core import _Moments

    class Plain:
        def __init__(self, shape):
            self.n, self.mean, self.m2 = np.zeros(shape), np.zeros(shape), np.zeros(shape)

        def add(self, x):
            ok = ~np.isnan(x)
            self.n += ok
            delta = np.where(ok, x - self.mean, 0.0)
            self.mean += np.where(ok, delta / np.maximum(self.n, 1), 0.0)
            self.m2 += np.where(ok, delta * (x - self.mean), 0.0)

    rng = np.random.default_rng(3)
    fast, plain = _Moments((4, 50)), Plain((4, 50))
    for _ in range(30):
        x = rng.normal(0.5, 0.2, (4, 50))
        x[rng.random((4, 50)) < 0.3] = np.nan
        x[0, :5] = -0.0  # signed zeros pass through alike
        fast.add(x)
        plain.add(x)
    for name in ("n", "mean", "m2"):
        a, b = getattr(fast, name), getattr(plain, name)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.signbit(a), np.signbit(b))
