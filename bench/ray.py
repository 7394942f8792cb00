"""Ray scale-out: ``cgaps run`` in one process against ``cgaps run --ray --ray-workers N``.

    .venv/bin/python bench/ray.py [--limit 96] [--max-new-tokens 48] [--workers 2]   # root: `unshare -n`, `ip`

Both runs are the same config (embedded SmolLM2 and its SAE, the probe suite at ``--limit`` items,
``--max-new-tokens``, CPU, transformers in float32), each in its own process, on a fresh run directory. The Ray run
starts a local cluster inside a network namespace with only loopback (``unshare -n``; Ray probes
public addresses on start-up), RAY_USAGE_STATS_ENABLED=0. Times are the pipeline's own per-stage
wall times (run.json ``timings``), so the Ray figures include starting the cluster and each
worker loading the model. The tables are compared too: the workers compute with one thread each,
the single process with torch's default threads, so on a CPU the floats may differ in their last
bits, and a greedy answer can then change (``--one-threads 1`` gives the one process the workers'
single thread; ``tests/scaleout/test_scaleout.py`` checks identity at equal thread counts). The figures
line says how many responses and saliency rows differ.

Last line: ``one_evaluate_s= ray_evaluate_s= one_extract_s= ray_extract_s= identical=``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
CGAPS = str(Path(sys.executable).with_name("cgaps"))


def compare(one: Path, ray: Path) -> tuple[dict[str, bool], dict[str, int], int]:
    """Which tables of the two runs are identical, how many responses and saliency rows differ,
    and the number of items; each table is read once."""
    names = ("items.parquet", "option_logliks.parquet", "saliency.parquet", "concepts.parquet")
    tables = {
        name: (pd.read_parquet(one / name), pd.read_parquet(ray / name))
        for name in names
        if (one / name).exists()
    }
    same = {}
    for name, (a, b) in tables.items():
        try:
            pd.testing.assert_frame_equal(b, a, check_exact=True)
            same[name] = True
        except AssertionError:
            same[name] = False
    a, b = tables["items.parquet"]
    differ = {"responses": int((a["response"] != b["response"]).sum())}
    a, b = tables["saliency.parquet"]
    both = a.merge(b, on=["item_id", "concept"], how="outer", suffixes=("_one", "_ray"), indicator=True)
    differ["saliency_rows_only_one_side"] = int((both["_merge"] != "both").sum())
    differ["saliency_values_differ"] = int((both["value_one"] != both["value_ray"]).sum())
    return same, differ, len(tables["items.parquet"][0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=96, help="probe items (extraction: 128 per chunk)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--one-threads", type=int, help="torch threads of the one process (default: torch's)")
    ap.add_argument("--keep", type=Path, help="keep both run directories here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        config = root / "cfg.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "suite": "probes",
                    "limit": args.limit,
                    "max_new_tokens": args.max_new_tokens,
                    "device": "cpu",
                    # pinned: `auto` probes the machine, and both runs must compute the same way
                    "backend": "transformers",
                    "dtype": "float32",
                }
            )
        )
        env = {**os.environ, "CGAPS_NO_PROGRESS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        one_env = env | ({"OMP_NUM_THREADS": str(args.one_threads)} if args.one_threads else {})
        t = time.perf_counter()
        subprocess.run([CGAPS, "run", str(config), "--out", str(root / "one")], env=one_env, check=True)
        one_wall = time.perf_counter() - t
        ray_cmd = f"{CGAPS} run {config} --out {root / 'ray'} --ray --ray-workers {args.workers}"
        t = time.perf_counter()
        subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && {ray_cmd}"], env=env, check=True)
        ray_wall = time.perf_counter() - t
        one = json.loads((root / "one" / "run.json").read_text())
        ray = json.loads((root / "ray" / "run.json").read_text())
        same, differ, n_items = compare(root / "one", root / "ray")
    print(json.dumps({"items": n_items, "one": one["timings"], "ray": ray["timings"], "identical": same}))
    print(json.dumps({"differ": differ}))
    print(f"wall: one {one_wall:.1f} s, ray {ray_wall:.1f} s (process start to exit)")
    print(
        f"one_evaluate_s={one['timings']['pipeline_evaluate_s']} ray_evaluate_s={ray['timings']['pipeline_evaluate_s']} "
        f"one_extract_s={one['timings']['pipeline_extract_s']} ray_extract_s={ray['timings']['pipeline_extract_s']} "
        f"identical={all(same.values())}"
    )


if __name__ == "__main__":
    main()
