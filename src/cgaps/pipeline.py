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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.console import info
from cgaps.errors import CGapsError

if TYPE_CHECKING:
    import pandas as pd

    from cgaps.seams import ChunkRunner


# The RunConfig fields that decide the items: `cgaps items` records exactly these in run.json.
ITEM_FIELDS = ("suite", "data_dir", "limit", "seed", "chain_of_thought")


def items_run(run_dir: str | Path, cfg: RunConfig, *, force: bool = False) -> pd.DataFrame:
    """The items stage: load the suite ``cfg`` names, write items.parquet, record its fields in run.json.

    Over a run that already holds later stages, items equal to the run's are kept as they are
    (with their responses and scores); other items are refused unless ``force``, naming what
    would be dropped or made stale, and with ``force`` the stages that depend on them are
    marked stale in run.json (:func:`cgaps.rundir.mark_stale`): the new items carry no responses, so
    evaluation answers every item again, while extraction redoes only the items whose prompt or
    response changed.
    """
    run_dir = Path(run_dir)
    with rundir.writing(run_dir):
        return _items_run(run_dir, cfg, force)


# The item columns that make two item tables the same suite (what any stage may read of them).
_ITEM_SOURCE_COLUMNS = tuple(c for c in rundir.ITEM_COLUMNS if c not in rundir.ITEM_SCORED)


def _items_run(run_dir: Path, cfg: RunConfig, force: bool = False) -> pd.DataFrame:
    from cgaps.items import load_suite

    info(f"loading {cfg.suite} ...")
    items = load_suite(
        cfg.suite,
        data_dir=cfg.data_dir,
        limit=cfg.limit,
        seed=cfg.seed,
        chain_of_thought=cfg.chain_of_thought,
    )
    old = _readable_items(run_dir)
    if old is not None and rundir.items_digest(old, "evaluate", _ITEM_SOURCE_COLUMNS) == rundir.items_digest(
        items, "evaluate", _ITEM_SOURCE_COLUMNS
    ):
        info(
            f"{run_dir / rundir.ITEMS}: already holds these {len(items)} items; kept (with any responses and scores)"
        )
        return old
    later, stages = _later_outputs(run_dir, old)
    if later and not force:
        raise CGapsError(
            f"{run_dir}: holds later stages made from other items; writing these would "
            f"{'; '.join(later)}. Pass --force to replace the items anyway (evaluation then starts "
            "over; extraction reuses the unchanged items), or choose another --out"
        )
    rundir.write_table(items, run_dir / rundir.ITEMS)  # load_suite validated them
    counts = {str(k): int(v) for k, v in items.groupby("benchmark", sort=False).size().items()}
    rundir.update_run_json(
        run_dir, config={name: getattr(cfg, name) for name in ITEM_FIELDS}, counts={"items": counts}
    )
    rundir.mark_stale(run_dir, stages, "new items were written by `cgaps items --force`")
    info(
        f"wrote {len(items)} items ({', '.join(f'{k} {v}' for k, v in counts.items())}) to {run_dir / rundir.ITEMS}"
    )
    if later:
        info(f"[yellow]marked stale: {', '.join(stages)} (see `cgaps status {run_dir}`)")
    return items


def _readable_items(run_dir: Path) -> pd.DataFrame | None:
    """The run's items, or None when there are none (or they cannot be read: nothing to keep)."""
    if not (run_dir / rundir.ITEMS).exists():
        return None
    try:
        return rundir.read_items(run_dir)
    except CGapsError:
        return None


def _later_outputs(run_dir: Path, old: pd.DataFrame | None) -> tuple[list[str], list[str]]:
    """What new items would drop or make stale (phrases for the refusal), and the stages to mark stale."""
    later: list[str] = []
    stages: list[str] = []
    if old is not None and "score" in old.columns:
        later.append(f"drop the responses and scores of {len(old)} items")
        stages.append("evaluate")
    stale = [
        name
        for name in (rundir.SALIENCY, rundir.CONCEPTS, rundir.ROBUSTNESS, rundir.VALIDATION, rundir.REPORT)
        if (run_dir / name).exists()
    ]
    if (run_dir / rundir.SALIENCY).exists() or (run_dir / rundir.SALIENCY_SHARDS).is_dir():
        stages.append("extract")
    if (run_dir / rundir.CONCEPTS).exists():
        stages.append("score")
    if stale:
        later.append(f"make stale {', '.join(stale)}")
    return later, stages


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


