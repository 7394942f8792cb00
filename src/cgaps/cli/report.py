"""``cgaps report RUN_DIR``: write the run's self-contained ``report.html``.

Only typer, the standard library and :mod:`cgaps.config` are imported at module level
(``cgaps --help`` stays instant); pandas and jinja2 load inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import RunDirArg, options_from, section_config
from cgaps.report.config import ReportConfig


@options_from(ReportConfig, over="run.json")
def report(
    run_dir: Path = RunDirArg,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write the report (default RUN_DIR/report.html).", dir_okay=False
    ),
    *,
    options: dict[str, Any],
) -> None:
    """Write one offline HTML file with the χ_bench / χ_model figures, gap tables and example items.

    Examples:

        cgaps report runs/p

        cgaps report runs/p --top 100 --out /tmp/p.html
    """
    from cgaps.console import info
    from cgaps.report.build import build_report

    if out is not None:  # never into another run, nor over one of this run's other files
        from cgaps import rundir

        rundir.check_output(out, "--out", owner=run_dir, own=(rundir.REPORT,))
    info(f"building the report of {run_dir}")
    path = build_report(run_dir, out, section_config(run_dir, "report", options))
    info(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
