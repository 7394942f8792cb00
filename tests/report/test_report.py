"""Tests of ``cgaps report``: a seeded synthetic run directory, rendered and checked.

The generator below writes every table of docs/method.md §6 with the section 3 formulas
(a compact version, good enough to be consistent, with the project's Wilson and BH from
:mod:`cgaps.stats`; the scoring stage has its own tests),
plants model gaps on concepts 0-9 and puts hostile text into items, labels, contexts
and a benchmark name, so escaping is tested on every path into the page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cgaps import rundir
from cgaps.errors import CGapsError
from cgaps.report import ReportConfig, figures
from cgaps.report.build import build_report
from cgaps.scoring.stage import score_run
from cgaps.stats import bh_adjust, wilson

XSS_PROMPT = "Solve: <script>alert(1)</script> & tell me"
XSS_RESPONSE = '"><img src=x onerror=alert(2)>'
XSS_LABEL = '<script>alert("label")</script> refusal & pushback'
HOSTILE_BENCH = 'Q&A "<x>"'
PLANTED = range(10)

SECTION_IDS = (
    "run",
    "config",
    "accuracy",
    "chi-bench",
    "chi-bench-per-benchmark",
    "missing",
    "overlap",
    "chi-model",
    "chi-model-per-benchmark",
    "gaps",
    "strengths",
    "over",
    "under",
)


def _concepts(sal: pd.DataFrame, items: pd.DataFrame, width: int, benches: list[str]) -> pd.DataFrame:
    ybar = items.groupby("benchmark")["score"].mean()
    sal = sal.merge(items[["item_id", "benchmark", "score"]], on="item_id")
    sal["norm"] = sal["value"] / sal.groupby("concept")["value"].transform("max")
    sal["ybar"] = sal["benchmark"].map(ybar)
    frames = []
    for scope in [*benches, rundir.ALL_SCOPE]:
        sub = sal if scope == rundir.ALL_SCOPE else sal[sal["benchmark"] == scope]
        n_items = len(items) if scope == rundir.ALL_SCOPE else int((items["benchmark"] == scope).sum())
        s, y = sub["value"].astype(float), sub["score"]
        g = sub.assign(s=s, s2=s * s, sy=s * y, se=s * sub["ybar"]).groupby("concept")
        agg = g.agg(
            support=("s", "size"),
            s=("s", "sum"),
            s2=("s2", "sum"),
            sy=("sy", "sum"),
            se=("se", "sum"),
            norm=("norm", "sum"),
        ).reindex(range(width))
        agg["support"] = agg["support"].fillna(0).astype(int)
        chi = agg["sy"] / agg["s"]
        n_eff = agg["s"] ** 2 / agg["s2"]
        sub = sub.assign(chi=sub["concept"].map(chi))
        var = (
            (sub["value"] * (sub["score"] - sub["chi"]) ** 2)
            .groupby(sub["concept"])
            .sum()
            .reindex(range(width))
        )
        se = np.sqrt(var / agg["s"] / n_eff)
        lo, hi = wilson(chi.to_numpy(), n_eff.to_numpy(), 0.95)
        df = pd.DataFrame(
            {
                "concept": np.arange(width, dtype="int32"),
                "scope": scope,
                "support": agg["support"].to_numpy(),
                "chi_bench": (agg["norm"].fillna(0) / n_items).to_numpy(),
                "chi_bench_raw": (agg["s"].fillna(0) / n_items).to_numpy(),
                "chi_model": chi.to_numpy(),
                "expected": (agg["se"] / agg["s"]).to_numpy(),
                "n_eff": n_eff.to_numpy(),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
        present = df["support"] > 0
        pct = df.loc[present, "chi_bench"].rank(pct=True) * 100
        df["status"] = "missing"
        df.loc[present, "status"] = np.where(pct < 10, "under", np.where(pct > 90, "over", "normal"))
        z = ((df["chi_model"] - df["expected"]) / se.replace(0, np.nan).to_numpy()).to_numpy()
        tested = (df["support"] >= 5).to_numpy() & np.isfinite(z)
        p_low = stats.norm.cdf(z[tested])
        q = np.full(width, np.nan)
        q_low, q_high = bh_adjust(p_low), bh_adjust(1 - p_low)
        q[tested] = np.minimum(q_low, q_high)
        df["q_value"] = q
        gap = np.full(width, "", dtype=object)
        idx = np.flatnonzero(tested)
        gap[idx[q_low <= 0.05]] = "weak"
        gap[idx[q_high <= 0.05]] = "strong"
        df["gap"] = gap
        frames.append(df[list(rundir.CONCEPT_COLUMNS)])
    return pd.concat(frames, ignore_index=True)


def make_run(
    root: Path,
    *,
    benchmarks: tuple[str, ...] = ("gsm8k", HOSTILE_BENCH, "winogrande"),
    n_items: int = 120,
    width: int = 400,
    per_item: int = 30,
    silent: str | None = None,
    labels: bool = True,
    contexts: bool = True,
    words_per_text: int = 25,
    seed: int = 0,
    cofire: bool = False,
) -> Path:
    """Write a consistent synthetic run directory; ``silent`` names a benchmark where nothing fires;
    ``cofire``: the planted concepts fire all together, not four at a time, and every activation
    counts (presence 0), so that they form a theme (docs/method.md §3)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    words = [
        "apple",
        "proof",
        "triangle",
        "refuse",
        "agree",
        "politely",
        "because",
        "number",
        "river",
        "sum",
        "kinda",
    ]
    rows = []
    for bi, b in enumerate(benchmarks):
        acc = 0.4 + 0.15 * bi
        for i in range(n_items):
            multi = i % 7 == 3
            prompt = " ".join(rng.choice(words, words_per_text))
            rows.append(
                {
                    "item_id": f"{bi}-{i}",
                    "benchmark": b,
                    "prompt": prompt,
                    "response": " ".join(rng.choice(words, words_per_text // 2)),
                    "reference": str(rng.integers(100)),
                    "score": float(rng.random() < acc),
                    "category": f"cat{i % 3}",
                    "meta": json.dumps({"i": i}),
                    "messages": json.dumps(
                        [
                            {"role": "user", "content": prompt},
                            {"role": "assistant", "content": "ok"},
                            {"role": "user", "content": "and then?"},
                        ]
                    )
                    if multi
                    else None,
                }
            )
    items = pd.DataFrame(rows)
    items.loc[0, ["prompt", "response", "reference", "score", "messages"]] = [
        XSS_PROMPT,
        XSS_RESPONSE,
        "a & b < c",
        0.0,
        None,
    ]
    # Zipf-like popularity: some concepts fire everywhere, many rarely, the tail never.
    pop = 1.0 / np.arange(1, width + 1) ** 1.1
    pop[int(width * 0.9) :] = 0
    pop[list(PLANTED)] = 0  # planted concepts fire by the rule below only
    pop /= pop.sum()
    sal_rows = []
    for r in items.itertuples(index=False):
        if r.benchmark == silent:
            continue
        cs = rng.choice(width, size=per_item, replace=False, p=pop)
        vals = rng.exponential(2.0, per_item) + 0.01
        # Planted gaps: concepts 0-9 fire mostly on incorrect items.
        if rng.random() < (0.9 if r.score < 0.5 else 0.15):
            cs = np.unique(
                np.concatenate([cs, rng.choice(list(PLANTED), len(PLANTED) if cofire else 4, replace=False)])
            )
            vals = rng.exponential(2.0, len(cs)) + 0.01
        sal_rows.append(pd.DataFrame({"item_id": r.item_id, "concept": cs, "value": vals}))
    sal = pd.concat(sal_rows, ignore_index=True)
    # The hostile item is the most salient one of every planted concept, so it is shown.
    sal.loc[(sal["item_id"] == "0-0") & sal["concept"].isin(PLANTED), "value"] = 30.0
    sal["concept"] = sal["concept"].astype("int32")
    sal["value"] = sal["value"].astype("float32")
    benches = list(benchmarks)
    concepts = _concepts(sal, items, width, benches)

    rundir.write_json(
        {
            "schema_version": rundir.SCHEMA_VERSION,
            "n_concepts": width,
            "config": {
                "model": "synthetic/model",
                "reader": None,  # as RunConfig writes it: the evaluated model reads
                "sae": "synthetic/sae",
                "layer": 3,
                "span": "both",
                "pool": "max",
                "presence": 0.0,  # the concepts above count every activation
                "fdr": 0.05,
                "min_support": 5,
                "under_pct": 10.0,
                "over_pct": 90.0,
                **({"presence": 0.0} if cofire else {}),
            },
            "versions": {"cgaps": "0.1.0"},
            "timings": {"extract_s": 1.5},
            "counts": {"items": len(items)},
        },
        root / rundir.RUN_JSON,
    )
    rundir.write_table(items, root / rundir.ITEMS)
    rundir.write_table(sal, root / rundir.SALIENCY)
    rundir.write_table(concepts, root / rundir.CONCEPTS)
    if len(benches) > 1:
        present = {
            b: concepts[(concepts["scope"] == b) & (concepts["support"] > 0)].set_index("concept")
            for b in benches
        }
        ov = []

        def rho(x: pd.Series, y: pd.Series) -> float:
            with warnings.catch_warnings():  # a constant column gives NaN, as intended
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                return float(stats.spearmanr(x, y)[0]) if len(x) > 2 else np.nan

        for i, a in enumerate(benches):
            for b in benches[i + 1 :]:
                sa, sb = set(present[a].index), set(present[b].index)
                shared = sorted(sa & sb)
                pa, pb = present[a].loc[shared], present[b].loc[shared]
                ov.append(
                    {
                        "a": a,
                        "b": b,
                        "jaccard": len(sa & sb) / max(len(sa | sb), 1),
                        "spearman_chi_model": rho(pa["chi_model"], pb["chi_model"]),
                        "spearman_chi_bench": rho(pa["chi_bench"], pb["chi_bench"]),
                    }
                )
        rundir.write_table(pd.DataFrame(ov, columns=list(rundir.OVERLAP_COLUMNS)), root / rundir.OVERLAP)
    if labels:
        lab = pd.DataFrame({"concept": np.arange(0, width, 2, dtype="int32"), "source": "synthetic"})
        lab["label"] = [f"label of concept {c}" for c in lab["concept"]]
        lab.loc[0, "label"] = XSS_LABEL
        rundir.write_table(lab[list(rundir.LABEL_COLUMNS)], root / rundir.LABELS)
    if contexts:
        top = sal.sort_values(["concept", "value"], ascending=[True, False]).groupby("concept").head(3)
        ctx = pd.DataFrame(
            {
                "concept": top["concept"].to_numpy(),
                "rank": top.groupby("concept").cumcount().to_numpy(),
                "item_id": top["item_id"].to_numpy(),
                "value": top["value"].to_numpy(),
                "left": "text before the ",
                "token": "tok",
                "right": " and after it",
            }
        )
        ctx.loc[ctx["concept"] == 1, "token"] = "<b>bold</b>"
        rundir.write_table(ctx, root / rundir.CONTEXTS)
    return root


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("run3"))
    return run, build_report(run).read_text()


def _svgs(text: str) -> int:
    return len(re.findall(r"<svg\b", text))


def _concepts_table(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / rundir.CONCEPTS)


def test_sections_and_figures(run3):
    run, text = run3
    assert (run / rundir.REPORT).exists()
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in text, sid
    # overall χ_bench + χ_model, per-benchmark small multiples of both, missing bars, 2 heatmaps
    assert _svgs(text) == 2 + 2 * 3 + 1 + 2
    for fig in ("chi-bench-ALL", "chi-model-ALL", "missing", "jaccard", "spearman-chi-model"):
        assert f'data-figure="{fig}"' in text
    assert "(log)" in text  # χ_bench histograms use a log y axis
    # accuracy table: n, mean and CI per benchmark
    assert re.search(r'data-scope="gsm8k"><td>gsm8k</td><td class="num" data-sort="120">120</td>', text)


def test_medians_match_numpy(run3):
    run, text = run3
    concepts = _concepts_table(run)
    for scope in ["ALL", "gsm8k", "winogrande"]:
        m = re.search(rf'data-figure="chi-model-{scope}"[^>]*data-median="([^"]+)"', text)
        assert m, scope
        expected = np.nanmedian(concepts.loc[concepts["scope"] == scope, "chi_model"])
        assert float(m.group(1)) == pytest.approx(expected, rel=1e-5)
        assert f"median {expected:.3f}" in text


def test_first_gap_row_has_lowest_q(run3):
    run, text = run3
    concepts = _concepts_table(run)
    weak = concepts[(concepts["scope"] == "ALL") & (concepts["gap"] == "weak")]
    assert len(weak) > 0, "the generator plants gaps"
    best = weak.assign(d=weak["chi_model"] - weak["expected"]).sort_values(["q_value", "d"]).iloc[0]
    block = text.split('data-table="gaps" data-scope="ALL"', 1)[1]
    first = int(re.search(r'<tr data-concept="(\d+)"', block).group(1))
    assert first == int(best["concept"])
    assert set(weak["concept"]) & set(PLANTED)


def test_escaping(run3):
    _, text = run3
    assert "<script>alert" not in text
    assert "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in text or "&quot;&gt;&lt;img src=x" in text
    assert "&lt;script&gt;alert(&#34;label&#34;)" in text or "&lt;script&gt;alert(&quot;label&quot;)" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text  # context token, still highlighted by our own <mark>
    assert "<x>" not in text and "Q&amp;A" in text  # benchmark name, in tables and SVG text
    assert text.count("<script") == 1  # only the report's own sort/filter script


def test_self_contained(run3):
    _, text = run3
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "@import" not in text and not re.search(r"url\(\s*['\"]?https?:", text)
    assert "<link" not in text
    assert ".innerHTML" not in text and "document.write" not in text


def test_a_rebuilt_page_equals_the_first(tmp_path):
    """The page does not show the stages' bookkeeping: the report's own record in run.json,
    written by the first build, leaves a second build's page unchanged (a report killed after
    recording itself and rebuilt is the page of an uninterrupted build)."""
    run = make_run(tmp_path / "run")
    first = build_report(run).read_text()
    assert "report" in rundir.read_run_json(run).get("inputs", {})
    assert build_report(run).read_text() == first


def test_examples_and_descriptions(run3):
    _, text = run3
    assert "badge ok" in text and "badge bad" in text
    assert "<b>assistant:</b>" in text  # a multi-turn item shows its turns
    assert "<mark>tok</mark>" in text  # unlabelled concepts show their top contexts
    assert "label of concept" in text


def test_one_benchmark_no_optional_files(tmp_path):
    run = make_run(tmp_path / "one", benchmarks=("gsm8k",), labels=False, contexts=False)
    assert not (run / rundir.OVERLAP).exists()
    text = build_report(run).read_text()
    assert "no pairs to compare" in text
    assert _svgs(text) == 2 + 2 + 1
    assert re.search(r'<span class="nolabel">concept \d+</span>', text)


def test_silent_benchmark_and_no_gaps(tmp_path):
    run = make_run(tmp_path / "silent", benchmarks=("gsm8k", "quiet"), silent="quiet", n_items=60, width=200)
    concepts = _concepts_table(run)
    assert concepts.loc[concepts["scope"] == "quiet", "chi_model"].isna().all()
    concepts["gap"] = ""
    rundir.write_table(concepts, run / rundir.CONCEPTS)
    text = build_report(run).read_text()
    fig = re.search(r'<svg[^>]*data-figure="chi-model-quiet"[^>]*>.*?</svg>', text, re.S).group(0)
    assert "data-median" not in fig and "no values" in fig
    assert "No significant gaps at FDR q ≤ 0.05." in text
    assert "No significant strengths at FDR q ≤ 0.05 in quiet." in text


@pytest.mark.parametrize(
    ("name", "stage"),
    [
        (rundir.CONCEPTS, "cgaps score"),
        (rundir.SALIENCY, "cgaps extract"),
        (rundir.OVERLAP, "cgaps score"),
        (rundir.ITEMS, "cgaps items"),
    ],
)
def test_missing_required_file(tmp_path, name, stage):
    run = make_run(tmp_path / "r", n_items=20, width=60, per_item=10)
    (run / name).unlink()
    with pytest.raises(CGapsError, match=re.escape(stage)) as e:
        build_report(run)
    assert name in str(e.value)


def test_bad_concepts_columns(tmp_path):
    run = make_run(tmp_path / "r", n_items=20, width=60, per_item=10)
    _concepts_table(run).drop(columns=["q_value"]).to_parquet(run / rundir.CONCEPTS)  # not a stage's
    with pytest.raises(CGapsError, match="q_value.*cgaps score"):
        build_report(run)


def test_optional_files_shown_or_named_when_damaged(tmp_path):
    """robustness.json is shown when present; a damaged optional file names the command that rewrites it."""
    run = make_run(tmp_path / "r", n_items=20, width=60, per_item=10)
    assert 'id="robustness"' not in build_report(run).read_text()
    rundir.write_json({"subsampling": {"repeats": 7}}, run / rundir.ROBUSTNESS)
    text = build_report(run).read_text()
    assert 'id="robustness"' in text and "&#34;repeats&#34;: 7" in text
    (run / rundir.ROBUSTNESS).write_text("{not json")
    with pytest.raises(CGapsError, match=r"robustness\.json.*`cgaps robustness RUN_DIR`"):
        build_report(run)
    (run / rundir.ROBUSTNESS).unlink()
    pd.DataFrame({"concept": [0]}).to_parquet(run / rundir.LABELS)  # another tool's (write_table refuses it)
    with pytest.raises(
        CGapsError, match=r"labels\.parquet: missing column\(s\) label, source; rerun `cgaps label"
    ):
        build_report(run)


def test_not_a_directory(tmp_path):
    with pytest.raises(CGapsError, match="not a directory"):
        build_report(tmp_path / "nowhere")


@pytest.mark.integration
def test_size_bounded(run3, tmp_path):
    """Golden-ish: the synthetic run's report stays in a fixed size band, and a paper-sized
    run (16k concepts, ten benchmarks) stays under 5 MB thanks to the table caps."""
    run, text = run3
    size = len(text.encode())
    assert 50_000 < size < 1_000_000, size
    big = make_run(
        tmp_path / "big",
        benchmarks=tuple(f"bench{i}" for i in range(10)),
        n_items=80,
        width=16384,
        per_item=40,
        words_per_text=400,
    )
    path = build_report(big)
    assert path.stat().st_size < 5_000_000, path.stat().st_size


def test_cli(tmp_path):
    import typer
    from typer.testing import CliRunner

    from cgaps.cli.report import report

    run = make_run(tmp_path / "r", n_items=20, width=60, per_item=10)
    app = typer.Typer()
    app.command()(report)
    out = tmp_path / "elsewhere" / "r.html"
    result = CliRunner().invoke(app, [str(run), "--out", str(out), "--top", "5"])
    assert result.exit_code == 0, result.output
    assert out.exists() and "<!DOCTYPE html>" in out.read_text()


def test_options_validated():
    with pytest.raises(CGapsError, match="top"):
        ReportConfig(top=0)


def test_with_the_scoring_stage(tmp_path):
    """The tables `cgaps score` writes render too (schema drift between the stages shows here)."""
    for benches in (("gsm8k", "winogrande"), ("gsm8k",)):
        run = make_run(tmp_path / "_".join(benches), benchmarks=benches, n_items=40, width=120, per_item=15)
        (run / rundir.CONCEPTS).unlink()
        (run / rundir.OVERLAP).unlink(missing_ok=True)
        concepts, _ = score_run(run)
        text = build_report(run).read_text()
        assert _svgs(text) == 3 + 2 * len(benches) + (2 if len(benches) > 1 else 0)
        expected = np.nanmedian(concepts.loc[concepts["scope"] == "ALL", "chi_model"])
        assert f"median {expected:.3f}" in text


# ---------------------------------------------------------------- golden figures

GOLDEN = Path(__file__).parents[1] / "golden" / "figures"
# Read at import: the autouse fixture of conftest.py clears CGAPS_* variables inside tests.
UPDATE_GOLDEN = os.environ.get("CGAPS_UPDATE_GOLDEN") == "1"
_VALUES = np.array([0.02, 0.05, 0.11, 0.12, 0.3, 0.31, 0.33, 0.5, 0.52, 0.8, 0.97, np.nan, np.inf])
_NAMES = ["gsm8k", HOSTILE_BENCH, "winogrande"]
_MATRIX = np.array([[1.0, 0.42, np.nan], [0.42, 1.0, -0.73], [np.nan, -0.73, 1.0]])

# Fixed small inputs for each drawing path: linear and log axes, the median line, no values,
# highlighted bars, NaN cells, sequential and diverging colours, escaped names.
FIGURE_CASES = {
    "histogram.svg": lambda: figures.histogram(
        _VALUES,
        figure="h",
        title="χ_model <ALL>",
        xlabel="χ_model",
        bins=8,
        value_range=(0.0, 1.0),
        median=True,
    ),
    "histogram_log_small.svg": lambda: figures.histogram(
        np.repeat(_VALUES[:11], [1, 40, 3, 3, 200, 7, 1, 1, 12, 2, 1]),
        figure="h-log",
        title="gsm8k",
        xlabel="χ_bench",
        bins=10,
        log_y=True,
        width=300,
        height=190,
    ),
    "histogram_empty.svg": lambda: figures.histogram([], figure="h0", title="quiet", xlabel="χ_model"),
    "bar_chart.svg": lambda: figures.bar_chart(
        [*_NAMES, "ALL (never fires)"],
        [12.5, 40.0, 3.25, 1.0],
        figure="missing",
        title="Concepts missing from each benchmark",
        xlabel="% of the 400 concepts that never fire",
        highlight=[False, False, False, True],
    ),
    "heatmap.svg": lambda: figures.heatmap(
        _NAMES, np.abs(_MATRIX), figure="jaccard", title="Jaccard overlap of present concepts"
    ),
    "heatmap_diverging.svg": lambda: figures.heatmap(
        _NAMES, _MATRIX, figure="rho", title="Spearman correlation", diverging=True
    ),
}


@pytest.mark.parametrize("name", sorted(FIGURE_CASES))
def test_figures_match_golden_svg(name):
    """The figures are deterministic text: any change to what they draw shows here.

    After an intended change, rewrite the files with
    ``CGAPS_UPDATE_GOLDEN=1 .venv/bin/pytest tests/report/test_report.py -k golden`` and review the
    diff of tests/golden/figures/ before committing it.
    """
    text = str(FIGURE_CASES[name]())
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))  # bytes: no newline translation on any platform
    assert path.exists(), (
        f"{path} is missing; write it with CGAPS_UPDATE_GOLDEN=1 (see this test's docstring)"
    )
    golden = path.read_bytes().decode("utf-8")
    assert text == golden, (
        f"{name} differs from {path}; if the change is intended, rerun with CGAPS_UPDATE_GOLDEN=1 "
        "and review the diff"
    )


