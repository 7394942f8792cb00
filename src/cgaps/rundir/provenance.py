"""What a stage ran on: digests of the item columns and files it read, recorded in run.json ``inputs``."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from cgaps.rundir.names import ITEMS, RUN_JSON, SALIENCY
from cgaps.rundir.runjson import read_run_json, update_run_json

# ---------------------------------------------------------------- provenance and one writer

# The item columns each stage's output depends on (item_id: which items there are).
STAGE_INPUTS = {
    "evaluate": ("item_id", "prompt", "messages", "choices", "answer_type"),
    "extract": ("item_id", "prompt", "messages", "response"),
    "score": ("item_id", "benchmark", "score"),
}
# The files of the run each stage's output depends on besides items.parquet (their content digest
# is recorded too): scoring reads the saliency.
STAGE_FILES: dict[str, tuple[str, ...]] = {"score": (SALIENCY,)}


def _digest_rows(items: pd.DataFrame, cols: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for row in items.reindex(columns=list(cols)).itertuples(index=False):  # a missing column is NaN
        cells = [v if isinstance(v, str) else _number(v) for v in row]
        h.update(json.dumps(cells).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def _number(v: Any) -> Any:
    # scores are inputs of scoring: numbers count by value, NaN and None as null
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def items_digest(items: pd.DataFrame, stage: str, columns: tuple[str, ...] | None = None) -> str:
    """A short fingerprint of the columns of ``items`` that ``stage`` depends on
    (``columns``, by default :data:`STAGE_INPUTS`; a missing column or NaN cell counts as
    null), in row order."""
    return _digest_rows(items, STAGE_INPUTS[stage] if columns is None else columns)


def file_digest(path: str | Path) -> str | None:
    """A short fingerprint of a file's bytes (None when there is no such file)."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def stage_record(
    items: pd.DataFrame,
    stage: str,
    columns: tuple[str, ...] | None = None,
    run_dir: str | Path | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a completed stage writes into run.json ``inputs``: the columns it used
    (``columns``, by default :data:`STAGE_INPUTS`), their :func:`items_digest`, one digest per
    column (so a later check can say which changed), for a stage of :data:`STAGE_FILES`, the
    digests of those files in ``run_dir``, and the config ``settings`` it ran with (a run whose
    ``config`` in run.json later says otherwise is stale: :func:`stage_check`)."""
    cols = STAGE_INPUTS[stage] if columns is None else columns
    record: dict[str, Any] = {
        "columns": list(cols),
        "digest": items_digest(items, stage, cols),
        "by_column": {c: _digest_rows(items, (c,)) for c in cols},
    }
    if stage in STAGE_FILES:
        if run_dir is None:
            raise TypeError(f"stage_record({stage!r}) needs run_dir for {', '.join(STAGE_FILES[stage])}")
        record["files"] = {name: file_digest(Path(run_dir) / name) for name in STAGE_FILES[stage]}
    if settings is not None:
        record["settings"] = settings
    return record


def mark_stale(run_dir: str | Path, stages: list[str], reason: str) -> None:
    """Record in run.json that the outputs of ``stages`` no longer match the run (``reason``):
    :func:`stage_check` reports them stale until the stage runs again and records its inputs."""
    if stages:
        update_run_json(run_dir, inputs={stage: {"stale": reason} for stage in stages})


def stage_check(
    run_dir: str | Path, stage: str, items: pd.DataFrame, *, meta: dict[str, Any] | None = None
) -> tuple[bool | None, str]:
    """Whether ``stage``'s recorded inputs still match the run, and why not.

    Returns ``(True, "")`` when they match, ``(False, reason)`` when they do not (changed item
    columns, named; a changed file of :data:`STAGE_FILES`; marked stale by :func:`mark_stale`; a
    damaged record), and ``(None, reason)`` when no inputs are recorded (a run written before
    digests, or a stage not run yet). ``meta``: the run.json the caller has already read.
    """
    meta = read_run_json(run_dir) if meta is None else meta
    recorded = meta.get("inputs", {}).get(stage)
    if recorded is None:
        return None, "its inputs were not recorded (an older run)"
    if not isinstance(recorded, dict):
        return False, f"its record in {RUN_JSON} 'inputs' is damaged"
    if "stale" in recorded:
        return False, str(recorded["stale"])
    cols, digest = recorded.get("columns"), recorded.get("digest")
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        return False, f"its record in {RUN_JSON} 'inputs' is damaged"
    if digest != items_digest(items, stage, tuple(cols)):
        by_column = recorded.get("by_column")
        changed = (
            [c for c in cols if by_column.get(c) != _digest_rows(items, (c,))]
            if isinstance(by_column, dict)
            else []
        )
        what = f"column(s) {', '.join(changed)}" if changed else "items"
        return False, f"the {what} of {ITEMS} changed since it ran"
    files = recorded.get("files", {})
    if isinstance(files, dict):
        for name, want in files.items():
            if file_digest(Path(run_dir) / name) != want:
                return False, f"{name} changed since it ran"
    settings, config = recorded.get("settings"), meta.get("config")
    if isinstance(settings, dict) and isinstance(config, dict):
        changed = [k for k in settings if k in config and config[k] != settings[k]]
        if changed:
            was = ", ".join(f"{k}={settings[k]!r}" for k in changed)
            now = ", ".join(f"{k}={config[k]!r}" for k in changed)
            return False, f"it ran with {was}; the run's config now says {now}"
    return True, ""


def stage_is_current(
    run_dir: str | Path, stage: str, items: pd.DataFrame, *, meta: dict[str, Any] | None = None
) -> bool | None:
    """Whether ``stage``'s recorded inputs match the run (:func:`stage_check`); None when none
    are recorded (a run written before digests). A damaged record is not current."""
    return stage_check(run_dir, stage, items, meta=meta)[0]
