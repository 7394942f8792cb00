"""Tests of ``cgaps serve``: the JSON API against plain pandas references, the safety rules, the
command line, and the page itself in real headless Chromium (Playwright on /usr/bin/chromium).

Two scored runs are built from :func:`helpers.make_suite` on the same items: run ``model-a``
(with labels, contexts and themes; hostile text in an item, a label and a context) and run
``model-b`` (the same saliency, but every item on which its most supported concept fires is graded wrong), so
the Compare view has one concept that must differ.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgaps import rundir
from cgaps.console import visible_controls
from cgaps.errors import CGapsError
from cgaps.scoring.stage import score_run
from cgaps.serve.store import EXAMPLES, NEAREST, Store
from helpers import make_suite, write_run

XSS_PROMPT = 'Solve <script>window.__xss = 1</script> and <img src=x onerror="window.__xss = 2"> now'
# with raw control characters (ESC, NUL): the API shows them as visible symbols, as the report does
XSS_RESPONSE = '"><img src=x onerror="window.__xss = 3">\x1b[31m\x00'
XSS_LABEL = '<b id="bold">label</b><script>window.__xss = 4</script>'
XSS_TOKEN = "<img src=x onerror=window.__xss=5>"
NEEDLE = "weekday needle"  # the label of concept 7, searched for
CHROMIUM = Path("/usr/bin/chromium")


def _contexts(sal: pd.DataFrame) -> pd.DataFrame:
    top = sal.sort_values(["concept", "value", "item_id"], ascending=[True, False, True], kind="stable")
    top = top.groupby("concept", sort=False).head(8).copy()
    top["rank"] = top.groupby("concept").cumcount().astype("int32")
    top["left"] = "text before "
    top["token"] = "tok" + (top["concept"] % 13).astype(str)
    top.loc[top["concept"] == 0, "token"] = XSS_TOKEN
    top["right"] = " text after"
    return top[list(rundir.CONTEXT_COLUMNS)].reset_index(drop=True)


def _labels(n: int) -> pd.DataFrame:
    labels = pd.DataFrame(
        {
            "concept": np.arange(n, dtype=np.int32),
            "label": [f"label of {c}" if c < 100 else None for c in range(n)],
            "source": "test",
            # evidence columns as the labels stage writes them: shown, and their words searched
            "enrich_group": [f"family {c % 5}" for c in range(n)],
            "tokens": [json.dumps([[f"dtok{c}", 3, 2.5, 0.1]]) for c in range(n)],
        }
    )
    labels.loc[0, "label"] = XSS_LABEL
    labels.loc[7, "label"] = NEEDLE
    return labels


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    items, sal = make_suite(0)
    # the hostile item is concept 0's highest-saliency item (a wrong one: concept 0 is a planted gap)
    hostile = sal[sal["concept"] == 0].sort_values("value", ascending=False)["item_id"].iloc[0]
    items.loc[items["item_id"] == hostile, "prompt"] = XSS_PROMPT
    items.loc[items["item_id"] == hostile, "response"] = XSS_RESPONSE
    a = write_run(root / "model-a", items, sal)
    score_run(a)
    _contexts(sal).to_parquet(a / rundir.CONTEXTS, index=False)
    _labels(200).to_parquet(a / rundir.LABELS, index=False)
    # themes.parquet as the labels stage writes it: one row per theme and scope, members as JSON
    themes = [(1, "digits", [0, 1, 5], 0.31, "weak"), (2, "weekdays", [7, 8], 0.72, "")]
    pd.DataFrame(
        [
            {
                "theme": k,
                "scope": scope,
                "label": label,
                "n_members": len(members),
                "members": json.dumps(members),
                "chi_model": chi if scope == "ALL" else None,
                "gap": gap if scope == "ALL" else "",
                "status": "under" if scope == "bias" else "normal",
            }
            for k, label, members, chi, gap in themes
            for scope in ["arith", "bias", "code", "ALL"]
        ]
    ).to_parquet(a / "themes.parquet", index=False)
    # run B: the most supported unplanted concept's items are all graded wrong
    support = _all_rows(a).set_index("concept")["support"]
    planted = int(support.loc[10:149].idxmax())
    b_items = items.copy()
    b_items.loc[b_items["item_id"].isin(set(sal.loc[sal["concept"] == planted, "item_id"])), "score"] = 0.0
    b = write_run(root / "model-b", b_items, sal)
    score_run(b)
    return {"a": a, "b": b, "hostile": hostile, "planted": planted}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def store(runs) -> Store:
    return Store([runs["a"], runs["b"]])


@pytest.fixture(scope="module")
def client(store):
    from fastapi.testclient import TestClient

    from cgaps.serve.app import create_app

    return TestClient(create_app(store))


def _all_rows(run: Path, scope: str = "ALL") -> pd.DataFrame:
    c = pd.read_parquet(run / rundir.CONCEPTS)
    return c[c["scope"] == scope].reset_index(drop=True)


def _present(sal: pd.DataFrame, presence: float = 0.4) -> pd.DataFrame:
    """The saliency rows the scores count: s >= presence x the concept's suite max (docs/method.md §2;
    the runs here ship no reference scale), as a plain filter."""
    return sal[sal["value"] >= presence * sal.groupby("concept")["value"].transform("max")]


def _same(a: float | None, b: float) -> bool:
    return (a is None and (b is None or math.isnan(b))) or (
        a is not None and math.isclose(a, b, rel_tol=1e-9)
    )


# ---------------------------------------------------------------- the concept list


def test_runs_lists_both_runs_with_their_benchmarks(client):
    body = client.get("/api/runs").json()
    assert [r["name"] for r in body["runs"]] == ["model-a", "model-b"]
    a = body["runs"][0]
    assert a["benchmarks"] == ["arith", "bias", "code"]  # the suite's order
    assert a["n_concepts"] == 200
    assert a["has"] == {"labels": True, "contexts": True, "themes": True, "overlap": True}
    assert a["accuracy"]["bias"]["n"] == 60
    assert body["runs"][1]["has"]["labels"] is False


@pytest.mark.parametrize(
    ("sort", "order"), [("q_value", "asc"), ("chi_bench", "desc"), ("support", "asc"), ("delta", "asc")]
)
def test_concept_pages_match_a_pandas_sort(client, runs, sort, order):
    ref = _all_rows(runs["a"], "code").assign(delta=lambda d: d["chi_model"] - d["expected"])
    ref = ref.sort_values(
        [sort, "concept"], ascending=[order == "asc", True], na_position="last", kind="stable"
    )
    seen = []
    for page in (1, 2, 3):
        body = client.get(
            "/api/concepts",
            params={"scope": "code", "sort": sort, "order": order, "page": page, "per_page": 70},
        ).json()
        assert body["total"] == 200
        seen += body["rows"]
    assert [r["concept"] for r in seen] == ref["concept"].tolist()
    by_id = ref.set_index("concept")
    for r in seen[:20]:
        row = by_id.loc[r["concept"]]
        assert r["support"] == row["support"]
        assert _same(r["chi_model"], row["chi_model"]) and _same(r["ci_low"], row["ci_low"])
        assert r["status"] == row["status"] and r["gap"] == row["gap"]


def test_per_benchmark_values_are_the_scope_rows(client, runs):
    c = pd.read_parquet(runs["a"] / rundir.CONCEPTS).set_index(["concept", "scope"])
    row = client.get("/api/concepts", params={"q": "c150"}).json()["rows"][0]
    assert row["concept"] == 150
    for i, b in enumerate(["arith", "bias", "code"]):
        assert _same(row["per_benchmark"]["chi_model"][i], c.loc[(150, b), "chi_model"])
        assert _same(row["per_benchmark"]["chi_bench"][i], c.loc[(150, b), "chi_bench"])
    assert row["per_benchmark"]["chi_model"][1] is None  # concepts 150-169 never fire in "bias"


def test_filters_count_like_pandas(client, runs):
    bias, arith = _all_rows(runs["a"], "bias"), _all_rows(runs["a"], "arith")
    cases = [
        ({"scope": "bias", "status": "missing"}, bias, bias["status"] == "missing"),
        ({"scope": "arith", "gap": "weak"}, arith, arith["gap"] == "weak"),
        ({"scope": "arith", "gap": "none"}, arith, arith["gap"] == ""),
        ({"scope": "bias", "min_support": 9}, bias, bias["support"] >= 9),
        ({"status": "normal", "min_support": 5}, _all_rows(runs["a"]), None),
    ]
    for params, ref, mask in cases:
        if mask is None:
            mask = (ref["status"] == "normal") & (ref["support"] >= 5)
        body = client.get("/api/concepts", params={**params, "per_page": 500}).json()
        assert body["total"] == int(mask.sum()) > 0, params
        assert sorted(r["concept"] for r in body["rows"]) == sorted(ref.loc[mask, "concept"])


def test_search_covers_labels_tokens_and_ids(client, runs):
    labels = _labels(200).set_index("concept")["label"]
    ctx = _contexts(pd.read_parquet(runs["a"] / rundir.SALIENCY))
    tokens = ctx.groupby("concept")["token"].apply(lambda t: " ".join(sorted(set(t))))

    def reference(q: str) -> set[int]:
        q = q.lower()
        out = set()
        for c in range(200):
            text = f"c{c} {labels.get(c) or ''} {tokens.get(c, '')} dtok{c}".lower()
            if q in text or (q.lstrip("#c").isdigit() and int(q.lstrip("#c")) == c):
                out.add(c)
        return out

    for q in (
        "needle",
        "WEEKDAY",
        "tok7",
        "dtok150",
        "2.5",
        "label of 4",
        "42",
        "c42",
        "%",
        "_",
        "\\",
        "no such thing",
    ):
        body = client.get("/api/concepts", params={"q": q, "per_page": 500}).json()
        assert {r["concept"] for r in body["rows"]} == reference(q), q
        assert body["total"] == len(reference(q))
    assert [r["concept"] for r in client.get("/api/concepts", params={"q": "needle"}).json()["rows"]] == [7]


def test_the_kept_list_path_matches_one_sql_query(store):
    """Store.concepts (kept filter orders, kept search masks, arrays for the page) against
    Store.concepts_reference (filters, search, order and page in one SQL query), whole answers."""
    from cgaps.serve.store import SORTS

    cases = 0
    for run in store.runs:
        for scope in ("ALL", "bias", "code"):
            for sort in SORTS:
                for order in ("asc", "desc"):
                    for kw in (
                        {},
                        {"q": "tok1"},
                        {"q": "c4", "gap": "none", "page": 2},
                        {"gap": "weak"},
                        {"gap": "strong_at_chance"},
                        {"status": "missing", "min_support": 3},
                        {"q": "label of", "min_support": 8, "page": 3},
                        {"q": "\x00"},  # DuckDB's scan (a NUL is padding to the arrays)
                        {"q": "Weekday NEEDLE"},
                        {"page": 40},  # past the end: no row, the count still right
                    ):
                        want = dict(scope=scope, sort=sort, order=order, per_page=7, **kw)
                        fast, ref = store.concepts(run, **want), store.concepts_reference(run, **want)
                        assert fast == ref, (run.name, want)
                        cases += 1
    assert cases == 2 * 3 * len(SORTS) * 2 * 10


def test_a_search_is_scanned_once_and_kept(store, monkeypatch):
    run = store.runs[0]
    first = store.concepts(run, scope="ALL", q="tok3", per_page=5)
    assert first["total"] > 5
    # its next page and the same word again come from the kept answers: no query at all
    monkeypatch.setattr(Store, "cursor", lambda self: (_ for _ in ()).throw(AssertionError("queried")))
    again = store.concepts(run, scope="ALL", q="tok3", per_page=5)
    second = store.concepts(run, scope="ALL", q="tok3", page=2, per_page=5)
    assert again == first and second["total"] == first["total"]
    assert not {r["concept"] for r in first["rows"]} & {r["concept"] for r in second["rows"]}


def test_search_rows_find_what_python_finds():
    from cgaps.serve.store import SearchRows

    rng = np.random.default_rng(3)
    alphabet = list("abcé漢 \t.%_") + ["😀"]
    texts = ["".join(rng.choice(alphabet, size=n)) for n in rng.integers(0, 400, size=500)]
    texts += ["", "x" * 5000, "c7 weekday needle", "ab\x00"]
    concepts = rng.permutation(len(texts)) * 3  # ids are not positions
    rows = SearchRows(concepts, texts)
    assert len(rows.buckets) > 5 and max(t.dtype.itemsize for _, t in rows.buckets) >= 5000
    # every text sits in an array at most an eighth (or 8 bytes) wider than its bytes
    for _, t in rows.buckets:
        longest = max(len(x) for x in t)
        assert t.dtype.itemsize <= max(longest * 9 // 8 + 8, 24)
    for needle in [
        "a",
        "é",
        "漢b",
        "😀",
        " ",
        "\t",
        "%",
        "_",
        "c7 week",
        "x" * 4999,
        "x" * 5001,
        "zz",
        "abc",
    ]:
        want = sorted(int(c) for c, t in zip(concepts, texts, strict=True) if needle in t)
        assert sorted(rows.find(needle).tolist()) == want, needle
    assert rows.find("\x00") is None  # padding and a NUL look alike: DuckDB answers those
    assert SearchRows(np.zeros(0, np.int64), []).find("a").tolist() == []


def test_kept_answers_are_the_last_ones_asked():
    from cgaps.serve.store import Kept

    kept, made = Kept(2), []
    for key in ("a", "b", "a", "c", "b"):
        kept.get(key, lambda key=key: made.append(key) or key.upper())
    # "a" was asked again before "c" came, so "b" was the one let go, and made again
    assert made == ["a", "b", "c", "b"] and len(kept) == 2
    # a byte budget lets the oldest go first, and keeps the newest even where it alone is over it
    kept = Kept(10, budget=3000)
    for key in range(4):
        kept.get(key, lambda: np.zeros(1000, dtype=np.uint8))
    assert len(kept) == 3 and kept.nbytes == 3000
    kept.get("cols", lambda: {"a": np.zeros(100, np.int64), "b": np.zeros(100, np.int64)})
    assert len(kept) == 2 and kept.nbytes == 2600  # the dict's 1600 and the newest array (3)
    kept.get("big", lambda: np.zeros(9000, np.uint8))
    assert len(kept) == 1 and kept.nbytes == 9000


def test_a_search_of_other_digits_is_text(client):
    # "²" and "٣" are digits to str.isdigit; only decimal digits name a concept id ("٣" is 3)
    assert client.get("/api/concepts", params={"q": "²"}).json()["total"] == 0
    assert 3 in {
        r["concept"] for r in client.get("/api/concepts", params={"q": "٣", "per_page": 500}).json()["rows"]
    }


# ---------------------------------------------------------------- one concept


@pytest.mark.integration
def test_detail_scopes_contexts_and_evidence(client, runs):
    d = client.get("/api/concept/0").json()
    assert [s["scope"] for s in d["scopes"]] == ["arith", "bias", "code", "ALL"]
    c = pd.read_parquet(runs["a"] / rundir.CONCEPTS).set_index(["concept", "scope"])
    for s in d["scopes"]:
        row = c.loc[(0, s["scope"])]
        assert s["support"] == row["support"] and _same(s["expected"], row["expected"])
        assert _same(s["ci_high"], row["ci_high"]) and s["gap"] == row["gap"]
    assert d["label"] == XSS_LABEL  # verbatim: escaping is the page's job, as text
    assert d["evidence"] == {"enrich_group": "family 0", "tokens": [["dtok0", 3, 2.5, 0.1]]}
    # the columns by their names in words, not as the table spells them
    assert d["evidence_names"] == {
        "enrich_group": "group holding most of its weight",
        "tokens": "distinctive tokens (where it peaks, against the run's text)",
    }
    assert d["themes"] == [{"theme": 1, "label": "digits"}]
    sal = pd.read_parquet(runs["a"] / rundir.SALIENCY)
    present = set(zip(*_present(sal)[["item_id", "concept"]].to_numpy().T, strict=True))
    for concept in range(40):
        ref = _contexts(sal)
        ref = ref[(ref["concept"] == concept)]
        # only the contexts on items where the concept is present (what its scores count)
        ref = ref[[(i, concept) in present for i in ref["item_id"]]]
        got = client.get(f"/api/concept/{concept}").json()["contexts"]
        assert [x["item_id"] for x in got] == ref["item_id"].tolist(), concept
    assert {x["token"] for x in d["contexts"]} == {XSS_TOKEN}
    # some contexts are of items below the threshold: the filter is not idle
    full = _contexts(sal)
    assert sum((i, c) not in present for i, c in zip(full["item_id"], full["concept"], strict=True)) > 0


@pytest.mark.parametrize("scope", ["ALL", "code"])
def test_examples_are_the_top_saliency_items_per_side(client, runs, scope):
    items = pd.read_parquet(runs["a"] / rundir.ITEMS).set_index("item_id")
    sal = _present(pd.read_parquet(runs["a"] / rundir.SALIENCY))
    support = pd.read_parquet(runs["a"] / rundir.CONCEPTS).set_index(["concept", "scope"])["support"]
    for concept in (0, 2, 42):
        s = sal[sal["concept"] == concept].copy()
        s["score"] = s["item_id"].map(items["score"])
        s["benchmark"] = s["item_id"].map(items["benchmark"])
        if scope != "ALL":
            s = s[s["benchmark"] == scope]
        s = s.sort_values(["value", "item_id"], ascending=[False, True], kind="stable")
        d = client.get(f"/api/concept/{concept}", params={"scope": scope}).json()["examples"]
        assert [e["item_id"] for e in d["high"]] == s[s["score"] >= 0.5]["item_id"].head(EXAMPLES).tolist()
        assert [e["item_id"] for e in d["low"]] == s[s["score"] < 0.5]["item_id"].head(EXAMPLES).tolist()
        for e in d["high"] + d["low"]:
            assert e["prompt"] == items.loc[e["item_id"], "prompt"]
            assert e["score"] == items.loc[e["item_id"], "score"]
        # as many examples as the scores count items, at most EXAMPLES a side
        n = int(support.loc[(concept, scope)])
        assert len(s) == n and len(d["high"]) + len(d["low"]) <= n
    weak = client.get("/api/concept/0").json()["examples"]
    assert weak["low"][0]["prompt"] == XSS_PROMPT
    assert weak["low"][0]["response"] == visible_controls(XSS_RESPONSE) != XSS_RESPONSE
    assert client.get("/api/concept/2").json()["examples"]["low"] == []  # fires on correct items only


def test_a_concept_that_never_fires(client):
    d = client.get("/api/concept/195").json()  # helpers.NEVER: fires on no item
    assert {s["status"] for s in d["scopes"]} == {"missing"}
    assert all(s["support"] == 0 and s["chi_model"] is None for s in d["scopes"])
    assert d["examples"] == {"high": [], "low": []} and d["nearest"] == [] and d["contexts"] == []


def test_nearest_concepts_match_a_cosine_reference(client, runs):
    sal = _present(pd.read_parquet(runs["a"] / rundir.SALIENCY))
    fires = sal.groupby("concept")["item_id"].apply(set)
    for concept in (0, 42):
        a = fires[concept]  # fewer than NEAREST_ITEMS: the measure is the exact cosine
        ref = sorted(
            ((len(a & fires[d]) / math.sqrt(len(a) * len(fires[d])), d) for d in fires.index if d != concept),
            key=lambda x: (-x[0], x[1]),
        )
        ref = [(d, c) for c, d in ref if c > 0][:NEAREST]
        got = client.get(f"/api/concept/{concept}").json()["nearest"]
        assert [n["concept"] for n in got] == [d for d, _ in ref]
        assert all(math.isclose(n["cosine"], c) for n, (_, c) in zip(got, ref, strict=True))


# ---------------------------------------------------------------- benchmarks, themes, compare


def test_benchmarks_missing_share_histograms_and_matrices(client, runs):
    d = client.get("/api/benchmarks").json()
    c = pd.read_parquet(runs["a"] / rundir.CONCEPTS)
    by = {b["benchmark"]: b for b in d["benchmarks"]}
    for scope in ["arith", "bias", "code", "ALL"]:
        rows = c[c["scope"] == scope]
        assert by[scope]["missing_share"] == pytest.approx((rows["status"] == "missing").mean())
        present = rows[(rows["status"] != "missing") & (rows["chi_bench"] > 0)]
        assert sum(by[scope]["histogram"]) == len(present)
    # missing in "bias", most present in the suite first: the concepts kept out of "bias" (150-169)
    everywhere = c[c["scope"] == "ALL"].set_index("concept")["support"]
    missing = c[(c["scope"] == "bias") & (c["status"] == "missing")]["concept"]
    ref = sorted(missing, key=lambda k: (-everywhere[k], k))[:8]
    assert [x["concept"] for x in by["bias"]["lists"]["missing"]] == ref
    assert len(set(ref) & set(range(150, 170))) >= 6
    over = c[(c["scope"] == "code") & (c["status"] == "over")].sort_values(
        ["chi_bench", "concept"], ascending=[False, True]
    )
    assert [x["concept"] for x in by["code"]["lists"]["over"]] == over["concept"].head(8).tolist()
    o = pd.read_parquet(runs["a"] / rundir.OVERLAP)
    names = d["names"]
    for r in o.itertuples():
        i, j = names.index(r.a), names.index(r.b)
        assert d["matrices"]["jaccard"][i][j] == pytest.approx(r.jaccard)
        assert d["matrices"]["spearman_chi_model"][j][i] == pytest.approx(r.spearman_chi_model)
    assert d["matrices"]["jaccard"][0][0] == 1.0


def test_themes_table_and_missing_themes(client):
    d = client.get("/api/themes").json()
    assert d["available"] and [t["theme"] for t in d["themes"]] == [1, 2]
    assert [m["concept"] for m in d["themes"][1]["members"]] == [7, 8]
    assert d["themes"][1]["members"][0]["label"] == NEEDLE
    assert d["themes"][0]["fields"]["chi_model"] == 0.31 and d["themes"][0]["size"] == 3
    assert (
        client.get("/api/themes", params={"scope": "bias"}).json()["themes"][0]["fields"]["status"] == "under"
    )
    bench = {b["benchmark"]: b for b in client.get("/api/benchmarks").json()["benchmarks"]}
    assert client.get("/api/benchmarks").json()["themes"]["ALL"] == [
        {"theme": 1, "label": "digits", "gap": "weak", "status": "normal"}
    ]
    assert bench["bias"]["n_items"] == 60
    # run B is not labelled: its themes are those `cgaps score` tested, none here
    assert client.get("/api/themes", params={"run": "model-b"}).json() == {
        "run": "model-b",
        "available": True,
        "source": "theme_tests.parquet",
        "columns": [],
        "themes": [],
    }


def test_compare_is_the_paired_table_of_cgaps_compare(client, runs, tmp_path):
    """The Compare view shows the table `cgaps compare` writes: the same rows, the same Δ = B − A,
    the same calls and counts (tests/compare/test_compare.py checks the command's lines and page too)."""
    from cgaps.compare import compare_runs

    table = compare_runs(runs["a"], runs["b"], tmp_path / "cmp")
    for scope in ("ALL", "arith"):
        rows = table[table["scope"] == scope]
        body = client.get("/api/compare", params={"scope": scope, "per_page": 500, "sort": "concept"}).json()
        assert body["total"] == len(rows) == 200
        got = pd.DataFrame(body["rows"])
        for col in ("chi_model_a", "chi_model_b", "delta", "q_value", "q_adjusted"):
            np.testing.assert_allclose(got[col].astype(float), rows[col], rtol=1e-12, equal_nan=True)
        assert got["call"].tolist() == rows["call"].tolist()
        s = body["summary"]
        assert s["b_better"] == int((rows["call"] == "b_better").sum())
        assert s["a_better"] == int((rows["call"] == "a_better").sum())
        assert s["a_beyond"] == int((rows["call_adjusted"] == "a_better").sum())
    # B grades the planted concept's items wrong: A better there, Δ = B − A < 0
    planted = table[(table["scope"] == "ALL") & (table["concept"] == runs["planted"])].iloc[0]
    assert planted["call"] == "a_better" and planted["delta"] < -0.3
    sig = client.get("/api/compare", params={"call": "significant", "per_page": 500}).json()
    assert {r["concept"] for r in sig["rows"]} == set(
        table[(table["scope"] == "ALL") & (table["call"] != "")]["concept"]
    )
    assert (
        client.get("/api/compare", params={"significant": "true", "per_page": 500}).json()["total"]
        == sig["total"]
    )
    page = client.get("/api/compare", params={"sort": "abs_z", "order": "desc", "per_page": 5}).json()
    ref = table[table["scope"] == "ALL"].assign(a=lambda d: d["z"].abs())
    assert [r["concept"] for r in page["rows"]] == (
        ref.sort_values(["a", "concept"], ascending=[False, True], na_position="last")["concept"]
        .head(5)
        .tolist()
    )
    points = client.get("/api/compare/points").json()
    fires = table[(table["scope"] == "ALL") & table["chi_model_a"].notna()]
    assert points["concepts"] == fires["concept"].tolist()
    assert points["calls"].count("A better") == int((fires["call"] == "a_better").sum())


def test_compare_refuses_runs_on_other_items(runs, tmp_path):
    from fastapi.testclient import TestClient

    from cgaps.serve.app import create_app

    items = pd.read_parquet(runs["a"] / rundir.ITEMS)
    sal = pd.read_parquet(runs["a"] / rundir.SALIENCY)
    keep = items["item_id"] != items["item_id"].iloc[0]
    other = write_run(tmp_path / "fewer", items[keep], sal[sal["item_id"].isin(items.loc[keep, "item_id"])])
    score_run(other)
    client = TestClient(create_app(Store([runs["a"], other])))
    r = client.get("/api/compare")
    assert r.status_code == 400 and "other items than" in r.json()["error"]


def test_csv_export_is_the_file_cgaps_export_writes(client, runs, tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    for scope, gap in (("ALL", "weak"), ("code", ""), ("ALL", "strong_at_chance")):
        r = client.get("/api/concepts.csv", params={"scope": scope, "gap": gap, "sort": "concept"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"] == f'attachment; filename="model-a-{scope}-concepts.csv"'
        out = tmp_path / f"{scope}-{gap}.csv"
        args = ["export", str(runs["a"]), "--scope", scope, "-o", str(out)] + (["--gap", gap] if gap else [])
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert r.text == out.read_text()
        frame = pd.read_csv(out)
        concepts = _all_rows(runs["a"], scope)
        want = concepts if not gap else concepts[concepts["gap"] == "weak"] if gap == "weak" else None
        if want is not None:
            assert frame["concept"].tolist() == want["concept"].tolist()
            np.testing.assert_allclose(frame["chi_model"], want["chi_model"], equal_nan=True)
    listed = client.get("/api/concepts", params={"q": "needle"}).json()["total"]
    assert (
        len(pd.read_csv(io.StringIO(client.get("/api/concepts.csv", params={"q": "needle"}).text))) == listed
    )


def test_scatter_is_the_overlap_tables_correlation(client, runs):
    o = pd.read_parquet(runs["a"] / rundir.OVERLAP).set_index(["a", "b"])
    c = pd.read_parquet(runs["a"] / rundir.CONCEPTS)
    for x, y in (("arith", "bias"), ("arith", "code")):
        d = client.get("/api/scatter", params={"x": x, "y": y}).json()
        both = set(c[(c["scope"] == x) & (c["support"] > 0)]["concept"]) & set(
            c[(c["scope"] == y) & (c["support"] > 0)]["concept"]
        )
        assert d["concepts"] == sorted(both) and d["n"] == len(both)
        assert d["rho"] == pytest.approx(o.loc[(x, y), "spearman_chi_model"], rel=1e-9)
        by = c[c["scope"] == x].set_index("concept")["chi_model"]
        np.testing.assert_allclose(d["xs"], by.loc[d["concepts"]])
    d = client.get("/api/scatter", params={"x": "arith", "y": "code", "metric": "chi_bench"}).json()
    assert d["rho"] == pytest.approx(o.loc[("arith", "code"), "spearman_chi_bench"], rel=1e-9)


def test_concept_rows_carry_their_chance_level(client, runs):
    """The explorer's chance columns are cgaps.chance's for the same run (test_chance.py checks those
    against plain references); the runs here say no answer format, so no level is known."""
    from cgaps.chance import run_chance
    from cgaps.runtables import load_run

    ref = run_chance(load_run(runs["a"], results=True), rundir.read_table_config(runs["a"] / rundir.CONCEPTS))
    rows = client.get("/api/concepts", params={"sort": "concept", "per_page": 500}).json()["rows"]
    want = ref[ref["scope"] == "ALL"].set_index("concept")
    for r in rows:
        assert _same(r["chance"], want.loc[r["concept"], "chance"]) and r["at_chance"] is False
    runs_body = client.get("/api/runs").json()["runs"][0]
    c = _all_rows(runs["a"])
    assert runs_body["calls"] == {
        "gaps": int((c["gap"] == "weak").sum()),
        "strengths": int((c["gap"] == "strong").sum()),
        "strengths_at_chance": 0,
        # the themes table's calls in ALL (themes.parquet of the fixture: theme 1 a gap)
        "theme_gaps": 1,
        "theme_strengths": 0,
    }
    groups = client.get("/api/benchmarks").json()["groups"]
    assert [g["group"] for g in groups] == ["ALL", "arith", "bias", "code"]
    assert {g["verdict"] for g in groups} == {"chance unknown"}


# ---------------------------------------------------------------- safety


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/api/concepts", {"sort": "chi_model; DROP TABLE r0_c"}, "cannot sort by"),
        ("/api/concepts", {"sort": "evil"}, "sortable columns: concept"),
        ("/api/concepts", {"order": "sideways"}, "order must be one of asc, desc"),
        ("/api/concepts", {"page": "0"}, "page"),
        ("/api/concepts", {"page": "abc"}, "page"),
        ("/api/concepts", {"per_page": "100000"}, "per_page"),
        ("/api/concepts", {"min_support": "-1"}, "min_support"),
        ("/api/concepts", {"scope": "nope"}, "scope 'nope' is not a benchmark"),
        ("/api/concepts", {"run": "../etc"}, "run '../etc' is not served"),
        ("/api/concepts", {"gap": "maybe"}, "gap must be one of weak, strong, strong_above_chance"),
        ("/api/concepts.csv", {"gap": "maybe"}, "gap must be one of weak"),
        ("/api/scatter", {"x": "arith", "y": "code", "metric": "q"}, "metric must be one of chi_model"),
        ("/api/scatter", {"x": "arith"}, "scatter needs two scopes"),
        ("/api/scatter", {"x": "arith", "y": "nope"}, "scope 'nope' is not a benchmark"),
        ("/api/compare", {"call": "sideways"}, "call must be one of significant"),
        ("/api/compare", {"sort": "chi_a"}, "cannot sort the comparison by 'chi_a'"),
        ("/api/concepts", {"status": "lost"}, "status must be one of missing"),
        ("/api/concepts", {"q": "x" * 500}, "q"),
        ("/api/concept/200", {}, "concept 200 is out of range"),
        ("/api/concept/-1", {}, "concept -1 is out of range"),
        ("/api/concept/abc", {}, "concept"),
        ("/api/compare", {"a": "model-a", "b": "model-a"}, "two different runs"),
        ("/api/compare", {"sort": "label; --"}, "cannot sort the comparison"),
    ],
)
def test_bad_parameters_are_400_with_a_message(client, path, params, needle):
    r = client.get(path, params=params)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]
    assert "Traceback" not in r.text


def test_sql_injection_in_search_is_just_text(client, store):
    r = client.get("/api/concepts", params={"q": "' OR 1=1; DROP TABLE r0_c; --"})
    assert r.status_code == 200 and r.json()["total"] == 0
    assert client.get("/api/concepts").json()["total"] == 200  # the table is still there


@pytest.mark.parametrize(
    "path",
    [
        "/static/../run.json",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/%2e%2e%2fconcepts.parquet",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/app.js%00.parquet",
        "/run.json",
        "/model-a/items.parquet",
        "/static/index.html/../../run.json",
    ],
)
def test_no_file_outside_the_assets_is_reachable(client, path):
    r = client.get(path)
    assert r.status_code in (404, 400), (path, r.status_code)
    assert b"root:" not in r.content and b"PAR1" not in r.content and b"n_concepts" not in r.content


def test_read_only_and_security_headers(client):
    for method in ("post", "put", "delete", "patch"):
        r = getattr(client, method)("/api/concepts")
        assert r.status_code == 405 and "read-only" in r.json()["error"]
    r = client.get("/concepts")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    for page in ("/", "/concept/5", "/benchmarks", "/themes", "/compare"):
        assert client.get(page).text == r.text


def test_the_page_names_an_icon_the_browser_can_cache(client):
    """Without a cacheable icon Chromium asks for /favicon.ico on every history entry, i.e. on every
    key typed into the search box, beside the search's own request."""
    import re

    page = client.get("/concepts").text
    link = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert link is not None and link.group(1) == "/static/icon.svg"
    icon = client.get(link.group(1))
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.headers["cache-control"] == "max-age=3600" and icon.content.startswith(b"<svg ")
    fav = client.get("/favicon.ico")
    assert fav.content == icon.content and fav.headers["cache-control"] == "max-age=3600"


def test_the_page_carries_the_runs_list_as_inert_json(client):
    """The page embeds /api/runs' answer (one request fewer before the first view), and no name
    in it can end the data block or open markup."""
    import html.parser

    page = client.get("/concepts").text
    blocks: list[tuple[dict[str, str | None], list[str]]] = []  # each script element: attributes, text

    class Blocks(html.parser.HTMLParser):
        inside = False

        def handle_starttag(self, tag, attrs):
            if tag == "script":
                blocks.append((dict(attrs), []))
                self.inside = True

        def handle_endtag(self, tag):
            self.inside = self.inside and tag != "script"

        def handle_data(self, data):
            if self.inside:
                blocks[-1][1].append(data)

    Blocks().feed(page)
    data = ["".join(text) for attrs, text in blocks if attrs.get("id") == "cgaps-runs"]
    assert len(data) == 1 and json.loads(data[0]) == client.get("/api/runs").json()
    assert [a.get("src") for a, _ in blocks if a.get("type") != "application/json"] == [
        "/static/charts.js",
        "/static/fillconfirm.js",
        "/static/app.js",
    ]
    # the concept list's first pages, each exactly what /api/concepts answers to the same request
    first = ["".join(text) for attrs, text in blocks if attrs.get("id") == "cgaps-first"]
    assert len(first) == 1
    answers = json.loads(first[0])["answers"]
    assert [a["params"] for a in answers] == [
        {"sort": "q_value", "order": "asc", "page": 1, "per_page": 25},
        {"gap": "weak", "sort": "q_value", "order": "asc", "page": 1, "per_page": 25},
    ]
    for a in answers:
        assert a["path"] == "/api/concepts"
        assert a["body"] == client.get(a["path"], params=a["params"]).json()
        assert len(a["body"]["rows"]) == min(25, a["body"]["total"]) > 0


def test_the_first_pages_match_app_js_page_size():
    from importlib import resources

    from cgaps.serve.app import FIRST_ROWS

    js = resources.files("cgaps.serve").joinpath("static", "app.js").read_text()
    assert f"const PAGE = {FIRST_ROWS};" in js


def test_a_hostile_name_stays_inside_the_runs_data_block():
    from cgaps.serve.app import RUNS_SLOT, _with_runs

    hostile = {"runs": [{"name": "</script><script>window.__xss = 6</script><!--", "benchmarks": ["a&b>"]}]}
    page = _with_runs(b"<body>" + RUNS_SLOT + b"</body>", hostile).decode()
    inside = page.removeprefix('<body><script type="application/json" id="cgaps-runs">').removesuffix(
        "</script></body>"
    )
    assert not any(ch in inside for ch in "<>&"), inside
    assert json.loads(inside) == hostile


def test_the_engine_reads_only_the_served_directories(store, tmp_path):
    outside = tmp_path / "outside.parquet"
    pd.DataFrame({"secret": [1]}).to_parquet(outside)
    with pytest.raises(Exception, match="[Pp]ermission|disabled"):
        store.cursor().execute("SELECT * FROM read_parquet(?)", [str(outside)]).fetchall()
    with pytest.raises(Exception, match="locked"):
        store.cursor().execute("SET enable_external_access = true")


def test_a_symlink_out_of_the_run_is_not_followed(runs, tmp_path):
    run = tmp_path / "linked"
    shutil.copytree(runs["b"], run)
    secret = tmp_path / "secret"
    secret.mkdir()
    _contexts(pd.read_parquet(run / rundir.SALIENCY)).to_parquet(secret / "ctx.parquet", index=False)
    (run / rundir.CONTEXTS).symlink_to(secret / "ctx.parquet")
    s = Store([run])
    assert s.runs[0].summary()["has"]["contexts"] is False
    (run / rundir.CONCEPTS).unlink()
    (run / rundir.CONCEPTS).symlink_to(runs["a"] / rundir.CONCEPTS)
    with pytest.raises(
        CGapsError, match="concepts.parquet: missing \\(or a link out of the run directory\\)"
    ):
        Store([run])


def test_unscored_or_missing_runs_are_one_line_errors(runs, tmp_path):
    with pytest.raises(CGapsError, match="not a directory"):
        Store([tmp_path / "nope"])
    unscored = write_run(tmp_path / "unscored")
    with pytest.raises(CGapsError, match="run `cgaps score RUN_DIR` first"):
        Store([unscored])
    broken = tmp_path / "broken"
    shutil.copytree(runs["b"], broken)
    pd.DataFrame({"concept": [1]}).to_parquet(broken / rundir.OVERLAP)
    with pytest.raises(CGapsError, match="overlap.parquet: missing column\\(s\\) a, b, jaccard"):
        Store([broken])
    assert [r.name for r in Store([runs["a"], runs["a"]]).runs] == ["model-a", "model-a-2"]


# ---------------------------------------------------------------- the command


@pytest.mark.integration
def test_cli_serves_on_a_picked_port_and_prints_the_url(runs):
    import httpx

    env = {**os.environ, "CGAPS_NO_PROGRESS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "cgaps",
        "serve",
        str(runs["a"]),
        str(runs["b"]),
        "--port",
        "0",
        "--host",
        "127.0.0.2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()  # the command's result: the URL, once listening
        assert url.startswith("http://127.0.0.2:") and url.endswith("/")
        assert int(url.rsplit(":", 1)[1].rstrip("/")) > 0
        for _ in range(100):
            try:
                r = httpx.get(url + "api/runs", timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert [x["name"] for x in r.json()["runs"]] == ["model-a", "model-b"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "warning: listening on 127.0.0.2" in err  # not the default address: said so


@pytest.mark.integration
def test_cli_errors_are_one_line(runs, tmp_path):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    with pytest.raises(CGapsError, match="run `cgaps score RUN_DIR` first"):
        CliRunner().invoke(app, ["serve", str(write_run(tmp_path / "u"))], catch_exceptions=False)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        with pytest.raises(CGapsError, match=f"cannot listen on 127.0.0.1:{port}"):
            CliRunner().invoke(app, ["serve", str(runs["a"]), "--port", str(port)], catch_exceptions=False)
    finally:
        busy.close()
    r = CliRunner().invoke(app, ["serve", str(runs["a"]), "--port", "70000"])
    assert r.exit_code != 0
    proc = subprocess.run(
        [sys.executable, "-m", "cgaps", "serve", str(runs["a"]), "--memory-limit", "lots"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--memory-limit" in proc.stderr


# ---------------------------------------------------------------- the page in Chromium


@pytest.fixture(scope="module")
def live(store):
    """The app on a loopback port in a thread (uvicorn), for the browser."""
    import uvicorn

    from cgaps.serve.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(store), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, live):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.base = live  # type: ignore[attr-defined]
    yield page
    assert page.errors == []
    context.close()


def _wait(page, counter: str, at_least: int) -> None:
    page.wait_for_function(f"() => window.__cgaps && (window.__cgaps.{counter} || 0) >= {at_least}")


@pytest.mark.integration
def test_browser_search_detail_and_back_forward(page, runs):
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url.removeprefix(page.base)))
    page.goto(page.base + "/concepts")
    _wait(page, "lists", 1)
    assert page.locator("#concepts tbody tr").count() == 25  # one page (app.js PAGE)
    assert page.locator("#count").text_content().startswith("200 concepts")
    # the first page came with the page itself: no API request before the first search
    assert not [u for u in asked if u.startswith("/api/")], asked
    page.fill("#search", "needle")
    page.wait_for_function("() => document.querySelectorAll('#concepts tbody tr').length === 1")
    assert [u for u in asked if u.startswith("/api/concepts?")] == [
        "/api/concepts?q=needle&sort=q_value&order=asc&page=1&per_page=25"
    ]
    assert "q=needle" in page.url
    row = page.locator("#concepts tbody tr").first
    assert row.get_attribute("data-concept") == "7" and NEEDLE in row.text_content()
    # the row's small per-benchmark bars carry the concept's own figures
    c = pd.read_parquet(runs["a"] / rundir.CONCEPTS).set_index(["concept", "scope"])
    titles = row.locator("svg.spark > title").all_text_contents()
    assert f"arith: {c.loc[(7, 'arith'), 'chi_model']:.4f}" in titles[0]
    assert f"χ_bench code: {c.loc[(7, 'code'), 'chi_bench']:.4f}" in titles[1]
    row.locator("a").first.click()
    _wait(page, "details", 1)
    assert page.url.startswith(page.base + "/concept/7")
    assert page.locator("#detail-title").text_content() == f"Concept 7 — {NEEDLE}"
    assert page.locator("#examples .ex").count() > 0
    assert page.locator("#contexts mark").count() == 8
    assert page.locator("#bars svg circle.value").count() >= 1
    page.go_back()
    page.wait_for_function("() => document.querySelectorAll('#concepts tbody tr').length === 1")
    assert page.input_value("#search") == "needle" and "/concepts" in page.url
    page.go_forward()
    page.wait_for_function("() => document.querySelector('#detail-title')")
    assert page.url.startswith(page.base + "/concept/7")


@pytest.mark.integration
def test_browser_sort_filter_expand_and_deep_link(page, runs):
    n_missing = int((_all_rows(runs["a"], "bias")["status"] == "missing").sum())
    page.goto(page.base + "/concepts?scope=bias&status=missing")
    _wait(page, "lists", 1)
    assert page.locator("#count").text_content().startswith(f"{n_missing} concepts")
    page.click("th[data-sort=concept]")
    page.wait_for_function("() => location.search.includes('sort=concept')")
    _wait(page, "lists", 2)
    ids = [
        int(x)
        for x in page.locator("#concepts tbody tr").evaluate_all("rs => rs.map(r => r.dataset.concept)")
    ]
    assert ids == sorted(ids) and len(ids) == min(n_missing, 25)
    page.locator("#concepts tbody tr button.expand").first.click()
    page.wait_for_selector("tr.inline #contexts")
    assert page.locator("tr.inline #nearest li").count() >= 1
    page.goto(page.base + "/concept/42?scope=code")
    _wait(page, "details", 1)
    assert page.locator("#examples h3").first.text_content().startswith("Example items from code")
    page.goto(page.base + "/concept/5000")
    page.wait_for_selector("p.error")
    assert "out of range" in page.locator("p.error").text_content()


@pytest.mark.integration
def test_browser_benchmarks_themes_and_compare_views(page, runs):
    page.goto(page.base + "/concepts")
    _wait(page, "lists", 1)
    page.click("nav >> text=Benchmarks")
    _wait(page, "benchmarks", 1)
    assert page.url == page.base + "/benchmarks"
    assert page.locator("#matrices svg").count() == 3
    assert page.locator("#matrices svg").first.locator("rect.cell").count() == 9
    assert page.locator("#histograms svg").count() == 4
    assert page.locator("#bench-table tbody tr").count() == 4
    assert page.locator("#group-table tbody tr").count() == 4
    _wait(page, "scatters", 1)
    n = page.evaluate("() => fetch('/api/scatter?x=arith&y=bias').then(r => r.json())")["n"]
    assert page.locator("#scatter-note").text_content().startswith(f"{n:,} concepts present in both")
    page.click("nav >> text=Themes")
    page.wait_for_selector("#themes")
    assert page.locator("#themes tbody tr").count() == 2
    page.click("nav >> text=Compare")
    _wait(page, "compares", 1)
    summary = page.locator("#compare-summary").text_content()
    api = page.evaluate("() => fetch('/api/compare').then(r => r.json())")["summary"]
    assert summary.startswith("ALL: 310 items") and f"(Δ = B − A = {api['delta']:+.3f})" in summary
    assert page.locator("#n-a-better").text_content() == f"A better on {api['a_better']}"
    assert page.locator("#n-b-better").text_content() == f"B better on {api['b_better']}"
    page.select_option("select[aria-label=call]", "a_better")
    _wait(page, "compares", 2)
    assert "call=a_better" in page.url
    shown = page.locator("#compare tbody tr").evaluate_all("rs => rs.map(r => r.dataset.concept)")
    assert str(runs["planted"]) in shown
    # A better: Δ = B − A is negative, shown as a loss for B
    assert page.locator(f"#compare tr[data-concept='{runs['planted']}'] td.neg").count() == 1
    page.go_back()
    _wait(page, "compares", 3)
    assert "call" not in page.url
    page.go_back()
    page.wait_for_selector("#themes")
    page.go_back()
    page.wait_for_selector("#matrices")


@pytest.mark.integration
def test_browser_opens_on_the_gaps_in_words(page, runs):
    """The landing page is the run's gaps, said as gaps; strengths say when they are at chance."""
    page.goto(page.base + "/")
    _wait(page, "lists", 1)
    assert page.url == page.base + "/concepts?gap=weak"
    n_weak = int((_all_rows(runs["a"])["gap"] == "weak").sum())
    assert page.locator("#list-title").text_content().startswith("Gaps — model-a")
    assert page.locator("#count").text_content().startswith(f"{n_weak} concepts")
    calls = page.locator("#concepts tbody tr td:nth-child(10)").all_text_contents()
    assert calls and set(calls) == {"gap"}
    assert f"{n_weak} gaps" in page.locator("#run-summary").text_content()
    href = page.locator("#csv").get_attribute("href")
    assert href.startswith("/api/concepts.csv?") and "gap=weak" in href
    page.select_option("select[aria-label=gap]", "strong")
    _wait(page, "lists", 2)
    assert page.locator("#list-title").text_content().startswith("Strengths — model-a")
    assert set(page.locator("#concepts tbody tr td:nth-child(10)").all_text_contents()) <= {
        "strength",
        "strength at chance",
    }


@pytest.mark.integration
def test_browser_hostile_text_is_shown_as_text_and_runs_nothing(page, runs):
    page.goto(page.base + "/concepts?q=c0")
    _wait(page, "lists", 1)
    row = page.locator("#concepts tbody tr[data-concept='0']")
    assert XSS_LABEL in row.text_content()
    assert page.locator("#bold").count() == 0
    page.goto(page.base + "/concept/0")
    _wait(page, "details", 1)
    hostile = page.locator(f"#examples .ex[data-item='{runs['hostile']}']")
    assert hostile.locator("pre.prompt").text_content() == XSS_PROMPT
    assert hostile.locator("pre.response").text_content() == visible_controls(XSS_RESPONSE)
    assert page.locator("#contexts mark").first.text_content() == XSS_TOKEN
    assert page.locator("main img, main script, #bold").count() == 0
    page.wait_for_timeout(300)  # an onerror would have fired by now
    assert page.evaluate("() => window.__xss === undefined")
    assert page.dialogs == []


def test_the_report_names_the_command_that_opens_the_explorer(runs, tmp_path):
    from cgaps.report.build import build_report

    html = build_report(runs["b"], tmp_path / "report.html").read_text()
    assert "<code>cgaps serve RUN_DIR</code>" in html


@pytest.mark.integration
def test_a_gap_theme_without_a_called_member_before_labels(tmp_path, browser):
    """Not labelled yet: the explorer shows the themes `cgaps score` tested (theme_tests.parquet),
    a gap theme among them though no member is called alone, with its members and a note."""
    import uvicorn
    from fastapi.testclient import TestClient

    from cgaps.serve.app import create_app
    from helpers import theme_only_run

    run = theme_only_run(tmp_path / "themed")
    store = Store([run])
    d = TestClient(create_app(store)).get("/api/themes").json()
    assert d["available"] and d["source"] == "theme_tests.parquet"
    tests = pd.read_parquet(run / rundir.THEME_TESTS)
    all_t = tests[tests["scope"] == "ALL"]
    assert [t["theme"] for t in d["themes"]] == all_t["theme"].tolist()
    gap = [t for t in d["themes"] if t["fields"]["gap"] == "weak"]
    want = all_t[all_t["gap"] == "weak"].iloc[0]
    assert len(gap) == 1 and [m["concept"] for m in gap[0]["members"]] == json.loads(want["members"])
    assert gap[0]["fields"]["q_value"] == pytest.approx(want["q_value"])
    concepts = pd.read_parquet(run / rundir.CONCEPTS).set_index(["scope", "concept"])
    assert all(concepts.loc[("ALL", m["concept"]), "gap"] == "" for m in gap[0]["members"])
    body = TestClient(create_app(store)).get("/api/runs").json()["runs"][0]
    assert body["calls"]["gaps"] == 0 and body["calls"]["theme_gaps"] == 1
    # in the browser: the landing page opens on the themes (no concept is a gap alone), with the
    # note and the gap theme's row, its members linked
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(store), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        page.goto(base + "/")
        page.wait_for_selector("#themes")
        assert page.url == base + "/themes"
        assert page.locator("#no-gaps").count() == 0
        assert "cgaps label RUN_DIR" in page.locator("#themes-unlabelled").text_content()
        assert page.locator("#themes tbody tr").count() == len(all_t)
        first = page.locator("#themes tbody tr").first
        assert first.locator("td").first.text_content() == str(int(want["theme"]))
        links = first.locator("a").evaluate_all("as => as.map(a => a.textContent)")
        assert links == [f"#{c}" for c in json.loads(want["members"])]
        assert errors == []
        context.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
