"""Bring your own evaluation: other tools' per-sample results as a run directory.

Generation is the slow part of a run (153 of the demo's 184 s). A user who already has
per-sample results from an evaluation harness gets a run directory from one import, and
then needs only extraction (a forward pass of the reader model, no generation), scoring and
the report (docs/method.md §1: scores may come from the own evaluator or be imported).

Every importer turns its input into the rows of ``items.parquet`` with ``response`` and
``score`` already filled, plus a provenance record, and hands both to
:func:`write_imported_run`, which writes the items through
:func:`cgaps.evaluate.stage.record_scores` (the one writer of ``response`` and ``score``, with
:class:`ImportedScores` as the score source) and then ``run.json``:

* :mod:`cgaps.importers.lmeval`: lm-evaluation-harness ``--log_samples`` output;
* :mod:`cgaps.importers.inspect_log`: inspect-ai eval logs, read by inspect's own reader;
* :mod:`cgaps.importers.table`: any JSONL/CSV/Parquet with a ``--map`` of its fields.

Design rules shared by the importers:

* **Everything is read and checked before anything is written.** A bad line (unknown field,
  truncated JSON, a metric that is missing, NaN or outside [0, 1], a duplicate id) is a
  one-line :class:`~cgaps.errors.CGapsError` naming the file, the line and the field; the run
  directory is then untouched. The two files written (``items.parquet``, then ``run.json``)
  are each written atomically (:func:`cgaps.rundir.atomic_path`) under the run's writer lock.
* **The evaluated model is not the reader.** The imported responses came from a model this
  machine may not be able to run (an API model, a large model served elsewhere). The import
  records that model's name in ``run.json`` ``model.evaluated`` and sets ``config.reader``
  (default: the embedded SmolLM2) and ``config.sae``, so ``cgaps extract RUN_DIR`` reads the
  transcripts with the reader model and its SAE (docs/method.md §2, the reader model);
  extraction then records ``model.reader``.
* **The import stands in for evaluation.** It records the ``evaluate`` stage's input digest
  (:func:`cgaps.rundir.stage_record`), so ``cgaps run`` never tries to re-generate responses
  with a model it does not have.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError
from cgaps.evaluate.stage import record_scores


@dataclass
class Imported:
    """What an importer read: item rows (``items.parquet`` columns) and where they came from."""

    rows: list[dict[str, Any]]
    evaluated: str
    """The evaluated model's name as the log records it."""
    source: dict[str, Any] = field(default_factory=dict)
    """Provenance for run.json ``imported``: the format, files, metric, tool version..."""
    where: dict[str, str] = field(default_factory=dict)
    """item_id -> ``file:line`` it came from (for the error on a duplicate id)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Config fields the log itself says (e.g. ``max_new_tokens`` from its generation config), so
    the run records what the evaluation used, not this tool's defaults."""


def meta_json(obj: Any) -> str:
    """The ``meta`` cell of an item: a JSON object (non-JSON values written as text)."""
    return json.dumps(obj, ensure_ascii=False, default=str)


def check_score(value: Any, where: str, field_name: str) -> float:
    """A per-item score as a float in [0, 1]; anything else is an error naming ``where`` and the field."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise CGapsError(
                f"{where}: field {field_name!r} is {value!r:.40}, not a number; a score is a number in [0, 1]"
            ) from None
    if not isinstance(value, int | float):
        raise CGapsError(
            f"{where}: field {field_name!r} is {type(value).__name__} {value!r:.40}, not a per-item score; "
            "choose a metric whose per-sample value is a number in [0, 1] (e.g. acc, exact_match)"
        )
    value = float(value)
    if value != value:
        raise CGapsError(f"{where}: field {field_name!r} is NaN; every item needs a score in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise CGapsError(
            f"{where}: field {field_name!r} is {value!r}, outside [0, 1]; choose a metric that is a per-item "
            "score (1 = correct), not a count, loss or perplexity"
        )
    return value


# The longest evaluated-model name kept from a log (config.model allows 1000 printable characters;
# a name is shown in every summary line, the report and the explorer).
MAX_MODEL_NAME = 200


def model_name(raw: str) -> str:
    """The evaluated model's name as a log gives it, made fit to record and show: control
    characters as visible symbols, cut after :data:`MAX_MODEL_NAME` characters. Another tool's
    log is not ours to refuse for its model's name, so it is cleaned, with a warning."""
    from cgaps.console import visible_controls

    name = visible_controls(" ".join(raw.split()) if raw.strip() else raw) or "unknown model"
    if len(name) > MAX_MODEL_NAME:
        name = name[: MAX_MODEL_NAME - 1] + "…"
    if name != raw:
        info(
            f"[yellow]the log's model name ({len(raw):,} characters) is recorded as {name[:80]!r}"
            f"{'...' if len(name) > 80 else ''} (control characters shown, cut to {MAX_MODEL_NAME})[/yellow]"
        )
    return name


