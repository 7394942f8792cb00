"""``cgaps fill``: pool items that cover the concepts a benchmark misses (docs/method.md §7).

:mod:`cgaps.fill.core` holds the arithmetic (coverage on a fixed scale, targets, the greedy
selection and its baselines); :mod:`cgaps.fill.stage` reads the run and the pool and writes
the output folder; :mod:`cgaps.fill.config` its config. Pools are :mod:`cgaps.pools`.
"""
