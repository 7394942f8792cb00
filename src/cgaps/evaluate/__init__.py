"""Evaluate stage (``cgaps evaluate`` and ``cgaps grade``): the evaluated model's responses and
each item's score y(x) in [0, 1].

:mod:`cgaps.evaluate.stage` generates responses (or picks options by log-likelihood) and
resumes from a partial file; :mod:`cgaps.evaluate.grade` turns a response into a score.
"""
