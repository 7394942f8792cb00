"""Robustness checks (docs/method.md §4) against recomputation from scratch with compute_scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cgaps.config import RunConfig

# the recomputations below are presence-free (tau = 0); presence itself is tested in test_scoring.py
from cgaps.errors import CGapsError
from cgaps.robustness.core import RobustnessConfig, ablation, subsample_rows, subsampling
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
    res = subsampling(m, cfg, RobustnessConfig(repeats=repeats, drop=0.2))
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
    a = subsampling(m, RunConfig(seed=1, presence=0.0), RobustnessConfig(repeats=4))
    b = subsampling(m, RunConfig(seed=1, presence=0.0), RobustnessConfig(repeats=4))
    c = subsampling(m, RunConfig(seed=2, presence=0.0), RobustnessConfig(repeats=4))
    assert a == b and a["mean_std_chi_model"] != c["mean_std_chi_model"]
    none = subsampling(m, RunConfig(presence=0.0), RobustnessConfig(repeats=3, drop=0.0))
    assert none["mean_std_chi_model"] == pytest.approx(0, abs=1e-12)


def test_ablation_matches_recomputation_and_moves_the_median(suite):
    items, sal, m = suite
    cfg = RunConfig(presence=0.0)
    res = ablation(m, cfg, RobustnessConfig(top=20, max_delete=0.02))
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

    defaults = {f.name: f.default for f in dataclasses.fields(RobustnessConfig)}
    assert defaults == {"repeats": 100, "drop": 0.2, "top": 100, "max_delete": 0.01}
    assert all(f.metadata["help"] for f in dataclasses.fields(RobustnessConfig))
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
            RobustnessConfig(**bad)


def test_cli_rejects_bad_option(tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    run = write_run(tmp_path)
    result = CliRunner().invoke(app, ["robustness", str(run), "--drop", "1.5"])
    assert isinstance(result.exception, CGapsError) and "--drop" in str(result.exception)
    assert not (run / "robustness.json").exists()


# --- SAE swap (docs/method.md §4) ------------------------------------------------------------


def _permuted_sae_pair(tmp_path, perm, d_in=16, noise=0.0):
    """Two sae-lens folders: A random, B = A's latents in the order ``perm`` (B's latent j is A's
    latent perm[j]), its decoder rows perturbed by ``noise``."""
    import torch

    from helpers import random_sae

    a = random_sae(d_in=d_in, d_sae=len(perm), seed=3)
    a.save_model(tmp_path / "sae_a")
    b = random_sae(d_in=d_in, d_sae=len(perm), seed=4)
    gen = torch.Generator().manual_seed(5)
    index = torch.as_tensor(perm)
    with torch.no_grad():
        b.W_dec.copy_(a.W_dec[index] + noise * torch.randn(a.W_dec.shape, generator=gen))
        b.W_enc.copy_(a.W_enc[:, index])
        b.b_enc.copy_(a.b_enc[index])
    b.save_model(tmp_path / "sae_b")
    return tmp_path / "sae_a", tmp_path / "sae_b"


def _scored_run(root, items, sal, sae_path):
    from cgaps.scoring import score_run

    meta = {"n_concepts": 200, "config": {"sae": str(sae_path)}, "sae": {"id": str(sae_path)}}
    write_run(root, items, sal, meta)
    score_run(root)
    return root


def test_sae_swap_recovers_a_permuted_sae(tmp_path):
    """B is A with its latents reordered: every latent is matched to its twin, the chi
    distributions are the same (KS 0), matched chi_model ranks agree exactly."""
    from cgaps.robustness.swap import sae_swap_runs

    items, sal = make_suite(0)
    perm = np.random.default_rng(1).permutation(200)
    sae_a, sae_b = _permuted_sae_pair(tmp_path, perm, noise=0.01)
    inverse = np.argsort(perm)  # A's concept c is B's concept inverse[c]
    sal_b = sal.assign(concept=inverse[sal["concept"].to_numpy()].astype("int32"))
    run_a = _scored_run(tmp_path / "a", items, sal, sae_a)
    run_b = _scored_run(tmp_path / "b", items, sal_b, sae_b)

    swap = sae_swap_runs(run_a, run_b, min_support=5, seed=0)
    match = swap["matching"]
    assert match["distinct_matches"] == 200 and match["close_share"] == 1.0
    assert match["cosine_quantiles"]["q05"] > 0.99
    assert match["spearman_chi_model"]["rho"] == pytest.approx(1.0)
    assert match["spearman_chi_model"]["pairs"] > 100
    assert abs(match["spearman_random_pairing"]["rho"]) < 0.3
    for scope, d in swap["distributions"].items():
        assert d["chi_model"]["ks"] == pytest.approx(0.0), scope
        assert d["chi_bench"]["ks"] == pytest.approx(0.0), scope
        assert d["missing_share_a"] == d["missing_share_b"]
    assert swap["missing_share_order"]["rho"] == pytest.approx(1.0)
    by_saliency = swap["saliency_matching"]  # the same items fire: every twin correlates perfectly
    assert by_saliency["correlation_quantiles"]["q05"] == pytest.approx(1.0)
    assert by_saliency["spearman_chi_model"]["rho"] == pytest.approx(1.0)
    for end in ("top", "bottom"):  # the same figures side by side (ties may list other twins)
        pairs = swap["extremes"][end]
        assert len(pairs) == 10
        assert [p["a"]["chi_model"] for p in pairs] == [p["b"]["chi_model"] for p in pairs]
        assert {
            inverse[p["a"]["concept"]] for p in pairs if p["a"]["chi_model"] != pairs[-1]["a"]["chi_model"]
        } <= {p["b"]["concept"] for p in pairs}


@pytest.mark.integration
def test_sae_swap_of_unrelated_saes_does_not_correlate(tmp_path):
    """Another suite's saliency through an unrelated SAE: matched chi_model ranks do not agree
    and the chi_model distributions differ (KS > 0)."""
    from cgaps.robustness.swap import sae_swap_runs
    from helpers import save_random_sae

    items, sal = make_suite(0)
    _, sal_other = make_suite(7)
    ids = dict(zip(make_suite(7)[0]["item_id"], items["item_id"], strict=True))
    sal_other = sal_other.assign(item_id=sal_other["item_id"].map(ids))
    run_a = _scored_run(
        tmp_path / "a", items, sal, save_random_sae(tmp_path / "sa", d_in=16, d_sae=200, seed=1)
    )
    run_b = _scored_run(
        tmp_path / "b", items, sal_other, save_random_sae(tmp_path / "sb", d_in=16, d_sae=200, seed=2)
    )
    swap = sae_swap_runs(run_a, run_b, min_support=5, seed=0)
    assert abs(swap["matching"]["spearman_chi_model"]["rho"]) < 0.3
    assert swap["matching"]["cosine_quantiles"]["q50"] < 0.95
    assert swap["distributions"]["ALL"]["chi_model"]["ks"] > 0
    assert abs(swap["saliency_matching"]["spearman_chi_model"]["rho"]) < 0.3
    assert swap["saliency_matching"]["close_share"] < 0.05


def test_correlation_matches_equal_a_dense_reference():
    import scipy.sparse as sp

    from cgaps.robustness import swap

    rng = np.random.default_rng(3)
    dense_a = rng.gamma(2.0, 1.0, (60, swap._CHUNK + 11)) * (rng.random((60, swap._CHUNK + 11)) < 0.2)
    dense_b = rng.gamma(2.0, 1.0, (60, 40)) * (rng.random((60, 40)) < 0.3)
    dense_a[:, 5] = 0.0  # never fires: no correlation
    dense_a[:, 7] = dense_b[:, 3] * 2 + 1e-9 * rng.random(60)  # a twin of b's column 3
    idx, corr = swap.correlation_matches(sp.csc_matrix(dense_a), sp.csc_matrix(dense_b))
    full = np.corrcoef(dense_a.T, dense_b.T)[: dense_a.shape[1], dense_a.shape[1] :]
    fired = dense_a.std(axis=0) > 0
    assert not np.isfinite(corr[5]) and idx[7] == 3 and corr[7] == pytest.approx(1.0)
    np.testing.assert_allclose(corr[fired], np.nanmax(full[fired], axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(idx[fired], np.nanargmax(full[fired], axis=1))


def test_best_matches_equals_the_full_cosine_argmax():
    from cgaps.robustness import swap

    rng = np.random.default_rng(0)
    a = rng.normal(size=(swap._CHUNK + 37, 8)).astype(np.float32)
    b = rng.normal(size=(300, 8)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    idx, cos = swap.best_matches(a, b)
    full = a @ b.T
    np.testing.assert_array_equal(idx, full.argmax(axis=1))
    np.testing.assert_allclose(cos, full.max(axis=1), rtol=1e-6)


def test_sae_swap_refuses_other_items_or_scores(tmp_path):
    from cgaps.robustness.swap import sae_swap_runs
    from helpers import save_random_sae

    items, sal = make_suite(0)
    sae = save_random_sae(tmp_path / "s", d_in=16, d_sae=200, seed=1)
    run_a = _scored_run(tmp_path / "a", items, sal, sae)
    changed = items.copy()
    changed.loc[3, "score"] = 1.0 - changed.loc[3, "score"]
    run_b = _scored_run(tmp_path / "b", changed, sal, sae)
    with pytest.raises(CGapsError, match=r"item 'arith-3' has score"):
        sae_swap_runs(run_a, run_b, min_support=5, seed=0)
    fewer = items.iloc[1:]
    run_c = _scored_run(tmp_path / "c", fewer, sal[sal["item_id"] != "arith-0"], sae)
    with pytest.raises(CGapsError, match=r"1 item\(s\) only in .*first: 'arith-0'"):
        sae_swap_runs(run_a, run_c, min_support=5, seed=0)


def test_cli_robustness_against(tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app
    from helpers import save_random_sae

    items, sal = make_suite(0)
    run_a = _scored_run(
        tmp_path / "a", items, sal, save_random_sae(tmp_path / "sa", d_in=16, d_sae=200, seed=1)
    )
    run_b = _scored_run(
        tmp_path / "b", items, sal, save_random_sae(tmp_path / "sb", d_in=16, d_sae=200, seed=2)
    )
    result = CliRunner().invoke(
        app, ["robustness", str(run_a), "--against", str(run_b), "--repeats", "3", "--top", "5"]
    )
    assert result.exit_code == 0, result.output
    swap = json.loads((run_a / "robustness.json").read_text())["sae_swap"]
    assert swap["against"] == str(run_b) and swap["width_a"] == swap["width_b"] == 200
    # same saliency through both: identical distributions whatever the decoders
    assert swap["distributions"]["ALL"]["chi_model"]["ks"] == pytest.approx(0.0)
