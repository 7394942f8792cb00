"""Scoring (SPEC.md section 3): the sparse fast path against a plain reference, bad input, the CLI.

The reference below loops over items and concepts with Python floats and shares no code
with :mod:`cgaps.scoring` (it uses ``math`` and the normal cdf/quantile of scipy only).
It applies the rules that ``cgaps.scoring.core``'s docstring fixes where SPEC.md leaves a
choice open: percentile = 100 * (#less + 0.5 * #equal) / m on chi_bench rounded to 12
decimals; a weighted variance < 1e-12 falls back to e(1 - e); if SE is still 0,
z = +-inf when |chi_model - e| > 1e-9, else 0; BH per side; q_value of the side of z.
"""

from __future__ import annotations

import bisect
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from cgaps.config import RunConfig
from cgaps.errors import CGapsError
from cgaps.rundir import CONCEPT_COLUMNS, OVERLAP_COLUMNS
from cgaps.scoring import compute_scores, score_run

# ---------------------------------------------------------------- plain reference


def _bh(pvals: list[float]) -> list[float]:
    m = len(pvals)
    order = sorted(range(m), key=lambda i: pvals[i])
    q = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):  # step-up: min over larger ranks
        i = order[rank - 1]
        running = min(running, pvals[i] * m / rank)
        q[i] = running
    return q


def _less_equal(vals: list[float]) -> list[tuple[int, int]]:
    """(#values < v, #values == v) for each v (bisect on a sorted copy, so the benchmark stays feasible)."""
    ordered = sorted(vals)
    return [
        (bisect.bisect_left(ordered, v), bisect.bisect_right(ordered, v) - bisect.bisect_left(ordered, v))
        for v in vals
    ]


def _avg_ranks(vals: list[float]) -> list[float]:
    return [less + (eq + 1) / 2 for less, eq in _less_equal(vals)]


def _spearman(a: list[float], b: list[float]) -> float:
    a = [round(v, 12) for v in a]
    b = [round(v, 12) for v in b]
    if len(a) < 3 or len(set(a)) == 1 or len(set(b)) == 1:
        return math.nan
    ra, rb = _avg_ranks(a), _avg_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb)


