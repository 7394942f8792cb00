"""Time the sparse scoring path against the plain reference (cgaps.scoring.reference).

    .venv/bin/python bench/scoring_vs_reference.py [--items 2000] [--concepts 16384] [--per-item 300]

Random suite: 4 benchmarks, each item firing on about ``per-item`` concepts (gamma values),
0/1 scores. Prints both times and their ratio, and checks the two tables agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from cgaps.config import RunConfig
from cgaps.scoring import compute_scores
from cgaps.scoring.reference import assert_same_tables, reference_scores


def make(n_items: int, n_concepts: int, per_item: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    bench = rng.choice(["gsm8k", "math", "bbq", "nq"], size=n_items, p=[0.4, 0.3, 0.2, 0.1])
    ids = np.array([f"i{k}" for k in range(n_items)])
    items = pd.DataFrame(
        {
            "item_id": ids,
            "benchmark": bench,
            "prompt": "p",
            "reference": "r",
            "response": "x",
            "score": (rng.random(n_items) < 0.6).astype(float),
        }
    )
    # Zipf-like concept popularity, as in real SAEs: a few concepts fire everywhere.
    pop = 1 / np.arange(1, n_concepts + 1) ** 0.8
    pop = rng.permutation(pop / pop.sum())
    rows, cols = [], []
    for k in range(n_items):
        c = np.unique(rng.choice(n_concepts, size=per_item, p=pop))
        rows.append(np.full(len(c), k))
        cols.append(c)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    sal = pd.DataFrame(
        {
            "item_id": ids[rows],
            "concept": cols.astype("int32"),
            "value": rng.gamma(2.0, 1.5, len(rows)).astype("float32") + np.float32(1e-3),
        }
    )
    return items, sal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--concepts", type=int, default=16384)
    ap.add_argument("--per-item", type=int, default=300)
    args = ap.parse_args()
    items, sal = make(args.items, args.concepts, args.per_item)
    print(f"{len(items)} items x {args.concepts} concepts, {len(sal)} saliency rows")
    cfg = RunConfig()
    t0 = time.perf_counter()
    fast, fast_overlap = compute_scores(items, sal, args.concepts, cfg)
    t1 = time.perf_counter()
    ref, ref_overlap = reference_scores(items, sal, args.concepts, cfg)
    t2 = time.perf_counter()
    assert_same_tables(fast, ref, ["scope", "concept"])
    assert_same_tables(fast_overlap, ref_overlap, ["a", "b"])
    print(
        f"compute_scores: {t1 - t0:.3f} s   reference: {t2 - t1:.2f} s   ratio: {(t2 - t1) / (t1 - t0):.0f}x (tables agree)"
    )


if __name__ == "__main__":
    main()
