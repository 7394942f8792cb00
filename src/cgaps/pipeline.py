"""Chaining the stages: items -> evaluate -> extract -> score -> report.

Each stage writes the run directory, so a rerun of the pipeline skips the stages whose
outputs are complete and current, and resumes the interrupted one (evaluation and
extraction keep their own progress files). Current means the digest of the item columns
the stage used, recorded in ``run.json`` ``inputs`` when it completed, still matches the
items (:func:`cgaps.rundir.items_digest`): new items or other responses (``cgaps items``,
``cgaps grade --responses``) make the stages that depend on them run again, which reuse
whatever of their own progress is still valid. The whole pipeline holds the run
directory's writer lock (:func:`cgaps.rundir.writing`). ``force`` first deletes every file the stages write
(:data:`cgaps.rundir.RUN_FILES`, robustness.json and the working files included) and
starts over.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError

if TYPE_CHECKING:
    import pandas as pd


# The RunConfig fields that decide the items: `cgaps items` records exactly these in run.json.
ITEM_FIELDS = ("suite", "data_dir", "limit", "seed", "chain_of_thought")


def items_run(run_dir: str | Path, cfg: RunConfig) -> pd.DataFrame:
    """The items stage: load the suite ``cfg`` names, write items.parquet, record its fields in run.json."""
    run_dir = Path(run_dir)
    with rundir.writing(run_dir):
        return _items_run(run_dir, cfg)


def _items_run(run_dir: Path, cfg: RunConfig) -> pd.DataFrame:
    from cgaps.items import load_suite

    info(f"loading {cfg.suite} ...")
    items = load_suite(
        cfg.suite,
        data_dir=cfg.data_dir,
        limit=cfg.limit,
        seed=cfg.seed,
        chain_of_thought=cfg.chain_of_thought,
    )
    rundir.write_table(items, run_dir / rundir.ITEMS)  # load_suite validated them
    counts = {str(k): int(v) for k, v in items.groupby("benchmark", sort=False).size().items()}
    rundir.update_run_json(
        run_dir, config={name: getattr(cfg, name) for name in ITEM_FIELDS}, counts={"items": counts}
    )
    info(
        f"wrote {len(items)} items ({', '.join(f'{k} {v}' for k, v in counts.items())}) to {run_dir / rundir.ITEMS}"
    )
    return items


def clear_run(run_dir: Path) -> None:
    """Delete every file the stages write (:data:`cgaps.rundir.RUN_FILES`); other files stay."""
    import shutil

    for name in rundir.RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _check_same_run(run_dir: Path, cfg: RunConfig) -> None:
    if not (run_dir / rundir.RUN_JSON).exists():
        return
    stored = rundir.read_run_json(run_dir).get("config", {})
    for key in ("suite", "limit", "seed", "model"):
        if key in stored and stored[key] != getattr(cfg, key):
            raise CGapsError(
                f"{run_dir}: holds a run with {key}={stored[key]!r}, not {getattr(cfg, key)!r}; "
                "choose another --out or pass --force to start over"
            )


def run_pipeline(cfg: RunConfig, run_dir: str | Path, *, force: bool = False) -> dict[str, float]:
    """Run every stage that is not complete and current yet; return the wall time per stage (seconds)."""
    run_dir = Path(run_dir)
    with rundir.writing(run_dir):
        return _run_stages(cfg, run_dir, force)


def stale_reason(run_dir: Path, stage: str, items: pd.DataFrame) -> str | None:
    """Why ``stage``'s completed output no longer matches the items (None: it is current).

    For evaluation, a run written before digests is trusted (its responses may come from
    ``cgaps grade``, which no model can redo); extraction is deterministic and resumable, so
    such a run is extracted again rather than trusted.
    """
    current = rundir.stage_is_current(run_dir, stage, items)
    if current is None:
        return None if stage == "evaluate" else "its inputs were not recorded (an older run)"
    return None if current else "the items it used have changed"


def _run_stages(cfg: RunConfig, run_dir: Path, force: bool) -> dict[str, float]:
    from cgaps.evaluate.stage import evaluate_run
    from cgaps.extract.stage import extract_run
    from cgaps.models import load_backend
    from cgaps.report import build_report
    from cgaps.scoring import score_run

    if force:
        clear_run(run_dir)
    _check_same_run(run_dir, cfg)
    times: dict[str, float] = {}

    t = time.perf_counter()
    if not (run_dir / rundir.ITEMS).exists():
        items_run(run_dir, cfg)
    stored = rundir.read_run_json(run_dir).get("config", {})
    # keep what extraction resolved (the SAE's own layer) when the config leaves it open
    resolved = {"layer": stored.get("layer")} if cfg.layer is None and stored.get("layer") is not None else {}
    rundir.update_run_json(run_dir, config={**cfg.to_dict(), **resolved})
    times["items"] = time.perf_counter() - t

    backend = None
    t = time.perf_counter()
    items = rundir.read_items(run_dir)  # read once; evaluation returns the table it writes
    scored = "score" in items.columns
    stale = stale_reason(run_dir, "evaluate", items) if scored else None
    if stale:
        info(f"evaluating again: {stale}")
    if not scored or stale or (run_dir / rundir.RESPONSES_PARTIAL).exists():
        info(f"loading model {cfg.model}")
        backend = load_backend(cfg.model, cfg.device, cfg.dtype)
        items = evaluate_run(run_dir, cfg, backend)
    times["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    stale = None
    if (run_dir / rundir.SALIENCY).exists():
        stale = stale_reason(run_dir, "extract", items)
        if stale:
            info(f"extracting again: {stale}")
    if not (run_dir / rundir.SALIENCY).exists() or stale:
        if backend is None or cfg.reader_model != cfg.model:
            info(f"loading reader model {cfg.reader_model}")
            backend = load_backend(cfg.reader_model, cfg.device, cfg.dtype)
        extract_run(run_dir, cfg, backend)
    times["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    score_run(run_dir)
    times["score"] = time.perf_counter() - t

    t = time.perf_counter()
    build_report(run_dir)
    times["report"] = time.perf_counter() - t
    rundir.update_run_json(run_dir, timings={f"pipeline_{k}_s": round(v, 2) for k, v in times.items()})
    return times
