"""What a stage ran on: digests of what it read, recorded in run.json ``inputs``, and the check
that they still match (docs/method.md §6).

Which item columns and files a stage reads, and which config fields it follows, is declared
once in :mod:`cgaps.stages` (the fields: :func:`cgaps.config.stage_config`); this module only
records and compares. A record is ``{"columns", "digest", "by_column", "files", "config"}``: the
item columns it read with their digest (and one per column, so a check can name the column
that changed), the content digest of every other run file it read (``None`` for an optional
file that was absent), and the config it ran with. Everything is by content: a copied run is as
current as its original, and a file rewritten with the same bytes changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cgaps import stages
from cgaps.rundir.names import ITEMS, RUN_JSON
from cgaps.rundir.runjson import read_run_json, update_run_json

if TYPE_CHECKING:
    from cgaps.config import RunConfig

# The item columns each stage's output depends on (item_id: which items there are), from the graph.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {s.name: s.item_columns for s in stages.STAGES}


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


# file digests already computed in this process, by (path, size, mtime, inode): the key only saves
# hashing the same bytes twice (status checks the saliency for several stages); the value is
# always a digest of the content
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: str | Path) -> str | None:
    """A short fingerprint of a file's bytes (None when there is no such file)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not path.is_file():
        return None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if len(_DIGESTS) > 256:
        _DIGESTS.clear()
    _DIGESTS[key] = digest = h.hexdigest()[:16]
    return digest


def recorded_files(stage: str) -> tuple[str, ...]:
    """The run files whose digests ``stage`` records: what it reads, less its own outputs."""
    s = stages.stage(stage)
    return tuple(f for f in (*s.reads, *s.may_read) if f not in s.writes)


