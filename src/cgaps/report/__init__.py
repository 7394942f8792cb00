"""The static HTML report of a run (``cgaps report RUN_DIR``).

:mod:`cgaps.report.build` reads the run directory and renders ``template.html.j2``;
:mod:`cgaps.report.figures` draws the figures as inline SVG. The output is one
self-contained file: it loads nothing from the network and opens from a laptop offline.
"""

from __future__ import annotations

from cgaps.report.build import ReportOptions, build_report, report_context

__all__ = ["ReportOptions", "build_report", "report_context"]
