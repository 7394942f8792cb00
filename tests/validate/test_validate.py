"""cgaps validate: null calibration, planted power and probe-family alignment on a scored run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cgaps.errors import CGapsError
from cgaps.scoring import score_run
from cgaps.validate.config import ValidateConfig
from cgaps.validate.core import permuted_scores, validate_run
from helpers import (
    TOPIC_SUITE_CONCEPTS,
    WEAK_PLANTED,
    make_null_or_planted_suite,
    make_suite,
    make_topic_suite,
    write_run,
)


def test_permuted_scores_keep_each_benchmark_accuracy():
    from cgaps.scoring.core import build_matrix

    items, sal = make_suite(0)
    m = build_matrix(items, sal, 200)
    y = permuted_scores(m, np.random.default_rng(0))
    assert not np.array_equal(y, m.scores)
    for b in range(len(m.benchmarks)):
        idx = m.bench == b
        assert sorted(y[idx]) == sorted(m.scores[idx])


@pytest.mark.integration
def test_validate_run_on_a_suite_with_families(tmp_path):
    items, sal = make_suite(1)
    # families: the items planted weak concepts fire on are mostly wrong ("hard" family)
    weak_items = set(sal.loc[sal["concept"].isin(WEAK_PLANTED), "item_id"])
    items["category"] = ["hard" if i in weak_items else "easy" for i in items["item_id"]]
    run = write_run(tmp_path / "run", items, sal, {"n_concepts": 200})
    score_run(run)
    out = validate_run(run, ValidateConfig(null_draws=5, planted_repeats=2, shuffles=50))
    assert json.loads((run / "validation.json").read_text())["null"]["draws"] == 5
    assert out["null"]["draws_with_calls"] <= 1
    cell = {(r["support"], r["effect"]): r for r in out["planted"]}
    assert cell[("20-49", 0.5)]["recall"] >= 0.5  # big effects on mid support are found
    fam = out["families"]
    assert fam["families"]["hard"]["accuracy"] < fam["families"]["easy"]["accuracy"]
    weak = fam["weak"]
    assert weak["accuracy"] < weak["shuffled_95"][0] and weak["p_shuffled"] <= 0.05


@pytest.mark.slow
def test_validate_null_calibration_over_20_draws(tmp_path):
    items, sal, _ = make_null_or_planted_suite(3, null=True)
    run = write_run(tmp_path / "run", items, sal, {"n_concepts": 300})
    score_run(run)
    out = validate_run(run, ValidateConfig(null_draws=40, planted_repeats=0))
    # permutations of one suite's scores: measured 3 of 120 draws call anything (2.5%) on three such
    # suites; the 1-in-20 promise over independent suites is asserted in test_scoring.py
    assert out["null"]["draws_with_calls"] <= 4 and out["families"] is None


def test_validate_options_name_the_flag():
    with pytest.raises(CGapsError, match="--null-draws"):
        ValidateConfig(null_draws=0)


def test_cli_validate(tmp_path):
    from cgaps.cli.main import app

    run = write_run(tmp_path / "run")
    score_run(run)
    res = CliRunner().invoke(app, ["validate", str(run), "--null-draws", "2", "--planted-repeats", "0"])
    assert res.exit_code == 0, res.output
    assert "null draws calling anything" in res.output
    assert json.loads((run / "validation.json").read_text())["null"]["draws"] == 2


def test_planted_topics_point_to_the_planted_groups():
    from cgaps.config import RunConfig
    from cgaps.scoring.core import build_matrix
    from cgaps.validate.topics import planted_topics

    items, sal = make_topic_suite(0, null=True, per_topic=100)
    cfg = RunConfig()
    m = build_matrix(items, sal, TOPIC_SUITE_CONCEPTS, presence=cfg.presence)
    out = planted_topics(
        m, items["category"].to_numpy(), cfg, np.random.default_rng(0), sizes=(30, 100, 200), repeats=3
    )
    assert [o["per_group"] for o in out] == [30, 100]  # no group has 200 items
    for o in out:
        assert o["groups"] == 6 and o["themes"] == 12
        assert o["weak_concepts"] + o["weak_themes"] >= 5 and o["weak_themes"] >= 1
        assert o["top_pointing"] == 1.0
        calls = [d["weak_concepts"] + d["weak_themes"] for d in o["draws"]]
        assert o["n_draws"] == 3 and o["calls_median"] == float(np.median(calls))
        assert (
            o["draws_with_5_calls"]
            == sum(c >= 5 for c in calls)
            <= o["draws_with_calls"]
            == sum(c > 0 for c in calls)
        )
        for d in o["draws"]:
            assert len(d["planted"]) == 2 and d["top"] == min(20, d["weak_concepts"] + d["weak_themes"])
            # a draw that calls something had a kept hypothesis at or under BH's first step's bar
            assert d["kept"] >= d["weak_concepts"] + d["weak_themes"] and 0 < d["best_p"] <= 0.05 / d["kept"]


def test_planted_topics_say_how_far_a_draw_without_calls_was_from_the_bar():
    """A draw with nothing planted calls nothing, and its best kept p-value is above fdr / kept (else
    Benjamini-Hochberg would have called it): the figure the docs compare with an oracle's."""
    from cgaps.config import RunConfig
    from cgaps.scoring.core import build_matrix
    from cgaps.validate.topics import planted_topics

    items, sal = make_topic_suite(2, null=True, per_topic=40)
    cfg = RunConfig()
    m = build_matrix(items, sal, TOPIC_SUITE_CONCEPTS, presence=cfg.presence)
    out = planted_topics(
        m,
        items["category"].to_numpy(),
        cfg,
        np.random.default_rng(2),
        sizes=(30,),
        repeats=3,
        low=0.6,
        high=0.6,
    )
    for d in out[0]["draws"]:
        assert d["weak_concepts"] + d["weak_themes"] + d["strong_concepts"] + d["strong_themes"] == 0
        assert d["kept"] > 0 and d["best_p"] > cfg.fdr / d["kept"]