def test_theme_phrase_names_the_groups_a_spread_theme_falls_on():
    from cgaps.report.build import theme_phrase

    pure = theme_phrase(["days"], "probes:weekday", 0.68, 0.08, [["probes:weekday", 0.68, 0.08]])
    assert pure == "probes:weekday items (68% of its weight, 8% of all items) · “days”"
    spread = [
        ["probes:date_add", 0.35, 0.08],
        ["probes:add_no_carry", 0.31, 0.08],
        ["probes:add_carry", 0.29, 0.08],
    ]
    assert theme_phrase([], "probes:date_add", 0.35, 0.08, spread) == (
        "probes:date_add, add_no_carry and add_carry items (35%, 31%, 29% of its weight)"
    )
    mixed = [["gsm8k:x", 0.4, 0.1], ["mmlu:y", 0.3, 0.1]]
    assert theme_phrase(["+"], "gsm8k:x", 0.4, 0.1, mixed).startswith("gsm8k:x and mmlu:y items (40%, 30%")
    thin = [["probes:a", 0.15, 0.08], ["probes:b", 0.14, 0.08], ["probes:c", 0.13, 0.08]]
    assert theme_phrase(["only"], "probes:a", 0.15, 0.08, thin) == (
        "items spread over many groups (largest probes:a, 15% of its weight) · “only”"
    )
    # a themes table from before the spread column: the enriched group alone
    assert theme_phrase([], "probes:a", 0.15, 0.08) == "probes:a items (15% of its weight, 8% of all items)"


