"""``cgaps fill``: the greedy selection against a plain loop, the coverage figures against the
scoring stage, the baselines, and the command end to end (a tiny reader for ``--verify``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.fill import core
from cgaps.fill.config import FillConfig
from cgaps.pools.config import PoolConfig
from cgaps.pools.coverage import presence_matrix
from cgaps.scoring import compute_scores
from helpers import TokenReader, make_suite

# ---------------------------------------------------------------- the greedy selection


def _instance(
    seed: int, n: int = 40, m: int = 25, u: int = 12
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    cover = sp.csr_matrix((rng.random((n, m)) < 0.12).astype(float))
    # coarse values make ties between rows common: the tie rule is part of what is checked
    mass = sp.csr_matrix(np.where(rng.random((n, u)) < 0.2, rng.integers(1, 4, (n, u)) / 4, 0.0))
    deficit = rng.integers(1, 6, u) / 4
    return cover, mass, deficit


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("w_under", [0.0, 0.5, 3.0])
def test_lazy_greedy_equals_the_plain_loop(seed, w_under):
    cover, mass, deficit = _instance(seed)
    for budget in (1, 5, 40):
        lazy = core.greedy(cover, mass, deficit, budget, w_under=w_under)
        assert lazy.rows == core.greedy_reference(cover, mass, deficit, budget, w_under=w_under)
        assert len(lazy.rows) <= budget
        # each recorded gain is the objective's increase, and the covers add up to what is hit
        hit = (
            np.asarray(cover[lazy.rows].sum(axis=0)).ravel() > 0
            if lazy.rows
            else np.zeros(cover.shape[1], bool)
        )
        assert sum(len(c) for c in lazy.covers) == int(hit.sum())
        got = np.asarray(mass[lazy.rows].sum(axis=0)).ravel() if lazy.rows else np.zeros(mass.shape[1])
        value = float(hit.sum()) + w_under * float(np.minimum(1, got / deficit).sum())
        assert sum(lazy.gains) == pytest.approx(value)


def _f(cover, mass, deficit, rows, w_under):
    hit = np.asarray(cover[rows].sum(axis=0)).ravel() > 0 if rows else np.zeros(cover.shape[1], bool)
    got = np.asarray(mass[rows].sum(axis=0)).ravel() if rows else np.zeros(mass.shape[1])
    return float(hit.sum()) + w_under * float(np.minimum(1, got / deficit).sum())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("w_under", [0.0, 0.5, 3.0])
def test_swaps_equal_the_plain_pairwise_search(seed, w_under):
    cover, mass, deficit = _instance(seed)
    for budget in (3, 8):
        rows = core.greedy(cover, mass, deficit, budget, w_under=w_under).rows
        for start in (rows, list(range(budget))):  # the greedy's pick, and a poor one
            got, made, converged = core.swaps(cover, mass, deficit, start, w_under=w_under)
            assert got == core.swaps_reference(cover, mass, deficit, start, w_under=w_under)
            assert converged and len(set(got)) == len(got) == budget
            assert _f(cover, mass, deficit, got, w_under) >= _f(cover, mass, deficit, start, w_under)
            assert (made > 0) == (got != start)
        # the first rounds of a long search, stopped by its limits
        poor = list(range(budget))
        one, made, converged = core.swaps(cover, mass, deficit, poor, w_under=w_under, max_swaps=1)
        assert made <= 1 and one == core.swaps_reference(
            cover, mass, deficit, poor, w_under=w_under, max_swaps=1
        )
        _, made, converged = core.swaps(cover, mass, deficit, poor, w_under=w_under, work=0)
        assert made == 0 and not converged


def test_select_improves_on_the_greedy_and_keeps_its_evidence_consistent():
    # the greedy takes row 0 (4 targets), then row 1 (1 more); rows 1 and 2 together cover all 6
    cover = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 1]], dtype=float))
    empty = sp.csr_matrix((3, 0))
    assert core.greedy(cover, empty, np.zeros(0), 2).rows == [0, 1]
    sel = core.select(cover, empty, np.zeros(0), 2)
    assert sel.rows == [1, 2] and sel.swaps == 1 and sel.converged
    assert sel.gains == [3, 3] and [sorted(c.tolist()) for c in sel.covers] == [[0, 1, 4], [2, 3, 5]]
    assert core.select(cover, empty, np.zeros(0), 2, improve=False).rows == [0, 1]
    # on random instances: never below the greedy, and the gains add up to f in the order shown
    for seed in range(6):
        c, m, d = _instance(seed)
        for budget in (4, 12):
            g = core.greedy(c, m, d, budget)
            sel = core.select(c, m, d, budget)
            assert sum(sel.gains) >= sum(g.gains) - 1e-9 and len(sel.rows) == len(g.rows)
            assert sum(sel.gains) == pytest.approx(_f(c, m, d, sel.rows, 0.5))
            assert sel.gains == sorted(sel.gains, reverse=True) or sel.swaps == 0


def test_greedy_from_a_start_takes_it_first_then_goes_on_greedily():
    cover = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=float))
    empty = sp.csr_matrix((4, 0))
    sel = core.greedy(cover, empty, np.zeros(0), 3, start=[1])
    # row 1 first (1 target), then the greedy: row 0 adds 2, row 2 adds 1 (ties to the lower row)
    assert sel.rows == [1, 0, 2] and sel.gains == [1, 2, 1]
    assert core.greedy(cover, empty, np.zeros(0), 3, start=[1, 3]).rows == [1, 3, 0]
    # a start longer than the budget is cut to it
    assert core.greedy(cover, empty, np.zeros(0), 1, start=[3, 0]).rows == [3]


def test_greedy_stops_when_nothing_gains_and_respects_eligibility():
    cover = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 0], [0, 1]], dtype=float))
    empty = sp.csr_matrix((4, 0))
    sel = core.greedy(cover, empty, np.zeros(0), 10)
    assert sel.rows == [0, 3]  # ties to the lower row; rows 1 and 2 add nothing after row 0
    sel = core.greedy(cover, empty, np.zeros(0), 10, eligible=np.array([False, True, True, False]))
    assert sel.rows == [1]


def test_saturation_of_under_targets():
    # one under target with deficit 1: the first row fills 0.75 of it, the second only the last 0.25
    mass = sp.csr_matrix(np.array([[0.75], [0.75], [0.1]]))
    sel = core.greedy(sp.csr_matrix((3, 0)), mass, np.array([1.0]), 3, w_under=1.0)
    assert sel.rows == [0, 1, 2][:2]
    assert sel.gains == [0.75, 0.25]


# ---------------------------------------------------------------- coverage and targets


def _bench(items: pd.DataFrame, sal: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    b = items[items["benchmark"] == name].reset_index(drop=True)
    return b, sal[sal["item_id"].isin(set(b["item_id"]))]


def test_coverage_equals_the_scoring_stage_and_the_under_threshold_its_status():
    items, sal = make_suite(3)
    cfg = RunConfig(presence=0.3)
    scale = np.zeros(200)
    np.maximum.at(scale, sal["concept"].to_numpy(), sal["value"].to_numpy().astype(np.float64))
    concepts, _ = compute_scores(items, sal, 200, cfg)  # the suite max is this scale
    for name in ("arith", "bias", "code"):
        b, bsal = _bench(items, sal, name)
        cov = core.coverage(b, bsal, 200, cfg, scale)
        want = concepts[concepts["scope"] == name]
        np.testing.assert_array_equal(cov.support, want["support"].to_numpy())
        np.testing.assert_allclose(cov.chi_bench, want["chi_bench"].to_numpy(), rtol=1e-12)
        np.testing.assert_array_equal(cov.status, want["status"].to_numpy())
        theta = core.under_threshold(cov, cfg.under_pct)
        under = (cov.support > 0) & (np.round(cov.chi_bench, 12) < theta)
        np.testing.assert_array_equal(under, cov.status == "under")
        s = core.shares(cov.support, cov.chi_bench, theta)
        assert s == {
            "missing": float((cov.status == "missing").mean()),
            "under": float((cov.status == "under").mean()),
        }


def test_targets_and_prediction_match_a_rescoring_of_the_augmented_benchmark():
    items, sal = make_suite(5)
    cfg = RunConfig(presence=0.3)
    scale = np.zeros(200)
    np.maximum.at(scale, sal["concept"].to_numpy(), sal["value"].to_numpy().astype(np.float64))
    b, bsal = _bench(items, sal, "bias")
    cov = core.coverage(b, bsal, 200, cfg, scale)
    pool = items[items["benchmark"] != "bias"].reset_index(drop=True)
    psal = sal[sal["item_id"].isin(set(pool["item_id"]))]
    pshat = presence_matrix(pool, psal, 200, cfg.presence, scale)
    present = np.asarray((presence_matrix(items, sal, 200, cfg.presence, scale) > 0).sum(axis=0)).ravel() > 0
    tg = core.targets(cov, present, 10, cfg.under_pct)
    # NOT_IN_BIAS concepts (150-169) fire everywhere but in "bias": all missing targets
    assert set(range(150, 170)) <= set(tg.missing)
    assert not set(range(190, 200)) & set(tg.missing)  # never firing anywhere: not a target
    sel = core.greedy(pshat[:, tg.missing], pshat[:, tg.under], tg.deficit, 10)
    support, chi, pred = core.predicted(cov, pshat, sel.rows, tg.theta)
    # the prediction is exact when the new items' saliency is the one the pool had
    frame = pd.concat([b, pool.iloc[sel.rows]], ignore_index=True)
    after = core.coverage(frame, sal[sal["item_id"].isin(set(frame["item_id"]))], 200, cfg, scale)
    np.testing.assert_array_equal(support, after.support)
    np.testing.assert_allclose(chi, after.chi_bench, rtol=1e-12)
    assert pred == core.shares(after.support, after.chi_bench, tg.theta)
    assert pred["missing"] < core.shares(cov.support, cov.chi_bench, tg.theta)["missing"]
    # d_c lifts an under target exactly to the threshold at the budget's size
    if len(tg.under):
        lifted = (cov.chi_bench[tg.under] * cov.n_items + tg.deficit) / (cov.n_items + 10)
        np.testing.assert_allclose(lifted, tg.theta)


def test_baselines_are_seeded_and_balanced():
    assert core.random_selection(50, 7, seed=1) == core.random_selection(50, 7, seed=1)
    assert core.random_selection(50, 7, seed=1) != core.random_selection(50, 7, seed=2)
    assert len(set(core.random_selection(50, 50, seed=0))) == 50
    groups = pd.Series(["a"] * 10 + ["b"] * 3 + ["c"] * 6)
    sel = core.group_selection(groups, 11, seed=0)
    picked = groups.iloc[sel].value_counts()
    assert picked.to_dict() == {"a": 4, "c": 4, "b": 3}  # round-robin until "b" runs out
    assert len(set(sel)) == 11
    pool = pd.DataFrame({"benchmark": ["x", "x"], "category": ["p", "q"]})
    assert core.group_column(pool) == "category"
    assert core.group_column(pool.assign(benchmark=["x", "y"])) == "benchmark"
    assert core.group_column(pool.assign(category=["p", "p"])) is None


# ---------------------------------------------------------------- the command, end to end


def _write_run(run_dir, items: pd.DataFrame, cfg: RunConfig, reader, spec) -> None:
    from cgaps.extract.stage import extract_run

    run_dir.mkdir(parents=True)
    rundir.write_table(rundir.validate_items(items, "items"), run_dir / rundir.ITEMS)
    rundir.update_run_json(run_dir, config=cfg.to_dict())
    extract_run(run_dir, cfg, backend=reader, sae_spec=spec)


VOCABULARY = {
    "alpha": ["apple", "river", "seven", "blue", "Paris", "quickly", "orange", "mountain"],
    "beta": ["Monday", "violin", "sugar", "bread", "cloud", "tiger"],
    "gamma": ["algebra", "triangle", "seven", "Paris", "mountain", "violin", "piano"],
}


def _suite() -> pd.DataFrame:
    rows = []
    for b, words in VOCABULARY.items():
        rng = np.random.default_rng(len(b))
        for k in range(12):
            rows.append(
                {
                    "item_id": f"{b}/{k:03d}",
                    "benchmark": b,
                    "prompt": " ".join(rng.choice(words, 3)),
                    "reference": str(k),
                    "answer_type": "number",
                    "choices": None,
                    "category": f"cat{k % 3}",
                    "meta": json.dumps({"n": k}),
                    "messages": None,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def tiny_run(tmp_path):
    reader = TokenReader(256)
    spec = reader.sae()
    cfg = RunConfig(span="prompt", sae="identity", max_norm_ratio=None)
    run = tmp_path / "run"
    _write_run(run, _suite(), cfg, reader, spec)
    return run, reader, spec


@pytest.mark.integration
def test_fill_end_to_end_with_verify(tiny_run, tmp_path):
    from cgaps.fill.stage import COVERAGE, FILL_JSON, SELECTION_SPEC, fill_run
    from cgaps.items import load_suite

    run, backend, spec = tiny_run
    out = tmp_path / "out"
    summary = fill_run(
        run,
        FillConfig(benchmark="beta", budget=3, verify=True),
        PoolConfig(pool=str(run)),
        out,
        backend=backend,
        sae=spec,
    )
    assert summary["pool_items"] == 24  # the run's other two benchmarks; beta's own left out
    assert summary["pool_excluded"] == 12
    assert summary["selected"] == 3 and summary["budget"] == 3
    assert summary["objective"]["swaps_converged"] is True and summary["objective"]["swaps"] >= 0
    # what alpha and gamma say that beta never does: each word's tokens are concepts here
    assert summary["targets"]["missing"] >= 10
    assert set(summary["arms"]) == {"fill", "random", "group"}
    # the run itself is the pool and is extracted with span=prompt: its saliency is reused, and
    # --verify extracts the same items again with the same reader: measured == predicted
    for arm, rec in summary["arms"].items():
        assert rec["measured"]["missing"] == pytest.approx(rec["predicted"]["missing"]), arm
    assert summary["verify"]["before"] == summary["before"]
    fill, rand = (summary["arms"][a]["measured"]["missing_reduction"] for a in ("fill", "random"))
    assert (
        fill >= rand
    )  # greedy on the exact figures can never do worse than one random draw of the same size
    cov = pd.read_parquet(out / COVERAGE)
    assert list(cov.columns) == list(__import__("cgaps.fill.stage", fromlist=["x"]).COVERAGE_COLUMNS)
    assert (cov["covered"] == cov["covered_measured"]).all()
    assert json.loads((out / FILL_JSON).read_text())["selected"] == summary["selected"]
    # the selection is a benchmark spec file that `cgaps items` reads, prompts verbatim
    chosen = load_suite(str(out / SELECTION_SPEC))
    suite = _suite().set_index("item_id")
    assert list(chosen["benchmark"].unique()) == ["beta_fill"]
    ids = [i.removeprefix("beta_fill/") for i in chosen["item_id"]]
    assert ids == summary["arms"]["fill"]["items"]
    assert list(chosen["prompt"]) == list(suite.loc[ids, "prompt"])
    assert list(chosen["reference"]) == list(suite.loc[ids, "reference"])
    assert (chosen["answer_type"] == "number").all()
    first = json.loads((out / "selection.jsonl").read_text().splitlines()[0])
    assert first["covers"] and {"concept", "label", "target"} <= set(first["covers"][0])
    # a rerun reads everything back without extracting (the reader is not even asked)
    again = fill_run(run, FillConfig(benchmark="beta", budget=3, verify=True), PoolConfig(pool=str(run)), out)
    assert again["arms"]["fill"]["items"] == summary["arms"]["fill"]["items"]


def test_fill_errors_are_one_line(tiny_run, tmp_path):
    from cgaps.fill.stage import fill_run

    run, _, _ = tiny_run
    with pytest.raises(CGapsError, match=r"--benchmark 'betta' is not a benchmark .* Did you mean 'beta'"):
        fill_run(run, FillConfig(benchmark="betta"), PoolConfig(pool=str(run)), tmp_path / "o")
    with pytest.raises(CGapsError, match="give --pool"):
        fill_run(run, FillConfig(benchmark="beta"), PoolConfig(), tmp_path / "o")
    with pytest.raises(CGapsError, match="--pool-limit applies to a suite"):
        fill_run(run, FillConfig(benchmark="beta"), PoolConfig(pool=str(run), pool_limit=3), tmp_path / "o")
    with pytest.raises(CGapsError, match="fill option 'budget'"):
        FillConfig(benchmark="beta", budget=0)
    assert not (tmp_path / "o" / "fill.json").exists()


def test_spec_rows_carry_their_own_answer_type_meta_and_messages(tmp_path):
    """The spec-file fields the selection needs (a mixed pool): a per-row answer type, choices only
    where the row is a choice item, a JSON metadata object and a conversation."""
    from cgaps.items import load_suite

    rows = [
        {"id": "a", "prompt": "2+2?", "reference": "4", "answer_type": "number", "choices": None,
         "meta": {"answers": ["4"]}, "messages": None},
        {"id": "b", "prompt": "Pick", "reference": "B", "answer_type": "choice", "choices": ["x", "y"],
         "meta": None, "messages": [{"role": "user", "content": "Pick"}]},
        {"id": "c", "prompt": "Capital?", "reference": "Paris", "answer_type": None, "choices": None,
         "meta": {}, "messages": None},
    ]  # fmt: skip
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "name": "mix",
        "path": "d.jsonl",
        "answer_type": "short",
        "prompt_template": "{prompt}",
        "fields": {"question": "prompt", "answer": "reference", "answer_type": "answer_type",
                   "choices": "choices", "meta": "meta", "messages": "messages", "id": "id"},
    }  # fmt: skip
    (tmp_path / "mix.json").write_text(json.dumps(spec))
    items = load_suite(str(tmp_path / "mix.json")).set_index("item_id")
    assert list(items["answer_type"]) == ["number", "choice", "short"]
    assert items.loc["mix/b", "choices"] == json.dumps(["x", "y"]) and pd.isna(items.loc["mix/a", "choices"])
    assert json.loads(items.loc["mix/a", "meta"]) == {"answers": ["4"]}
    assert json.loads(items.loc["mix/b", "messages"]) == [{"role": "user", "content": "Pick"}]
    assert list(items["prompt"]) == ["2+2?", "Pick", "Capital?"]
    bad = [{**rows[0], "answer_type": "numbr"}]
    (tmp_path / "d.jsonl").write_text(json.dumps(bad[0]) + "\n")
    with pytest.raises(CGapsError, match=r"d.jsonl:1: field 'answer_type' is 'numbr'. Did you mean 'number'"):
        load_suite(str(tmp_path / "mix.json"))
    (tmp_path / "d.jsonl").write_text(json.dumps({**rows[1], "choices": None}) + "\n")
    with pytest.raises(CGapsError, match="d.jsonl:1: field 'choices' is empty"):
        load_suite(str(tmp_path / "mix.json"))


@pytest.mark.integration
def test_a_reference_run_decides_what_counts(tiny_run, tmp_path):
    from cgaps.fill.stage import fill_run

    run, reader, spec = tiny_run
    cfg = RunConfig(span="prompt", sae="identity", max_norm_ratio=None)
    ref = tmp_path / "ref"
    words = ["Monday violin", "sugar tiger", "lighthouse harbour"]  # beta's words, and new ones
    items = pd.DataFrame(
        [{"item_id": f"r/{k}", "benchmark": "r", "prompt": p, "reference": "1"} for k, p in enumerate(words)]
    )
    _write_run(ref, items, cfg, reader, spec)
    common = fill_run(run, FillConfig(benchmark="beta", budget=2), PoolConfig(pool=str(run)), tmp_path / "a")
    narrow = fill_run(
        run,
        FillConfig(benchmark="beta", budget=2, reference=str(ref)),
        PoolConfig(pool=str(run)),
        tmp_path / "b",
        backend=reader,
        sae=spec,
    )
    # the suite as reference: alpha's and gamma's words count; the reference run holds none of them
    assert narrow["targets"]["missing"] < common["targets"]["missing"]
    cov = pd.read_parquet(tmp_path / "b" / "coverage.parquet")
    ref_concepts = {
        int(c) % 256 for p in words for c in reader.tokenizer(p, add_special_tokens=False)["input_ids"]
    }
    assert set(cov.loc[cov["target"] == "missing", "concept"]) <= ref_concepts
    other = tmp_path / "other"
    _write_run(other, items, cfg, TokenReader(128), TokenReader(128).sae())
    with pytest.raises(CGapsError, match="--reference .* another SAE"):
        fill_run(
            run,
            FillConfig(benchmark="beta", reference=str(other)),
            PoolConfig(pool=str(run)),
            tmp_path / "c",
        )


@pytest.mark.integration
def test_a_one_benchmark_run_takes_the_pool_as_reference(tmp_path):
    from cgaps.fill.stage import fill_run

    reader = TokenReader(256)
    spec = reader.sae()
    cfg = RunConfig(span="prompt", sae="identity", max_norm_ratio=None)
    suite = _suite()
    run, pool = tmp_path / "run", tmp_path / "pool"
    _write_run(run, suite[suite["benchmark"] == "beta"], cfg, reader, spec)
    _write_run(pool, suite[suite["benchmark"] != "beta"], cfg, reader, spec)
    summary = fill_run(
        run, FillConfig(benchmark="beta", budget=2), PoolConfig(pool=str(pool)), tmp_path / "o"
    )
    assert summary["reference"].startswith("the pool") and summary["targets"]["missing"] >= 10
    assert summary["arms"]["fill"]["predicted"]["missing"] < summary["before"]["missing"]
    with pytest.raises(CGapsError, match="only benchmark .* give --pool or --reference"):
        fill_run(
            run,
            FillConfig(benchmark="beta"),
            PoolConfig(generator="openai://127.0.0.1:9/v1/m"),
            tmp_path / "p",
        )
