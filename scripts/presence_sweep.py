"""Sweep the presence threshold tau on a scored, extracted run (docs/method.md §2).

For each tau: the share of concepts missing per benchmark and from the whole suite, the mean
number of present concepts per item, the gaps and strengths called on the run's own scores,
and the recall of planted gaps: on the run's saliency, scores are drawn afresh (accuracy 0.7,
0.1 on the items where one of 10 planted concepts with support 20-60 is present), and a planted
concept counts as found when it is called weak in the ALL scope. The paper's per-benchmark
missing shares are listed beside ours with the Spearman correlation.

Usage: ``python scripts/presence_sweep.py RUN_DIR [--taus 0,0.1,...] [--plants 5]``. Prints a
Markdown table; the last line is ``best_tau=... spread_pp=... spearman_paper=...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from cgaps.config import RunConfig
from cgaps.runtables import load_run
from cgaps.scoring.core import build_matrix, chi_tables, concept_table
from cgaps.scoring.stage import concept_scale

# Missing concepts per benchmark in the paper (%, Llama-3.1-8B with the Goodfire SAE)
PAPER_MISSING = {
    "agieval": 13.0,
    "logicbench": 20.0,
    "gsm8k": 25.3,
    "nq_open": 54.2,
    "bbq": 67.0,
    "socialiqa": 42.7,
    "winogrande": 42.2,
    "math": 12.3,
    "vectara": 6.4,
    "crows_pairs": 35.3,
}


def planted_recall(m, cfg: RunConfig, rng: np.random.Generator, n_plant: int = 10) -> tuple[int, int]:
    """(found, planted) over one draw of planted scores on this saliency matrix."""
    support = np.diff(m.saliency.tocsc().indptr)
    candidates = np.flatnonzero((support >= 20) & (support <= 60))
    if len(candidates) < n_plant:
        return 0, 0
    planted = rng.choice(candidates, size=n_plant, replace=False)
    hit = np.asarray(m.saliency[:, planted].sum(axis=1)).ravel() > 0
    y = (rng.random(len(m.scores)) < np.where(hit, 0.1, 0.7)).astype(np.float64)
    table = concept_table(m.with_scores(y), cfg)
    all_rows = table[table["scope"] == "ALL"].set_index("concept")
    return int((all_rows.loc[planted, "gap"] == "weak").sum()), n_plant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--taus", default="0,0.05,0.1,0.2,0.3,0.4,0.5")
    ap.add_argument("--plants", type=int, default=5, help="planted-score draws per tau")
    args = ap.parse_args()
    run = load_run(args.run_dir)
    base = run.config()
    scale, scale_source = concept_scale(run, base)
    benches = sorted(set(run.items["benchmark"]))
    rows = []
    for tau in [float(t) for t in args.taus.split(",")]:
        cfg = base.replace(presence=tau)
        m = build_matrix(run.items, run.saliency, run.n_concepts, presence=tau, scale=scale)
        t = chi_tables(m)
        table = concept_table(m, cfg, t)
        k = len(m.benchmarks)
        missing = {b: 100.0 * float((t.support[i] == 0).mean()) for i, b in enumerate(m.benchmarks)}
        rng = np.random.default_rng(0)
        found = planted = 0
        for _ in range(args.plants):
            f, p = planted_recall(m, cfg, rng)
            found, planted = found + f, planted + p
        shared = [b for b in benches if b in PAPER_MISSING]
        rho = (
            stats.spearmanr([missing[b] for b in shared], [PAPER_MISSING[b] for b in shared]).statistic
            if len(shared) >= 3
            else float("nan")
        )
        rows.append(
            {
                "tau": tau,
                "missing": missing,
                "suite_missing": 100.0 * float((t.support[k] == 0).mean()),
                "per_item": m.saliency.nnz / m.saliency.shape[0],
                "weak": int((table["gap"] == "weak").sum()),
                "strong": int((table["gap"] == "strong").sum()),
                "recall": found / planted if planted else float("nan"),
                "spread": max(missing.values()) - min(missing.values()),
                "rho": float(rho),
            }
        )
    print(f"run: {args.run_dir} ({len(run.items)} items; concept scale: {scale_source})\n")
    head = ["tau", *benches, "suite", "concepts/item", "gaps", "strengths", "planted recall", "ρ paper"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [
            f"{r['tau']:g}",
            *[f"{r['missing'][b]:.1f}" for b in benches],
            f"{r['suite_missing']:.1f}",
            f"{r['per_item']:.0f}",
            str(r["weak"]),
            str(r["strong"]),
            f"{r['recall']:.2f}",
            f"{r['rho']:.2f}",
        ]
        print("| " + " | ".join(cells) + " |")
    paper = " | ".join(f"{PAPER_MISSING.get(b, float('nan')):.1f}" for b in benches)
    print(f"| paper | {paper} | | | | | | |")
    best = max(rows, key=lambda r: (r["recall"] >= 0.8, r["spread"] >= 25, r["rho"]))
    print(f"best_tau={best['tau']:g} spread_pp={best['spread']:.1f} spearman_paper={best['rho']:.2f}")


if __name__ == "__main__":
    main()
