"""``cgaps compare``: the paired table against a plain per-concept reference, identical runs call
nothing, a planted difference is called the right way round, incomparable runs are refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from cgaps import rundir
from cgaps.cli.main import app
from cgaps.compare import compare_runs
from cgaps.compare.core import COMPARE_COLUMNS
from cgaps.errors import CGapsError
from cgaps.stats import bh_adjust
from helpers import WEAK_PLANTED, make_suite, write_run

META = {
    "n_concepts": 200,
    "model": {"reader": "reader-x", "evaluated": "model-a"},
    "sae": {"id": "sae-x", "fingerprint": "f00", "layer": 3},
    "config": {"presence": 0.4, "min_support": 5, "fdr": 0.05, "span": "both", "sae": "RELEASE/sae-x"},
}


def _meta(**changes):
    meta = json.loads(json.dumps(META))
    for key, value in changes.items():
        meta[key] = {**meta[key], **value} if isinstance(value, dict) else value
    return meta


def reference(items_a, sal_a, items_b, sal_b, presence, min_support, fdr, n_concepts):
    """The paired table by loops over scopes and concepts (cgaps.compare.core's rules, applied plainly)."""
    ids = sorted(items_a["item_id"])
    ya = items_a.set_index("item_id")["score"].to_dict()
    yb = items_b.set_index("item_id")["score"].to_dict()
    bench = items_a.set_index("item_id")["benchmark"].to_dict()
    raw = {}
    for name, sal in (("a", sal_a), ("b", sal_b)):
        for r in sal.itertuples():
            raw[(name, r.item_id, int(r.concept))] = float(r.value)
    scale = np.zeros(n_concepts)
    for (_, _, c), v in raw.items():
        scale[c] = max(scale[c], v)

    def s(name, i, c):
        v = raw.get((name, i, c), 0.0)
        return v if scale[c] > 0 and v >= presence * scale[c] else 0.0

    rows = []
    for scope in [*sorted(set(bench.values())), "ALL"]:
        scope_ids = [i for i in ids if scope == "ALL" or bench[i] == scope]
        block = []
        for c in range(n_concepts):
            w = {i: (s("a", i, c) + s("b", i, c)) / 2 for i in scope_ids}
            w = {i: v for i, v in w.items() if v > 0}
            sw = sum(w.values())
            if sw == 0:
                block.append((c, math.nan, math.nan, math.nan, 0, 0, math.nan, math.nan))
                continue
            dbar = {bb: np.mean([yb[i] - ya[i] for i in ids if bench[i] == bb]) for bb in set(bench.values())}
            dexp = sum(v * dbar[bench[i]] for i, v in w.items()) / sw
            ca = sum(v * ya[i] for i, v in w.items()) / sw
            cb = sum(v * yb[i] for i, v in w.items()) / sw
            t = sum(v * (yb[i] - ya[i]) for i, v in w.items())
            var = sum(v * v * (yb[i] - ya[i]) ** 2 for i, v in w.items())
            k = sum(1 for i in w if yb[i] != ya[i])
            z = t / math.sqrt(var) if var > 0 else 0.0
            p = min(1.0, max(2 * stats.norm.sf(abs(z)), 2.0 ** (1 - k)))
            block.append((c, ca, cb, cb - ca, len(w), k, p, dexp))
        tested = [j for j, r in enumerate(block) if r[4] >= min_support]
        q = [math.nan] * len(block)
        for j, qv in zip(tested, bh_adjust(np.array([block[j][6] for j in tested])), strict=True):
            q[j] = qv
        for j, (c, ca, cb, d, sup, k, p, dexp) in enumerate(block):
            call = "" if not q[j] <= fdr else ("b_better" if d > 0 else "a_better" if d < 0 else "")
            rows.append((c, scope, ca, cb, d, q[j], call, sup, k, p, dexp))
    return pd.DataFrame(
        rows,
        columns=[
            "concept",
            "scope",
            "chi_model_a",
            "chi_model_b",
            "delta",
            "q_value",
            "call",
            "support",
            "discordant",
            "p_value",
            "delta_expected",
        ],
    )


def _pair(tmp_path, jitter=True):
    items_a, sal_a = make_suite(0)
    rng = np.random.default_rng(1)
    items_b = items_a.copy()
    flip = rng.random(len(items_b)) < 0.15
    items_b.loc[flip, "score"] = 1.0 - items_b.loc[flip, "score"].round()
    # B answers every item where the suite's most frequent concept fires correctly
    planted = int(sal_a["concept"].value_counts().index[0])
    planted_ids = set(sal_a.loc[sal_a["concept"] == planted, "item_id"])
    items_b.loc[items_b["item_id"].isin(planted_ids), "score"] = 1.0
    sal_b = sal_a.copy()
    if jitter:  # B's responses differ, so the reader's saliency differs a little
        sal_b["value"] = (sal_b["value"] * rng.uniform(0.8, 1.2, len(sal_b))).astype("float32")
    a = write_run(tmp_path / "a", items_a, sal_a, _meta())
    b = write_run(tmp_path / "b", items_b, sal_b, _meta(model={"evaluated": "model-b"}))
    return a, b, (items_a, sal_a, items_b, sal_b), planted


def test_paired_table_matches_the_plain_reference(tmp_path):
    a, b, (items_a, sal_a, items_b, sal_b), planted = _pair(tmp_path)
    table = compare_runs(a, b, tmp_path / "cmp")
    assert tuple(table.columns) == COMPARE_COLUMNS
    ref = reference(items_a, sal_a, items_b, sal_b, 0.4, 5, 0.05, 200)
    assert len(table) == len(ref) == 200 * 4
    for col in ("chi_model_a", "chi_model_b", "delta", "q_value", "p_value", "delta_expected"):
        np.testing.assert_allclose(
            table[col].to_numpy(), ref[col].to_numpy(), rtol=1e-9, atol=1e-12, equal_nan=True
        )
    for col in ("concept", "scope", "call", "support", "discordant"):
        assert table[col].tolist() == ref[col].tolist(), col
    # the planted concept: B better suite-wide
    row = table[(table["scope"] == "ALL") & (table["concept"] == planted)].iloc[0]
    assert row["call"] == "b_better" and row["delta"] > 0.2
    # beyond the suite's own difference too
    assert row["call_adjusted"] == "b_better"
    written = pd.read_parquet(tmp_path / "cmp" / "compare.parquet")
    pd.testing.assert_frame_equal(written, table)
    assert rundir.read_table_config(tmp_path / "cmp" / "compare.parquet")["run_b"] == str(b)


def test_same_saliency_gives_each_runs_own_chi_model(tmp_path):
    from cgaps.config import RunConfig
    from cgaps.scoring.core import build_matrix, concept_table

    a, b, (items_a, sal_a, items_b, _), _ = _pair(tmp_path, jitter=False)
    table = compare_runs(a, b, tmp_path / "cmp")
    for items, col in ((items_a, "chi_model_a"), (items_b, "chi_model_b")):
        own = concept_table(build_matrix(items, sal_a, 200, presence=0.4), RunConfig())
        np.testing.assert_allclose(
            table[col].to_numpy(), own["chi_model"].to_numpy(), rtol=1e-12, equal_nan=True
        )


def test_identical_runs_call_nothing(tmp_path):
    items, sal = make_suite(0)
    a = write_run(tmp_path / "a", items, sal, _meta())
    b = write_run(tmp_path / "b", items, sal, _meta())
    table = compare_runs(a, b, tmp_path / "cmp")
    assert (table["call"] == "").all()
    fires = table["support"] > 0
    assert (table.loc[fires, "delta"] == 0).all() and (table.loc[fires, "p_value"] == 1).all()
    assert (table["discordant"] == 0).all()
    assert (table["call_adjusted"] == "").all()


def test_a_change_everywhere_is_no_adjusted_call(tmp_path):
    items, sal = make_suite(0)
    rng = np.random.default_rng(3)
    worse = items.copy()
    # B loses most of its correct answers, at random: a change everywhere, tied to no concept
    hit = (worse["score"] == 1) & (rng.random(len(worse)) < 0.8)
    worse.loc[hit, "score"] = 0.0
    a = write_run(tmp_path / "a", items, sal, _meta())
    b = write_run(tmp_path / "b", worse, sal, _meta())
    table = compare_runs(a, b, tmp_path / "cmp", {"presence": 0.0})  # every firing counts: more support
    raw, adjusted = (table["call"] == "a_better").sum(), (table["call_adjusted"] != "").sum()
    assert raw >= 20 and (table["call"] != "b_better").all()  # the raw test: A better nearly everywhere
    # beyond its benchmarks' own difference, only the concepts that fire on wrong items alone
    # (helpers.WEAK_PLANTED) differ: B cannot lose there, so it is "better than usual"
    called = table[table["call_adjusted"] != ""]
    assert set(called["concept"]) == set(WEAK_PLANTED) and adjusted == len(called)
    assert (called["call_adjusted"] == "b_better").all() and (called["delta"] == 0).all()
    fires = table["support"] > 0
    bench_diff = (
        worse.groupby("benchmark")["score"].mean() - items.groupby("benchmark")["score"].mean()
    ).to_dict()
    one = table[fires & (table["scope"] == "arith")]
    np.testing.assert_allclose(one["delta_expected"], bench_diff["arith"], atol=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"reader": "other"}}, r"b: read by reader model 'other', .*a by 'reader-x'"),
        ({"sae": {"fingerprint": "f11"}}, r"b: SAE fingerprint 'f11', .*a has 'f00'"),
        ({"config": {"span": "prompt"}}, r"b: extracted with span='prompt', .*a with 'both'"),
    ],
)
def test_incomparable_runs_are_refused(tmp_path, change, message):
    items, sal = make_suite(0)
    a = write_run(tmp_path / "a", items, sal, _meta())
    b = write_run(tmp_path / "b", items, sal, _meta(**change))
    with pytest.raises(CGapsError, match=message):
        compare_runs(a, b, tmp_path / "cmp")
    assert not (tmp_path / "cmp" / "compare.parquet").exists()