@pytest.mark.integration
def test_findings_and_themes_from_the_labels_stage(tmp_path):
    """The labels stage on a synthetic run (no SAE: enrichment and co-activation themes), then the
    report: generated findings first, each theme link pointing at its row, hostile text escaped."""
    from cgaps.labels.stage import THEMES, label_run

    run = make_run(tmp_path / "r", cofire=True)
    table = label_run(run)
    # a label another tool wrote survives, as an imported label that wins over evidence
    assert table.loc[2, "label"] == "label of concept 2" and table.loc[2, "source"] == "synthetic"
    assert table.loc[1, "source"] in ("evidence", "top_contexts", "")  # no reader: top contexts fill in
    text = build_report(run).read_text()
    assert text.index('id="findings"') < text.index('id="config"') < text.index('id="gaps"')
    findings = text[text.index('id="findings"') : text.index('id="themes"')]
    assert "It fails most on:" in findings and "The model answers" in findings
    # benchmark gaps per benchmark, in words, each theme linked
    assert re.search(r"In gsm8k, least covered themes: <a href=\"#theme-\d+\">", findings)
    links = set(re.findall(r'href="#theme-(\d+)"', findings))
    assert links and all(f'id="theme-{t}"' in text for t in links)
    themes = pd.read_parquet(run / THEMES)
    all_rows = themes[themes["scope"] == rundir.ALL_SCOPE]
    assert int((all_rows["gap"] == "weak").sum()) >= 1
    n_gap_themes = int((all_rows["gap"] == "weak").sum())
    # the spread starts with the enriched group, its shares fall and sum to at most 1
    for r in themes[themes["enrich_group"] != ""].itertuples():
        spread = json.loads(r.spread)
        assert spread[0][0] == r.enrich_group and spread[0][1] == pytest.approx(r.enrich_mass)
        shares = [s[1] for s in spread]
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-9
    assert f"{n_gap_themes} gap theme" in findings
    assert "<x>" not in text and text.count("<script") == 1
    # the purity script: the themes' mass-weighted purity never exceeds its bound (the gap concepts')
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parents[2] / "scripts" / "theme_purity.py"), str(run)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    figures = dict(kv.split("=") for kv in out.split())
    assert int(figures["gap_themes"]) == n_gap_themes
    assert 0 < float(figures["purity_mass"]) <= float(figures["bound"]) + 1e-9 <= 1 + 1e-9
    # themes made under other scoring config are left out, saying why
    concepts = pd.read_parquet(run / rundir.CONCEPTS)
    rundir.write_table(concepts, run / rundir.CONCEPTS, scoring_config={"fdr": 0.2})
    text = build_report(run).read_text()
    assert 'id="themes"' not in text and "rerun `cgaps label RUN_DIR`" in text