def run_pipeline(
    cfg: RunConfig, run_dir: str | Path, *, force: bool = False, runner: ChunkRunner | None = None
) -> dict[str, float]:
    """Run every stage that is not complete and current yet; return the wall time per stage (seconds).

    Without ``runner`` every stage runs in this process and the model is loaded once for
    evaluation, extraction and labels. With one (``--ray``: :class:`cgaps.scaleout.RayRunner`),
    evaluation and extraction run where it computes; it is entered for the whole pipeline, so a
    Ray cluster it starts serves both stages."""
    run_dir = Path(run_dir)
    with rundir.writing(run_dir):
        if runner is None:
            return _run_stages(cfg, run_dir, force)
        with runner:
            return _run_stages(cfg, run_dir, force, runner)


def stale_reason(run_dir: Path, stage: str, items: pd.DataFrame, meta: dict | None = None) -> str | None:
    """Why ``stage``'s completed output no longer matches the items (None: it is current).

    The one staleness rule of the pipeline and ``cgaps status``: the inputs recorded in run.json
    (:func:`cgaps.rundir.stage_check`). For evaluation, a run written before digests is trusted
    (its responses may come from ``cgaps grade``, which no model can redo), and so is saliency
    imported from another tool (run.json has no ``sae`` record); an older cgaps extraction or
    scoring is deterministic and resumable, so it is redone rather than trusted.
    """
    if meta is None:
        meta = rundir.read_run_json(run_dir)
    current, reason = rundir.stage_check(run_dir, stage, items, meta=meta)
    if current is None:
        # saliency that no cgaps extraction wrote (no `sae` record) was imported: trusted too
        imported = stage == "extract" and "sae" not in meta
        return None if stage == "evaluate" or imported else reason
    if current and stage == "evaluate":  # answers from another backend than the one chosen now
        from cgaps.models.backends import backend_change

        return backend_change(meta)
    return None if current else reason


