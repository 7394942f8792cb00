"""Write a planted-topic test table: groups of one benchmark, some made to fail, groups withheld.

    python scripts/planted_topics.py math --data-dir /work/shared/benchmarks \\
        --planted geometry,counting_and_probability --per-group 100 --out DIR

Writes ``DIR/items.jsonl`` (``id``, ``prompt``, ``response``, ``score``: no group, no
category, no metadata) and ``DIR/groups.csv`` (``item_id``, ``group``, ``planted``), then
prints the commands that make and label the run:

    cgaps import table DIR/items.jsonl --map item_id=id,prompt=prompt,response=response,score=score \\
        --out RUN && cgaps extract RUN && cgaps score RUN && cgaps label RUN
    python scripts/label_quality.py RUN --groups DIR/groups.csv

``--per-group`` items are drawn from every group (category) of the benchmark (seeded); an
item's score is 1 with probability ``--fail-rate``'s complement in a planted group
(default: 0.2 correct) and ``--pass-rate`` elsewhere (0.7): 0/1 scores whose only pattern is
the group. The response is empty, so the reader reads the prompt alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cgaps.items import load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--planted", required=True, help="comma-separated groups (categories) made to fail")
    parser.add_argument("--per-group", type=int, default=100)
    parser.add_argument("--groups", help="comma-separated groups to use (default: all)")
    parser.add_argument("--planted-rate", type=float, default=0.2, help="P(correct) in a planted group")
    parser.add_argument("--pass-rate", type=float, default=0.7, help="P(correct) elsewhere")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    items = load_suite(args.benchmark, args.data_dir)
    planted = set(args.planted.split(","))
    groups = sorted(items["category"].dropna().unique()) if not args.groups else args.groups.split(",")
    missing = planted - set(groups)
    if missing:
        raise SystemExit(f"--planted names no group of {args.benchmark}: {sorted(missing)}; groups: {groups}")
    rng = np.random.default_rng(args.seed)
    rows, group_rows = [], []
    for g in groups:
        pool = items[items["category"] == g]
        take = pool.iloc[np.sort(rng.choice(len(pool), size=min(args.per_group, len(pool)), replace=False))]
        rate = args.planted_rate if g in planted else args.pass_rate
        for item in take.to_dict("records"):
            score = float(rng.random() < rate)
            rows.append({"id": item["item_id"], "prompt": item["prompt"], "response": "", "score": score})
            group_rows.append({"item_id": item["item_id"], "group": g, "planted": int(g in planted)})
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "items.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    pd.DataFrame(group_rows).to_csv(args.out / "groups.csv", index=False)
    print(f"wrote {len(rows)} items of {len(groups)} groups ({sorted(planted)} planted) to {args.out}")


if __name__ == "__main__":
    main()
