"""Scoring (docs/method.md §3): the sparse fast path against a plain reference, bad input, the CLI.

The reference (:mod:`cgaps.scoring.reference`) loops over items and concepts with Python
floats and shares no code with :mod:`cgaps.scoring.core`; its docstring lists the rules it
applies. The shared statistics (:mod:`cgaps.stats`) are checked against scipy's integer-count
Wilson interval and the reference's textbook BH loop.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.rundir import CONCEPT_COLUMNS
from cgaps.scoring import compute_scores, score_run
from cgaps.scoring.core import CONCEPT_EXTRA_COLUMNS
from cgaps.scoring.reference import assert_same_tables, reference_scores, reference_tables
from helpers import (
    NEVER,
    NOT_IN_BIAS,
    STRONG_PLANTED,
    WEAK_PLANTED,
    make_null_or_planted_suite,
    make_suite,
    write_run,
)

# the synthetic suites (make_suite, its planted concepts) and write_run live in helpers.py. Tests of the
# gap test itself score them with presence=0: their gamma-distributed values are no SAE's, and the default
# threshold (tested on its own below) would mostly measure how many activations it drops.


@pytest.mark.integration
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_matches_reference(seed):
    items, sal = make_suite(seed)
    cfg = RunConfig(seed=seed)
    concepts, overlap = compute_scores(items, sal, 200, cfg)
    ref_concepts, ref_overlap = reference_scores(items, sal, 200, cfg)
    assert len(concepts) == 200 * 4
    assert concepts["concept"].dtype == np.int32
    assert_same_tables(concepts, ref_concepts, ["scope", "concept"])
    assert_same_tables(overlap, ref_overlap, ["a", "b"])
    # the data exercises every branch the comparison is meant to cover
    assert set(concepts["status"]) == {"missing", "under", "normal", "over"}
    assert {"weak", "strong"} <= set(concepts["gap"])
    assert concepts["q_value"].notna().any() and concepts["q_value"].isna().any()


@pytest.mark.integration
def test_fast_path_matches_reference_other_config():
    items, sal = make_suite(7)
    cfg = RunConfig(min_support=12, under_pct=25, over_pct=60, fdr=0.2, ci_level=0.8, presence=0.3)
    concepts, overlap = compute_scores(items, sal, 200, cfg)
    ref_concepts, ref_overlap = reference_scores(items, sal, 200, cfg)
    assert_same_tables(concepts, ref_concepts, ["scope", "concept"])
    assert_same_tables(overlap, ref_overlap, ["a", "b"])


@pytest.mark.integration
def test_fast_path_matches_reference_monte_carlo_everywhere():
    # every tested concept takes the Monte Carlo path, with the refining second pass
    items, sal = make_suite(5)
    cfg = RunConfig(mc_below=1e9, mc_resamples=3000, seed=11)
    concepts, _ = compute_scores(items, sal, 200, cfg)
    ref, _ = reference_scores(items, sal, 200, cfg)
    assert_same_tables(concepts, ref, ["scope", "concept"])
    q = concepts["q_value"].dropna()
    assert q.min() < 0.05 and "weak" in set(concepts["gap"])


def test_presence_threshold_drops_faint_activations():
    items, sal = make_suite(2)
    full, _ = compute_scores(items, sal, 200, RunConfig())
    thr, _ = compute_scores(items, sal, 200, RunConfig(presence=0.5))
    scale = sal.groupby("concept")["value"].max()
    kept = sal[sal["value"] >= 0.5 * sal["concept"].map(scale)]
    expected_support = kept.groupby("concept").size().reindex(range(200), fill_value=0)
    got = thr[thr["scope"] == "ALL"].set_index("concept")["support"]
    assert (got == expected_support).all()
    assert (got <= full[full["scope"] == "ALL"].set_index("concept")["support"]).all()
    assert (thr["status"] == "missing").sum() > (full["status"] == "missing").sum()


def test_monte_carlo_p_value_matches_the_exact_binomial_tail():
    # one benchmark, 0/1 scores with mean 0.25, concept 0 on 8 items with equal saliency and 6
    # of them correct: under the null T counts correct items, Binomial(8, 0.25) exactly
    n = 400
    y = np.zeros(n)
    y[:100] = 1.0
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "benchmark": "b", "score": y})
    on = [0, 1, 2, 3, 4, 5, 200, 201]  # 6 correct, 2 wrong
    sal = pd.DataFrame({"item_id": [f"i{i}" for i in on], "concept": 0, "value": 1.0})
    concepts, _ = compute_scores(items, sal, 1, RunConfig(min_support=1, mc_resamples=100_000))
    row = concepts[concepts["scope"] == "ALL"].iloc[0]
    exact = stats.binom.sf(5, 8, 0.25)  # P(X >= 6) = 0.00423
    assert row["q_value"] == pytest.approx(2 * exact, rel=0.1)  # two-sided, one concept
    # the normal approximation of the same z would claim ~8x more evidence than there is
    z = (6 - 2) / np.sqrt(8 * 0.25 * 0.75)
    assert stats.norm.sf(z) < exact / 5


def test_score_test_uses_the_null_variance_not_the_firing_items():
    # six items that all agree used to make the plug-in variance ~0 and a "strength" of noise
    n = 300
    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.5).astype(float)
    correct = np.flatnonzero(y == 1)[:6]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "benchmark": "b", "score": y})
    sal = pd.DataFrame({"item_id": [f"i{i}" for i in correct], "concept": 0, "value": 1.0})
    concepts, _ = compute_scores(items, sal, 1, RunConfig())
    row = concepts[concepts["scope"] == "ALL"].iloc[0]
    assert row["chi_model"] == 1.0
    # the evidence is what 6 of 6 correct at p = ybar ~ 0.5 is worth (ybar^6), not the near-0 p-value
    # a plug-in variance of 0 gives; one such concept among a hundred is never a call
    assert row["q_value"] == pytest.approx(2 * y.mean() ** 6, rel=0.3)  # two-sided
    assert row["q_value"] * 100 > 0.05


@pytest.mark.slow
def test_null_scores_call_nothing_in_at_least_19_of_20_seeds():
    seeds_with_calls = 0
    for seed in range(20):
        items, sal, _ = make_null_or_planted_suite(seed, null=True)
        concepts, _ = compute_scores(items, sal, 300, RunConfig(seed=seed, presence=0.0))
        seeds_with_calls += bool((concepts["gap"] != "").any())
    assert seeds_with_calls <= 1


@pytest.mark.integration
def test_planted_gaps_are_found_with_precision_and_recall():
    called_total = true_calls = due_total = due_found = 0
    for seed in range(5):
        items, sal, planted = make_null_or_planted_suite(seed, null=False)
        concepts, _ = compute_scores(items, sal, 300, RunConfig(seed=seed, presence=0.0))
        a = concepts[concepts["scope"] == "ALL"].set_index("concept")
        called = set(a.index[a["gap"] == "weak"])
        # the planted concepts the criterion is about: support >= 20 and an accuracy drop >= 0.5
        p = a.loc[sorted(planted)]
        due = set(p.index[(p["support"] >= 20) & (p["chi_model"] - p["expected"] <= -0.5)])
        called_total += len(called)
        true_calls += len(called & planted)
        due_total += len(due)
        due_found += len(called & due)
    assert due_total >= 10
    assert true_calls / called_total >= 0.9
    assert due_found / due_total >= 0.9


def test_never_firing_and_missing_rows():
    items, sal = make_suite(0)
    concepts, _ = compute_scores(items, sal, 200, RunConfig())
    never = concepts[concepts["concept"].isin(NEVER)]
    assert (never["support"] == 0).all() and (never["chi_bench"] == 0).all()
    assert (
        never["chi_model"].isna().all()
        and (never["status"] == "missing").all()
        and (never["gap"] == "").all()
    )
    not_bias = concepts[concepts["concept"].isin(NOT_IN_BIAS)]
    assert (not_bias.loc[not_bias["scope"] == "bias", "status"] == "missing").all()
    assert (not_bias.loc[not_bias["scope"] == "arith", "support"] > 0).all()
    # chi_bench is normalised by the suite-wide max: in [0, 1], and 1 / |S| at least where the max fires
    assert concepts["chi_bench"].between(0, 1).all()


def test_planted_concepts_are_called():
    items, sal = make_suite(3)
    concepts, _ = compute_scores(items, sal, 200, RunConfig(presence=0.0))
    by = concepts.set_index(["scope", "concept"])
    for scope in ("arith", "code", "ALL"):
        for c in WEAK_PLANTED:
            assert by.loc[(scope, c), "gap"] == "weak", (scope, c)
            assert by.loc[(scope, c), "chi_model"] == 0.0
        # all scores equal and well above e: called strong by the score test
        assert by.loc[(scope, STRONG_PLANTED), "gap"] == "strong"
    # random concepts are mostly not called
    rest = concepts[(concepts["scope"] == "ALL") & (concepts["concept"] > 2)]
    assert (rest["gap"] != "").mean() < 0.05


def test_benchmark_adjusted_expected_prevents_false_gap():
    rng = np.random.default_rng(11)
    items, sal = [], []
    for b, n, acc in (("hard", 200, 0.2), ("easy", 200, 0.9)):
        for k in range(n):
            iid = f"{b}{k}"
            y = float(rng.random() < acc)
            items.append(
                {"item_id": iid, "benchmark": b, "prompt": "p", "reference": "r", "response": "x", "score": y}
            )
            # concept 0 fires on hard items only, independent of correctness; concept 1 everywhere
            if b == "hard" and rng.random() < 0.6:
                sal.append({"item_id": iid, "concept": 0, "value": float(rng.uniform(0.5, 2))})
            sal.append({"item_id": iid, "concept": 1, "value": float(rng.uniform(0.5, 2))})
    items, sal = pd.DataFrame(items), pd.DataFrame(sal).astype({"concept": "int32", "value": "float32"})
    concepts, _ = compute_scores(items, sal, 2, RunConfig(presence=0.0))
    row = concepts[(concepts["scope"] == "ALL") & (concepts["concept"] == 0)].iloc[0]
    suite_mean = items["score"].mean()
    # the confound is real: an unadjusted comparison would be far below the suite mean ...
    se = math.sqrt(row["chi_model"] * (1 - row["chi_model"]) / row["n_eff"])
    assert (row["chi_model"] - suite_mean) / se < -8
    # ... but against e (the hard benchmark's mean) there is no gap
    assert abs(row["expected"] - items.loc[items["benchmark"] == "hard", "score"].mean()) < 1e-12
    assert row["gap"] == ""


def test_overlap_values():
    items, sal = make_suite(0)
    _, overlap = compute_scores(items, sal, 200, RunConfig())
    assert overlap[["a", "b"]].values.tolist() == [["arith", "bias"], ["arith", "code"], ["bias", "code"]]
    # bias lacks 20 concepts the others have; never-firing ones count in neither set
    assert overlap["jaccard"].between(0.5, 1).all()
    assert overlap.loc[1, "jaccard"] > overlap.loc[0, "jaccard"]


# ---------------------------------------------------------------- shared statistics (cgaps.stats)


@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
def test_wilson_on_integer_counts_matches_scipy_binomtest(level):
    from scipy.stats import binomtest

    from cgaps.stats import wilson

    for n in range(1, 41):
        k = np.arange(n + 1)
        lo, hi = wilson(k / n, np.full(n + 1, float(n)), level)
        for j in range(n + 1):
            ci = binomtest(int(j), n).proportion_ci(confidence_level=level, method="wilson")
            assert lo[j] == pytest.approx(ci.low, abs=1e-12), (j, n)
            assert hi[j] == pytest.approx(ci.high, abs=1e-12), (j, n)


def test_mean_interval_counts_and_partial_credit():
    from cgaps.stats import mean_interval, wilson, wilson_counts

    assert mean_interval([1, 0, 1, 1]) == wilson_counts(3, 4)
    assert mean_interval([0, 0, 0]) == (0.0, pytest.approx(0.5614970317550454))  # scipy: k = 0 -> low 0
    partial = [1, 0.5, 0, 0.25, 1]
    lo, hi = wilson(np.float64(np.mean(partial)), np.float64(5), 0.95)
    assert mean_interval(partial) == (float(lo), float(hi))
    assert all(math.isnan(v) for v in mean_interval([]))
    assert all(math.isnan(v) for v in wilson_counts(0, 0))


def test_bh_matches_the_textbook_loop_with_ties_and_keeps_nan():
    from cgaps.scoring.reference import reference_bh
    from cgaps.stats import bh_adjust

    rng = np.random.default_rng(5)
    for trial in range(60):
        p = rng.random(int(rng.integers(1, 200)))
        if trial % 2:
            p = np.round(p, 2)  # many ties
        p[rng.integers(0, len(p))] = 1.0
        p[rng.integers(0, len(p))] = 0.0
        np.testing.assert_allclose(bh_adjust(p), reference_bh(p.tolist()), rtol=1e-14, atol=0)
    assert bh_adjust(np.array([])).shape == (0,)
    one = np.array([0.3])
    q = bh_adjust(one)
    assert q.tolist() == [0.3] and q is not one
    # a NaN p-value leaves the number of tests unknown: every q is NaN, as before scipy was used
    assert np.isnan(bh_adjust(np.array([0.01, np.nan, 0.5]))).all()


# ---------------------------------------------------------------- the run directory


def test_score_run_writes_tables_and_run_json(tmp_path):
    run = write_run(tmp_path)
    concepts, overlap = score_run(run)
    assert (run / "concepts.parquet").exists() and (run / "overlap.parquet").exists()
    back = pd.read_parquet(run / "concepts.parquet")
    assert list(back.columns) == [*CONCEPT_COLUMNS, *CONCEPT_EXTRA_COLUMNS] and len(back) == len(concepts)
    assert back["concept"].dtype == np.int32
    tests = pd.read_parquet(run / "theme_tests.parquet")
    members = [json.loads(m) for m in tests.loc[tests["scope"] == "ALL", "members"]]
    items, sal = make_suite(0)
    ref, ref_tests, _ = reference_tables(items, sal, 200, RunConfig(), themes=[sorted(m) for m in members])
    assert_same_tables(back, ref, ["scope", "concept"])
    assert_same_tables(tests.drop(columns=["n_members", "members"]), ref_tests, ["scope", "theme"])
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["min_support"] == 5 and meta["counts"]["scored_items"] == 310
    assert "score_compute_s" in meta["timings"]


def test_score_run_takes_the_concept_scale_from_the_sae_latent_stats(tmp_path):
    from cgaps.sae import write_latent_stats

    items, sal = make_suite(0)
    sae_dir = tmp_path / "sae"
    sae_dir.mkdir()
    suite_max = sal.groupby("concept")["value"].max().reindex(range(200), fill_value=0.0).to_numpy()
    reference = 2.0 * suite_max  # a reference corpus whose activations run twice as high
    write_latent_stats(
        sae_dir, {"max": reference, "frequency": np.zeros(200)}, {"corpus": "t", "tokens": "9"}
    )
    meta = {"n_concepts": 200, "config": {"sae": str(sae_dir), "presence": 0.3}, "sae": {"id": str(sae_dir)}}
    concepts, _ = score_run(write_run(tmp_path / "run", items, sal, meta))
    got = concepts[concepts["scope"] == "ALL"].set_index("concept")
    # present when s >= 0.3 * (2 x suite max); s_hat = s / reference
    kept = sal[sal["value"] >= 0.3 * sal["concept"].map(lambda c: reference[c])]
    want_support = kept.groupby("concept").size().reindex(range(200), fill_value=0)
    assert (got["support"] == want_support).all()
    want_bench = (kept["value"] / kept["concept"].map(lambda c: reference[c])).groupby(
        kept["concept"]
    ).sum() / 310
    # the stats file stores float32
    np.testing.assert_allclose(got.loc[want_bench.index, "chi_bench"], want_bench, rtol=1e-6)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["counts"]["concept_scale"].startswith(
        "reference max from latent_stats.safetensors (9 tokens of t)"
    )
    # a run without an extraction record (saliency from another tool) keeps the suite's own max
    plain_meta = {"n_concepts": 200, "config": {"sae": str(sae_dir), "presence": 0.3}}
    plain, _ = score_run(write_run(tmp_path / "plain", items, sal, plain_meta))
    assert (plain[plain["scope"] == "ALL"]["support"] >= got["support"].to_numpy()).all()


def test_score_run_uses_stored_config(tmp_path):
    run = write_run(tmp_path, meta={"n_concepts": 200, "config": {"min_support": 50}})
    concepts, _ = score_run(run)
    assert concepts.loc[concepts["support"] < 50, "q_value"].isna().all()


def test_score_run_calls_the_validating_readers(tmp_path, monkeypatch):
    from cgaps import rundir, runtables

    calls = []
    for module, name in (
        (rundir, "read_run_json"),
        (rundir, "n_concepts"),
        (rundir, "read_items"),
        (runtables, "read_saliency_coded"),  # the fast reader; the plain one where it declines the file
        (rundir, "read_saliency"),
    ):
        orig = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _o=orig, _n=name, **k: calls.append(_n) or _o(*a, **k))
    score_run(write_run(tmp_path))
    assert {"read_run_json", "n_concepts", "read_items"} <= set(calls)
    assert {"read_saliency_coded", "read_saliency"} & set(calls)


@pytest.mark.parametrize(
    "case, file, field",
    [
        ("missing_score", "items.parquet", "score"),
        ("extra_column", "items.parquet", "difficulty"),
        ("duplicate_id", "items.parquet", "item_id"),
        ("score_above_1", "items.parquet", "score"),
        ("score_nan", "items.parquet", "score"),
        ("concept_too_big", "saliency.parquet", "concept"),
        ("saliency_extra_column", "saliency.parquet", "token"),
        ("saliency_unknown_item", "saliency.parquet", "item_id"),
        ("no_n_concepts", "run.json", "n_concepts"),
        ("old_schema", "run.json", "schema_version"),
    ],
)
def test_bad_input_names_file_and_field(tmp_path, case, file, field):
    items, sal = make_suite(0)
    meta = {"n_concepts": 200}
    if case == "missing_score":
        items = items.drop(columns="score")
    elif case == "extra_column":
        items["difficulty"] = 1
    elif case == "duplicate_id":
        items.loc[5, "item_id"] = items.loc[4, "item_id"]
    elif case == "score_above_1":
        items.loc[3, "score"] = 1.5
    elif case == "score_nan":
        items.loc[3, "score"] = np.nan
    elif case == "concept_too_big":
        sal.loc[0, "concept"] = 200
    elif case == "saliency_extra_column":
        sal["token"] = 0
    elif case == "saliency_unknown_item":
        sal.loc[0, "item_id"] = "nope"
    elif case == "no_n_concepts":
        meta = {"model": {"evaluated": "m"}}  # a valid run.json without n_concepts
    elif case == "old_schema":
        meta = {"n_concepts": 200, "schema_version": 0}
    run = write_run(tmp_path, items, sal, meta)
    with pytest.raises(CGapsError) as e:
        score_run(run)
    assert file in str(e.value) and field in str(e.value)
    assert not (run / "concepts.parquet").exists()


def test_compute_scores_rejects_bad_arrays():
    items, sal = make_suite(0)
    bad = sal.copy()
    bad.loc[0, "concept"] = 999
    with pytest.raises(CGapsError, match="concept"):
        compute_scores(items, bad, 200, RunConfig())
    dup = pd.concat([sal, sal.iloc[:1]])
    with pytest.raises(CGapsError, match="duplicate"):
        compute_scores(items, dup, 200, RunConfig())


# ---------------------------------------------------------------- CLI


def test_cli_score(tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    run = write_run(tmp_path)
    result = CliRunner().invoke(app, ["score", str(run), "--min-support", "8", "--fdr", "0.1"])
    assert result.exit_code == 0, result.output
    for name in ("arith", "bias", "code", "ALL", "weak", "strong"):
        assert name in result.output
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["min_support"] == 8 and meta["config"]["fdr"] == 0.1
    concepts = pd.read_parquet(run / "concepts.parquet")
    assert concepts.loc[concepts["support"] < 8, "q_value"].isna().all()


def test_cli_score_rejects_bad_config_field(tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    run = write_run(tmp_path)
    result = CliRunner().invoke(app, ["score", str(run), "--fdr", "2"])
    assert isinstance(result.exception, CGapsError) and "fdr" in str(result.exception)
    assert not (run / "concepts.parquet").exists()
