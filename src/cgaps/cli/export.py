"""``cgaps export RUN_DIR``: the concept table as CSV, the same file the explorer's "CSV" link gives.

Only typer, the standard library and :mod:`cgaps.config` load at module level (``cgaps --help``
stays instant); pandas loads inside the command. The rows and columns are
:func:`cgaps.report.export.export_run`'s (documented in docs/explorer.md, "CSV export").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import RunDirArg, options_from
from cgaps.config_fields import check_options, documented

GAPS = ("", "weak", "strong", "strong_above_chance", "strong_at_chance", "none")


@dataclass(frozen=True)
class ExportConfig:
    """Which rows of the concept table ``cgaps export`` writes."""

    scope: str = documented("", "Only this scope (a benchmark name, or ALL); empty: every scope.")
    gap: str = documented(
        "",
        "Only these calls: weak (gaps), strong (strengths), strong_above_chance, strong_at_chance, "
        "none (no call); empty: every row.",
    )

    def __post_init__(self) -> None:
        check_options(
            "export",
            self,
            (
                ("scope", isinstance(self.scope, str), "a benchmark name, ALL, or empty"),
                ("gap", self.gap in GAPS, "one of " + ", ".join(g or "''" for g in GAPS)),
            ),
        )


@options_from(ExportConfig)
def export(
    run_dir: Path = RunDirArg,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="CSV file to write (default: standard output).", dir_okay=False
    ),
    *,
    options: dict[str, Any],
) -> None:
    """Write the concept table (every concept x scope, with chance levels and labels) as CSV.

    Examples:

        cgaps export runs/demo -o concepts.csv

        cgaps export runs/demo --gap weak --scope ALL -o gaps.csv

        cgaps export runs/demo --gap strong_at_chance
    """
    from cgaps import rundir
    from cgaps.console import info, result
    from cgaps.report.export import export_run, to_csv

    opts = ExportConfig(**options)
    if out is not None:  # never into another run, nor over one of this run's files
        rundir.check_output(out, "--out", owner=run_dir)
    text = to_csv(export_run(run_dir, scope=opts.scope, gap=opts.gap))
    if out is None:
        result(text.rstrip("\n"))
        return
    rundir.write_text(text, out)
    info(f"wrote {out} ({text.count(chr(10)) - 1} rows)")
