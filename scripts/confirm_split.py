"""Do a run's gap calls replicate on items it has not seen? (issue 22), as one JSON of figures.

    python scripts/confirm_split.py RUN_DIR [--also RUN_DIR2 ...] --out DIR [--seed 0] [--null-draws 20]

``--also`` adds the items of other runs of the same model, reader and SAE (e.g. the probe suite
generated with another seed), leaving out repeated prompts and renaming repeated ids, so each
half is as large as one run. The items are split in two halves at random (seeded, within each ``category`` so both
halves hold every probe family alike). Half A becomes a run of its own (its items with their
responses and scores, its saliency rows, the run's extraction record), scored and labelled
with the stages' own commands; half B becomes the pool, its responses a responses file. Then
``cgaps confirm A --pool B --responses B.jsonl`` re-tests A's calls on B's items (every B item
where a call is present: ``--per-concept`` larger than B), with matched-support random
concepts as the chance level. Null draws: the same calls re-tested on B's items with the scores
permuted within benchmark (no score depends on a concept), as many times as ``--null-draws``;
the method promises that at most 1 draw in 20 confirms anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cgaps import rundir


def split(items: pd.DataFrame, seed: int) -> np.ndarray:
    """A boolean mask of half A: half of every category (rounded down), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    in_a = np.zeros(len(items), dtype=bool)
    groups = (
        items["category"].fillna("").astype(str)
        if "category" in items.columns
        else pd.Series([""] * len(items))
    )
    for _, idx in sorted(groups.groupby(groups).groups.items()):
        idx = np.asarray(idx)
        in_a[rng.permutation(idx)[: len(idx) // 2]] = True
    return in_a


def cgaps(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cgaps", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--also", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--null-draws", type=int, default=20)
    args = parser.parse_args()
    src: Path = args.run_dir
    a_dir, b_dir = args.out / "A", args.out / "B"
    items = rundir.read_items(src, scored=True)
    meta = rundir.read_run_json(src)
    width = rundir.n_concepts(meta, src)
    sal = rundir.read_saliency(src, pd.Index(items["item_id"]), width)
    for other in args.also:
        from cgaps.pools.coverage import distinct_ids, exclude_known

        more = rundir.read_items(other, scored=True)
        more_sal = rundir.read_saliency(other, pd.Index(more["item_id"]), width)
        if rundir.read_run_json(other)["sae"]["fingerprint"] != meta["sae"]["fingerprint"]:
            raise SystemExit(f"{other}: another SAE than {src}")
        kept, _ = exclude_known(more, items)
        renamed = distinct_ids(kept, items)
        new_id = dict(zip(kept["item_id"], renamed["item_id"], strict=True))
        more_sal = more_sal[more_sal["item_id"].isin(set(kept["item_id"]))]
        items = pd.concat([items, renamed], ignore_index=True)
        sal = pd.concat([sal, more_sal.assign(item_id=more_sal["item_id"].map(new_id))], ignore_index=True)
    in_a = split(items, args.seed)
    if not (a_dir / rundir.CONCEPTS).is_file():
        a_dir.mkdir(parents=True, exist_ok=True)
        a = items[in_a].reset_index(drop=True)
        rundir.write_table(a, a_dir / rundir.ITEMS)
        rundir.write_table(
            sal[sal["item_id"].isin(set(a["item_id"]))].reset_index(drop=True), a_dir / rundir.SALIENCY
        )
        record = {k: meta[k] for k in ("config", "model", "sae", "n_concepts") if k in meta}
        rundir.write_json({"schema_version": rundir.SCHEMA_VERSION, **record}, a_dir / rundir.RUN_JSON)
        span = meta["config"]["span"]
        columns = tuple(c for c in rundir.STAGE_INPUTS["extract"] if c != "response" or span != "prompt")
        rundir.update_run_json(
            a_dir,
            inputs={
                "evaluate": rundir.stage_record(a, "evaluate"),
                "extract": rundir.stage_record(a, "extract", columns),
            },
        )
        # the extraction's settings signature: what lets the pool's prompt extraction be recognised
        (a_dir / rundir.SALIENCY_SHARDS).mkdir(exist_ok=True)
        shutil.copy(
            src / rundir.SALIENCY_SHARDS / "manifest.json", a_dir / rundir.SALIENCY_SHARDS / "manifest.json"
        )
        cgaps("score", str(a_dir))
        cgaps("label", str(a_dir))
    b = items[~in_a].reset_index(drop=True)
    if not (b_dir / rundir.ITEMS).is_file():
        b_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_table(b.drop(columns=["response", "score"]), b_dir / rundir.ITEMS)
    responses = args.out / "B_responses.jsonl"
    responses.write_text(
        "".join(
            json.dumps({"item_id": i, "response": r}, ensure_ascii=False) + "\n"
            for i, r in zip(b["item_id"], b["response"], strict=True)
        )
    )
    t0 = time.perf_counter()
    cgaps("confirm", str(a_dir), "--pool", str(b_dir), "--responses", str(responses), "--per-concept", str(len(b)),
          "--seed", str(args.seed))  # fmt: skip
    confirm_s = time.perf_counter() - t0
    out = pd.read_parquet(a_dir / "confirmation.parquet")
    scoring_config = rundir.read_table_config(a_dir / "confirmation.parquet") or {}

    # null draws: A's calls re-tested on B's items with the scores permuted within benchmark
    from cgaps.config import config_from_run
    from cgaps.confirm.core import column_matrix, retest
    from cgaps.confirm.stage import run_scale
    from cgaps.runtables import load_run
    from cgaps.scoring.core import build_matrix
    from cgaps.validate.core import permuted_scores

    run_a = load_run(a_dir, results=True)
    cfg = config_from_run(run_a.meta, a_dir)
    fresh_dir = a_dir / "confirm"
    fresh = rundir.read_items(fresh_dir, scored=True)
    fsal = rundir.read_saliency(fresh_dir, pd.Index(fresh["item_id"]), width)
    m = build_matrix(fresh, fsal, width, presence=cfg.presence, scale=run_scale(run_a, cfg))
    called = out[(out["kind"] == "concept") & (out["role"] == "called")]
    cols, direction = called["id"].to_numpy(np.int64), called["call"].to_numpy(object)
    rng = np.random.default_rng([args.seed, 22])
    null = []
    for r in range(args.null_draws):
        y = permuted_scores(m, rng)
        res = retest(column_matrix(m.with_scores(y), cols), direction, cfg.replace(seed=cfg.seed + 1 + r))
        null.append(int(res["replicated"].sum()))
    fig = {
        "split_seed": args.seed,
        "items": {"A": int(in_a.sum()), "B": int((~in_a).sum()), "fresh": len(fresh)},
        "accuracy": {"A": float(items.loc[in_a, "score"].mean()), "B": float(b["score"].mean())},
        "rates": scoring_config.get("confirm", {}).get("rates"),
        "by_call": {
            call: {
                "calls": int((called["call"] == call).sum()),
                "tested": int(called.loc[called["call"] == call, "tested"].sum()),
                "replicated": int(called.loc[called["call"] == call, "replicated"].sum()),
            }
            for call in ("weak", "strong")
        },
        "null": {
            "draws": args.null_draws,
            "draws_confirming_anything": sum(1 for n in null if n),
            "confirmed_per_draw": null,
        },
        "confirm_s": round(confirm_s, 1),
    }
    text = json.dumps(fig, indent=1)
    (args.out / "confirm_split.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
