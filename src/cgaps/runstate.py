"""Where a run stands: each stage ``done``, ``stale`` or ``missing``, and why (``cgaps status``).

One rule for ``cgaps status`` and for ``cgaps run`` (which runs exactly the pipeline stages
that are not done), derived from the stage graph (:mod:`cgaps.stages`) and the records the
stages leave in ``run.json`` ``inputs`` (:mod:`cgaps.rundir.provenance`). Everything is by
content, never by file times. A stage whose output exists is

- **stale** when a stage it reads from is stale (or missing, for a file it needs); when the
  item columns, run files or config fields it recorded no longer match the run (the column,
  file or field is named); when its own output no longer is what it wrote (an interrupted later
  run, or another tool); or when it left no record: killed between writing its files and
  ``run.json``, or its output came from elsewhere;
- **done** otherwise.

Three outputs may legitimately come from elsewhere without a record, and are trusted:
responses and scores graded before records existed (evaluation), saliency another tool wrote
(no ``sae`` in run.json and no shard folder of an interrupted extraction), and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaps import rundir, stages
from cgaps.errors import CGapsError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class StageStatus:
    """One line of ``cgaps status``: a stage, its state (``done`` / ``stale`` / ``missing``), why,
    and the command that brings it up to date (empty when done)."""

    stage: str
    state: str
    reason: str
    command: str = ""


def _command(stage: str, rd: str) -> str:
    if stage == "items":
        return f"cgaps items SUITE --out {rd} --force"
    if stage == "evaluate":
        return f"cgaps evaluate {rd} (or cgaps grade {rd} --responses FILE)"
    return f"cgaps {stage} {rd}"


def run_status(run_dir: str | Path) -> list[StageStatus]:
    """The state of every stage of a run directory, like ``make -n`` for a run; reads only.

    A damaged file makes its stage stale, with the error as the reason (rerunning the stage
    rewrites it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CGapsError(f"{run_dir}: no such run directory; create one with `cgaps items` or `cgaps run`")
    return RunState(run_dir).all()


def power_notes(run_dir: str | Path, rows: list[StageStatus] | None = None) -> list[str]:
    """What the data could have found (:func:`cgaps.scoring.power.summary_sentences` of run.json
    ``power``), when ``score`` is done: the sentences the report opens with, so a run that called
    nothing says so, with what a concept on 30 items must show and what would be needed."""
    rows = run_status(run_dir) if rows is None else rows
    if not any(r.stage == "score" and r.state == "done" for r in rows):
        return []
    meta = rundir.read_run_json(run_dir)
    power, counts = meta.get("power"), meta.get("counts", {})
    if not isinstance(power, dict):
        return []
    from cgaps.scoring.power import summary_sentences

    keys = ("gaps_weak", "gaps_strong", "theme_gaps_weak", "theme_gaps_strong")
    return summary_sentences(power, sum(int(counts.get(k) or 0) for k in keys))


class RunState:
    """The states of one run's stages, each computed once, upstream first (module docstring)."""

    def __init__(self, run_dir: Path, meta: dict[str, Any] | None = None) -> None:
        self.run_dir = run_dir
        self.rd = str(run_dir)
        self.out: dict[str, StageStatus] = {}
        self.meta: dict[str, Any] = {}
        self.items: pd.DataFrame | None = None
        self._meta_error: str | None = None
        if meta is not None:
            self.meta = meta
        elif (run_dir / rundir.RUN_JSON).exists():
            try:
                self.meta = rundir.read_run_json(run_dir)
            except CGapsError as e:
                self._meta_error = str(e)

    def all(self) -> list[StageStatus]:
        return [self.state(s.name) for s in stages.STAGES]

    def done(self, stage: str) -> bool:
        return self.state(stage).state == "done"

    def state(self, stage: str) -> StageStatus:
        if stage not in self.out:
            state, reason = self._state(stage)
            command = "" if state == "done" else _command(stage, self.rd)
            self.out[stage] = StageStatus(stage, state, reason, command)
        return self.out[stage]

    # ------------------------------------------------------------ per stage

    def _state(self, stage: str) -> tuple[str, str]:
        if stage == "items":
            return self._items()
        s = stages.stage(stage)
        self.state("items")  # reads the items
        if self.items is None:
            return "missing", "no items"
        present = self._present(s)
        if present is not None:
            return "missing", present
        recorded = self.meta.get("inputs", {}).get(stage)
        columns = recorded.get("columns") if isinstance(recorded, dict) else None
        cols = tuple(columns) if isinstance(columns, list) else None
        for dep in stages.upstream(stage, cols):
            st = self.state(dep)
            needed = st.state == "stale" or (
                st.state == "missing" and any(f in s.reads for f in stages.stage(dep).writes)
            )
            if needed:
                return "stale", f"depends on {dep}, which is {st.state}"
        current, why = rundir.stage_check(self.run_dir, stage, self.items, meta=self.meta)
        if current is None:
            return self._unrecorded(s, why)
        if not current:
            return "stale", why
        changed = self._extra(stage) or self._outputs_changed(stage)
        if changed:
            return "stale", changed
        return "done", self._summary(stage)

    def _items(self) -> tuple[str, str]:
        if self._meta_error is not None:
            return "stale", f"unreadable: {self._meta_error}"
        if not (self.run_dir / rundir.ITEMS).exists():
            return "missing", f"no {rundir.ITEMS}"
        try:
            self.items = rundir.read_items(self.run_dir)
        except CGapsError as e:
            return "stale", f"unreadable: {e}"
        counts = self.items.groupby("benchmark", sort=False).size()
        return "done", f"{len(self.items)} items ({', '.join(f'{k} {v}' for k, v in counts.items())})"

    def _present(self, s: stages.Stage) -> str | None:
        """None when the stage's output is there, else why it is missing."""
        assert self.items is not None
        if s.name == "evaluate":
            if "score" in self.items.columns and self.items["score"].notna().any():
                return None
            n = _lines(self.run_dir / rundir.RESPONSES_PARTIAL)
            return (
                f"interrupted: {n} response(s) in {rundir.RESPONSES_PARTIAL}"
                if n
                else "no scores in items.parquet"
            )
        output = self.run_dir / s.writes[0]
        if output.exists():
            return None
        if s.name == "extract":
            n = _sharded_items(self.run_dir / rundir.SALIENCY_SHARDS)
            if n:
                return f"interrupted: {n} item(s) in {rundir.SALIENCY_SHARDS}/"
        return f"no {output.name}" + ("" if s.pipeline else " (optional)")

    def _unrecorded(self, s: stages.Stage, why: str) -> tuple[str, str]:
        """A stage whose output exists but which recorded no inputs."""
        if s.name == "evaluate":  # graded before records existed: nothing can redo other answers
            return "done", self._summary("evaluate")
        if s.name == "extract":
            if (self.run_dir / rundir.SALIENCY_SHARDS).is_dir():
                return (
                    "stale",
                    "an extraction stopped before it recorded its inputs (saliency_shards/ is left)",
                )
            if "sae" not in self.meta:  # saliency another tool wrote
                return (
                    "done",
                    f"{self.meta.get('counts', {}).get('saliency_rows', '?')} saliency rows (not written by cgaps extract)",
                )
        if s.name == "label":
            return (
                "stale",
                f"{rundir.LABELS} was not written by `cgaps label` (provisional labels, another tool's, or a killed run)",
            )
        return "stale", why

    def _outputs_changed(self, stage: str) -> str | None:
        recorded = self.meta.get("inputs", {}).get(stage, {})
        outputs = recorded.get("outputs") if isinstance(recorded, dict) else None
        if not isinstance(outputs, dict):
            return None
        for name, want in outputs.items():
            now = rundir.file_digest(self.run_dir / name)
            if now != want:
                return f"{name} is not what `cgaps {stage}` wrote (rewritten by an interrupted run or another tool)"
        return None

    def _extra(self, stage: str) -> str | None:
        if stage == "evaluate":
            if (self.run_dir / rundir.RESPONSES_PARTIAL).exists():
                return f"an interrupted re-evaluation left {rundir.RESPONSES_PARTIAL}"
            from cgaps.models.backends import backend_change

            return backend_change(self.meta)
        if stage == "extract":  # `dtype: auto` reads in bfloat16 only where the CPU computes it
            from cgaps.models.loading import reader_dtype_change

            return reader_dtype_change(self.meta)
        if stage == "score":
            return _config_mismatch(self.run_dir, self.meta)
        return None

    def _summary(self, stage: str) -> str:
        counts = self.meta.get("counts", {})
        if stage == "evaluate":
            assert self.items is not None
            scores = self.items["score"]
            return f"{scores.notna().sum()} items graded, mean score {scores.mean():.3f}"
        if stage == "extract":
            return f"{counts.get('saliency_rows', '?')} saliency rows"
        if stage == "score":
            at_chance = counts.get("strengths_at_chance")
            chance = f" ({at_chance} at chance)" if at_chance is not None else ""
            return f"{counts.get('gaps_weak', '?')} gaps, {counts.get('gaps_strong', '?')} strengths{chance}"
        if stage == "label":
            return f"{counts.get('themes', '?')} themes ({counts.get('themes_weak', '?')} gap themes)"
        return stages.stage(stage).writes[0]


def _config_mismatch(run_dir: Path, meta: dict[str, Any]) -> str | None:
    """A score killed between writing its tables and run.json leaves tables whose config differs
    from run.json's (each table states its own in its metadata); the report trusts the tables, so
    this is stale, never wrong, and the reason names the fields."""
    try:
        scoring_config = rundir.read_table_config(run_dir / rundir.CONCEPTS) or {}
        other = (
            rundir.read_table_config(run_dir / rundir.OVERLAP)
            if (run_dir / rundir.OVERLAP).exists()
            else None
        )
    except CGapsError as e:
        return f"unreadable: {e}"
    if other is not None and scoring_config and other != scoring_config:
        return f"{rundir.OVERLAP} and {rundir.CONCEPTS} were scored with other config (an interrupted score)"
    config = meta.get("config", {})
    diff = [
        f"{k} {v!r} there, {config[k]!r} in run.json"
        for k, v in scoring_config.items()
        if k in config and config[k] != v
    ]
    if diff:
        return f"{rundir.CONCEPTS} was scored with other config ({', '.join(diff)}; an interrupted score)"
    return None


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip())


def _sharded_items(shards: Path) -> int:
    """Items in the complete shards of an interrupted extraction (those with a readable sidecar)."""
    n = 0
    for sidecar in shards.glob("shard-*.json"):
        try:
            ids = json.loads(sidecar.read_text(encoding="utf-8")).get("item_ids", [])
        except (OSError, ValueError, AttributeError):
            continue
        n += len(ids) if isinstance(ids, list) else 0
    return n
