"""Scoring at the paper's scale: ``cgaps score`` and ``cgaps robustness`` on a synthetic run.

    .venv/bin/python bench/score.py --items 100000 --concepts 65536 --subsamples 100
    .venv/bin/python bench/score.py --table          # how time and memory grow (docs/scaling.md)

The run directory (``--work``, reused when it exists) holds ``items.parquet`` (ten benchmarks
of unequal size, 0/1 scores at a per-benchmark accuracy) and ``saliency.parquet`` with a
heavy-tailed number of firing concepts per item (log-uniform between 100 and 2,000, mean ~630),
concepts drawn from a Zipf-like popularity (a few fire everywhere, most rarely, as in real
SAEs) and gamma-distributed values on a log-normal per-concept scale.

The stages run in a fresh child process (so its peak memory is the stages' own, not the
generator's): :func:`cgaps.scoring.stage.score_run` (read, validate, χ tables, Monte Carlo
p-values, write) and :func:`cgaps.robustness.core.robustness_run` with R subsampling repeats
(plus its two ablation recomputations). Last line ``seconds=S cpu_s=C peak_gb=G`` (S: both
stages, wall clock; C: the child's CPU seconds, the steadier figure on a shared machine; G: the
child's peak resident memory). ``--repeats N`` runs the child N times and reports the medians.
Every line also gives the 1-minute load average when the child ended: on a shared machine the
wall clock is the code's time only when the load is below the number of cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (sets OMP_WAIT_POLICY)
import numpy as np

from cgaps.items import PAPER10 as BENCHMARKS  # the synthetic run's ten benchmarks are the paper's


def make_run(run_dir: Path, n_items: int, n_concepts: int, seed: int = 0) -> int:
    """Write the synthetic run; return its number of saliency rows."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    share = rng.dirichlet(np.full(len(BENCHMARKS), 3.0))
    bench = rng.choice(len(BENCHMARKS), size=n_items, p=share)
    accuracy = rng.uniform(0.2, 0.9, len(BENCHMARKS))
    ids = np.array([f"i{k:07d}" for k in range(n_items)], dtype=object)
    items = pd.DataFrame(
        {
            "item_id": ids,
            "benchmark": np.array(BENCHMARKS, dtype=object)[bench],
            "prompt": "p",
            "reference": "r",
            "response": "x",
            "score": (rng.random(n_items) < accuracy[bench]).astype(float),
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    items.to_parquet(run_dir / "items.parquet", index=False)
    per_item = np.exp(rng.uniform(np.log(100), np.log(2000), n_items)).astype(np.int64)
    pop = 1 / np.arange(1, n_concepts + 1) ** 0.8
    cdf = np.cumsum(rng.permutation(pop / pop.sum()))
    rows, cols = [], []
    for start in range(0, n_items, 10_000):  # in blocks: a few hundred MB at a time
        n = per_item[start : start + 10_000]
        r = np.repeat(np.arange(start, start + len(n)), n)
        c = np.minimum(np.searchsorted(cdf, rng.random(len(r))), n_concepts - 1)
        key = np.unique(r * n_concepts + c)  # one row per (item, concept)
        rows.append((key // n_concepts).astype(np.int32))
        cols.append((key % n_concepts).astype(np.int32))
    row, col = np.concatenate(rows), np.concatenate(cols)
    del rows, cols
    concept_scale = rng.lognormal(0.0, 0.5, n_concepts).astype(np.float32)
    value = (rng.gamma(2.0, 1.0, len(row)).astype(np.float32) + np.float32(1e-3)) * concept_scale[col]
    # item_id dictionary-encoded, as pyarrow writes a repeated string column anyway
    table = pa.table(
        {
            "item_id": pa.DictionaryArray.from_arrays(pa.array(row), pa.array(ids.astype(str))),
            "concept": pa.array(col),
            "value": pa.array(value),
        }
    )
    pq.write_table(table, run_dir / "saliency.parquet")
    (run_dir / "run.json").write_text(json.dumps({"n_concepts": n_concepts, "config": {}}))
    return len(row)


def child(run_dir: Path, subsamples: int, presence: float | None) -> None:
    from cgaps.config import RunConfig
    from cgaps.robustness.core import RobustnessConfig, robustness_run
    from cgaps.scoring.stage import score_run

    cfg = RunConfig() if presence is None else RunConfig(presence=presence)
    t0 = time.perf_counter()
    concepts, _ = score_run(run_dir, cfg)
    t1 = time.perf_counter()
    robustness_run(run_dir, cfg, RobustnessConfig(repeats=subsamples))
    t2 = time.perf_counter()
    meta = json.loads((run_dir / "run.json").read_text())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 2**20  # KiB -> GiB
    print(
        json.dumps(
            {
                "score_s": t1 - t0,
                "robustness_s": t2 - t1,
                "timings": meta.get("timings", {}),
                "peak_gb": peak,
                # CPU seconds: on a machine shared with other jobs, wall time measures the others too
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "gaps": int((concepts["gap"] != "").sum()),
            }
        )
    )


def run_once(args: argparse.Namespace, n_items: int, n_concepts: int) -> dict[str, float]:
    """The child ``args.repeats`` times on the synthetic run of that size: the medians."""
    runs = [_child_run(args, n_items, n_concepts) for _ in range(args.repeats)]
    if len(runs) == 1:
        return runs[0]
    med = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "cpu_s", "peak_gb", "load")}
    print(
        f"median of {len(runs)}: wall {med['seconds']:.1f} s, CPU {med['cpu_s']:.1f} s, peak {med['peak_gb']:.2f} GB, "
        f"load {med['load']:.1f}"
    )
    return {**runs[-1], **med}


def _child_run(args: argparse.Namespace, n_items: int, n_concepts: int) -> dict[str, float]:
    import pyarrow.parquet as pq

    work = Path(args.work) / f"score-{n_items}x{n_concepts}"
    if not (work / "run.json").exists():
        t0 = time.perf_counter()
        nnz = make_run(work, n_items, n_concepts)
        print(
            f"wrote {work}: {n_items} items x {n_concepts} concepts, {nnz:,} saliency rows ({time.perf_counter() - t0:.0f} s)"
        )
    cmd = [sys.executable, __file__, "--child", str(work), "--subsamples", str(args.subsamples)]
    if args.presence is not None:
        cmd += ["--presence", str(args.presence)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["seconds"] = wall
    res["load"] = os.getloadavg()[0]
    res["rows"] = pq.ParquetFile(work / "saliency.parquet").metadata.num_rows
    print(
        f"{n_items} items x {n_concepts} concepts, {args.subsamples} subsamples: score {res['score_s']:.1f} s "
        f"(read {res['timings'].get('score_read_s')} s, compute {res['timings'].get('score_compute_s')} s), "
        f"robustness {res['robustness_s']:.1f} s, child wall {wall:.1f} s, CPU {res['cpu_s']:.1f} s, "
        f"peak {res['peak_gb']:.2f} GB, load {res['load']:.1f}",
        flush=True,
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--concepts", type=int, default=65_536)
    ap.add_argument("--subsamples", type=int, default=100)
    ap.add_argument("--presence", type=float, default=None, help="override the default presence threshold")
    ap.add_argument(
        "--work", default="/tmp/cgaps-bench", help="where the synthetic runs are written (reused)"
    )
    ap.add_argument("--repeats", type=int, default=1, help="run the child this many times: medians")
    ap.add_argument("--table", action="store_true", help="a small grid of sizes: how time and memory grow")
    ap.add_argument(
        "--grid",
        default="10000x16384,10000x65536,30000x16384,30000x65536,100000x16384,100000x65536",
        help="with --table: ITEMSxCONCEPTS,...",
    )
    ap.add_argument("--child", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child), args.subsamples, args.presence)
        return
    if args.table:
        header = (
            "| items | concepts | saliency rows | wall s | CPU s | peak GB | load |\n"
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
        rows = []
        for size in args.grid.split(","):
            n, f = (int(x) for x in size.lower().split("x"))
            res = run_once(args, n, f)
            rows.append(
                f"| {n:,} | {f:,} | {res['rows'] / 1e6:.1f} M | {res['seconds']:.1f} | {res['cpu_s']:.1f} | "
                f"{res['peak_gb']:.2f} | {res['load']:.1f} |"
            )
        print("\n".join([header, *rows]))
        return
    res = run_once(args, args.items, args.concepts)
    print(_common.last_line(seconds=res["seconds"], cpu_s=res["cpu_s"], peak_gb=res["peak_gb"]))


if __name__ == "__main__":
    main()
