"""`cgaps demo` end to end, warm, N times, against another commit's code in the same script run.

    PYTHONPATH=src .venv/bin/python bench/demo.py [--runs 3] [--baseline REF] [--out /tmp/demo_bench]

Each run is a child process ``python -m cgaps demo --out DIR`` on a fresh directory (the model
cache is warm: the first run's conversion, if any, is not timed apart, so run it once before).
With ``--baseline REF`` (a commit, branch or tag of this repository) the files of ``src/`` at
REF are extracted to a temporary folder (``git archive``) and the same command runs with them
first on the path, alternating with this checkout run by run (A B, B A, ...), so a burst of load
from another process slows both alike. Printed per run: the wall time of each stage (the
pipeline's own ``timings`` in run.json), ``startup`` (the rest of the wall clock: interpreter,
imports, the summary), the total wall and CPU seconds (user + sys of the child) and the load
average before and after. Then the median per stage for each code, and whether the two codes'
tables are byte-identical (each table file of the last run of each: ``items``, ``saliency``,
``contexts``, ``concepts``, ``overlap``, ``labels``, ``themes``; the report page embeds timings,
so it is not compared).

Last line: ``demo_s=`` (median wall, this checkout) ``cpu_s=`` ``load=`` and with a baseline
``baseline_s= ratio_vs_baseline=`` (baseline median wall / this one's) ``identical=`` (1 when
every table is byte-identical).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

REPO = _common.HERE.parent
TABLES = (
    "items.parquet",
    "saliency.parquet",
    "contexts.parquet",
    "concepts.parquet",
    "overlap.parquet",
    "labels.parquet",
    "themes.parquet",
)
STAGES = ("items", "evaluate", "extract", "score", "label", "report")


def one_run(src: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """One ``cgaps demo`` in a child process with ``src`` first on the path: seconds per stage."""
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "PYTHONPATH": str(src), "CGAPS_NO_PROGRESS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cgaps", "demo", "--out", str(out), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"cgaps demo with {src} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    timings = json.loads((out / "run.json").read_text()).get("timings", {})
    row = {s: float(timings.get(f"pipeline_{s}_s", 0.0)) for s in STAGES}
    row["startup"] = wall - sum(row.values())
    row["total"] = wall
    row["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row["load_before"], row["load_after"] = load0, os.getloadavg()[0]
    return row


def differing_tables(a: Path, b: Path) -> list[str]:
    """The table files that are not byte-identical between runs ``a`` and ``b`` (or in one only)."""
    out = []
    for name in TABLES:
        fa, fb = a / name, b / name
        if fa.exists() != fb.exists() or (fa.exists() and fa.read_bytes() != fb.read_bytes()):
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each code")
    ap.add_argument("--baseline", metavar="REF", help="a commit to compare with (its src/, via git archive)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "demo_bench")
    ap.add_argument("--data-dir", help="cgaps demo --data-dir (a paper10 demo instead of the probes)")
    args = ap.parse_args(argv)
    extra = ["--data-dir", args.data_dir] if args.data_dir else []
    args.out.mkdir(parents=True, exist_ok=True)
    codes = {"this": REPO / "src"}
    if args.baseline:
        codes["baseline"] = _common.source_at(args.baseline, args.out / "baseline_src")
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in codes}
    cols = [*STAGES, "startup", "total", "cpu"]
    print("code      run " + " ".join(f"{c:>8}" for c in cols) + "   load before -> after")
    for r in range(args.runs):
        order = list(codes) if r % 2 == 0 else list(reversed(codes))
        for name in order:
            row = one_run(codes[name], args.out / f"{name}-{r}", extra)
            rows[name].append(row)
            print(
                f"{name:<9} {r:>3} "
                + " ".join(f"{row[c]:8.1f}" for c in cols)
                + f"   {row['load_before']:.1f} -> {row['load_after']:.1f}",
                flush=True,
            )
    med = {name: {c: statistics.median(x[c] for x in rs) for c in cols} for name, rs in rows.items()}
    for name, m in med.items():
        print(f"{name:<9} med " + " ".join(f"{m[c]:8.1f}" for c in cols))
    loads = [x[k] for rs in rows.values() for x in rs for k in ("load_before", "load_after")]
    figures = {"demo_s": med["this"]["total"], "cpu_s": med["this"]["cpu"], "load": statistics.median(loads)}
    if "baseline" in codes:
        diff = differing_tables(args.out / f"this-{args.runs - 1}", args.out / f"baseline-{args.runs - 1}")
        print(
            "tables byte-identical to the baseline's"
            if not diff
            else f"tables that differ: {', '.join(diff)}"
        )
        figures |= {
            "baseline_s": med["baseline"]["total"],
            "ratio_vs_baseline": med["baseline"]["total"] / med["this"]["total"],
            "identical": float(not diff),
        }
    line = _common.last_line(**figures)
    print(line)
    return line


if __name__ == "__main__":
    main(sys.argv[1:])
