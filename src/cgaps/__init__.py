"""Competency Gaps: SAE-concept coverage of benchmarks and concept-level model performance.

The pipeline runs in stages that each read and write one run directory (see
:mod:`cgaps.rundir`): items -> evaluation (scores) -> activations (saliency) ->
scoring (chi tables) -> labels / robustness -> report.
"""

__version__ = "0.1.0"
