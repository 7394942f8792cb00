"""Fast paths of scoring at scale against the plain recomputation they replace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cgaps.robustness.core import _SubsetSums, subsample_rows
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