def _run_stages(
    cfg: RunConfig, run_dir: Path, force: bool, runner: ChunkRunner | None = None
) -> dict[str, float]:
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
        if runner is not None:  # the runner loads the model where it computes
            items = evaluate_run(run_dir, cfg, runner=runner)
        else:
            from cgaps.models.backends import choose, open_generator

            info(f"loading model {cfg.model}")
            backend = load_backend(cfg.model, cfg.device, cfg.dtype)
            # the generation backend cfg.backend picks; transformers reuses this reader
            items = evaluate_run(run_dir, cfg, open_generator(cfg, choose(cfg), backend))
    times["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    stale = None
    if (run_dir / rundir.SALIENCY).exists():
        stale = stale_reason(run_dir, "extract", items)
        if stale:
            info(f"extracting again: {stale}")
    extracted_here = False
    if not (run_dir / rundir.SALIENCY).exists() or stale:
        extracted_here = True
        if runner is not None:
            extract_run(run_dir, cfg, runner=runner)
        else:
            if backend is None or cfg.reader_model != cfg.model:
                info(f"loading reader model {cfg.reader_model}")
                backend = load_backend(cfg.reader_model, cfg.device, cfg.dtype)
            extract_run(run_dir, cfg, backend)
    times["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    score_run(run_dir)
    times["score"] = time.perf_counter() - t

    t = time.perf_counter()
    from cgaps.labels.stage import label_run

    # the reader in memory (extraction's, or the evaluated model when it is the reader) is reused;
    # compared by the argument the config names ("embedded" loads a model named by its hub id)
    reader = backend if backend is not None and (cfg.reader_model == cfg.model or extracted_here) else None
    label_run(run_dir, backend=reader)
    times["label"] = time.perf_counter() - t

    t = time.perf_counter()
    build_report(run_dir)
    times["report"] = time.perf_counter() - t
    rundir.update_run_json(run_dir, timings={f"pipeline_{k}_s": round(v, 2) for k, v in times.items()})
    return times


# ---------------------------------------------------------------- cgaps status


@dataclass(frozen=True)
class StageStatus:
    """One line of ``cgaps status``: a stage, its state (``done`` / ``stale`` / ``missing``), why,
    and the command that brings it up to date (empty when done)."""

    stage: str
    state: str
    reason: str
    command: str = ""


# What each stage's output depends on (upstream stages), in the pipeline's order; `labels`
# appears only when labels.parquet exists.
STAGE_DEPENDS: dict[str, tuple[str, ...]] = {
    "items": (),
    "evaluate": ("items",),
    "extract": ("items",),
    "labels": ("extract",),
    "score": ("evaluate", "extract"),
    "robustness": ("evaluate", "extract"),
    "validate": ("evaluate", "extract"),
    "report": ("score",),
}
# The outputs whose modification a later output must not predate (make's rule, for the stages
# that record no input digests): the report shows items, the scoring tables, labels, contexts,
# robustness and validation figures; robustness and validation recompute from items and saliency.
_NEWER_INPUTS = {
    "robustness": (rundir.ITEMS, rundir.SALIENCY),
    "validate": (rundir.ITEMS, rundir.SALIENCY),
    "report": (
        rundir.ITEMS,
        rundir.CONCEPTS,
        rundir.OVERLAP,
        rundir.LABELS,
        rundir.CONTEXTS,
        rundir.ROBUSTNESS,
        rundir.VALIDATION,
    ),
}
_OUTPUT = {
    "robustness": rundir.ROBUSTNESS,
    "validate": rundir.VALIDATION,
    "report": rundir.REPORT,
    "labels": rundir.LABELS,
}


def run_status(run_dir: str | Path) -> list[StageStatus]:
    """The state of every stage of a run directory, like ``make -n`` for a run; reads only.

    A stage is ``missing`` when its output is absent, ``stale`` when its output no longer matches
    its inputs (:func:`stale_reason`, the pipeline's own rule, for the stages that record input
    digests; for the others, an input file newer than the output) or when a stage it depends on
    is stale or missing, and ``done`` otherwise. A damaged file makes its stage stale, with the
    error as the reason (rerunning the stage rewrites it).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CGapsError(f"{run_dir}: no such run directory; create one with `cgaps items` or `cgaps run`")
    rd = str(run_dir)
    out: dict[str, StageStatus] = {}

    def put(stage: str, state: str, reason: str, command: str = "") -> None:
        out[stage] = StageStatus(stage, state, reason, command if state != "done" else "")

    try:
        meta = rundir.read_run_json(run_dir) if (run_dir / rundir.RUN_JSON).exists() else {}
    except CGapsError as e:
        meta = {}
        put("items", "stale", f"unreadable: {e}", f"cgaps items SUITE --out {rd} --force")
    items = None
    if "items" not in out:
        if not (run_dir / rundir.ITEMS).exists():
            put("items", "missing", f"no {rundir.ITEMS}", f"cgaps items SUITE --out {rd}")
        else:
            try:
                items = rundir.read_items(run_dir)
                counts = items.groupby("benchmark", sort=False).size()
                put(
                    "items",
                    "done",
                    f"{len(items)} items ({', '.join(f'{k} {v}' for k, v in counts.items())})",
                )
            except CGapsError as e:
                put("items", "stale", f"unreadable: {e}", f"cgaps items SUITE --out {rd} --force")

    def upstream(stage: str) -> str | None:
        for dep in STAGE_DEPENDS[stage]:
            if dep in out and out[dep].state != "done":
                return f"depends on {dep}, which is {out[dep].state}"
        return None

    why: str | None
    # evaluate
    partial = run_dir / rundir.RESPONSES_PARTIAL
    if items is None:
        put("evaluate", "missing", "no items", f"cgaps evaluate {rd}")
    elif "score" not in items.columns or items["score"].isna().all():
        n = _lines(partial)
        why = f"interrupted: {n} response(s) in {partial.name}" if n else "no scores in items.parquet"
        put("evaluate", "missing", why, f"cgaps evaluate {rd} (or cgaps grade {rd} --responses FILE)")
    else:
        why = stale_reason(run_dir, "evaluate", items, meta)
        if why is None and partial.exists():
            why = f"an interrupted re-evaluation left {partial.name}"
        if why:
            put("evaluate", "stale", why, f"cgaps evaluate {rd}")
        else:
            put(
                "evaluate",
                "done",
                f"{items['score'].notna().sum()} items graded, mean score {items['score'].mean():.3f}",
            )

    # extract
    shards = run_dir / rundir.SALIENCY_SHARDS
    if items is None:
        put("extract", "missing", "no items", f"cgaps extract {rd}")
    elif not (run_dir / rundir.SALIENCY).exists():
        n = _sharded_items(shards)
        why = f"interrupted: {n} item(s) in {shards.name}/" if n else f"no {rundir.SALIENCY}"
        put("extract", "missing", why, f"cgaps extract {rd}")
    else:
        why = stale_reason(run_dir, "extract", items, meta)
        if why:
            put("extract", "stale", why, f"cgaps extract {rd}")
        else:
            put("extract", "done", f"{meta.get('counts', {}).get('saliency_rows', '?')} saliency rows")

    if (run_dir / rundir.LABELS).exists():
        _by_mtime(run_dir, out, "labels", (rundir.CONTEXTS,), upstream("labels"), f"cgaps label {rd}")

    # score
    if not (run_dir / rundir.CONCEPTS).exists():
        put("score", "missing", f"no {rundir.CONCEPTS}", f"cgaps score {rd}")
    else:
        why = upstream("score")
        if why is None and items is not None:
            recorded = meta.get("inputs", {}).get("score")
            why = (
                stale_reason(run_dir, "score", items, meta)
                if recorded is not None
                else _newer(run_dir, rundir.CONCEPTS, (rundir.ITEMS, rundir.SALIENCY))
            )
        if why is None:
            why = _knob_mismatch(run_dir, meta)
        if why:
            put("score", "stale", why, f"cgaps score {rd}")
        else:
            counts = meta.get("counts", {})
            put(
                "score",
                "done",
                f"{counts.get('gaps_weak', '?')} weak, {counts.get('gaps_strong', '?')} strong",
            )

    for stage in ("robustness", "validate", "report"):
        if (run_dir / _OUTPUT[stage]).exists() or stage == "report":
            _by_mtime(run_dir, out, stage, _NEWER_INPUTS[stage], upstream(stage), f"cgaps {stage} {rd}")
        else:
            put(stage, "missing", f"no {_OUTPUT[stage]} (optional)", f"cgaps {stage} {rd}")
    order = [s for s in STAGE_DEPENDS if s in out]
    return [out[s] for s in order]


def _by_mtime(
    run_dir: Path,
    out: dict[str, StageStatus],
    stage: str,
    inputs: tuple[str, ...],
    upstream: str | None,
    command: str,
) -> None:
    output = run_dir / _OUTPUT[stage]
    if not output.exists():
        out[stage] = StageStatus(stage, "missing", f"no {output.name}", command)
        return
    why = upstream or _newer(run_dir, output.name, inputs)
    out[stage] = StageStatus(stage, "stale", why, command) if why else StageStatus(stage, "done", output.name)


def _newer(run_dir: Path, output: str, inputs: tuple[str, ...]) -> str | None:
    """make's rule: the first input file modified after ``output`` (None: none is)."""
    made = (run_dir / output).stat().st_mtime_ns
    for name in inputs:
        path = run_dir / name
        if path.exists() and path.stat().st_mtime_ns > made:
            return f"{name} is newer than {output}"
    return None


def _knob_mismatch(run_dir: Path, meta: dict) -> str | None:
    """A score killed between writing its tables and run.json leaves tables whose knobs differ
    from run.json's; the report trusts the tables, so this is stale, never wrong."""
    try:
        knobs = rundir.read_table_knobs(run_dir / rundir.CONCEPTS) or {}
        other = (
            rundir.read_table_knobs(run_dir / rundir.OVERLAP) if (run_dir / rundir.OVERLAP).exists() else None
        )
    except CGapsError as e:
        return f"unreadable: {e}"
    if other is not None and knobs and other != knobs:
        return f"{rundir.OVERLAP} and {rundir.CONCEPTS} were scored with other knobs (an interrupted score)"
    config = meta.get("config", {})
    diff = [
        f"{k} {v!r} there, {config[k]!r} in run.json"
        for k, v in knobs.items()
        if k in config and config[k] != v
    ]
    if diff:
        return f"{rundir.CONCEPTS} was scored with other knobs ({', '.join(diff)}; an interrupted score)"
    return None


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip())


def _sharded_items(shards: Path) -> int:
    """Items in the complete shards of an interrupted extraction (those with a readable sidecar)."""
    import json

    n = 0
    for sidecar in shards.glob("shard-*.json"):
        try:
            ids = json.loads(sidecar.read_text(encoding="utf-8")).get("item_ids", [])
        except (OSError, ValueError, AttributeError):
            continue
        n += len(ids) if isinstance(ids, list) else 0
    return n
