"""What reading residuals in bfloat16 changes: one run extracted and scored in float32 and in bfloat16.

    PYTHONPATH=src .venv/bin/python bench/extract_dtypes.py RUN_DIR [--work /tmp/dtypes] [--keep]

``RUN_DIR`` is a run with items and scores (``cgaps demo``'s, or ``cgaps items`` + ``cgaps
evaluate``/``grade``/``import``); it is only read. ``--planted-scores SEED`` replaces its scores
by synthetic ones with planted weaknesses (:func:`planted_scores`), for a run whose own scores
give no gap calls to compare. Its items, responses, scores and config are
copied twice under ``--work``; each copy is extracted by :func:`cgaps.extract.stage.extract_run`
with ``dtype`` float32 and bfloat16 (everything else as the run's config says), one after the
other in this process, and scored (:func:`cgaps.scoring.score_run`). Printed, bfloat16 against
float32:

- **saliency**: the (item, concept) rows present in both (Jaccard), the relative difference of
  their values (median, 99th percentile), the per-item overlap of the top-k concepts by value
  (k = 10 and 50: mean over items, and the lowest item);
- **scores**: Spearman's rho of chi_model and of chi_bench over the (scope, concept) pairs scored
  in both runs (support > 0), and over those the method tests in both (a q-value: support of at
  least ``min_support``), every scope together and the lowest single scope; and the gap calls: Jaccard of the
  (scope, concept) pairs called ``weak`` (gaps), called ``strong`` (strengths) and of both;
- **time**: each extraction's wall and CPU seconds (the process's, so run it alone) and the load
  average after each.

Last line: ``top10= top50= rho_chi_model= rho_chi_model_tested= rho_chi_bench= jaccard_gaps= jaccard_strengths=
speedup=`` (speedup: float32 extraction wall time / bfloat16's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (OMP_WAIT_POLICY, as the CLI sets it)
import numpy as np
import pandas as pd

# what a run needs before extraction: the rest is written by extract and score
KEEP = ("items.parquet", "run.json", "option_logliks.parquet")


def prepare(run: Path, out: Path, planted: int | None = None) -> Path:
    """A copy of ``run`` with its items, scores and config only (``planted``: the scores replaced
    by :func:`planted_scores` with that seed)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in KEEP:
        if (run / name).exists():
            shutil.copy2(run / name, out / name)
    if planted is not None:
        items = pd.read_parquet(out / "items.parquet")
        items["score"] = planted_scores(items, planted)
        items.to_parquet(out / "items.parquet", index=False)
    return out


def planted_scores(items: pd.DataFrame, seed: int) -> np.ndarray:
    """Synthetic 0/1 scores with planted weaknesses, for a run whose real scores give no calls
    (SmolLM2 on a few dozen items per benchmark): each benchmark has its own base accuracy
    (0.5-0.85); an item whose prompt is longer than its benchmark's median is answered right
    0.15 times as often, and one whose prompt holds a negation half as often (both vary within a
    benchmark, which is what the scores are tested against: on 100 items of each paper10
    benchmark this gives ~2,600 calls). The rule reads the text only, never
    either extraction, so it favours neither dtype."""
    rng = np.random.default_rng(seed)
    bench = items["benchmark"].astype(str)
    base = {b: rng.uniform(0.5, 0.85) for b in sorted(bench.unique())}
    p = bench.map(base).to_numpy(dtype=float)
    text = items["prompt"].astype(str)
    length = text.str.len()
    p = np.where(length > length.groupby(bench).transform("median"), p * 0.15, p)
    p = np.where(text.str.contains(r"\b(?:not|no|never)\b|n't", case=False, regex=True), p / 2, p)
    return (rng.random(len(items)) < p).astype(float)


def extract_and_score(run: Path, dtype: str) -> dict[str, float]:
    from cgaps import rundir
    from cgaps.config import config_from_run
    from cgaps.extract.stage import extract_run
    from cgaps.scoring import score_run

    cfg = config_from_run(rundir.read_run_json(run), run).replace(dtype=dtype)
    t0, c0 = time.perf_counter(), time.process_time()
    extract_run(run, cfg)
    out = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "load": os.getloadavg()[0]}
    score_run(run, cfg)
    return out


def topk_overlap(a: pd.DataFrame, b: pd.DataFrame, k: int) -> pd.Series:
    """Per item: the share of its k highest-valued concepts in ``a`` that are among those of ``b``."""

    def tops(df: pd.DataFrame) -> dict[str, set[int]]:
        df = df.sort_values(["item_id", "value", "concept"], ascending=[True, False, True], kind="stable")
        return {i: set(g["concept"].head(k)) for i, g in df.groupby("item_id", sort=False)}

    ta, tb = tops(a), tops(b)
    return pd.Series(
        {i: len(s & tb.get(i, set())) / max(1, min(k, len(s))) for i, s in ta.items()}, dtype=float
    )


