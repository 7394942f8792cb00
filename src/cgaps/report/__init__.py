"""The static HTML report of a run (``cgaps report RUN_DIR``).

:mod:`cgaps.report.build` reads the run directory and renders ``template.html.j2``;
:mod:`cgaps.report.figures` draws the figures as inline SVG. The output is one
self-contained file: it loads nothing from the network and opens from a laptop offline.

Import-light: the package itself loads only :mod:`cgaps.report.config` (the config reads it
for ``--help``); the code that builds the page is :func:`cgaps.report.build.build_report`.
"""

from __future__ import annotations

from cgaps.report.config import ReportConfig

__all__ = ["ReportConfig"]