def reference_scores(items: pd.DataFrame, saliency: pd.DataFrame, n_concepts: int, cfg: RunConfig):
    ids = [str(i) for i in items["item_id"]]
    y = {i: float(s) for i, s in zip(ids, items["score"], strict=True)}
    bench = {i: str(b) for i, b in zip(ids, items["benchmark"], strict=True)}
    sal: dict[str, dict[int, float]] = {i: {} for i in ids}
    for i, c, v in zip(saliency["item_id"], saliency["concept"], saliency["value"], strict=True):
        sal[str(i)][int(c)] = float(v)
    colmax = [0.0] * n_concepts
    for i in ids:
        for c, v in sal[i].items():
            colmax[c] = max(colmax[c], v)
    benches = sorted(set(bench.values()))
    ybar = {
        b: sum(y[i] for i in ids if bench[i] == b) / sum(1 for i in ids if bench[i] == b) for b in benches
    }
    zq = norm.ppf(0.5 + cfg.ci_level / 2)

    rows = []
    per_scope = {}
    for scope in [*benches, "ALL"]:
        members = [i for i in ids if scope == "ALL" or bench[i] == scope]
        obs: list[list[tuple[float, float, float, float]]] = [[] for _ in range(n_concepts)]
        for i in members:
            for c, v in sal[i].items():
                obs[c].append((v, y[i], ybar[bench[i]], v / colmax[c]))
        recs = []
        for c in range(n_concepts):
            o = obs[c]
            r = {"concept": c, "scope": scope, "support": len(o)}
            r["chi_bench"] = sum(h for _, _, _, h in o) / len(members)
            r["chi_bench_raw"] = sum(s for s, _, _, _ in o) / len(members)
            if not o:
                r.update(
                    chi_model=math.nan,
                    expected=math.nan,
                    n_eff=0.0,
                    ci_low=math.nan,
                    ci_high=math.nan,
                    z=math.nan,
                )
                recs.append(r)
                continue
            ss = sum(s for s, _, _, _ in o)
            chi = sum(s * yy for s, yy, _, _ in o) / ss
            e = sum(s * yb for s, _, yb, _ in o) / ss
            neff = ss**2 / sum(s * s for s, _, _, _ in o)
            var = sum(s * (yy - chi) ** 2 for s, yy, _, _ in o) / ss
            if var < 1e-12:  # all scores equal: fall back to the null's variance e(1 - e)
                var = e * (1 - e)
            se = math.sqrt(var / neff)
            d = chi - e
            z = math.inf if d > 1e-9 else (-math.inf if d < -1e-9 else 0.0)  # for SE = 0
            if se > 0:
                z = d / se
            denom = 1 + zq * zq / neff
            center = (chi + zq * zq / (2 * neff)) / denom
            half = zq / denom * math.sqrt(max(chi * (1 - chi), 0.0) / neff + zq * zq / (4 * neff * neff))
            r.update(
                chi_model=chi,
                expected=e,
                n_eff=neff,
                z=z,
                ci_low=min(max(center - half, 0.0), 1.0),
                ci_high=min(max(center + half, 0.0), 1.0),
            )
            recs.append(r)
        present = [r for r in recs if r["support"] > 0]
        vals = [round(r["chi_bench"], 12) for r in present]
        for r in recs:
            r["status"], r["gap"], r["q_value"] = "missing", "", math.nan
        for r, (less, eq) in zip(present, _less_equal(vals), strict=True):
            pct = 100.0 * (less + 0.5 * eq) / len(vals)
            r["status"] = "under" if pct < cfg.under_pct else ("over" if pct > cfg.over_pct else "normal")
        tested = [r for r in recs if r["support"] >= cfg.min_support]
        q_weak = _bh([float(norm.cdf(r["z"])) for r in tested])
        q_strong = _bh([float(norm.sf(r["z"])) for r in tested])
        for r, qw, qs in zip(tested, q_weak, q_strong, strict=True):
            q = qw if r["z"] < 0 else qs
            r["q_value"] = q
            if r["z"] != 0 and q <= cfg.fdr:
                r["gap"] = "weak" if r["z"] < 0 else "strong"
        per_scope[scope] = recs
        rows.extend(recs)
    concepts = pd.DataFrame(rows)[list(CONCEPT_COLUMNS)]

    pairs = []
    for ai, a in enumerate(benches):
        for b in benches[ai + 1 :]:
            ra, rb = per_scope[a], per_scope[b]
            sa = {r["concept"] for r in ra if r["support"] > 0}
            sb = {r["concept"] for r in rb if r["support"] > 0}
            shared = sorted(sa & sb)
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "jaccard": len(sa & sb) / len(sa | sb) if sa | sb else math.nan,
                    "spearman_chi_model": _spearman(
                        [ra[c]["chi_model"] for c in shared], [rb[c]["chi_model"] for c in shared]
                    ),
                    "spearman_chi_bench": _spearman(
                        [ra[c]["chi_bench"] for c in shared], [rb[c]["chi_bench"] for c in shared]
                    ),
                }
            )
    return concepts, pd.DataFrame(pairs, columns=list(OVERLAP_COLUMNS))


# ---------------------------------------------------------------- synthetic suites

WEAK_PLANTED = (0, 1)  # fire only on wrong items
STRONG_PLANTED = 2  # fires only on fully correct items
NEVER = range(190, 200)  # never fire
NOT_IN_BIAS = range(150, 170)  # fire everywhere but in benchmark "bias"


def make_suite(seed: int, n_concepts: int = 200):
    rng = np.random.default_rng(seed)
    sizes = {"arith": 150, "bias": 60, "code": 100}
    acc = {"arith": 0.45, "bias": 0.8, "code": 0.6}
    items, sal = [], []
    rate = rng.uniform(0.02, 0.25, n_concepts)
    for b, n in sizes.items():
        for k in range(n):
            iid = f"{b}-{k}"
            y = float(rng.random() < acc[b])
            if b == "code" and k % 5 == 0:
                y = float(rng.choice([0.25, 0.5, 0.75, rng.random()]))  # some partial credit
            items.append(
                {
                    "item_id": iid,
                    "benchmark": b,
                    "prompt": f"p {iid}",
                    "reference": "r",
                    "response": "x",
                    "score": y,
                }
            )
            fires = rng.random(n_concepts) < rate
            fires[list(NEVER)] = False
            if b == "bias":
                fires[list(NOT_IN_BIAS)] = False
            fires[list(WEAK_PLANTED)] = y == 0 and rng.random() < 0.7
            fires[STRONG_PLANTED] = y == 1 and rng.random() < 0.5
            for c in np.flatnonzero(fires):
                sal.append({"item_id": iid, "concept": int(c), "value": float(rng.gamma(2.0, 1.5)) + 1e-3})
    items_df = pd.DataFrame(items)
    sal_df = pd.DataFrame(sal).astype({"concept": "int32", "value": "float32"})
    return items_df, sal_df


