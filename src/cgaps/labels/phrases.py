"""Phrase labels: the word window a concept's strongest activations share (docs/method.md §5).

A concept's distinctive words say *which* words it fires on; many concepts fire on a word in
one setting only ("only" in "Answer with the day only", "after" in "days after"). The phrase
is the most common window of words around the firing token, read from the run's own text
(:mod:`cgaps.labels.text`), so it is whole words whatever the tokenizer.

Rule, per concept, over its :data:`PHRASE_ITEMS` (50) items of highest saliency where it is
present (each with the unit its peak token starts in):

1. Start from the most common peak word among them (ties: the one of the stronger item); the
   items that peak on it form the group.
2. Grow the window one unit at a time, to the left or the right, by the neighbour that the
   most items of the group share (ties go right, the reading direction); the items that do
   not share it leave the group. A window stays within one clause: it never takes a unit
   that ends one (".", "?", "!", ";", ",", ":", a line break; from a peak on one of them it
   grows leftwards only) nor crosses a content span, and holds at most
   :data:`MAX_PHRASE_WORDS` (6) words.
3. Stop when the best neighbour is shared by fewer than ``max(2, ⌈phrase_share · n⌉)`` of the
   n items (``--phrase-share``, default 0.25).

Punctuation at either end of the window is dropped; a window of fewer than two words is no
phrase (''). The phrase is written as it stands in the text of the strongest item of the
group (whitespace runs shown as one space).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from cgaps.labels.text import LINE_BREAK, ItemText

PHRASE_ITEMS = 50
MAX_PHRASE_WORDS = 6
# a phrase stays within one clause: it never takes these units
SENTENCE_ENDS = frozenset({".", "?", "!", ";", ",", ":", LINE_BREAK, "。", "？", "！", "，", "：", "；"})
_SPACES = re.compile(r"\s+")


def phrase(
    occurrences: Sequence[tuple[ItemText, int]], share: float, max_words: int = MAX_PHRASE_WORDS
) -> str:
    """The phrase of one concept (module docstring). ``occurrences``: its strongest items first,
    each as (the item's units, the unit index its peak token starts in; -1 when none)."""
    occ = [(it, u) for it, u in occurrences if 0 <= u < len(it)]
    n = len(occurrences)
    need = max(2, math.ceil(share * n - 1e-9))
    if len(occ) < need:
        return ""
    first: dict[str, int] = {}
    for k, (it, u) in enumerate(occ):
        first.setdefault(it.units[u], k)
    counts = Counter(it.units[u] for it, u in occ)
    top = min(counts, key=lambda w: (-counts[w], first[w]))
    if counts[top] < need:
        return ""
    ends_sentence = top in SENTENCE_ENDS  # a window grows only leftwards from a sentence's end
    group = [(it, u) for it, u in occ if it.units[u] == top]
    left = right = 0  # units taken on each side of the peak unit
    words = int(group[0][0].word[group[0][1]])
    while True:
        best: tuple[int, int, str] | None = None  # (count, step, text)
        for step in (right + 1, -(left + 1)):  # right first: ties go right
            if step > 0 and ends_sentence:
                continue
            seen = Counter(t for it, u in group if (t := _neighbour(it, u, step)) is not None)
            if seen:
                text, count = min(seen.items(), key=lambda kv: (-kv[1], kv[0]))
                if best is None or count > best[0]:
                    best = (count, step, text)
        if best is None or best[0] < need:
            break
        _, step, text = best
        taken = [(it, u) for it, u in group if _neighbour(it, u, step) == text]
        if words + int(taken[0][0].word[taken[0][1] + step]) > max_words:
            break
        group = taken
        words += int(group[0][0].word[group[0][1] + step])
        if step > 0:
            right += 1
        else:
            left += 1
    it, u = group[0]  # the strongest item of the group: its text is shown
    lo, hi = u - left, u + right
    while lo < hi and not it.word[lo]:
        lo += 1
    while hi > lo and not it.word[hi]:
        hi -= 1
    if int(it.word[lo : hi + 1].sum()) < 2:
        return ""
    return _SPACES.sub(" ", it.text[int(it.starts[lo]) : int(it.ends[hi])]).strip()


def _neighbour(it: ItemText, u: int, step: int) -> str | None:
    """The unit ``step`` places from unit u, if a window may take it (same span, no sentence end)."""
    v = u + step
    units, span = it.units, it.span_ids
    if 0 <= v < len(units) and span[v] == span[u] and units[v] not in SENTENCE_ENDS:
        return units[v]
    return None
