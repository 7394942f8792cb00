"""Scoring stage: chi_bench, chi_model, benchmark gaps and model gaps per concept (docs/method.md §3).

:mod:`cgaps.scoring.core` holds the vectorised formulas (one sparse matrix, indicator
products per scope); :mod:`cgaps.scoring.stage` reads and writes the run directory;
:mod:`cgaps.scoring.reference` is the deliberately plain loop version the tests and
``bench/scoring_vs_reference.py`` check the vectorised one against.
"""

from cgaps.scoring.core import SuiteMatrix, build_matrix, chi_tables
from cgaps.scoring.stage import compute_scores, score_run

__all__ = ["SuiteMatrix", "build_matrix", "chi_tables", "compute_scores", "score_run"]
