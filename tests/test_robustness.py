"""Robustness checks (docs/method.md §4) against recomputation from scratch with compute_scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cgaps.config import RunConfig

# the recomputations below are presence-free (tau = 0); presence itself is tested in test_scoring.py
from cgaps.errors import CGapsError
from cgaps.robustness.core import RobustnessOptions, ablation, subsample_rows, subsampling
from cgaps.scoring import build_matrix, compute_scores
from helpers import make_suite, write_run


@pytest.fixture(scope="module")
def suite():
    items, sal = make_suite(0)
    return items, sal, build_matrix(items, sal, 200)


def _subset_scores(items, sal, keep_ids):
    sub_items = items[items["item_id"].isin(keep_ids)]
    concepts, _ = compute_scores(sub_items, sal[sal["item_id"].isin(keep_ids)], 200, RunConfig(presence=0.0))
    return concepts


def test_subsampling_matches_recomputation(suite):
    items, sal, m = suite
    cfg = RunConfig(seed=4, presence=0.0)
    repeats = 3
    res = subsampling(m, cfg, RobustnessOptions(repeats=repeats, drop=0.2))
    # Same draws, recomputed from scratch on the items tables.
    rng = np.random.default_rng(cfg.seed)
    chi_model, chi_bench = [], []
    colmax = sal.groupby("concept")["value"].max().astype(float)
    for _ in range(repeats):
        rows = subsample_rows(m, rng, 0.2)
        for b in range(3):  # 20% of every benchmark dropped
            n_b = int((m.bench == b).sum())
            assert int((m.bench[rows] == b).sum()) == round(0.8 * n_b)
        keep = set(m.item_ids[rows])
        c = _subset_scores(items, sal, keep)
        allc = c[c["scope"] == "ALL"].set_index("concept")
        chi_model.append(allc["chi_model"])
        # chi_bench on the full suite's scale (s / full max), as the module docstring says
        s = sal[sal["item_id"].isin(keep)]
        shat = (s["value"].astype(float) / s["concept"].map(colmax)).groupby(s["concept"]).sum() / len(keep)
        chi_bench.append(shat.reindex(range(200), fill_value=0.0))
    full, _ = compute_scores(items, sal, 200, cfg)
    eligible = full[(full["scope"] == "ALL") & (full["support"] >= cfg.min_support)]["concept"].to_numpy()
    std_model = pd.concat(chi_model, axis=1).std(axis=1, ddof=0)[eligible]
    std_bench = pd.concat(chi_bench, axis=1).std(axis=1, ddof=0)[eligible]
    assert res["concepts"] == len(eligible)
    assert res["mean_std_chi_model"] == pytest.approx(std_model.mean(), abs=1e-9)
    assert res["mean_std_chi_bench"] == pytest.approx(std_bench.mean(), abs=1e-9)
    assert set(res["scopes"]) == {"arith", "bias", "code", "ALL"}


def test_subsampling_is_seeded(suite):
    _, _, m = suite
    a = subsampling(m, RunConfig(seed=1, presence=0.0), RobustnessOptions(repeats=4))
    b = subsampling(m, RunConfig(seed=1, presence=0.0), RobustnessOptions(repeats=4))
    c = subsampling(m, RunConfig(seed=2, presence=0.0), RobustnessOptions(repeats=4))
    assert a == b and a["mean_std_chi_model"] != c["mean_std_chi_model"]
    none = subsampling(m, RunConfig(presence=0.0), RobustnessOptions(repeats=3, drop=0.0))
    assert none["mean_std_chi_model"] == pytest.approx(0, abs=1e-12)


def test_ablation_matches_recomputation_and_moves_the_median(suite):
    items, sal, m = suite
    cfg = RunConfig(presence=0.0)
    res = ablation(m, cfg, RobustnessOptions(top=20, max_delete=0.02))
    full, _ = compute_scores(items, sal, 200, cfg)
    allc = full[full["scope"] == "ALL"]
    eligible = allc[allc["support"] >= cfg.min_support]
    assert res["median_before"] == pytest.approx(eligible["chi_model"].median(), abs=1e-12)
    colmax = sal.groupby("concept")["value"].max().astype(float)
    sides = {  # highest / lowest chi_model first, ties by concept index
        "best": eligible.sort_values(["chi_model", "concept"], ascending=[False, True])["concept"].iloc[:20],
        "worst": eligible.sort_values(["chi_model", "concept"])["concept"].iloc[:20],
    }
    for side, chosen in sides.items():
        s = sal[sal["concept"].isin(chosen)]
        align = (s["value"].astype(float) / s["concept"].map(colmax)).groupby(s["item_id"]).sum()
        n_del = int(0.02 * len(items))
        deleted = align.sort_values(ascending=False, kind="stable").index[:n_del]
        assert res[side]["deleted_items"] == n_del
        c = _subset_scores(items, sal, set(items["item_id"]) - set(deleted))
        after = c[(c["scope"] == "ALL") & c["concept"].isin(eligible["concept"])]["chi_model"].median()
        assert res[side]["median_after"] == pytest.approx(after, abs=1e-12)
    # the paper's prediction: deleting what the best concepts fire on lowers the median, and vice versa
    assert res["best"]["change"] < 0 < res["worst"]["change"]


def test_cli_robustness(tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    run = write_run(tmp_path)
    result = CliRunner().invoke(app, ["robustness", str(run), "--repeats", "5", "--top", "10"])
    assert result.exit_code == 0, result.output
    data = json.loads((run / "robustness.json").read_text())
    assert data["subsampling"]["repeats"] == 5 and data["ablation"]["best"]["concepts"] == 10
    assert data["sae_swap"] is None
    assert "robustness_s" in json.loads((run / "run.json").read_text())["timings"]


def test_options_defaults_and_validation():
    """The one set of defaults, and a bad value named with its option and the rule."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(RobustnessOptions)}
    assert defaults == {"repeats": 100, "drop": 0.2, "top": 100, "max_delete": 0.01}
    assert all(f.metadata["help"] for f in dataclasses.fields(RobustnessOptions))
    for bad, flag in (
        ({"repeats": 1}, "--repeats"),
        ({"drop": 1.0}, "--drop"),
        ({"drop": -0.1}, "--drop"),
        ({"top": 0}, "--top"),
        ({"max_delete": 0.0}, "--max-delete"),
        ({"max_delete": "a lot"}, "--max-delete"),
        ({"repeats": 2.5}, "--repeats"),
    ):
        with pytest.raises(CGapsError, match=flag):
            RobustnessOptions(**bad)


def test_cli_rejects_bad_option(tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    run = write_run(tmp_path)
    result = CliRunner().invoke(app, ["robustness", str(run), "--drop", "1.5"])
    assert isinstance(result.exception, CGapsError) and "--drop" in str(result.exception)
    assert not (run / "robustness.json").exists()
