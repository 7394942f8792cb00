"""``cgaps confirm``: matched controls, the re-test against the scoring stage's own figures, its
calibration on null data and its power on planted gaps, and the command end to end (tiny reader)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.confirm import core
from cgaps.confirm.config import ConfirmConfig
from cgaps.errors import CGapsError
from cgaps.pools.config import PoolConfig
from cgaps.scoring.core import build_matrix, concept_table
from cgaps.stats import bh_adjust
from helpers import FakeGenerator, TokenReader, make_null_or_planted_suite


def test_matched_controls_are_uncalled_tested_and_closest_in_support():
    rng = np.random.default_rng(0)
    support = rng.integers(0, 80, 300)
    gap = np.where(rng.random(300) < 0.1, "weak", "").astype(object)
    gap[support < 5] = ""
    chi, expected = rng.random(300), rng.random(300)
    called = np.flatnonzero(gap == "weak")
    ids, matched, direction = core.matched_controls(support, chi, expected, gap, called, 2, 5, seed=3)
    assert len(ids) == 2 * len(called) and len(set(ids)) == len(ids)
    assert not np.isin(ids, called).any() and (support[ids] >= 5).all()
    np.testing.assert_array_equal(direction, np.where(chi[ids] < expected[ids], "weak", "strong"))
    assert sorted(matched) == sorted(np.repeat(called, 2))
    # the closest support among the candidates still free when it was drawn: never far on this data
    assert np.abs(support[ids] - support[matched]).max() <= 2
    again = core.matched_controls(support, chi, expected, gap, called, 2, 5, seed=3)
    np.testing.assert_array_equal(again[0], ids)


def test_draw_items_is_seeded_and_within_presence():
    import scipy.sparse as sp

    present = sp.csc_matrix(np.random.default_rng(1).random((100, 5)) < 0.3)
    drawn = core.draw_items(present, 7, seed=0, keys=np.arange(5))
    for j, rows in enumerate(drawn):
        where = np.flatnonzero(present[:, j].toarray().ravel())
        assert set(rows) <= set(where) and len(rows) == min(7, len(where))
    assert all(
        np.array_equal(a, b) for a, b in zip(drawn, core.draw_items(present, 7, 0, np.arange(5)), strict=True)
    )


def test_retest_is_the_scoring_test_on_the_chosen_columns():
    items, sal, _ = make_null_or_planted_suite(4, null=False)
    cfg = RunConfig(presence=0.2)
    m = build_matrix(items, sal, 300, presence=cfg.presence)
    full = concept_table(m, cfg)
    full_all = full[full["scope"] == "ALL"].set_index("concept")
    cols = np.array([0, 1, 2, 3, 40, 41, 120, 299])
    direction = np.array(["weak"] * 4 + ["strong", "weak", "strong", "weak"], dtype=object)
    res = core.retest(core.column_matrix(m, cols), direction, cfg)
    np.testing.assert_array_equal(res["support_fresh"], full_all.loc[cols, "support"].to_numpy())
    np.testing.assert_allclose(
        res["chi_model_fresh"], full_all.loc[cols, "chi_model"].to_numpy(), equal_nan=True
    )
    np.testing.assert_allclose(
        res["expected_fresh"], full_all.loc[cols, "expected"].to_numpy(), equal_nan=True
    )
    # the one-sided p in the called direction, BH over exactly the tested columns
    tested = res["tested"].to_numpy()
    q = bh_adjust(res["p_fresh"].to_numpy()[tested])
    np.testing.assert_allclose(res["q_fresh"].to_numpy()[tested], q)
    sign = np.where(direction == "weak", res["z_fresh"] < 0, res["z_fresh"] > 0)
    np.testing.assert_array_equal(res["replicated"], tested & (res["q_fresh"] <= cfg.fdr) & sign)
    assert res["replicated"].iloc[:4].all()  # the planted gaps
    # a strength tested in the wrong direction of a planted gap never replicates
    res2 = core.retest(core.column_matrix(m, cols[:4]), np.array(["strong"] * 4, dtype=object), cfg)
    assert not res2["replicated"].any()


@pytest.mark.integration
def test_null_fresh_scores_confirm_nothing_in_at_least_19_of_20_draws():
    """Calls fixed in advance (the planted concepts and 30 others, in both directions), fresh items
    whose scores do not depend on any concept: at most 1 draw in 20 confirms anything."""
    cfg = RunConfig(presence=0.2)
    rng = np.random.default_rng(0)
    with_any = 0
    for draw in range(20):
        items, sal, _ = make_null_or_planted_suite(100 + draw, null=True)
        m = build_matrix(items, sal, 300, presence=cfg.presence)
        cols = np.concatenate([np.arange(4), rng.choice(np.arange(4, 300), 30, replace=False)])
        direction = rng.choice(np.array(["weak", "strong"], dtype=object), len(cols))
        res = core.retest(core.column_matrix(m, cols), direction, cfg.replace(seed=draw))
        with_any += bool(res["replicated"].any())
    assert with_any <= 1, with_any


def test_planted_gaps_replicate_on_fresh_items():
    cfg = RunConfig(presence=0.2)
    hits = 0
    for draw in range(5):
        items, sal, planted = make_null_or_planted_suite(200 + draw, null=False)
        m = build_matrix(items, sal, 300, presence=cfg.presence)
        cols = np.array(sorted(planted))
        res = core.retest(core.column_matrix(m, cols), np.array(["weak"] * len(cols), dtype=object), cfg)
        hits += int(res["replicated"].sum())
    assert hits >= 0.9 * 5 * 4


def test_rates_count_per_family():
    table = pd.DataFrame(
        {
            "kind": ["concept"] * 4 + ["theme"],
            "role": ["called", "called", "control", "control", "called"],
            "tested": [True, False, True, True, True],
            "replicated": [True, False, False, True, True],
        }
    )
    r = core.rates(table)
    assert r["concepts"] == {"calls": 2, "tested": 1, "replicated": 1, "rate": 1.0}
    assert r["controls"] == {"calls": 2, "tested": 2, "replicated": 1, "rate": 0.5}
    assert r["themes"]["rate"] == 1.0


# ---------------------------------------------------------------- the command, end to end

WORDS = ["apple", "river", "seven", "blue", "Paris", "quickly", "x + y", "Monday", "violin", "sugar", "bread"]


def _items(prefix: str, n: int, offset: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "item_id": f"{prefix}/{k:03d}",
                "benchmark": prefix,
                "prompt": f"Item {k + offset}: {WORDS[(k + offset) % 11]} or {WORDS[(3 * k + offset) % 11]}?",
                "reference": str(k + 1),
                "answer_type": "number",
            }
            for k in range(n)
        ]
    )


@pytest.fixture
def scored_run(tmp_path):
    """A tiny run whose model fails exactly where concept X is present, and a pool of other items."""
    from cgaps.evaluate.stage import grade_run
    from cgaps.extract.stage import extract_run
    from cgaps.pools.coverage import presence_matrix
    from cgaps.scoring import score_run

    reader = TokenReader(256)
    spec = reader.sae()
    cfg = RunConfig(span="prompt", sae="identity", max_norm_ratio=None, min_support=3)
    run, pool = tmp_path / "run", tmp_path / "pool"
    for folder, items in ((run, _items("bench", 44, 0)), (pool, _items("other", 60, 500))):
        folder.mkdir()
        rundir.write_table(rundir.validate_items(items, "items"), folder / rundir.ITEMS)
        rundir.update_run_json(folder, config=cfg.to_dict())
        extract_run(folder, cfg, backend=reader, sae_spec=spec)
    items = rundir.read_items(run)
    sal = rundir.read_saliency(run, pd.Index(items["item_id"]), 256)
    scale = np.zeros(256)
    np.maximum.at(scale, sal["concept"].to_numpy(), sal["value"].to_numpy().astype(np.float64))
    shat = presence_matrix(items, sal, 256, cfg.presence, scale)
    support = np.asarray((shat > 0).sum(axis=0)).ravel()
    x = int(np.flatnonzero((support >= 10) & (support <= 30))[0])  # a concept on a quarter to two thirds
    responses = {}
    for folder in (run, pool):
        its = rundir.read_items(folder)
        s = rundir.read_saliency(folder, pd.Index(its["item_id"]), 256)
        present = np.asarray(presence_matrix(its, s, 256, cfg.presence, scale)[:, x].todense()).ravel() > 0
        rng = np.random.default_rng(len(its))
        for iid, ref, on in zip(its["item_id"], its["reference"], present, strict=True):
            responses[iid] = "-1" if on or rng.random() < 0.15 else ref
    lines = "".join(json.dumps({"item_id": i, "response": r}) + "\n" for i, r in responses.items())
    (tmp_path / "responses.jsonl").write_text(lines)
    run_lines = "".join(line for line in lines.splitlines(True) if '"bench/' in line)
    (tmp_path / "run_responses.jsonl").write_text(run_lines)
    grade_run(run, tmp_path / "run_responses.jsonl")
    concepts, _ = score_run(run)
    return run, pool, tmp_path / "responses.jsonl", x, concepts, reader, spec


@pytest.mark.integration
def test_confirm_end_to_end(scored_run, monkeypatch):
    from cgaps.confirm.stage import CONFIRMATION, CONFIRMATION_COLUMNS, confirm_run
    from cgaps.pools.coverage import Reader

    run, pool, responses, x, concepts, backend, spec = scored_run
    calls = concepts[(concepts["scope"] == "ALL") & (concepts["gap"] != "")]
    assert x in set(calls["concept"]) and calls.set_index("concept").loc[x, "gap"] == "weak"
    # the stage loads the reader through Reader.get: hand it the tiny one
    monkeypatch.setattr(Reader, "get", lambda self: (backend, spec))
    opts = ConfirmConfig(per_concept=30, responses=str(responses), themes=False)
    out = confirm_run(run, opts, PoolConfig(pool=str(pool)))
    assert list(out.columns) == list(CONFIRMATION_COLUMNS)
    assert pd.read_parquet(run / CONFIRMATION).shape == out.shape
    called = out[out["role"] == "called"].set_index("id")
    assert set(called.index) == set(calls["concept"])
    assert bool(called.loc[x, "replicated"]) and called.loc[x, "call"] == "weak"
    controls = out[out["role"] == "control"]
    assert len(controls) == len(called) and set(controls["matched_to"]) == set(called.index)
    # fresh items only: never an item of the run
    fresh = rundir.read_items(run / "confirm")
    assert fresh["item_id"].str.startswith("other/").all()
    assert (fresh["score"] >= 0).all() and len(fresh) <= 60
    scoring_config = rundir.read_table_config(run / CONFIRMATION)
    assert scoring_config["confirm"]["rates"]["concepts"]["replicated"] == int(called["replicated"].sum())
    assert scoring_config["concepts_digest"] == rundir.file_digest(run / rundir.CONCEPTS)
    # a rerun reuses the graded and extracted fresh items (nothing to load, same table)
    monkeypatch.setattr(Reader, "get", lambda self: pytest.fail("extracted again"))
    again = confirm_run(run, opts, PoolConfig(pool=str(pool)))
    pd.testing.assert_frame_equal(again, out)


@pytest.mark.integration
def test_confirm_refuses_a_pool_of_the_run_itself(scored_run):
    from cgaps.confirm.stage import confirm_run

    run, *_ = scored_run
    with pytest.raises(CGapsError, match="no fresh items"):
        confirm_run(run, ConfirmConfig(themes=False), PoolConfig(pool=str(run)))
    with pytest.raises(CGapsError, match=r"--scope 'ALLL' is not a scope"):
        confirm_run(run, ConfirmConfig(scope="ALLL"), PoolConfig(pool=str(run)))


# ---------------------------------------------------------------- report section and explorer routes


@pytest.mark.integration
def test_report_and_explorer_show_fill_and_confirm(scored_run, monkeypatch):
    from fastapi.testclient import TestClient

    from cgaps.confirm.stage import confirm_run
    from cgaps.fill.config import FillConfig
    from cgaps.fill.stage import fill_run
    from cgaps.pools.coverage import Reader
    from cgaps.report.build import build_report
    from cgaps.serve.app import create_app
    from cgaps.serve.store import Store

    run, pool, responses, x, _, reader, spec = scored_run
    monkeypatch.setattr(Reader, "get", lambda self: (reader, spec))
    # benchmark text that must reach the page as text: a label with markup in it
    width = rundir.read_run_json(run)["n_concepts"]
    labels = pd.DataFrame({"concept": range(width), "label": "", "source": ""}).astype({"concept": "int32"})
    labels.loc[labels["concept"] == x, ["label", "source"]] = ["<script>alert(1)</script> & co", "mine"]
    rundir.write_table(labels, run / rundir.LABELS)
    out = confirm_run(
        run,
        ConfirmConfig(per_concept=30, responses=str(responses), themes=False),
        PoolConfig(pool=str(pool)),
    )
    fill_run(
        run, FillConfig(benchmark="bench", budget=4), PoolConfig(pool=str(pool)), backend=reader, sae=spec
    )
    report = build_report(run)
    html = Path(report).read_text()
    called = out[out["role"] == "called"]
    assert f"Confirmed on {len(rundir.read_items(run / 'confirm'))} fresh items" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html and "<script>alert(1)" not in html
    assert f"<td>{int(called['replicated'].sum())}</td>" in html.replace('<td class="num">', "<td>")
    assert "Filling what the benchmarks miss" in html and "(predicted)" in html
    client = TestClient(create_app(Store([run])))
    body = client.get("/api/confirm", params={"concept": x}).json()["confirm"]
    assert [r["id"] for r in body["rows"]] == [x] and body["rows"][0]["replicated"] is True
    assert body["rates"]["concepts"]["replicated"] == int(called["replicated"].sum())
    fills = client.get("/api/fill").json()["fills"]
    assert [f["benchmark"] for f in fills] == ["bench"] and fills[0]["selected"] == 4
    assert client.get("/static/fillconfirm.js").status_code == 200
    assert client.get("/api/confirm", params={"concept": -1}).status_code == 400


@pytest.mark.integration
def test_confirm_evaluates_fresh_items_with_the_runs_model(scored_run, monkeypatch):
    """Without --responses the fresh items are answered by the evaluate stage (the own evaluator
    around the run's model, here a scripted generator that fails where concept X is present)."""
    from cgaps.confirm.stage import confirm_run
    from cgaps.evaluate import stage as evaluate_stage
    from cgaps.pools.coverage import Reader

    run, pool, responses, x, _, reader, spec = scored_run
    answers = {
        json.loads(line)["item_id"]: json.loads(line)["response"]
        for line in responses.read_text().splitlines()
    }
    prompts = rundir.read_items(pool).set_index("prompt")["item_id"].to_dict()

    class Scripted(FakeGenerator):
        name, backend = "scripted", "transformers"

        def generate(self, conversations, max_new_tokens, batch_size, progress=None):
            if progress:
                progress(len(conversations))
            return [answers[prompts[c[-1]["content"]]] for c in conversations]

        def loglikelihood(self, requests, batch_size, progress=None):
            raise AssertionError("no option items here")

    asked = []
    monkeypatch.setattr(
        evaluate_stage, "load_generator", lambda cfg, generator=None: asked.append(cfg.model) or Scripted()
    )
    monkeypatch.setattr(Reader, "get", lambda self: (reader, spec))
    out = confirm_run(
        run, ConfirmConfig(per_concept=30, themes=False, model="other-model"), PoolConfig(pool=str(pool))
    )
    assert asked == ["other-model"]  # --model answers; the run's reader still reads
    stored = rundir.read_run_json(run / "confirm")["config"]
    assert stored["model"] == "other-model" and stored["reader"] == "embedded"  # the run's reader_model
    called = out[out["role"] == "called"].set_index("id")
    assert bool(called.loc[x, "replicated"])
    graded = rundir.read_items(run / "confirm", scored=True).set_index("item_id")
    assert all(graded.loc[i, "response"] == answers[i] for i in graded.index)
