"""The items stage (``cgaps items``): load a suite and write ``items.parquet`` (docs/method.md §1, §6).

New items over a run that already holds later stages are refused unless forced, naming what
would be dropped or made stale; with ``force`` the stages after the items (from the stage
graph, :func:`cgaps.stages.downstream`) are marked stale in run.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cgaps import rundir, stages
from cgaps.config import RunConfig, stage_fields
from cgaps.console import info
from cgaps.errors import CGapsError

if TYPE_CHECKING:
    import pandas as pd


# The config fields that decide the items (tagged with the stage in cgaps.config): `cgaps items`
# records exactly these in run.json.
ITEM_FIELDS = stage_fields("items")


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
    later, marked = _later_outputs(run_dir, old)
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
    rundir.mark_stale(run_dir, marked, "new items were written by `cgaps items --force`")
    info(
        f"wrote {len(items)} items ({', '.join(f'{k} {v}' for k, v in counts.items())}) to {run_dir / rundir.ITEMS}"
    )
    if later:
        info(f"[yellow]marked stale: {', '.join(marked)} (see `cgaps status {run_dir}`)")
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
    """What new items would drop or make stale (phrases for the refusal), and the stages to mark
    stale: every stage after the items whose output exists (:func:`cgaps.stages.downstream`)."""
    later: list[str] = []
    marked: list[str] = []
    if old is not None and "score" in old.columns:
        later.append(f"drop the responses and scores of {len(old)} items")
        marked.append("evaluate")
    made: list[str] = []
    for name in stages.downstream("items"):
        s = stages.stage(name)
        if name == "evaluate":
            continue
        present = [f for f in s.writes if (run_dir / f).exists()]
        if present or any((run_dir / f).is_dir() for f in s.working):
            marked.append(name)
            made += present
    if made:
        later.append(f"make stale {', '.join(made)}")
    return later, marked