# ---------------------------------------------------------------- findings a reader can act on


def test_examples_and_contexts_obey_presence(tmp_path):
    """Example items and contexts come from the saliency the scores count (s >= presence x scale),
    so a concept never shows more examples than its support, nor an item below the threshold."""
    from cgaps.report.build import report_context

    run = make_run(tmp_path / "r", n_items=40, width=120, per_item=15)
    meta = rundir.read_run_json(run)
    meta["config"]["presence"] = 0.4
    rundir.write_json(meta, run / rundir.RUN_JSON)
    (run / rundir.CONCEPTS).unlink()
    score_run(run)
    sal = pd.read_parquet(run / rundir.SALIENCY)
    present = sal[sal["value"] >= 0.4 * sal.groupby("concept")["value"].transform("max")]
    pairs = set(zip(present["item_id"], present["concept"], strict=True))
    assert len(pairs) < len(sal)  # the threshold drops rows: the check below is not idle
    items = pd.read_parquet(run / rundir.ITEMS).set_index("item_id")["benchmark"]
    ctx = report_context(run, ReportConfig(examples=3, contexts=3))
    small = 0
    for kind, blocks in ctx["tables"].items():
        for block in blocks:
            for r in block["rows"]:
                ids = [e["item_id"] for e in r["examples"]]
                assert all((i, r["concept"]) in pairs for i in ids), (kind, r["concept"])
                if block["scope"] != "ALL":
                    assert all(items[i] == block["scope"] for i in ids)
                assert len(ids) <= min(r["support"], 6)
                small += r["support"] < 6
                for c in r["desc"]["contexts"]:
                    assert (c["item_id"], r["concept"]) in pairs
    assert small > 0  # some rows have fewer present items than examples asked for


