"""Themes tested at scoring time and the calls over concepts and themes (docs/method.md §3).

Checked against the plain reference (:mod:`cgaps.scoring.reference`): the theme structure
(clusters merged pair by pair, by definition), the joint calls (Tarone's rule by its
definition, Monte Carlo p-values by the same seeded protocol, one Benjamini-Hochberg over
concepts and themes) and ``adjust_by``. Then the properties the method promises: null data
calls nothing (at most 1 run in 20), a planted topic is called as a theme even where none of
its concepts is, and the structure never reads the scores.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.scoring import score_run
from cgaps.scoring.core import build_matrix, score_tables, tarone_keep
from cgaps.scoring.reference import (
    assert_same_tables,
    reference_tables,
    reference_tarone,
    reference_themes,
)
from cgaps.scoring.themes import number_themes, theme_structure
from helpers import TOPIC_SUITE_CONCEPTS, make_null_or_planted_suite, make_suite, make_topic_suite, write_run

N_TOPIC_CONCEPTS = TOPIC_SUITE_CONCEPTS


def _scored(items, sal, n, cfg):
    m = build_matrix(items, sal, n, presence=cfg.presence, adjust_by=cfg.adjust_by)
    themes = theme_structure(m, cfg)
    concepts, tests = score_tables(
        m, cfg, themes=themes.saliency(m.shat_matrix()), theme_of=themes.theme_of()
    )
    return m, themes, concepts, tests


@pytest.mark.parametrize("presence", [0.0, 0.4])
def test_theme_structure_matches_reference(presence):
    items, sal = make_topic_suite(1)
    cfg = RunConfig(presence=presence)
    m = build_matrix(items, sal, N_TOPIC_CONCEPTS, presence=presence)
    got = [sorted(int(c) for c in cs) for cs in theme_structure(m, cfg).members]
    want = reference_themes(items, sal, N_TOPIC_CONCEPTS, cfg)
    assert got == want
    # the sub-topics' concepts co-activate: most of them end up in themes of their own sub-topic
    assert len(got) >= 12
    for cs in got:
        if max(cs) < 60:
            assert len({c // 5 for c in cs}) == 1, cs


@pytest.mark.integration
def test_theme_structure_with_decoder_and_a_limit_matches_reference(monkeypatch):
    from cgaps.scoring import themes as scoring_themes

    items, sal = make_topic_suite(2)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(N_TOPIC_CONCEPTS, 8))
    w[80:84] = w[80] + 0.01 * rng.normal(size=(4, 8))  # generic concepts with one decoder direction
    cfg = RunConfig(presence=0.0, theme_cut=0.5)
    m = build_matrix(items, sal, N_TOPIC_CONCEPTS)
    # the decoder joins what co-activation alone leaves apart
    with_w = [sorted(int(c) for c in cs) for cs in theme_structure(m, cfg, w).members]
    assert with_w == reference_themes(items, sal, N_TOPIC_CONCEPTS, cfg, w_dec=w)
    assert any({80, 81, 82, 83} <= set(cs) for cs in with_w)
    assert not any({80, 81, 82, 83} <= set(cs) for cs in theme_structure(m, cfg).members)
    # beyond MAX_CLUSTERED concepts, the rarest are clustered
    monkeypatch.setattr(scoring_themes, "MAX_CLUSTERED", 50)
    got = [sorted(int(c) for c in cs) for cs in theme_structure(m, cfg, w).members]
    assert got == reference_themes(items, sal, N_TOPIC_CONCEPTS, cfg, w_dec=w, limit=50)
    assert got != with_w


def test_theme_structure_never_reads_scores():
    items, sal = make_topic_suite(3)
    cfg = RunConfig()
    m = build_matrix(items, sal, N_TOPIC_CONCEPTS, presence=cfg.presence)
    other = m.with_scores(np.random.default_rng(1).permutation(m.scores))
    a = [cs.tolist() for cs in theme_structure(m, cfg).members]
    b = [cs.tolist() for cs in theme_structure(other, cfg).members]
    assert a == b


@pytest.mark.parametrize(
    "scoring_config",
    [
        {},
        {"presence": 0.3, "fdr": 0.2, "min_support": 8},
        {"adjust_by": "category"},
        {"adjust_by": "none", "theme_cut": 0.6},
        {"mc_below": 1e9, "mc_resamples": 3000, "seed": 3},  # every hypothesis by Monte Carlo
    ],
)
@pytest.mark.integration
def test_joint_calls_match_reference(scoring_config):
    items, sal = make_topic_suite(0, planted=(0, 3))
    cfg = RunConfig(**scoring_config)
    m, themes, concepts, tests = _scored(items, sal, N_TOPIC_CONCEPTS, cfg)
    members = [sorted(int(c) for c in cs) for cs in themes.members]
    ref, ref_tests, _ = reference_tables(items, sal, N_TOPIC_CONCEPTS, cfg, themes=members)
    assert_same_tables(concepts, ref, ["scope", "concept"])
    assert_same_tables(tests, ref_tests, ["scope", "theme"])
    # the data exercise the parts compared: themes and concepts called, hypotheses dropped by Tarone
    tested = concepts["support"] >= cfg.min_support
    assert (concepts.loc[tested, "q_value"].isna()).any() and concepts["q_value"].notna().any()
    if cfg.adjust_by != "category":  # by category, the planted topics are explained away
        assert (tests["gap"] == "weak").any()


def test_adjust_by_category_explains_a_hard_category():
    # one benchmark, a hard category: concepts of its topic are gaps against the benchmark's mean,
    # not against the category's own
    items, sal = make_topic_suite(4, planted=(0,), per_topic=60)
    items["benchmark"] = "exam"
    by_bench = _scored(items, sal, N_TOPIC_CONCEPTS, RunConfig())[2]
    by_cat = _scored(items, sal, N_TOPIC_CONCEPTS, RunConfig(adjust_by="category"))[2]
    topic0 = range(0, 10)  # the concepts of topic 0's two sub-topics
    a = by_bench[(by_bench["scope"] == "ALL") & by_bench["concept"].isin(topic0)]
    b = by_cat[(by_cat["scope"] == "ALL") & by_cat["concept"].isin(topic0)]
    assert (a["gap"] == "weak").sum() >= 6 and (b["gap"] == "").all()
    # e(c, S) is the category's mean where the concept fires only on that category
    mean0 = items.loc[items["category"] == "topic0", "score"].mean()
    assert b["expected"].to_numpy() == pytest.approx(np.full(len(b), mean0), abs=0.02)


def test_adjust_by_category_needs_categories():
    items, sal = make_suite(0)
    with pytest.raises(CGapsError, match="category"):
        build_matrix(items, sal, 200, adjust_by="category")


def test_tarone_keep_matches_its_definition():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(0, 60))
        p_min = 10.0 ** -rng.uniform(0, 6, n)
        if trial % 3 == 0:
            p_min = np.round(p_min, 4)  # ties
        got = tarone_keep(p_min, 0.05)
        assert got.tolist() == reference_tarone(p_min.tolist(), 0.05)
        # the kept hypotheses are few enough: each can reach alpha / K with K >= their number
        assert got.sum() == 0 or (p_min[got].max() <= 0.05 / got.sum())


def test_a_planted_topic_is_called_as_a_theme_beyond_its_concepts():
    found = 0
    for seed in range(6):
        # each concept covers ~60% of its sub-topic's items: together they cover all of them
        items, sal = make_topic_suite(seed, planted=(0,), per_topic=30, coverage=0.6)
        cfg = RunConfig(seed=seed)
        _, themes, concepts, tests = _scored(items, sal, N_TOPIC_CONCEPTS, cfg)
        all_c = concepts[concepts["scope"] == "ALL"].set_index("concept")
        for t in tests[(tests["scope"] == "ALL") & (tests["gap"] == "weak")]["theme"]:
            members = themes.members[int(t)]
            assert max(members) < 10  # a gap theme is made of topic 0's concepts
            found += bool((all_c.loc[members, "gap"] == "").all())
    assert found >= 1  # a theme called where none of its members is


@pytest.mark.slow
def test_null_scores_call_no_concept_or_theme_in_at_least_19_of_20_suites():
    with_calls = 0
    for seed in range(20):
        items, sal = make_topic_suite(100 + seed, null=True)
        _, themes, concepts, tests = _scored(items, sal, N_TOPIC_CONCEPTS, RunConfig(seed=seed))
        assert len(themes) >= 10
        with_calls += bool((concepts["gap"] != "").any() or (tests["gap"] != "").any())
    assert with_calls <= 1


def test_score_run_writes_theme_tests_numbered_as_shown(tmp_path):
    items, sal = make_topic_suite(5, planted=(1,), per_topic=60)
    run = write_run(tmp_path / "run", items, sal, {"n_concepts": N_TOPIC_CONCEPTS})
    concepts, _ = score_run(run)
    tests = pd.read_parquet(run / "theme_tests.parquet")
    all_t = tests[tests["scope"] == "ALL"].reset_index(drop=True)
    assert all_t["theme"].tolist() == list(range(len(all_t)))
    calls = all_t["gap"].map({"weak": 0, "strong": 1}).fillna(2).to_numpy()
    assert (np.diff(calls) >= 0).all() and calls[0] == 0  # gap themes first
    # the concepts' theme column names the theme whose members list holds them
    all_c = concepts[concepts["scope"] == "ALL"]
    for t, raw in all_t[["theme", "members"]].itertuples(index=False):
        assert sorted(json.loads(raw)) == sorted(all_c.loc[all_c["theme"] == t, "concept"])
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["adjust_by"] == "benchmark" and meta["config"]["theme_cut"] == 0.4
    assert meta["counts"]["theme_gaps_weak"] == int((all_t["gap"] == "weak").sum())
    assert set(meta["power"]["scopes"]) == {"exam", "quiz", "ALL"}


def test_number_themes_keeps_members_and_calls():
    items, sal = make_topic_suite(6, planted=(2,), per_topic=60)
    cfg = RunConfig()
    m, themes, concepts, tests = _scored(items, sal, N_TOPIC_CONCEPTS, cfg)
    renum, c2, t2 = number_themes(themes, concepts, tests)
    before = {
        tuple(themes.members[t]): g for t, g in tests.loc[tests["scope"] == "ALL", ["theme", "gap"]].values
    }
    after = {tuple(renum.members[t]): g for t, g in t2.loc[t2["scope"] == "ALL", ["theme", "gap"]].values}
    assert before == after
    assert (c2["theme"] >= 0).sum() == (concepts["theme"] >= 0).sum()


def test_calibration_suite_unchanged_by_the_themes_of_random_concepts():
    # concepts firing at random have no co-activation structure: no theme, the calls are the concepts'
    items, sal, _ = make_null_or_planted_suite(0, null=False)
    cfg = RunConfig(presence=0.0)
    m, themes, concepts, _ = _scored(items, sal, 300, cfg)
    assert len(themes) == 0


def test_compute_scores_with_numbered_themes_matches_reference():
    from cgaps.scoring import compute_scores
    from cgaps.scoring.reference import reference_scores

    items, sal = make_topic_suite(7, planted=(0, 5), per_topic=40)
    cfg = RunConfig(seed=2)
    concepts, overlap = compute_scores(items, sal, N_TOPIC_CONCEPTS, cfg)
    ref, ref_overlap = reference_scores(items, sal, N_TOPIC_CONCEPTS, cfg)
    assert_same_tables(concepts, ref, ["scope", "concept"])
    assert_same_tables(overlap, ref_overlap, ["a", "b"])
    assert (concepts["theme"] == 0).any() and concepts["theme"].max() >= 5
