"""Score sources for responses that are already written: grade them, generate nothing.

Two :class:`cgaps.seams.ScoreSource` s of ``cgaps grade``:

* :class:`ResponsesFile`: another system's responses, a JSONL file of
  ``{"item_id": ..., "response": ...}`` lines, one per item of the run (``--responses``);
* :class:`RecordedResponses`: the ``response`` column already in ``items.parquet`` (graded
  again, e.g. after a grader changed).

Both grade with :func:`cgaps.evaluate.grade.grade_items`. Importers of harness logs
(lm-eval, inspect) are further sources of the same kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cgaps import rundir
from cgaps.errors import CGapsError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd


def read_responses(path: str | Path, known_ids: set[str]) -> dict[str, str]:
    """``{item_id: response}`` from JSONL lines ``{"item_id": ..., "response": ...}``; errors name file and line."""
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
        if isinstance(row["response"], dict | list | bool):  # str() would grade "{'text': 1}"
            raise CGapsError(
                f"{where}: field 'response' must be a string, got {type(row['response']).__name__}"
            )
        out[item_id] = str(row["response"])
    return out


def _graded(items: pd.DataFrame) -> pd.DataFrame:
    from cgaps.console import progress_bar
    from cgaps.evaluate.grade import grade_items

    with progress_bar("grading", total=len(items)) as advance:
        scores = grade_items(items, progress=advance)
    out = items[["item_id", "response"]].copy()
    out["score"] = scores
    return out


class ResponsesFile:
    """:class:`cgaps.seams.ScoreSource`: the responses of a JSONL file, graded."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(path)

    def score(self, items: pd.DataFrame) -> pd.DataFrame:
        given = read_responses(self.path, set(items["item_id"]))
        missing = [i for i in items["item_id"] if i not in given]
        if missing:
            raise CGapsError(
                f"{self.name}: no response for {len(missing)} item(s), e.g. {missing[0]!r}; "
                "give one line per item of the run (or rebuild the run with --limit)"
            )
        items = items.copy()
        items["response"] = items["item_id"].map(given)
        return _graded(items)


class RecordedResponses:
    """:class:`cgaps.seams.ScoreSource`: the ``response`` column already in the run's items.parquet, graded.

    A missing response (None) is an error; an empty one ("") is a response and is graded.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.name = str(self.run_dir / rundir.ITEMS)

    def score(self, items: pd.DataFrame) -> pd.DataFrame:
        if "response" not in items.columns or items["response"].isna().all():
            raise CGapsError(
                f"{self.name}: no 'response' column; run `cgaps evaluate {self.run_dir}` or pass --responses FILE.jsonl"
            )
        empty = items["response"].isna().to_numpy()
        if empty.any():
            raise CGapsError(
                f"{self.name}: item {items.loc[empty, 'item_id'].iloc[0]!r} has no response "
                f"({int(empty.sum())} in all); finish `cgaps evaluate` or pass --responses"
            )
        return _graded(items)
