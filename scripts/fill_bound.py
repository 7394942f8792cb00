"""How far the best selection of a budget could go: an upper bound on ``cgaps fill``'s missing-share
reduction, by integer programming (issue 22; figures in docs/results.md).

    python scripts/fill_bound.py RUN_DIR BENCHMARK [BENCHMARK ...] [--budget 20] [--time-limit 90]

Each benchmark of RUN_DIR is filled from the run's other benchmarks, as ``scripts/fill_table.py
--sweep`` does. Maximum coverage of the missing targets (method §7; the under-represented term
left out: it moves the missing share by at most 0.1 point) is the integer program

    max Σ_c y_c   s.t.   y_c ≤ Σ_i C_ic x_i,   Σ_i x_i = budget,   x ∈ {0, 1},   0 ≤ y ≤ 1

(C: pool items × missing targets, 1 where the target is present), solved by HiGHS through
:func:`scipy.optimize.milp` within ``--time-limit`` seconds. Printed per benchmark: the targets
any pool item covers, what the greedy covers, what ``cgaps fill``'s selection (the greedy, then
exchanges) covers, the best selection HiGHS found,
its dual bound (no selection of the budget covers more), what the seeded random arm covers
(seed 0, as ``--verify`` draws it) and the mean of 20 seeds, and the ratios to random. A dual
bound under twice the random arm's coverage means that no selection can reduce the missing share
twice as much as random selection does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

sys.path.insert(0, str(Path(__file__).parent))
import fill_table  # noqa: E402  (the run's tables, read as fill_table.py reads them)

from cgaps.fill import core  # noqa: E402
from cgaps.pools.coverage import presence_matrix  # noqa: E402


def covered(cover: sp.csc_matrix, rows: list[int] | np.ndarray) -> int:
    return int((np.asarray(cover[rows].sum(axis=0)).ravel() > 0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("benchmarks", nargs="+")
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=90.0)
    args = parser.parse_args()
    cfg, width, items, sal, scale = fill_table._setup(args.run_dir)
    shat = presence_matrix(items, sal, width, cfg.presence, scale)
    present = np.asarray((shat > 0).sum(axis=0)).ravel() > 0
    print(
        "| benchmark | reachable | greedy | fill (greedy + exchanges) | best found | dual bound "
        "| random (seed 0) | random (20 seeds) | fill / random | bound / random |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.benchmarks:
        mine = (items["benchmark"] == name).to_numpy()
        if not mine.any():
            sys.exit(f"{args.run_dir}: no benchmark {name!r}")
        bench = items[mine].reset_index(drop=True)
        cov = core.coverage(bench, sal[sal["item_id"].isin(set(bench["item_id"]))], width, cfg, scale)
        pool = shat[np.flatnonzero(~mine)]
        tg = core.targets(cov, present, args.budget, cfg.under_pct)
        cover = (sp.csr_matrix(pool[:, tg.missing]) > 0).astype(np.float64).tocsc()
        cover = cover[:, np.asarray(cover.sum(axis=0)).ravel() > 0]  # targets some pool item covers
        n, m = cover.shape
        arms = (pool[:, tg.missing], pool[:, tg.under], tg.deficit, args.budget)
        greedy = covered(cover, core.greedy(*arms).rows)
        fill = covered(cover, core.select(*arms).rows)  # the fill arm: the greedy, then exchanges
        t0 = time.perf_counter()
        res = milp(
            np.concatenate([np.zeros(n), -np.ones(m)]),
            constraints=[
                LinearConstraint(sp.hstack([-cover.T, sp.eye(m)]).tocsr(), -np.inf, 0),
                LinearConstraint(
                    sp.hstack([sp.csr_matrix(np.ones((1, n))), sp.csr_matrix((1, m))]),
                    args.budget,
                    args.budget,
                ),
            ],
            integrality=np.concatenate([np.ones(n), np.zeros(m)]),
            bounds=Bounds(0, 1),
            options={"time_limit": args.time_limit},
        )
        if res.x is None:
            sys.exit(f"{name}: HiGHS found no selection in {args.time_limit:.0f} s ({res.message})")
        best = covered(cover, np.flatnonzero(res.x[:n] > 0.5))
        bound = -res.mip_dual_bound if getattr(res, "mip_dual_bound", None) is not None else float(best)
        rand0 = covered(cover, core.random_selection(n, args.budget, 0))
        rand20 = np.mean([covered(cover, core.random_selection(n, args.budget, s)) for s in range(20)])
        print(
            f"| {name} | {m} | {greedy} | {fill} | {best} | {bound:.0f} | {rand0} | {rand20:.0f} | "
            f"{fill / rand0:.2f} | **{bound / rand0:.2f}** |",
            flush=True,
        )
        print(f"  ({name}: HiGHS {time.perf_counter() - t0:.0f} s, {res.message})", file=sys.stderr)


if __name__ == "__main__":
    main()
