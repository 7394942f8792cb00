"""Planted topics on real text: does a weakness on whole metadata groups show up as gaps?

Two stages, each resumable from its output:

``prepare``  samples ``--per-group`` items of every group of one facet of a benchmark (MATH's
             ``category`` = subject or ``meta.level``, AGIEval's sub-tasks, BBQ's categories...),
             writes their prompts as a table and imports it as a user would
             (``cgaps import table``, no response, placeholder scores), with the group as the
             item's ``category``; then ``cgaps extract`` runs on it. The group is in the run
             only as metadata: scoring never reads it (unless ``--adjust-by category``).
``oracle``   what the same score test gives a hypothesis that fires on exactly the items of one
             planted group (or of both), on simulated draws of the same design: the information
             limit any concept or theme is measured against (no run needed).
``measure``  plants failure on whole groups of an extracted run (accuracy ``--low`` on
             ``--planted`` groups, ``--high`` elsewhere), scores with the run's config, and counts
             the gap concepts and themes and the share of the top 20 whose saliency mass points
             to a planted group (:func:`cgaps.validate.topics.planted_topics`), at
             ``--per-group`` 30 and 100 (subsamples of the prepared items).

Usage::

    python scripts/planted_power.py prepare math --facet category --per-group 100 --out RUNS/math_type
    python scripts/planted_power.py measure RUNS/math_type --sizes 30,100 --repeats 5
    python scripts/planted_power.py oracle --groups 5 --per-group 30

Needs ``CGAPS_BENCHMARKS`` or ``--data-dir`` (the benchmarks' original files). Figures:
docs/results.md, "Power at the sizes users have".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def cgaps(*args: str) -> None:
    exe = Path(sys.executable).with_name("cgaps")
    subprocess.run([str(exe), *args], check=True)


def group_of(items: pd.DataFrame, facet: str) -> pd.Series:
    """The group of each item on ``facet``: ``category`` or ``meta.FIELD``."""
    if facet == "category":
        return items["category"].astype(str)
    key = facet.removeprefix("meta.")
    return items["meta"].map(lambda raw: str(json.loads(raw or "{}").get(key, "")))


def prepare(args: argparse.Namespace) -> None:
    out = Path(args.out)
    data_dir = args.data_dir or os.environ.get("CGAPS_BENCHMARKS")
    if not data_dir:
        sys.exit("give --data-dir or set CGAPS_BENCHMARKS")
    source = out.with_name(out.name + "_source")
    if not (source / "items.parquet").exists():
        cgaps("items", args.benchmark, "--data-dir", data_dir, "--out", str(source))
    items = pd.read_parquet(source / "items.parquet")
    groups = group_of(items, args.facet)
    rng = np.random.default_rng(args.seed)
    picked = []
    for name in sorted(set(groups)):
        idx = np.flatnonzero((groups == name).to_numpy())
        if len(idx) < args.per_group or not name:
            print(f"skipping group {name!r}: {len(idx)} items", file=sys.stderr)
            continue
        picked.extend(sorted(rng.choice(idx, size=args.per_group, replace=False).tolist()))
    rows = items.iloc[picked]
    table = out.with_suffix(".jsonl")
    with table.open("w", encoding="utf-8") as fh:
        for (_, r), g in zip(rows.iterrows(), groups.iloc[picked], strict=True):
            fh.write(
                json.dumps(
                    {"id": r["item_id"], "question": r["prompt"], "subject": g, "output": "", "correct": 0}
                )
                + "\n"
            )
    if not (out / "items.parquet").exists():
        cgaps(
            "import",
            "table",
            str(table),
            "--map",
            f"item_id=id,prompt=question,response=output,score=correct,category=subject,benchmark='{args.benchmark}'",
            "--out",
            str(out),
        )
    cgaps("extract", str(out), "--span", "prompt")


def measure(args: argparse.Namespace) -> None:
    from cgaps.runtables import load_run
    from cgaps.scoring.core import build_matrix
    from cgaps.scoring.stage import concept_scale
    from cgaps.validate.topics import item_facet, planted_topics

    run = load_run(args.run)
    cfg = run.config()
    if args.theme_cut:
        cfg = cfg.replace(theme_cut=args.theme_cut)
    if args.presence is not None:
        cfg = cfg.replace(presence=args.presence)
    scale, _ = concept_scale(run, cfg)
    m = build_matrix(run.items, run.saliency, run.n_concepts, presence=cfg.presence, scale=scale)
    groups = item_facet(run.items, args.facet)
    if groups is None:
        sys.exit(f"{args.run}: the items have no facet {args.facet!r}")
    w_dec = None
    if args.decoder:  # the themes' similarity with the decoder cosine too (docs/results.md compares)
        from cgaps.sae import decoder_directions

        w_dec = decoder_directions(cfg.sae)[0]
    out = planted_topics(
        m,
        groups,
        cfg,
        np.random.default_rng([args.seed, 1]),
        sizes=tuple(int(s) for s in args.sizes.split(",")),
        repeats=args.repeats,
        planted=args.planted,
        low=args.low,
        high=args.high,
        w_dec=w_dec,
    )
    for res in out:
        print(json.dumps({k: v for k, v in res.items() if k != "draws"}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def _unit_p(y: np.ndarray, mask: np.ndarray) -> float:
    """Two-sided p of the score test for unit saliency on ``mask``, one benchmark, normal form."""
    from scipy.stats import norm

    mu = y.mean()
    z = (y[mask] - mu).sum() / np.sqrt(mask.sum() * mu * (1 - mu))
    return float(2 * norm.cdf(-abs(z)))


def oracle(args: argparse.Namespace) -> None:
    """The score test of method §3 (normal form, one benchmark) on a hypothesis of unit saliency
    on exactly the items of the best planted group, and of both planted groups, over simulated draws."""

    rng = np.random.default_rng(args.seed)
    code = np.repeat(np.arange(args.groups), args.per_group)
    one, both = [], []
    for _ in range(args.repeats):
        chosen = rng.choice(args.groups, size=args.planted, replace=False)
        y = (rng.random(len(code)) < np.where(np.isin(code, chosen), args.low, args.high)).astype(float)
        one.append(min(_unit_p(y, code == g) for g in chosen))
        both.append(_unit_p(y, np.isin(code, chosen)))
    print(
        json.dumps(
            {
                "groups": args.groups,
                "per_group": args.per_group,
                "draws": args.repeats,
                "best_group_p_median": float(np.median(one)),
                "best_group_p_90pct": float(np.quantile(one, 0.9)),
                "planted_groups_p_median": float(np.median(both)),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("benchmark")
    a.add_argument("--facet", default="category", help="category or meta.FIELD")
    a.add_argument("--per-group", type=int, default=100)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--data-dir")
    a.add_argument("--out", required=True)
    b = sub.add_parser("measure")
    b.add_argument("run")
    b.add_argument("--facet", default="category")
    b.add_argument("--sizes", default="30,100")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--planted", type=int, default=2)
    b.add_argument("--low", type=float, default=0.1)
    b.add_argument("--high", type=float, default=0.7)
    b.add_argument("--theme-cut", type=float)
    b.add_argument("--presence", type=float, help="score at this presence threshold instead of the run's")
    b.add_argument("--decoder", action="store_true", help="themes by co-activation and decoder cosine")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json")
    o = sub.add_parser("oracle")
    o.add_argument("--groups", type=int, default=5)
    o.add_argument("--per-group", type=int, default=30)
    o.add_argument("--repeats", type=int, default=2000)
    o.add_argument("--planted", type=int, default=2)
    o.add_argument("--low", type=float, default=0.1)
    o.add_argument("--high", type=float, default=0.7)
    o.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    {"prepare": prepare, "measure": measure, "oracle": oracle}[args.stage](args)


if __name__ == "__main__":
    main()