def compare(a: Path, b: Path) -> dict[str, Any]:
    from scipy.stats import spearmanr

    sa = pd.read_parquet(a / "saliency.parquet")
    sb = pd.read_parquet(b / "saliency.parquet")
    both = sa.merge(sb, on=["item_id", "concept"], how="outer", suffixes=("_a", "_b"), indicator=True)
    common = both[both["_merge"] == "both"]
    rel = (common["value_b"] - common["value_a"]).abs() / common["value_a"].abs()
    out: dict[str, Any] = {
        "rows_a": len(sa),
        "rows_b": len(sb),
        "rows_jaccard": len(common) / len(both),
        "value_rel_median": float(rel.median()),
        "value_rel_p99": float(rel.quantile(0.99)),
    }
    for k in (10, 50):
        ov = topk_overlap(sa, sb, k)
        out[f"top{k}_mean"], out[f"top{k}_min"] = float(ov.mean()), float(ov.min())

    ca = pd.read_parquet(a / "concepts.parquet")
    cb = pd.read_parquet(b / "concepts.parquet")
    m = ca.merge(cb, on=["scope", "concept"], suffixes=("_a", "_b"))
    scored = m["chi_model_a"].notna() & m["chi_model_b"].notna() & (m["support_a"] > 0) & (m["support_b"] > 0)
    # the concepts the method tests (a q-value in both runs: enough support for a call)
    tested = m["q_value_a"].notna() & m["q_value_b"].notna()
    for which, sel in (("", scored), ("_tested", tested)):
        ok = m[sel]
        for col in ("chi_model", "chi_bench"):
            out[f"rho_{col}{which}"] = float(spearmanr(ok[f"{col}_a"], ok[f"{col}_b"]).statistic)
            per = [
                float(spearmanr(g[f"{col}_a"], g[f"{col}_b"]).statistic)
                for _, g in ok.groupby("scope")
                if len(g) > 2
            ]
            out[f"rho_{col}{which}_min_scope"] = min(per)
        out[f"n_concepts{which}"] = len(ok)

    def calls(df: pd.DataFrame, gaps: tuple[str, ...]) -> set[tuple[str, int]]:
        sel = df[df["gap"].isin(gaps)]
        return set(zip(sel["scope"], sel["concept"], sel["gap"], strict=True))

    for name, gaps in (("gaps", ("weak",)), ("strengths", ("strong",)), ("calls", ("weak", "strong"))):
        x, y = calls(ca, gaps), calls(cb, gaps)
        out[f"jaccard_{name}"] = len(x & y) / max(1, len(x | y))
        out[f"n_{name}"] = (len(x), len(y))
    return out


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run with items and scores (only read)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/extract_dtypes"), help="where the two copies go")
    ap.add_argument("--keep", action="store_true", help="keep the copies (default: deleted at the end)")
    ap.add_argument(
        "--planted-scores",
        type=int,
        metavar="SEED",
        help="replace the scores by planted ones (planted_scores): for runs whose own give no calls",
    )
    args = ap.parse_args(argv)
    runs = {d: prepare(args.run, args.work / d, args.planted_scores) for d in ("float32", "bfloat16")}
    times = {d: extract_and_score(r, d) for d, r in runs.items()}
    res = compare(runs["float32"], runs["bfloat16"])
    for d, t in times.items():
        print(f"extract {d}: {t['wall_s']:.1f} s wall, {t['cpu_s']:.1f} CPU s, load average {t['load']:.1f}")
    for k, v in res.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    if not args.keep:
        shutil.rmtree(args.work)
    line = " ".join(
        [
            f"top10={res['top10_mean']:.3f}",
            f"top50={res['top50_mean']:.3f}",
            f"rho_chi_model={res['rho_chi_model']:.4f}",
            f"rho_chi_model_tested={res['rho_chi_model_tested']:.4f}",
            f"rho_chi_bench={res['rho_chi_bench']:.4f}",
            f"jaccard_gaps={res['jaccard_gaps']:.3f}",
            f"jaccard_strengths={res['jaccard_strengths']:.3f}",
            f"speedup={times['float32']['wall_s'] / times['bfloat16']['wall_s']:.2f}",
        ]
    )
    print(line)
    return line


if __name__ == "__main__":
    main(sys.argv[1:])
