"""The per-benchmark table of `cgaps fill --verify` runs (issue 22), as Markdown.

    python scripts/fill_table.py RUN_DIR [--random-draws 20]
    python scripts/fill_table.py RUN_DIR --sweep 2,5,10,20 [--random-draws 20]

Reads every ``RUN_DIR/fill/*/fill.json`` written with ``--verify`` and prints, per benchmark, the
measured missing share before and after each arm, the reductions, the fill / random ratio and the
bound on that ratio: the largest reduction any selection from the pool could reach (the targets
the pool can cover at all) over random's. ``--random-draws`` adds the mean and spread of the random
arm's *predicted* reduction over that many seeds (the pool's own saliency; exact when the pool's
extraction is the benchmark's, as with a run used as its own pool). ``--sweep`` prints instead,
per benchmark of RUN_DIR and budget, the predicted fill / random ratio of the missing-share
reductions (random: the mean over ``--random-draws`` seeds), each benchmark filled from the run's
other benchmarks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def random_spread(run_dir: Path, summary: dict, draws: int) -> tuple[float, float]:
    """Mean and std over ``draws`` seeds of the random arm's predicted missing reduction."""
    from cgaps.fill import core
    from cgaps.pools.coverage import presence_matrix

    cfg, width, items, sal, scale = _setup(run_dir)
    b = summary["benchmark"]
    bench = items[items["benchmark"] == b].reset_index(drop=True)
    cov = core.coverage(bench, sal[sal["item_id"].isin(set(bench["item_id"]))], width, cfg, scale)
    pool = items[items["benchmark"] != b].reset_index(drop=True)
    pshat = presence_matrix(pool, sal[sal["item_id"].isin(set(pool["item_id"]))], width, cfg.presence, scale)
    before = core.shares(cov.support, cov.chi_bench, summary["under_threshold"])["missing"]
    got = []
    for seed in range(draws):
        rows = core.random_selection(len(pool), summary["budget"], seed)
        got.append(before - core.predicted(cov, pshat, rows, summary["under_threshold"])[2]["missing"])
    return float(np.mean(got)), float(np.std(got))


def _setup(run_dir: Path):
    import pandas as pd

    from cgaps import rundir
    from cgaps.config import config_from_run
    from cgaps.pools.coverage import fixed_scale

    meta = rundir.read_run_json(run_dir)
    cfg = config_from_run(meta, run_dir)
    width = rundir.n_concepts(meta, run_dir)
    items = rundir.read_items(run_dir)
    sal = rundir.read_saliency(run_dir, pd.Index(items["item_id"]), width)
    scale, _ = fixed_scale(meta, cfg, width, sal)
    return cfg, width, items, sal, scale


def sweep(run_dir: Path, budgets: list[int], draws: int) -> None:
    """Predicted fill / random ratios per benchmark and budget (module docstring)."""
    from cgaps.fill import core
    from cgaps.pools.coverage import presence_matrix

    cfg, width, items, sal, scale = _setup(run_dir)
    shat = presence_matrix(items, sal, width, cfg.presence, scale)
    present = np.asarray((shat > 0).sum(axis=0)).ravel() > 0
    print("| benchmark | " + " | ".join(f"budget {b}" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for name in dict.fromkeys(items["benchmark"]):
        mine = (items["benchmark"] == name).to_numpy()
        bench = items[mine].reset_index(drop=True)
        cov = core.coverage(bench, sal[sal["item_id"].isin(set(bench["item_id"]))], width, cfg, scale)
        pool = shat[np.flatnonzero(~mine)]
        cells = []
        for budget in budgets:
            tg = core.targets(cov, present, budget, cfg.under_pct)
            before = core.shares(cov.support, cov.chi_bench, tg.theta)["missing"]
            sel = core.greedy(pool[:, tg.missing], pool[:, tg.under], tg.deficit, budget)
            fill = before - core.predicted(cov, pool, sel.rows, tg.theta)[2]["missing"]
            rand = np.mean(
                [
                    before
                    - core.predicted(cov, pool, core.random_selection(pool.shape[0], budget, s), tg.theta)[2][
                        "missing"
                    ]
                    for s in range(max(draws, 1))
                ]
            )
            cells.append(f"{fill / rand:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--random-draws", type=int, default=0)
    parser.add_argument("--sweep", default="", help="comma-separated budgets")
    args = parser.parse_args()
    if args.sweep:
        sweep(args.run_dir, [int(b) for b in args.sweep.split(",")], args.random_draws)
        return
    head = "| benchmark | items | budget | missing before | + fill | + random | + group | fill − | random − | fill / random | bound |"
    if args.random_draws:
        head += f" random over {args.random_draws} seeds |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for path in sorted((args.run_dir / "fill").glob("*/fill.json")):
        s = json.loads(path.read_text())
        if "verify" not in s:
            continue
        before = s["verify"]["before"]["missing"]
        arms = s["arms"]
        red = {a: arms[a]["measured"]["missing_reduction"] for a in arms}
        reachable = s["targets"]["missing"] / s["n_concepts"]
        row = (
            f"| {s['benchmark']} | {s['benchmark_items']} | {s['budget']} | {100 * before:.1f} % | "
            + " | ".join(
                f"{100 * arms[a]['measured']['missing']:.1f} %" if a in arms else "–"
                for a in ("fill", "random", "group")
            )
            + f" | {100 * red['fill']:.1f} | {100 * red['random']:.1f} | {red['fill'] / red['random']:.2f} | "
            f"{reachable / red['random']:.2f} |"
        )
        if args.random_draws:
            mean, std = random_spread(args.run_dir, s, args.random_draws)
            row += f" {100 * mean:.1f} ± {100 * std:.1f} |"
        print(row)


if __name__ == "__main__":
    main()
