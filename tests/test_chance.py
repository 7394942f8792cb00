"""Chance levels (``cgaps.chance``): the per-item rule, the binomial tails against scipy, the
weighted levels and group verdicts against plain loops, and a strength that is a coin flip marked
as such by ``cgaps score``, the report and the explorer alike."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from typer.testing import CliRunner

from cgaps import chance, rundir
from cgaps.cli.main import app
from cgaps.errors import CGapsError
from cgaps.scoring.stage import score_run
from helpers import make_chance_suite, write_run


@pytest.mark.parametrize(
    ("answer_type", "choices", "level"),
    [
        ("choice", json.dumps(["a", "b", "c", "d"]), 0.25),
        ("loglik_choice", json.dumps(["more", "less"]), 0.5),
        ("choice", ["a", "b", "c"], 1 / 3),  # a list column read back from Parquet
        ("choice", np.array(["a", "b", "c", "d", "e"]), 0.2),
        ("yesno", None, 0.5),
        ("refusal", None, 0.5),
        ("hold", None, 0.5),
        ("number", None, 0.0),
        ("math", None, 0.0),
        ("short", None, 0.0),
        ("text", None, 0.0),
        (None, json.dumps(["x", "y", "z"]), 1 / 3),  # an imported multiple-choice item
        (None, None, math.nan),  # an imported item that does not say
        ("choice", None, math.nan),  # options missing: cannot tell
        ("choice", "[]", math.nan),
        ("", "not json", math.nan),
    ],
)
def test_one_item_chance(answer_type, choices, level):
    got = chance.one_item_chance(answer_type, choices)
    assert (math.isnan(got) and math.isnan(level)) or got == pytest.approx(level)


def test_item_chance_reads_the_columns_and_tolerates_their_absence():
    items = pd.DataFrame(
        {"answer_type": ["yesno", "choice", None], "choices": [None, json.dumps(list("abcd")), None]}
    )
    np.testing.assert_allclose(chance.item_chance(items), [0.5, 0.25, np.nan])
    assert np.isnan(chance.item_chance(pd.DataFrame({"x": [1, 2]}))).all()


def test_binomial_tails_are_scipys_at_integer_counts():
    for n in (1, 2, 7, 30, 200):
        for g in (0.0, 0.05, 0.25, 0.5, 0.9, 1.0):
            k = np.arange(0, n + 1, dtype=float)
            np.testing.assert_allclose(
                chance.p_above(k, n, g), stats.binom.sf(k - 1, n, g), rtol=1e-9, atol=1e-14
            )
            np.testing.assert_allclose(
                chance.p_below(k, n, g), stats.binom.cdf(k, n, g), rtol=1e-9, atol=1e-14
            )


def test_binomial_tail_is_continuous_in_fractional_counts():
    # n_eff and chi_model * n_eff are rarely integers: the tail must move smoothly between them
    k = np.linspace(0, 20, 401)
    p = chance.p_above(k, 20.0, 0.5)
    assert np.all(np.diff(p) <= 1e-12) and p[0] == 1.0
    lo, hi = chance.p_above(10.0, 20.0, 0.5), chance.p_above(11.0, 20.0, 0.5)
    assert hi < float(chance.p_above(10.5, 20.0, 0.5)) < lo
    assert np.isnan(chance.p_above(3.0, 10.0, np.nan)) and np.isnan(chance.p_above(3.0, 0.0, 0.5))


def test_weighted_chance_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    n, f, k = 60, 12, 3
    dense = np.where(rng.random((n, f)) < 0.3, rng.gamma(2.0, 1.0, (n, f)), 0.0)
    dense[:, 5] = 0.0  # never fires
    g = rng.choice([0.0, 0.25, 0.5, np.nan], n)
    bench = rng.integers(0, k, n)
    got = chance.weighted_chance(sp.csr_matrix(dense), g, bench, k)
    for scope in range(k + 1):
        rows = np.arange(n) if scope == k else np.flatnonzero(bench == scope)
        for c in range(f):
            num = den = 0.0
            for i in rows:
                if dense[i, c] > 0 and not math.isnan(g[i]):
                    num += dense[i, c] * g[i]
                    den += dense[i, c]
            want = num / den if den > 0 else math.nan
            assert (math.isnan(got[scope, c]) and math.isnan(want)) or got[scope, c] == pytest.approx(want)


def test_group_table_against_a_reference():
    items, _ = make_chance_suite(0)
    table = chance.group_table(items, 0.05).set_index("group")
    assert list(table.index) == ["ALL", "probes", "probes:coin", "probes:quiz", "probes:sum"]
    for name, row in table.iterrows():
        sub = items if name in ("ALL", "probes") else items[items["category"] == name.split(":")[1]]
        g = chance.item_chance(sub)
        k, n = sub["score"].sum(), len(sub)
        assert row["accuracy"] == pytest.approx(sub["score"].mean()) and row["n"] == n
        assert row["chance"] == pytest.approx(g.mean())
        assert row["p_above"] == pytest.approx(stats.binom.sf(k - 1, n, g.mean()))
    assert table.loc["probes:coin", "verdict"] == "at chance"  # 1/2 right on yes/no
    assert table.loc["probes:quiz", "verdict"] == "above chance"  # 85% on four options
    assert table.loc["probes:sum", "verdict"] == "above chance"  # free-form: any right answer is
    refusals = pd.DataFrame(
        {"benchmark": "b", "answer_type": "refusal", "score": [1.0] * 3 + [0.0] * 27, "category": None}
    )
    assert chance.group_table(refusals).set_index("group").loc["b", "verdict"] == "below chance"
    unknown = pd.DataFrame({"benchmark": "b", "score": [1.0, 0.0]})
    assert chance.group_table(unknown).set_index("group").loc["b", "verdict"] == "chance unknown"


@pytest.fixture(scope="module")
def coin_run(tmp_path_factory):
    items, sal = make_chance_suite(0)
    run = write_run(
        tmp_path_factory.mktemp("chance") / "run",
        items,
        sal,
        {"n_concepts": 40, "config": {"presence": 0.4, "fdr": 0.05, "min_support": 5}},
    )
    score_run(run)
    return run


def test_a_coin_flip_strength_is_at_chance_and_a_real_one_is_not(coin_run):
    from cgaps.runtables import load_run

    run = load_run(coin_run, results=True)
    c = run.concepts.reset_index(drop=True)
    all_rows = c[c["scope"] == "ALL"].set_index("concept")
    assert all_rows.loc[0, "gap"] == "strong" and all_rows.loc[1, "gap"] == "strong"
    assert all_rows.loc[2, "gap"] == "weak"
    table = chance.run_chance(run, rundir.read_table_config(coin_run / rundir.CONCEPTS))
    assert list(table.columns) == list(chance.CHANCE_COLUMNS) and len(table) == len(c)
    got = table[table["scope"] == "ALL"].set_index("concept")
    # concept 0 fires on the yes/no items only: its chance level is 1/2, its χ_model about that
    assert got.loc[0, "chance"] == pytest.approx(0.5) and bool(got.loc[0, "at_chance"])
    assert got.loc[1, "chance"] == pytest.approx(0.25) and not bool(got.loc[1, "at_chance"])
    assert got.loc[2, "chance"] == pytest.approx(0.0)
    # the p-value is the binomial tail on n_eff with χ_model * n_eff successes
    row = all_rows.loc[0]
    want = chance.p_above(row["chi_model"] * row["n_eff"], row["n_eff"], 0.5)
    assert got.loc[0, "p_chance"] == pytest.approx(float(want))
    assert (
        chance.strengths_at_chance(c, table)
        == int(((c["scope"] == "ALL") & (c["gap"] == "strong") & table["at_chance"]).sum())
        >= 1
    )


def test_the_report_says_which_strengths_are_at_chance(coin_run, tmp_path):
    from cgaps.report.build import build_report

    text = build_report(coin_run, tmp_path / "r.html").read_text()
    findings = text[text.index('id="findings"') : text.index('id="config"')]
    assert "guessing would score" in findings
    best = re.search(r"It does best on:(.*?)</ul>", findings, re.S)
    at = re.search(r"At chance level, so not counted as strengths.*?</ul>", findings, re.S)
    assert best and at
    assert ">concept 1</a>" in best.group(1) and ">concept 0</a>" not in best.group(1)
    assert ">concept 0</a>" in at.group(0) and "guessing scores 50%" in at.group(0)
    assert "No better than guessing on" in findings and "coin (" in findings
    # the strengths table marks it too, and lists it after the strength above chance
    strengths = text[text.index('id="strengths"') : text.index('id="over"')]
    first = strengths.index('data-concept="1"')
    zero = strengths.index('data-concept="0"')
    assert first < zero and "at chance</span>" in strengths[zero : zero + 4000]
    # the accuracy table: each category with its chance level and verdict
    acc = text[text.index('id="accuracy"') : text.index('id="chi-bench"')]
    assert re.search(r"coin</span></td>.*?0\.500</td><td class=\"verdict at-chance\">at chance", acc, re.S)


def test_score_and_export_count_the_strengths_at_chance(coin_run, tmp_path):
    result = CliRunner().invoke(app, ["score", str(coin_run)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ALL")]
    cells = [x.strip() for x in rows[0].strip("│").split("│")]
    assert cells[-3:] == ["1", "2", "1"]  # gaps, strengths, at chance
    out = tmp_path / "at.csv"
    result = CliRunner().invoke(
        app, ["export", str(coin_run), "--gap", "strong_at_chance", "--scope", "ALL", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(out)
    assert csv["concept"].tolist() == [0] and csv["call"].tolist() == ["strength at chance"]
    assert csv["chance"].tolist() == [pytest.approx(0.5)]
    result = CliRunner().invoke(app, ["export", str(coin_run), "--gap", "maybe"])
    assert isinstance(result.exception, CGapsError) and "option 'gap' (--gap)" in str(result.exception)


@pytest.mark.integration
def test_the_explorer_marks_the_same_strengths_and_shows_phrases(coin_run, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from cgaps.serve.app import create_app
    from cgaps.serve.store import Store

    run = tmp_path / "run"
    shutil.copytree(coin_run, run)
    labels = pd.DataFrame(
        {
            "concept": np.arange(40, dtype="int32"),
            "label": [f"“tok{c}”" for c in range(40)],
            "source": "evidence",
            "phrase": [f"phrase {c}" if c != 5 else None for c in range(40)],
            "format": [c == 2 for c in range(40)],
        }
    )
    rundir.write_table(labels, run / rundir.LABELS)
    client = TestClient(create_app(Store([run])))
    summary = client.get("/api/runs").json()["runs"][0]
    tests = pd.read_parquet(coin_run / rundir.THEME_TESTS)  # not labelled: the themes scoring tested
    all_t = tests[tests["scope"] == "ALL"]
    assert summary["calls"] == {
        "gaps": 1,
        "strengths": 2,
        "strengths_at_chance": 1,
        "theme_gaps": int((all_t["gap"] == "weak").sum()),
        "theme_strengths": int((all_t["gap"] == "strong").sum()),
    }
    assert summary["suite"]["verdict"] == "above chance"
    rows = client.get("/api/concepts", params={"gap": "strong"}).json()["rows"]
    assert {r["concept"]: r["at_chance"] for r in rows} == {0: True, 1: False}
    at = client.get("/api/concepts", params={"gap": "strong_at_chance"}).json()["rows"]
    assert [r["concept"] for r in at] == [0] and at[0]["chance"] == pytest.approx(0.5)
    above = client.get("/api/concepts", params={"gap": "strong_above_chance"}).json()["rows"]
    assert [r["concept"] for r in above] == [1]
    # the phrase names the concept (the label where there is none); format is carried along
    gap = client.get("/api/concepts", params={"gap": "weak"}).json()["rows"][0]
    assert gap["label"] == "phrase 2" and gap["format"] is True
    assert client.get("/api/concepts", params={"q": "c5"}).json()["rows"][0]["label"] == "“tok5”"
    assert client.get("/api/concepts", params={"q": "phrase 7"}).json()["total"] == 1
    groups = {g["group"]: g for g in client.get("/api/benchmarks").json()["groups"]}
    assert groups["probes:coin"]["verdict"] == "at chance" and groups["probes:coin"]["chance"] == 0.5
    detail = client.get("/api/concept/0").json()
    all_scope = next(s for s in detail["scopes"] if s["scope"] == "ALL")
    assert all_scope["at_chance"] is True and all_scope["chance"] == pytest.approx(0.5)
    assert detail["evidence_names"]["format"].startswith("fires on prompt text repeated")
