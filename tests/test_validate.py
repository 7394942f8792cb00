"""cgaps validate: null calibration, planted power and probe-family alignment on a scored run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cgaps.errors import CGapsError
from cgaps.scoring import score_run
from cgaps.validate.core import permuted_scores, validate_run
from cgaps.validate.options import ValidateOptions
from helpers import WEAK_PLANTED, make_null_or_planted_suite, make_suite, write_run


def test_permuted_scores_keep_each_benchmark_accuracy():
    from cgaps.scoring.core import build_matrix

    items, sal = make_suite(0)
    m = build_matrix(items, sal, 200)
    y = permuted_scores(m, np.random.default_rng(0))
    assert not np.array_equal(y, m.scores)
    for b in range(len(m.benchmarks)):
        idx = m.bench == b
        assert sorted(y[idx]) == sorted(m.scores[idx])


def test_validate_run_on_a_suite_with_families(tmp_path):
    items, sal = make_suite(1)
    # families: the items planted weak concepts fire on are mostly wrong ("hard" family)
    weak_items = set(sal.loc[sal["concept"].isin(WEAK_PLANTED), "item_id"])
    items["category"] = ["hard" if i in weak_items else "easy" for i in items["item_id"]]
    run = write_run(tmp_path / "run", items, sal, {"n_concepts": 200})
    score_run(run)
    out = validate_run(run, ValidateOptions(null_draws=5, planted_repeats=2, shuffles=50))
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
    out = validate_run(run, ValidateOptions(null_draws=40, planted_repeats=0))
    # permutations of one suite's scores: measured 3 of 120 draws call anything (2.5%) on three such
    # suites; the 1-in-20 promise over independent suites is asserted in test_scoring.py
    assert out["null"]["draws_with_calls"] <= 4 and out["families"] is None


def test_validate_options_name_the_flag():
    with pytest.raises(CGapsError, match="--null-draws"):
        ValidateOptions(null_draws=0)


def test_cli_validate(tmp_path):
    from cgaps.cli.main import app

    run = write_run(tmp_path / "run")
    score_run(run)
    res = CliRunner().invoke(app, ["validate", str(run), "--null-draws", "2", "--planted-repeats", "0"])
    assert res.exit_code == 0, res.output
    assert "null draws calling anything" in res.output
    assert json.loads((run / "validation.json").read_text())["null"]["draws"] == 2
