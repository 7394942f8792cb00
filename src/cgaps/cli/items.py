"""``cgaps items``: build a run directory's items table from a suite."""

from __future__ import annotations

from typing import Annotated

import typer


def items(
    suite: Annotated[
        str,
        typer.Argument(
            help="Suite (probes, paper10), comma-separated benchmark names, or a spec file (.yaml/.yml/.json)."
        ),
    ],
    out: Annotated[
        str, typer.Option("--out", help="Run directory to write items.parquet and run.json into.")
    ],
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir", help="Folder with the benchmarks' original files (else they are read from the hub)."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", help="At most this many items per benchmark (seeded sample, kept in source order)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for the --limit sample and the probe generator.")
    ] = 0,
    chain_of_thought: Annotated[
        bool,
        typer.Option(
            "--chain-of-thought/--no-chain-of-thought",
            help="Ask for step-by-step reasoning on GSM8K and MATH.",
        ),
    ] = False,
) -> None:
    """Load a suite and write RUN_DIR/items.parquet (prompts, references, answer types)."""
    from pathlib import Path

    from cgaps import rundir
    from cgaps.console import info
    from cgaps.items import load_suite

    info(f"loading {suite} ...")
    df = load_suite(suite, data_dir=data_dir, limit=limit, seed=seed, chain_of_thought=chain_of_thought)
    rundir.write_table(df, Path(out) / rundir.ITEMS)
    counts = {str(k): int(v) for k, v in df.groupby("benchmark", sort=False).size().items()}
    rundir.update_run_json(
        out,
        config={
            "suite": suite,
            "data_dir": data_dir,
            "limit": limit,
            "seed": seed,
            "chain_of_thought": chain_of_thought,
        },
        counts={"items": counts},
    )
    info(
        f"wrote {len(df)} items ({', '.join(f'{k} {v}' for k, v in counts.items())}) to {Path(out) / rundir.ITEMS}"
    )