def test_words_run_table_and_help(run3):
    run, text = run3
    # one vocabulary: gaps and strengths, the table values named once as such
    assert "Model gaps</h2>" in text and "(weak concepts)" not in text
    assert "table value <code>weak</code>" in text
    # the run table names the models, never a null
    assert ">reader</td><td>the evaluated model</td>" in text and ">null<" not in text
    # no robustness.json or validation.json: the help says how to get them instead of pointing at nothing
    assert 'id="robustness"' not in text and 'href="#robustness"' not in text
    assert "neither has run, so this report has no such section" in text
    # the chance column and its tick
    assert '<th data-type="num">chance</th>' in text


@pytest.mark.integration
def test_format_findings_are_listed_apart(tmp_path):
    """With the labels stage's `phrase` and `format`, the first screen names concepts by their
    phrase and lists the format findings apart from the competencies, hiding neither."""
    from cgaps.report.build import report_context

    run = make_run(tmp_path / "r")
    concepts = pd.read_parquet(run / rundir.CONCEPTS)
    gaps = concepts[(concepts["scope"] == "ALL") & (concepts["gap"] == "weak")].sort_values("q_value")
    assert len(gaps) >= 3
    fmt = int(gaps["concept"].iloc[0])  # the strongest gap is a format one
    labels = pd.read_parquet(run / rundir.LABELS)
    labels = pd.DataFrame({"concept": np.arange(400, dtype="int32")}).merge(labels, how="left")
    labels["phrase"] = [f"phrase {c}" for c in labels["concept"]]
    labels["format"] = labels["concept"] == fmt
    rundir.write_table(labels, run / rundir.LABELS)
    ctx = report_context(run)
    words = ["".join(seg.get("text", "") for seg in s if "sub" not in seg) for s in ctx["findings"]]
    subs = {
        w: [s for s in sentence if "sub" in s] for w, sentence in zip(words, ctx["findings"], strict=True)
    }
    fails = next(w for w in words if w.startswith("It fails most on"))
    fmt_line = next(w for w in words if w.startswith("Format findings"))

    def named(w: str) -> list[str]:
        return [
            x[0]["text"] if x[0]["text"] not in ("gap: ", "strength: ") else x[1]["text"]
            for x in subs[w][0]["sub"]
        ]

    assert f"phrase {fmt}" not in named(fails) and f"phrase {fmt}" in named(fmt_line)
    assert named(fails)[0] == f"phrase {int(gaps['concept'].iloc[1])}"
    assert "1 gap and 0 strength concepts" in fmt_line
    text = build_report(run).read_text()
    assert f"phrase {fmt}</span>" in text and ">format</span>" in text