def assert_same_tables(fast: pd.DataFrame, ref: pd.DataFrame, key: list[str]) -> None:
    assert list(fast.columns) == list(ref.columns)
    assert fast[key].astype(str).values.tolist() == ref[key].astype(str).values.tolist()
    for col in fast.columns:
        if col in key:
            continue
        if fast[col].dtype == object or pd.api.types.is_string_dtype(fast[col]):
            assert fast[col].tolist() == ref[col].tolist(), col
        else:
            np.testing.assert_allclose(
                fast[col].to_numpy(float),
                ref[col].to_numpy(float),
                rtol=0,
                atol=1e-6,
                equal_nan=True,
                err_msg=col,
            )


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


def test_fast_path_matches_reference_other_knobs():
    items, sal = make_suite(7)
    cfg = RunConfig(min_support=12, under_pct=25, over_pct=60, fdr=0.2, ci_level=0.8)
    concepts, overlap = compute_scores(items, sal, 200, cfg)
    ref_concepts, ref_overlap = reference_scores(items, sal, 200, cfg)
    assert_same_tables(concepts, ref_concepts, ["scope", "concept"])
    assert_same_tables(overlap, ref_overlap, ["a", "b"])


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
    concepts, _ = compute_scores(items, sal, 200, RunConfig())
    by = concepts.set_index(["scope", "concept"])
    for scope in ("arith", "code", "ALL"):
        for c in WEAK_PLANTED:
            assert by.loc[(scope, c), "gap"] == "weak", (scope, c)
            assert by.loc[(scope, c), "chi_model"] == 0.0
        # all scores equal (SE falls back to e(1 - e)) and well above e: called strong
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
    concepts, _ = compute_scores(items, sal, 2, RunConfig())
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


# ---------------------------------------------------------------- the run directory


def write_run(tmp_path, items=None, sal=None, meta=None):
    if items is None or sal is None:
        items, sal = make_suite(0)
    (tmp_path / "run.json").write_text(json.dumps({"n_concepts": 200} if meta is None else meta))
    items.to_parquet(tmp_path / "items.parquet", index=False)
    sal.to_parquet(tmp_path / "saliency.parquet", index=False)
    return tmp_path


def test_score_run_writes_tables_and_run_json(tmp_path):
    run = write_run(tmp_path)
    concepts, overlap = score_run(run)
    assert (run / "concepts.parquet").exists() and (run / "overlap.parquet").exists()
    back = pd.read_parquet(run / "concepts.parquet")
    assert list(back.columns) == list(CONCEPT_COLUMNS) and len(back) == len(concepts)
    assert back["concept"].dtype == np.int32
    items, sal = make_suite(0)
    ref, _ = reference_scores(items, sal, 200, RunConfig())
    assert_same_tables(back, ref, ["scope", "concept"])
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["min_support"] == 5 and meta["counts"]["scored_items"] == 310
    assert "score_compute_s" in meta["timings"]


def test_score_run_uses_stored_config(tmp_path):
    run = write_run(tmp_path, meta={"n_concepts": 200, "config": {"min_support": 50}})
    concepts, _ = score_run(run)
    assert concepts.loc[concepts["support"] < 50, "q_value"].isna().all()


def test_score_run_calls_the_validating_readers(tmp_path, monkeypatch):
    from cgaps import rundir

    calls = []
    for name in ("read_run_json", "n_concepts", "read_items", "read_saliency"):
        orig = getattr(rundir, name)
        monkeypatch.setattr(rundir, name, lambda *a, _o=orig, _n=name, **k: calls.append(_n) or _o(*a, **k))
    score_run(write_run(tmp_path))
    assert {"read_run_json", "n_concepts", "read_items", "read_saliency"} <= set(calls)


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
        meta = {"model": "m"}
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


def test_cli_score_rejects_bad_knob(tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    run = write_run(tmp_path)
    result = CliRunner().invoke(app, ["score", str(run), "--fdr", "2"])
    assert isinstance(result.exception, CGapsError) and "fdr" in str(result.exception)
    assert not (run / "concepts.parquet").exists()
