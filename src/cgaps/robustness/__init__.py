"""Robustness stage (``cgaps robustness``): the paper's subsampling and adversarial-ablation checks.

:mod:`cgaps.robustness.config` holds the config (:class:`RobustnessConfig`, import-light so the
CLI reads its fields for ``--help``); :mod:`cgaps.robustness.core` runs the checks.
"""