def test_other_items_are_refused(tmp_path):
    items, sal = make_suite(0)
    a = write_run(tmp_path / "a", items, sal, _meta())
    fewer = items[items["item_id"] != "bias-3"]
    b = write_run(tmp_path / "b", fewer, sal[sal["item_id"] != "bias-3"], _meta())
    with pytest.raises(
        CGapsError, match=r"other items than .* \(1 only in A, 0 only in B, e.g. 'bias-3' only in A\)"
    ):
        compare_runs(a, b, tmp_path / "cmp")
    reworded = items.copy()
    reworded.loc[reworded["item_id"] == "code-7", "prompt"] = "another question"
    c = write_run(tmp_path / "c", reworded, sal, _meta())
    with pytest.raises(CGapsError, match=r"item 'code-7' has another 'prompt'"):
        compare_runs(a, c, tmp_path / "cmp")


def test_cli_and_page_escape_labels(tmp_path):
    a, b, _, planted = _pair(tmp_path)
    labels = pd.DataFrame({"concept": range(200), "label": "", "source": "test"})
    labels.loc[planted, "label"] = "<script>alert(1)</script>"
    labels.to_parquet(a / rundir.LABELS, index=False)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(out), "--fdr", "0.1"])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert rundir.read_table_config(out / "compare.parquet")["fdr"] == 0.1