def test_planted_topics_withhold_the_facet_even_when_scores_adjust_by_it():
    from cgaps.config import RunConfig
    from cgaps.scoring.core import build_matrix
    from cgaps.validate.topics import planted_topics

    items, sal = make_topic_suite(1, null=True, per_topic=40)
    cfg = RunConfig(adjust_by="category")
    m = build_matrix(items, sal, TOPIC_SUITE_CONCEPTS, presence=cfg.presence, adjust_by="category")
    out = planted_topics(
        m, items["category"].to_numpy(), cfg, np.random.default_rng(1), sizes=(30,), repeats=2
    )
    assert out[0]["weak_concepts"] > 0  # adjusting by the planted facet would explain everything away


def test_item_facet_reads_category_and_meta_fields():
    import pandas as pd

    from cgaps.validate.topics import item_facet

    items = pd.DataFrame(
        {"category": ["a", None, "b"], "meta": ['{"level": "Level 1"}', "{}", '{"level": 3}']}
    )
    assert item_facet(items, "category").tolist() == ["a", "", "b"]
    assert item_facet(items, "meta.level").tolist() == ["Level 1", "", "3"]
    assert item_facet(items.drop(columns="meta"), "meta.level") is None


def test_validate_run_writes_topics_and_power(tmp_path):
    items, sal = make_topic_suite(2, null=True, per_topic=40)
    run = write_run(tmp_path / "run", items, sal, {"n_concepts": TOPIC_SUITE_CONCEPTS})
    score_run(run)
    out = validate_run(
        run, ValidateConfig(null_draws=3, planted_repeats=0, topic_repeats=2, topic_sizes="30")
    )
    stored = json.loads((run / "validation.json").read_text())
    assert stored["topics"]["facet"] == "category" and stored["topics"]["sizes"][0]["per_group"] == 30
    assert stored["power"] == out["power"]
    assert stored["power"]["scopes"]["ALL"]["items"] == len(items)
    # the sentences of every scope, as the report and `cgaps status` say them (null scores: no call)
    from cgaps.scoring.power import summary_sentences

    power = stored["power"]
    concepts = pd.read_parquet(run / "concepts.parquet")
    assert set(power["sentences"]) == {"exam", "quiz", "ALL"}
    for scope, lines in power["sentences"].items():
        calls = power["scopes"][scope]["calls"]  # concepts and themes
        assert calls >= int(concepts.loc[concepts["scope"] == scope, "gap"].isin(["weak", "strong"]).sum())
        assert lines == summary_sentences(power, calls, scope)
        if calls == 0:
            where = "" if scope == "ALL" else f" in {scope}"
            assert lines[0] == f"Nothing was called a gap or a strength{where}." and len(lines) == 3
        assert lines[0 if calls else 1].startswith("With these items, a concept firing on")
    assert out["null"]["draws_with_calls"] <= 1
    assert {"themes_weak", "themes_strong"} <= set(out["null"]["calls_per_draw"][0])


@pytest.mark.parametrize(
    "field, value, flag",
    [("topic_sizes", "30,x", "--topic-sizes"), ("topic_facet", "level", "--topic-facet")],
)
def test_validate_topic_options_name_the_flag(field, value, flag):
    with pytest.raises(CGapsError, match=flag):
        ValidateConfig(**{field: value})


@pytest.mark.slow
def test_planted_topics_on_real_text(tmp_path, smollm, benchmarks_dir):
    """AGIEval sub-tasks (30 items each, prompts only, the sub-task withheld from scoring) through
    SmolLM2 and the shipped SAE: failure planted on two sub-tasks is found, and the strongest gap
    concepts and themes point to them (docs/results.md has the full-size figures)."""
    import pandas as pd

    from cgaps import rundir
    from cgaps.config import RunConfig
    from cgaps.extract.stage import extract_run
    from cgaps.items import load_suite

    items = load_suite("agieval", data_dir=str(benchmarks_dir))
    tasks = ["aqua-rat", "math", "sat-math", "sat-en-without-passage", "logiqa-en"]
    rng = np.random.default_rng(0)
    picked = [
        rng.choice(np.flatnonzero((items["category"] == t).to_numpy()), size=30, replace=False) for t in tasks
    ]
    items = items.iloc[np.sort(np.concatenate(picked))].reset_index(drop=True)
    items["response"] = ""
    items["score"] = rng.integers(0, 2, len(items)).astype(float)  # replaced by the planted draws
    run = tmp_path / "run"
    run.mkdir()
    items.to_parquet(run / rundir.ITEMS, index=False)
    cfg = RunConfig(span="prompt")
    rundir.update_run_json(run, config=cfg.to_dict())
    extract_run(run, cfg, backend=smollm)
    score_run(run)
    out = validate_run(
        run, ValidateConfig(null_draws=2, planted_repeats=0, topic_sizes="30", topic_repeats=3, shuffles=10)
    )
    (size,) = out["topics"]["sizes"]
    assert size["groups"] == 5 and size["per_group"] == 30
    assert size["weak_concepts"] + size["weak_themes"] >= 5
    assert size["top_pointing"] >= 0.9
    assert pd.read_parquet(run / "theme_tests.parquet")["theme"].nunique() >= 20