def to_table(imported: Imported, name: str) -> pd.DataFrame:
    """The rows as a validated, scored items table (duplicate ids named with their lines)."""
    seen: dict[str, str] = {}
    for row in imported.rows:
        item_id = row["item_id"]
        if item_id in seen:
            raise CGapsError(
                f"{imported.where.get(item_id, name)}: item id {item_id!r} appears twice (first at "
                f"{seen[item_id]}); every sample needs its own id"
            )
        seen[item_id] = imported.where.get(item_id, name)
    if not imported.rows:
        raise CGapsError(f"{name}: no samples to import")
    df = pd.DataFrame(imported.rows)
    cols = [c for c in rundir.ITEM_COLUMNS if c in df.columns]
    return rundir.validate_items(df[cols], name, scored=True)


class ImportedScores:
    """:class:`cgaps.seams.ScoreSource` of rows another tool answered and scored: ``table`` holds
    each item's ``response`` and ``score`` (every one already checked by the importer, which
    names the file, line and field of a bad one)."""

    def __init__(self, table: pd.DataFrame, name: str):
        self.table = table
        self.name = name

    def score(self, items: pd.DataFrame) -> pd.DataFrame:
        return self.table[["item_id", "response", "score"]]


def write_imported_run(
    out: str | Path,
    imported: Imported,
    *,
    name: str,
    reader: str | None = None,
    sae: str | None = None,
    force: bool = False,
) -> pd.DataFrame:
    """Write ``items.parquet`` and ``run.json`` of an imported run; return the items.

    ``name`` names the input in errors and in ``config.suite`` (``import:FORMAT:PATH``).
    ``reader`` / ``sae``: the reader model and SAE that ``cgaps extract`` will use (defaults:
    the embedded SmolLM2 and its shipped SAE). A directory that already holds a run is
    refused unless ``force`` (which first deletes the files the stages write).
    """
    t0 = time.perf_counter()
    out = Path(out)
    items = to_table(imported, name)  # every check before anything is written
    imported.evaluated = model_name(imported.evaluated)
    cfg = RunConfig(
        suite=f"import:{imported.source.get('format', 'table')}:{name}",
        model=imported.evaluated,
        reader=reader or "embedded",
        sae=sae or "embedded",
        **imported.config,
    )
    with rundir.writing(out):
        present = [n for n in rundir.RUN_FILES if (out / n).exists()]
        if present and not force:
            raise CGapsError(
                f"{out}: already holds a run ({present[0]}); choose another --out or pass --force to replace it"
            )
        if present:
            rundir.clear_run(out)
        # no response and no score until the score source gives them (its columns keep their places)
        unscored = items.assign(response=None, score=float("nan"))
        items = record_scores(out, ImportedScores(items, name), unscored)
        acc = items.groupby("benchmark", sort=False)["score"].agg(["count", "mean"])
        rundir.update_run_json(
            out,
            config=cfg.to_dict(),
            model={"evaluated": imported.evaluated},
            imported=imported.source,
            # the import stands in for evaluation: `cgaps run` must not regenerate these responses
            inputs={"evaluate": rundir.stage_record(items, "evaluate")},
            counts={
                "items": {str(k): int(v) for k, v in acc["count"].items()},
                "scored_items": int(len(items)),
            },
            accuracy={str(b): {"n": int(r["count"]), "mean": float(r["mean"])} for b, r in acc.iterrows()},
            timings={"import_s": round(time.perf_counter() - t0, 2)},
        )
    info(
        f"imported {len(items)} items ({', '.join(f'{k} {int(v)}' for k, v in acc['count'].items())}) "
        f"evaluated by {imported.evaluated} into {out}; next: cgaps extract {out} (reader {cfg.reader_model})"
    )
    return items