def stage_record(
    items: pd.DataFrame,
    stage: str,
    columns: tuple[str, ...] | None = None,
    run_dir: str | Path | None = None,
    config: RunConfig | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What a completed stage writes into run.json ``inputs`` (module docstring): the item columns
    it used (``columns``, by default the stage's declared ones), their digests, the digests of the
    other run files it read and of the files it wrote (in ``run_dir``; call it after writing
    them), and the config fields it ran with (``config``:
    :func:`cgaps.config.stage_config`; left out for responses graded from elsewhere, which no
    config made). ``extra`` keys are stored as they are (evaluation's ``backend_used``)."""
    cols = STAGE_INPUTS[stage] if columns is None else columns
    record: dict[str, Any] = {
        "columns": list(cols),
        "digest": items_digest(items, stage, cols),
        "by_column": {c: _digest_rows(items, (c,)) for c in cols},
    }
    files = recorded_files(stage)
    if files:
        if run_dir is None:
            raise TypeError(f"stage_record({stage!r}) needs run_dir for {', '.join(files)}")
        record["files"] = {name: file_digest(Path(run_dir) / name) for name in files}
    if config is not None:
        from cgaps.config import stage_config

        record["config"] = stage_config(stage, config)
    if run_dir is not None:  # what it wrote: a later check sees an interrupted rewrite or another writer
        record["outputs"] = {name: file_digest(Path(run_dir) / name) for name in stages.stage(stage).writes}
    return record | extra


def mark_stale(run_dir: str | Path, stages: list[str], reason: str) -> None:
    """Record in run.json that the outputs of ``stages`` no longer match the run (``reason``):
    :func:`stage_check` reports them stale until the stage runs again and records its inputs."""
    if stages:
        update_run_json(run_dir, inputs={stage: {"stale": reason} for stage in stages})


def recorded_config(recorded: dict[str, Any]) -> dict[str, Any] | None:
    """The config a record says its stage ran with (``settings`` in runs written before the
    config was one word), or None."""
    value = recorded.get("config", recorded.get("settings"))
    return value if isinstance(value, dict) else None


def config_change(recorded: dict[str, Any], config: dict[str, Any]) -> str | None:
    """Which config fields differ between a stage's record and the run's ``config`` now, as the
    reason the stage is stale, naming each field with both values (None: none differ). A field
    the run's config leaves to be resolved (``layer`` None: the SAE's own) matches any value; a
    section is compared field by field."""
    from cgaps.config import RESOLVED_FIELDS

    was = recorded_config(recorded)
    if was is None:
        return None
    diffs: list[tuple[str, Any, Any]] = []
    for key, old in was.items():
        if key not in config or key == "backend_used":
            continue
        new = config[key]
        if key in RESOLVED_FIELDS and new is None:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += [
                (f"{key}.{k}", old.get(k), new.get(k))
                for k in sorted({*old, *new})
                if old.get(k) != new.get(k)
            ]
        elif old != new:
            diffs.append((key, old, new))
    if not diffs:
        return None
    was_s = ", ".join(f"{k}={a!r}" for k, a, _ in diffs)
    now_s = ", ".join(f"{k}={b!r}" for k, _, b in diffs)
    return f"it ran with {was_s}; the run's config now says {now_s}"


def stage_check(
    run_dir: str | Path, stage: str, items: pd.DataFrame, *, meta: dict[str, Any] | None = None
) -> tuple[bool | None, str]:
    """Whether ``stage``'s recorded inputs still match the run, and why not.

    Returns ``(True, "")`` when they match, ``(False, reason)`` when they do not (changed item
    columns, named; a changed file, named; a config field the run's config now sets otherwise,
    named with both values; marked stale by :func:`mark_stale`; a damaged record), and
    ``(None, reason)`` when no inputs are recorded (a run written before digests, or a stage
    not run yet). ``meta``: the run.json the caller has already read.
    """
    meta = read_run_json(run_dir) if meta is None else meta
    inputs = meta.get("inputs", {})
    recorded = inputs.get(stage, inputs.get("labels") if stage == "label" else None)
    if recorded is None:
        return None, "its inputs were not recorded (an older run, or another tool wrote its output)"
    damaged = f"its record in {RUN_JSON} 'inputs' is damaged (rerun the stage to rewrite it)"
    if not isinstance(recorded, dict):
        return False, damaged
    if "stale" in recorded:
        return False, str(recorded["stale"])
    cols, digest = recorded.get("columns"), recorded.get("digest")
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols) or not isinstance(digest, str):
        return False, damaged
    if digest != items_digest(items, stage, tuple(cols)):
        by_column = recorded.get("by_column")
        if not isinstance(by_column, dict) or not all(isinstance(by_column.get(c), str) for c in cols):
            return False, damaged
        changed = [c for c in cols if by_column.get(c) != _digest_rows(items, (c,))]
        if not changed:  # every column matches alone, the whole does not: the record was edited
            return False, damaged
        return False, f"the column(s) {', '.join(changed)} of {ITEMS} changed since it ran"
    files = recorded.get("files", {})
    if not isinstance(files, dict):
        return False, damaged
    for name, want in files.items():
        now = file_digest(Path(run_dir) / name)
        if now != want:
            what = "appeared" if want is None else "was removed" if now is None else "changed"
            return False, f"{name} {what} since it ran"
    config = meta.get("config")
    if isinstance(config, dict):
        why = config_change(recorded, config)
        if why:
            return False, why
    return True, ""


def stage_is_current(
    run_dir: str | Path, stage: str, items: pd.DataFrame, *, meta: dict[str, Any] | None = None
) -> bool | None:
    """Whether ``stage``'s recorded inputs match the run (:func:`stage_check`); None when none
    are recorded (a run written before digests). A damaged record is not current."""
    return stage_check(run_dir, stage, items, meta=meta)[0]


def record_completion(
    run_dir: str | Path,
    stage: str,
    config: RunConfig,
    items: pd.DataFrame | None = None,
    **run_json: Any,
) -> None:
    """Record in run.json that ``stage`` completed: its inputs (:func:`stage_record`, with the
    items read here unless given) and, written back into ``config``, the fields it ran with, so
    the run's config says how its files were made; ``run_json`` adds other keys (counts, timings)."""
    from cgaps.config import stage_config
    from cgaps.rundir.tables import read_items

    if items is None:
        items = read_items(run_dir)
    record = stage_record(items, stage, run_dir=run_dir, config=config)
    fields = {"inputs": {stage: record}, "config": stage_config(stage, config)} | run_json
    update_run_json(run_dir, **fields)
