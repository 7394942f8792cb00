"""``cgaps status RUN_DIR``: each stage as done / stale / missing, with the reason, like ``make -n``.

Reads only (no lock, nothing written). The rule is the pipeline's own
(:func:`cgaps.runstate.run_status`); the exit status says whether anything needs doing: 0 when
every stage of ``cgaps run`` is done and nothing is stale, 1 otherwise (2 for a bad argument).
"""

from __future__ import annotations

from pathlib import Path

import typer

from cgaps import stages
from cgaps.cli._common import RunDirArg


def status(run_dir: Path = RunDirArg) -> None:
    """Show which stages of RUN_DIR are done, stale or missing, why, and the command that redoes each.

    Examples:

        cgaps status runs/p
    """
    from cgaps.console import result
    from cgaps.runstate import power_notes, run_status

    rows = run_status(run_dir)
    # plain aligned lines (one per stage), readable in a log and by grep
    width = max(len(r.stage) for r in rows)
    for r in rows:
        todo = f"  -> {r.command}" if r.command else ""
        result(f"{r.stage:<{width}}  {r.state:<7}  {r.reason}{todo}")
    notes = power_notes(run_dir, rows)  # what the scores could have shown (run.json power)
    if notes:
        result("")  # after a blank line: the stage lines stay one per stage for grep
        for line in notes:
            result(line)
    pending = any(r.state == "stale" or (r.state == "missing" and r.stage in stages.PIPELINE) for r in rows)
    if pending:
        raise typer.Exit(1)