@pytest.mark.integration
def test_a_gap_theme_without_a_called_member_is_a_finding_before_labels(tmp_path):
    """Scored, not labelled: the one call is a theme none of whose members is called alone. The
    report lists it as a finding with its members (from theme_tests.parquet), says the themes await
    `cgaps label`, and the empty concept table of gaps says what the items could have found."""
    from cgaps.scoring.power import detectable_sentence, needed_sentence
    from helpers import theme_only_run

    run = theme_only_run(tmp_path / "r")
    tests = pd.read_parquet(run / rundir.THEME_TESTS)
    concepts = pd.read_parquet(run / rundir.CONCEPTS)
    gap = tests[(tests["scope"] == "ALL") & (tests["gap"] == "weak")]
    assert len(gap) == 1 and (concepts.loc[concepts["scope"] == "ALL", "gap"] == "").all()
    members = json.loads(gap["members"].iloc[0])
    theme = int(gap["theme"].iloc[0])
    text = build_report(run).read_text()
    findings = text[text.index('id="findings"') : text.index('id="themes"')]
    words = re.sub(r"<[^>]+>", "", findings)
    assert "0 concepts are gaps" in words and "there are 1 gap theme and 0 strength themes" in words
    # the theme is the first entry of "It fails most on", named by its strongest members, linked to its row
    fails = findings[findings.index("It fails most on:") :]
    name = f"theme {theme}: " + ", ".join(f"concept {c}" for c in members[:3])
    assert re.search(rf'<a href="#theme-{theme}">{re.escape(name)}( and \d+ more)?</a>', fails)
    assert "These themes are as `cgaps score` tested them" in text
    # the themes section has its row with every member linked
    row = text[text.index(f'id="theme-{theme}"') :]
    row = row[: row.index("</tr>")]
    for c in members:
        assert f"concept {c}" in row or f">{c}<" in row
    # a call was made (a theme), so the first screen says what a 30-item concept needs, not "nothing"
    meta = json.loads((run / rundir.RUN_JSON).read_text())
    notes = re.findall(r'<li class="scoring-note">(.*?)</li>', text)
    assert [n.replace("&#39;", "'") for n in notes] == [detectable_sentence(meta["power"]["scopes"]["ALL"])]
    # the empty gap table of ALL says what the data could have found and what would be needed
    gaps = text[text.index('<section id="gaps"') :]
    scope = meta["power"]["scopes"]["ALL"]
    shown = re.findall(r'<span class="power-note">(.*?)</span>', gaps[: gaps.index("<h3>Per benchmark")])
    assert [s.replace("&#39;", "'") for s in shown] == [
        detectable_sentence(scope),
        needed_sentence(scope, meta["power"]["items_per_benchmark"]),
    ]
    assert scope["items"] == 180 and meta["power"]["items_per_benchmark"] == 90
    # labelled: themes.parquet holds the same gap theme with every member, and the report names it in words
    from cgaps.labels.stage import label_run

    label_run(run)
    themes = pd.read_parquet(run / "themes.parquet")
    row = themes[(themes["scope"] == "ALL") & (themes["theme"] == theme)].iloc[0]
    assert row["gap"] == "weak" and json.loads(row["members"]) == members
    assert row["q_value"] == pytest.approx(gap["q_value"].iloc[0])
    text = build_report(run).read_text()
    assert "These themes are as `cgaps score` tested them" not in text
    fails = text[text.index("It fails most on:") :]
    assert re.match(rf'It fails most on:<ul><li><a href="#theme-{theme}">', fails)


