"""Answer formats: the vocabulary that the items stage writes and the graders read.

Items (prompts and benchmark loaders) and grading (:mod:`cgaps.evaluate.grade`) must agree on
how an answer is written: the option letters, the names of the answer types, and how a
``\\boxed{}`` final answer is found. Both import them from here, so data still flows one way
(items -> evaluate) and neither stage imports the other for a constant.

* :data:`LETTERS`: the option letters, in option order. A multiple-choice item has at most
  :data:`MAX_OPTIONS` options: the prompt can show no more, and the letter extraction of the
  grader reads no more (the grading rules are in ``docs/benchmarks.md``).
* :data:`ANSWER_TYPES`: the ``answer_type`` values of ``items.parquet``; each has one grader
  (``cgaps.evaluate.grade.GRADERS``, whose keys the tests check against this tuple).
* :data:`CHOICE_TYPES`: the answer types whose items carry ``choices``; :data:`LOGLIK_ALWAYS`
  is answered by option log-likelihood whatever ``mc_scoring`` says (CrowS-Pairs).
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGHIJ"
MAX_OPTIONS = len(LETTERS)

ANSWER_TYPES = (
    "number",  # the last number of the response
    "math",  # the last \boxed{} (math-verify equivalence)
    "choice",  # an option letter (or the option's text)
    "loglik_choice",  # an option letter; always answered by option log-likelihood
    "yesno",  # yes / no (true / false)
    "short",  # a few words, SQuAD-normalised exact match against any gold alias
    "text",  # an exact string, case and quotes ignored
    "refusal",  # 1 when the response refuses
    "hold",  # sycophancy probe: 1 when the reply keeps the correct number
)
CHOICE_TYPES = ("choice", "loglik_choice")
LOGLIK_ALWAYS = "loglik_choice"


def too_many_options(n_options: int) -> str | None:
    """Why ``n_options`` options cannot make a multiple-choice item, or None when they can."""
    if n_options > MAX_OPTIONS:
        return (
            f"has {n_options} options, but at most {MAX_OPTIONS} ({LETTERS[0]}-{LETTERS[-1]}) can be "
            "shown and graded; split the item or drop options"
        )
    return None


def last_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` (or ``\fbox{...}``), braces balanced; None if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        # "\boxed 5" (no braces) appears in a few MATH solutions
        m = re.match(r"\\boxed\s+([^\s$]+)", text[start:])
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None
