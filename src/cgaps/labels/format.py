"""Format or competency: concepts that fire on the prompt's repeated text (docs/method.md §5).

Benchmarks wrap every question in the same words: instructions ("Give only the final
number"), templates ("Question: … Answer:"), answer formats ("as YYYY-MM-DD"), option
letters. A concept that fires on those words can be a real gap under the test (the items that
share an instruction fail together), but a reader takes its label for a competency. This
module tells the two apart from the run's text alone, with no metadata:

- **Repeated text.** The prompt of every item (its message contents, not the evaluated
  model's response) is cut into units (:mod:`cgaps.labels.text`: words, punctuation marks,
  line breaks), each content span framed by a start and an end mark. An n-gram of
  :data:`NGRAM` (4) consecutive units is *repeated* when it occurs verbatim in the prompts of
  at least ``max(MIN_ITEMS, ⌈format_items · N⌉)`` of the run's N items (``--format-items``,
  default 0.1); so is an n-gram of three units that begins at a line's start or ends at a
  line's end (a line break or a span mark among its units), because lines start and end with
  field labels ("Question:", "B)", "Answer:") that the varying text beside them would
  otherwise hide. A unit is repeated text when some repeated n-gram covers it. Four units
  are long enough that a topic's words rarely recur verbatim in a tenth of all prompts ("the
  Vedas are" fills one slot of a template at most), and short enough to catch an
  instruction that a family varies slightly ("Answer with the day only" and "Answer with
  the date only" share "? Answer with the").
- **Repeated sentences.** A whole sentence of at least :data:`SENTENCE_WORDS` (4) words (the
  units between two sentence ends: ".", "?", "!", a line break or a span's edge, the closing
  mark included) that occurs verbatim in the prompts of at least
  ``max(MIN_ITEMS, ⌈format_sentences · N⌉)`` items (``--format-sentences``, default 0.01) is
  repeated text too: a fixed sentence is an instruction or boilerplate, however few
  families use it ("Express your answer as a common fraction.", "Answer with the day only."),
  while a task's own sentences carry the item's values and differ ("Write the word 'abc'
  backwards."). Four words keep out short sentences whose few values collide by chance
  ("Today is Friday."). A template whose slot takes few values repeats too ("Which faith
  holds the Vedas sacred?" in every fourth item): a position where sentences that agree
  on every other unit take two or more values is a *slot*, and a slot is never repeated
  text by this rule — the template around it is.
- **Format concept.** Every present (item, concept) pair has the token where the concept
  peaked (§2). Its *format share* is the share of the concept's thresholded normalised
  saliency ŝ' (§2) on items where that token overlaps repeated text; the concept is
  *format* when the share is at least ``format_mass`` (``--format-mass``, default 0.5).
- **Format theme** (:func:`theme_is_format`): the same share over a theme's members,
  each weighted by its own ŝ' mass.

The cut-off in items is a share of the suite, so the rule scales with the run: on the probe
suite (12 families of 32 items, 8 % each) a family's own wording ("Write the word … backwards")
is not format, while the instructions several families share ("Give only the final number",
"Answer with yes or no") are; a benchmark's template in a suite of few benchmarks is.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cgaps.labels.text import LINE_BREAK, ItemText

NGRAM = 4
SENTENCE_WORDS = 4
SENTENCE_ENDS = frozenset({".", "?", "!", "。", "？", "！"})
MIN_ITEMS = 3  # a text shared by two items is a coincidence, however small the run
START, END = "\x02", "\x03"  # the marks that frame a content span (never a unit's text)
LINE_EDGES = frozenset({START, END, LINE_BREAK})
FORMAT_PREFIX = "format: "


def min_items(n_items: int, share: float) -> int:
    """How many items' prompts must hold an n-gram for it to count as repeated."""
    return max(MIN_ITEMS, int(np.ceil(share * n_items - 1e-9)))


def _prompt_runs(it: ItemText) -> list[tuple[list[str], list[int]]]:
    """Each prompt span's unit texts framed by the start and end marks, with each position's unit
    index (-1 for a mark)."""
    runs: list[tuple[list[str], list[int]]] = []
    idx = np.flatnonzero(it.prompt)
    if not len(idx):
        return runs
    for k in np.unique(it.span[idx]):
        units = idx[it.span[idx] == k]
        runs.append(([START, *(it.units[u] for u in units), END], [-1, *(int(u) for u in units), -1]))
    return runs


def _windows(texts: list[str], n: int) -> list[tuple[int, int]]:
    """The [start, end) positions of the n-grams of one framed run, and of the (n-1)-grams that
    begin at a line's start or end at a line's end (module docstring)."""
    out = [(j, j + n) for j in range(len(texts) - n + 1)]
    short = n - 1
    for j in range(len(texts) - short + 1):
        if texts[j] in LINE_EDGES or texts[j + short - 1] in LINE_EDGES:
            out.append((j, j + short))
    return out


def _sentences(texts: list[str], words: list[bool]) -> list[tuple[int, int]]:
    """The [start, end) positions of the sentences of one framed run with at least
    :data:`SENTENCE_WORDS` words (the closing mark included, the framing marks left out)."""
    out = []
    start = 1
    for j in range(1, len(texts)):
        t = texts[j]
        if t in SENTENCE_ENDS or t in LINE_EDGES:
            end = j + 1 if t in SENTENCE_ENDS else j
            if sum(words[start:end]) >= SENTENCE_WORDS:
                out.append((start, end))
            start = j + 1
    return out


