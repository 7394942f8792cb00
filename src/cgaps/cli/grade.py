"""``cgaps grade``: grade the responses of a run (its own, or another system's JSONL) into `score`."""

from __future__ import annotations

from typing import Annotated

import typer


def grade(
    run_dir: Annotated[str, typer.Argument(help="Run directory with items.parquet.")],
    responses: Annotated[
        str | None,
        typer.Option(
            "--responses", help="JSONL of {item_id, response} from another system, merged into items.parquet."
        ),
    ] = None,
) -> None:
    """Grade every item's response and write the `score` column of items.parquet."""
    from cgaps.evaluate.stage import grade_run

    grade_run(run_dir, responses)
