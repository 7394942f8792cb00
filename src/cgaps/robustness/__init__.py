"""Robustness stage (``cgaps robustness``): the paper's subsampling and adversarial-ablation checks.

:mod:`cgaps.robustness.options` holds the knobs (:class:`RobustnessOptions`, import-light so the
CLI reads its fields for ``--help``); :mod:`cgaps.robustness.core` runs the checks.
"""