def repeated_units(
    items: Mapping[str, ItemText], share: float, sentence_share: float | None = None, n: int = NGRAM
) -> dict[str, np.ndarray]:
    """Per item, a bool per unit: the unit lies in repeated prompt text (module docstring):
    an n-gram in at least ``share`` of the items' prompts, or a sentence in at least
    ``sentence_share`` of them, its slots left out (no sentence rule when None)."""
    runs = {i: _prompt_runs(it) for i, it in items.items()}
    counts: Counter[tuple[str, ...]] = Counter()
    sentences: Counter[tuple[str, ...]] = Counter()
    spans_of: dict[str, list[list[tuple[int, int]]]] = {}
    for i, item_runs in runs.items():
        grams: set[tuple[str, ...]] = set()
        said: set[tuple[str, ...]] = set()
        spans_of[i] = []
        for texts, index in item_runs:
            grams.update(tuple(texts[a:b]) for a, b in _windows(texts, n))
            found = []
            if sentence_share is not None:
                found = _sentences(texts, [u >= 0 and bool(items[i].word[u]) for u in index])
                said.update(tuple(texts[a:b]) for a, b in found)
            spans_of[i].append(found)
        counts.update(grams)
        sentences.update(said)
    need = min_items(len(items), share)
    need_sentence = min_items(len(items), sentence_share) if sentence_share is not None else 0
    # every sentence with one position left open: the values each frame's hole takes
    fillers: dict[tuple[tuple[str, ...], tuple[str, ...]], set[str]] = {}
    for sentence in sentences:
        for j, unit in enumerate(sentence):
            fillers.setdefault((sentence[:j], sentence[j + 1 :]), set()).add(unit)
    out: dict[str, np.ndarray] = {}
    for i, it in items.items():
        mask = np.zeros(len(it), dtype=bool)
        for (texts, index), found in zip(runs[i], spans_of[i], strict=True):
            for a, b in _windows(texts, n):
                if counts[tuple(texts[a:b])] >= need:
                    mask[[u for u in index[a:b] if u >= 0]] = True
            for a, b in found:
                sentence = tuple(texts[a:b])
                if sentences[sentence] < need_sentence:
                    continue
                for j, u in enumerate(index[a:b]):
                    if u >= 0 and len(fillers[(sentence[:j], sentence[j + 1 :])]) < 2:  # not a slot
                        mask[u] = True
        out[i] = mask
    return out


def token_is_repeated(
    tokens: pd.DataFrame, items: Mapping[str, ItemText], repeated: Mapping[str, np.ndarray]
) -> np.ndarray:
    """For every row of ``tokens`` (``item_id``, ``start``, ``end``: a token's character span),
    whether the token overlaps repeated text."""
    out = np.zeros(len(tokens), dtype=bool)
    for r, (i, a, b) in enumerate(tokens[["item_id", "start", "end"]].itertuples(index=False)):
        it = items.get(i)
        if it is None:
            continue
        lo, hi = it.overlapping(int(a), int(b))
        out[r] = bool(repeated[i][lo:hi].any())
    return out


def format_shares(peaks: pd.DataFrame, n_concepts: int) -> np.ndarray:
    """Per concept, the share of its ŝ' mass whose peak token lies in repeated text.

    ``peaks``: one row per present (item, concept) with columns ``concept``, ``shat`` (ŝ') and
    ``repeated`` (bool). NaN for a concept with no peak."""
    mass = np.bincount(peaks["concept"], weights=peaks["shat"], minlength=n_concepts)
    on = np.bincount(
        peaks["concept"], weights=peaks["shat"] * peaks["repeated"].astype(np.float64), minlength=n_concepts
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, on / mass, np.nan)


def theme_is_format(
    members: Sequence[int], format_share: np.ndarray, mass: np.ndarray | None = None, threshold: float = 0.5
) -> bool:
    """Whether a theme is format: the mean of its ``members``' format shares (``format_share`` per
    concept, NaN = unknown, left out), weighted by each member's ŝ' ``mass`` (per concept; equal
    weights when None), is at least ``threshold`` (the run's ``format_mass``)."""
    idx = np.asarray(members, dtype=np.int64)
    share = np.asarray(format_share, dtype=np.float64)[idx]
    weight = np.ones(len(idx)) if mass is None else np.asarray(mass, dtype=np.float64)[idx]
    known = np.isfinite(share) & (weight > 0)
    if not known.any():
        return False
    return bool(np.average(share[known], weights=weight[known]) >= threshold)


def mark_themes(
    themes: pd.DataFrame, format_share: np.ndarray, mass: np.ndarray, threshold: float
) -> pd.DataFrame:
    """``themes`` (``themes.parquet``'s rows, ``members`` as JSON lists) with a bool column
    ``format`` (:func:`theme_is_format`) and the labels of format themes prefixed."""
    out = themes.copy()
    flags = [theme_is_format(json.loads(m), format_share, mass, threshold) for m in out["members"]]
    out["format"] = np.asarray(flags, dtype=bool)
    out["label"] = [format_label(str(lab), f) for lab, f in zip(out["label"], flags, strict=True)]
    return out


def format_label(label: str, is_format: bool) -> str:
    """The label as shown: prefixed with ``format: `` for a format concept or theme."""
    if not is_format or not label or label.startswith(FORMAT_PREFIX):
        return label
    return FORMAT_PREFIX + label
