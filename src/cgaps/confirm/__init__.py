"""``cgaps confirm``: the run's gap and strength calls tested again on fresh items (docs/method.md §7).

:mod:`cgaps.confirm.core` holds the arithmetic (matched controls, item draws, the re-test with
the scoring stage's own score test); :mod:`cgaps.confirm.stage` draws, scores, extracts and
writes ``confirmation.parquet``; :mod:`cgaps.confirm.config` its config.
"""
