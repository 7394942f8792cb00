"""Evaluate stage (``cgaps evaluate`` and ``cgaps grade``): each item's response and score y(x) in [0, 1].

Words: *grading* turns one response into its score (:mod:`cgaps.evaluate.grade`, one grader per
answer type); the *score* is the item's value in the ``score`` column of ``items.parquet``; a
*score source* (:class:`cgaps.seams.ScoreSource`) gives every item a response and a score.

- :mod:`~cgaps.evaluate.stage`: :func:`~cgaps.evaluate.stage.record_scores`, the one writer of
  the ``response`` and ``score`` columns, for any score source; ``evaluate_run`` and ``grade_run``;
- :mod:`~cgaps.evaluate.evaluator`: the own evaluator (generation or option log-likelihood through a
  :class:`cgaps.seams.Generator`, resumable from ``responses.partial.jsonl``);
- :mod:`~cgaps.evaluate.responses`: responses already written (a JSONL file, or the table's own);
- :mod:`~cgaps.evaluate.grade`: the graders.

The answer letters and answer types come from :mod:`cgaps.answers`, shared with the items stage.
"""
