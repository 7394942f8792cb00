"""``cgaps report RUN_DIR``: write the run's self-contained ``report.html``.

Only typer and the standard library are imported at module level (``cgaps --help`` stays
instant); pandas and jinja2 load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    run_dir: Path = typer.Argument(
        ..., help="Run directory with run.json, items, saliency and concepts tables."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write the report (default RUN_DIR/report.html)."
    ),
    top: int = typer.Option(50, help="Rows per table for the whole suite (ALL scope)."),
    top_per_benchmark: int = typer.Option(10, help="Rows per table for each benchmark."),
    examples: int = typer.Option(2, help="Example items per concept, for each of correct and incorrect."),
) -> None:
    """Write one offline HTML file with the χ_bench / χ_model figures, gap tables and example items."""
    from cgaps.console import info
    from cgaps.report import ReportOptions, build_report

    options = ReportOptions(top=top, top_per_benchmark=top_per_benchmark, examples=examples)
    info(f"building the report of {run_dir}")
    path = build_report(run_dir, out, options)
    size = path.stat().st_size
    info(f"wrote {path} ({size / 1e6:.2f} MB)")