@pytest.mark.integration
def test_a_run_that_calls_nothing_says_so_and_what_would_be_needed(tmp_path):
    """Scores independent of everything: no call in any scope; the first screen says so, with the
    detectable effect and the items per benchmark needed, from run.json power."""
    from cgaps.scoring.power import summary_sentences

    run = make_run(tmp_path / "r")
    items = rundir.read_items(run)
    rng = np.random.default_rng(3)
    items["score"] = rng.permutation(items["score"].to_numpy())
    rundir.write_table(items, run / rundir.ITEMS)
    score_run(run)
    concepts = pd.read_parquet(run / rundir.CONCEPTS)
    if (concepts["gap"] != "").any():
        pytest.skip("this permutation called something")
    meta = json.loads((run / rundir.RUN_JSON).read_text())
    text = build_report(run).read_text()
    notes = [n.replace("&#39;", "'") for n in re.findall(r'<li class="scoring-note">(.*?)</li>', text)]
    assert notes == summary_sentences(meta["power"], 0)
    assert notes[0] == "Nothing was called a gap or a strength."
    assert re.fullmatch(
        r"A topic holding 10% of a benchmark's items, 20 points below expected, .*\.", notes[2]
    )
    # every benchmark's empty gap table says it too
    assert text.count('<span class="power-note">') == 2 * (1 + len(meta["power"]["scopes"]) - 1)
