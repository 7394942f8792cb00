"""``cgaps grade``: score the responses of a run (its own, or another system's JSONL)."""

from __future__ import annotations

from typing import Annotated

import typer


def read_responses(path: str, known_ids: set[str]) -> dict[str, str]:
    """``{item_id: response}`` from JSONL lines ``{"item_id": ..., "response": ...}``; errors name file and line."""
    from pathlib import Path

    from cgaps.errors import CGapsError, did_you_mean
    from cgaps.items.sources import read_jsonl

    if not Path(path).is_file():
        raise CGapsError(f'{path}: no such file; give a JSONL of {{"item_id": ..., "response": ...}} lines')
    out: dict[str, str] = {}
    for record in read_jsonl(Path(path)):
        row, where = record.row, record.where
        for field in ("item_id", "response"):
            if row.get(field) is None:
                raise CGapsError(
                    f'{where}: missing field {field!r}; each line is {{"item_id": ..., "response": ...}}'
                )
        item_id = str(row["item_id"])
        if item_id not in known_ids:
            raise CGapsError(
                f"{where}: field 'item_id' {item_id!r} is not in the run's items.parquet."
                f"{did_you_mean(item_id, known_ids)}"
            )
        if item_id in out:
            raise CGapsError(f"{where}: item_id {item_id!r} appears twice; keep one response per item")
        out[item_id] = str(row["response"])
    return out


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
    from pathlib import Path

    from cgaps import rundir
    from cgaps.console import info
    from cgaps.errors import CGapsError
    from cgaps.evaluate.grade import grade_items

    path = Path(run_dir) / rundir.ITEMS
    # Validate ourselves from the raw table: validate_items turns a missing response into "",
    # and "no response" must stay distinguishable from "responded with nothing".
    raw = rundir.read_table(path, "create it with `cgaps items SUITE --out RUN_DIR`")
    df = rundir.validate_items(raw, path)
    if responses is not None:
        given = read_responses(responses, set(df["item_id"]))
        missing = [i for i in df["item_id"] if i not in given]
        if missing:
            raise CGapsError(
                f"{responses}: no response for {len(missing)} item(s), e.g. {missing[0]!r}; "
                "give one line per item of the run (or rebuild the run with --limit)"
            )
        df["response"] = df["item_id"].map(given)
    elif "response" not in raw.columns or raw["response"].isna().all():
        raise CGapsError(
            f"{path}: no 'response' column; run `cgaps evaluate {run_dir}` or pass --responses FILE.jsonl"
        )
    else:
        empty = raw["response"].isna().to_numpy()
        if empty.any():
            raise CGapsError(
                f"{path}: item {df.loc[empty, 'item_id'].iloc[0]!r} has no response "
                f"({int(empty.sum())} in all); finish `cgaps evaluate` or pass --responses"
            )
    from cgaps.console import progress_bar

    with progress_bar("grading", total=len(df)) as advance:
        df["score"] = grade_items(df, progress=advance)
    rundir.write_table(df, path)
    means = df.groupby("benchmark", sort=False)["score"].mean()
    rundir.update_run_json(
        run_dir,
        counts={"graded": {str(k): int(v) for k, v in df.groupby("benchmark", sort=False).size().items()}},
    )
    info("mean score: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
