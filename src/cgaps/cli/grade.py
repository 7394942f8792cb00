"""``cgaps grade``: grade the responses of a run (its own, or another system's JSONL) into `score`."""

from __future__ import annotations

from pathlib import Path

import typer

from cgaps.cli._common import RunDirArg


def grade(
    run_dir: Path = RunDirArg,
    responses: Path | None = typer.Option(
        None,
        "--responses",
        help="JSONL of {item_id, response} from another system, merged into items.parquet.",
        dir_okay=False,
    ),
) -> None:
    """Grade every item's response and write the `score` column of items.parquet.

    Examples:

        cgaps grade runs/p

        cgaps grade runs/p --responses other_model.jsonl
    """
    from cgaps.evaluate.stage import grade_run

    grade_run(run_dir, responses)
