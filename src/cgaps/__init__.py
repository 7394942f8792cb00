"""Competency Gaps: SAE-concept coverage of benchmarks and concept-level model performance.

The pipeline runs in stages, one package per command, that each read and write one run
directory (see :mod:`cgaps.rundir` and docs/method.md section 6): ``items`` ->
``evaluate`` (scores) -> ``extract`` (saliency) -> ``scoring`` (chi tables) ->
``robustness`` / ``labels`` -> ``report``. :mod:`cgaps.pipeline` chains them and
:mod:`cgaps.cli` is the command line.
"""

__version__ = "0.1.0"