@pytest.mark.integration
def test_the_command_its_page_and_the_explorer_report_the_same_counts(tmp_path):
    """One compare: the lines `cgaps compare` prints, the summary table of its page and the
    explorer's Compare view give the same counts per scope, with the same sign (Δ = B − A)."""
    import re

    from fastapi.testclient import TestClient

    from cgaps.scoring.stage import score_run
    from cgaps.serve.app import create_app
    from cgaps.serve.store import Store

    a, b, (items_a, _, items_b, _), planted = _pair(tmp_path)
    for run in (a, b):
        score_run(run)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "compare.parquet")
    line = re.compile(
        r"^(\S+): (\d+) items, mean score A ([\d.]+), B ([\d.]+) \(Δ = B − A = ([+-][\d.]+)\); of (\d+) concepts "
        r"tested, B better on (\d+), A better on (\d+); against the benchmarks' mean Δ, B better on (\d+), A better on (\d+)$"
    )
    cli = {}
    for text in result.stdout.splitlines():
        m = line.match(text)
        assert m, text
        cli[m[1]] = [int(m[2]), float(m[5]), int(m[6]), int(m[7]), int(m[8]), int(m[9]), int(m[10])]
    assert list(cli) == ["arith", "bias", "code", "ALL"]
    page = (out / "report.html").read_text()
    rows = re.findall(r'<tr(?: class="all")? data-scope="([^"]+)">(.*?)</tr>', page)
    html = {}
    for scope, cells in rows:
        values = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells)]
        html[scope] = [int(values[1]), float(values[4]), *map(int, values[5:10])]
    client = TestClient(create_app(Store([a, b])))
    for scope, want in cli.items():
        rows = table[table["scope"] == scope]
        from_table = [
            int((rows["call"] == "b_better").sum()),
            int((rows["call"] == "a_better").sum()),
            int((rows["call_adjusted"] == "b_better").sum()),
            int((rows["call_adjusted"] == "a_better").sum()),
        ]
        assert want[3:] == from_table and html[scope][3:] == from_table, scope
        assert want[0] == html[scope][0] and want[2] == html[scope][2] == int(rows["q_value"].notna().sum())
        s = client.get("/api/compare", params={"scope": scope}).json()["summary"]
        assert [s["n_items"], s["tested"], s["b_better"], s["a_better"], s["b_beyond"], s["a_beyond"]] == [
            want[0],
            want[2],
            *from_table,
        ]
        # one sign: Δ = B − A, from the scores themselves
        ids = items_a["item_id"] if scope == "ALL" else items_a.loc[items_a["benchmark"] == scope, "item_id"]
        delta = (
            items_b.set_index("item_id").loc[ids, "score"].mean()
            - items_a.set_index("item_id").loc[ids, "score"].mean()
        )
        assert want[1] == pytest.approx(delta, abs=6e-4) and html[scope][1] == pytest.approx(delta, abs=6e-4)
        assert s["delta"] == pytest.approx(delta)
    # B answers the planted concept's items right: "B better" everywhere it is called
    row = table[(table["scope"] == "ALL") & (table["concept"] == planted)].iloc[0]
    assert row["call"] == "b_better" and row["delta"] > 0
    got = client.get("/api/compare", params={"call": "b_better", "per_page": 500}).json()["rows"]
    assert planted in [r["concept"] for r in got] and all(r["delta"] > 0 for r in got)
