"""The run's text in words: what a concept's firing token is part of (docs/method.md §5).

SAE concepts fire on tokens, and a token is often a piece of a word ("Ved" + "as",
"comprom" + "ised", a byte of a multi-byte letter). A label is read by people, so the
evidence of :mod:`cgaps.labels.evidence` is counted in whole words of the run's own text,
never in the reader's token strings. The rule depends on no tokenizer: every token comes
with its character span in the formatted conversation (the reader's offsets, as extraction
recorded them), and the word is found in the *text*, so SentencePiece "▁" pieces, GPT-2
byte-level pieces and multi-token letters all land on the same word.

**Units.** The analysed content of an item (the message contents and the response, the
spans extraction encodes) is cut into units by one regular expression, :data:`UNIT`:

- a *word*: a run of letters, digits or "_" (Unicode ``\\w``), with inner apostrophes
  ("don't", "Mary’s") and inner separators between digits ("3.5", "1,000", "10:30");
- a *line break*, shown as ⏎;
- any other visible character on its own (".", "?", "-", "+", quotes).

**The word of a token.** A token's word is the text from the start of the first word unit
its span overlaps to the end of the last one ("▁Ved" and "as" both give "Vedas"). A token
overlapping no word (punctuation, a line break, spaces) is shown as itself
(:func:`cgaps.labels.evidence.token_key`). A "word" longer than :data:`MAX_WORD_CHARS`
characters is usually not one (a URL, a long number, a sentence of a script written
without spaces): the token itself is shown instead.

The same units give phrases (:mod:`cgaps.labels.phrases`) and the repeated prompt text that
marks format concepts (:mod:`cgaps.labels.format`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

WORD = r"\w+(?:(?:['’]|(?<=\d)[.,:](?=\d))\w+)*"
UNIT = re.compile(rf"({WORD})|(\n)|([^\w\s])")
WORD_RE = re.compile(WORD)
LINE_BREAK = "⏎"
MAX_WORD_CHARS = 32

Span = tuple[int, int]


def token_key(text: str) -> str:
    """How a token that is no word is compared and shown: stripped of surrounding whitespace; a
    whitespace-only token by a visible sign (⏎ for a line break, ␣ for spaces)."""
    stripped = text.strip()
    if stripped:
        return stripped
    return "⏎" if "\n" in text else "␣"


def is_word(text: str) -> bool:
    """Whether ``text`` is one word unit (:data:`WORD`)."""
    return WORD_RE.fullmatch(text) is not None


@dataclass
class ItemText:
    """One item's analysed text cut into units (module docstring), in text order.

    ``span[u]`` numbers the content span unit u lies in (a phrase never crosses two);
    ``prompt[u]`` says whether that span is part of the prompt (not the evaluated response).
    """

    text: str
    starts: np.ndarray  # int64 character offsets
    ends: np.ndarray
    units: list[str]  # the unit's text, ⏎ for a line break
    word: np.ndarray  # bool: the unit is a word
    span: np.ndarray  # int64
    prompt: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.units)

    @functools.cached_property
    def span_ids(self) -> list[int]:
        """``span`` as a list (read unit by unit when phrases grow)."""
        return self.span.tolist()

    def overlapping(self, a: int, b: int) -> tuple[int, int]:
        """Units [lo, hi) that overlap the characters a:b (a zero-width span is taken as one character)."""
        b = max(b, a + 1)
        lo = int(np.searchsorted(self.ends, a, side="right"))
        hi = int(np.searchsorted(self.starts, b, side="left"))
        return lo, max(lo, hi)

    def word_at(self, a: int, b: int) -> tuple[str, int]:
        """The word of the token at characters a:b (module docstring) and the unit it starts in:
        the first word unit it overlaps, else the first unit, else -1."""
        lo, hi = self.overlapping(a, b)
        words = [u for u in range(lo, hi) if self.word[u]]
        if words:
            first, last = words[0], words[-1]
            key = self.text[int(self.starts[first]) : int(self.ends[last])]
            if len(key) <= MAX_WORD_CHARS:
                return key, first
            return token_key(self.text[a:b]), first
        return token_key(self.text[a:b]), (lo if hi > lo else -1)


def item_text(text: str, spans: Sequence[Span], prompt_spans: Sequence[Span]) -> ItemText:
    """Cut the content ``spans`` of ``text`` into units; ``prompt_spans`` are those of the prompt."""
    starts: list[int] = []
    ends: list[int] = []
    units: list[str] = []
    word: list[bool] = []
    span: list[int] = []
    prompt: list[bool] = []
    prompt_set = {(int(a), int(b)) for a, b in prompt_spans}
    for k, (a, b) in enumerate(sorted((int(a), int(b)) for a, b in spans)):
        in_prompt = (a, b) in prompt_set
        for m in UNIT.finditer(text, a, b):
            starts.append(m.start())
            ends.append(m.end())
            units.append(LINE_BREAK if m.group(2) else m.group(0))
            word.append(m.group(1) is not None)
            span.append(k)
            prompt.append(in_prompt)
    return ItemText(
        text,
        np.asarray(starts, dtype=np.int64),
        np.asarray(ends, dtype=np.int64),
        units,
        np.asarray(word, dtype=bool),
        np.asarray(span, dtype=np.int64),
        np.asarray(prompt, dtype=bool),
    )


def word_in_context(left: str, token: str, right: str) -> str:
    """The word of ``token`` seen between ``left`` and ``right`` (a top context's three parts)."""
    text = left + token + right
    it = item_text(text, [(0, len(text))], [])
    return it.word_at(len(left), len(left) + len(token))[0]


@dataclass
class RunText:
    """Every analysed item's units, and every analysed token with its word.

    ``tokens``: one row per analysed token, columns ``item_id``, ``start``, ``end`` (its
    character span), ``word`` (:meth:`ItemText.word_at`) and ``unit`` (the unit it starts in).
    """

    items: dict[str, ItemText]
    tokens: pd.DataFrame

    def base(self) -> pd.Series:
        """Occurrences of each word among the run's analysed tokens (a word of three tokens counts
        three times: the base rate of a concept peaking on it by chance)."""
        return self.tokens["word"].value_counts()

    def vocabulary(self) -> set[str]:
        """The words of the run's analysed text."""
        return {u for it in self.items.values() for u, w in zip(it.units, it.word, strict=True) if w}

    def documents(
        self, item_ids: Sequence[str], skip: Mapping[str, np.ndarray] | None = None
    ) -> tuple[sp.csr_matrix, list[str]]:
        """items x words, 1 where the item's analysed text holds the word (rows in ``item_ids``'
        order; an item without text has an empty row), and the words naming the columns. Units
        that ``skip`` marks (per item a bool per unit) are left out."""
        index: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for r, i in enumerate(item_ids):
            it = self.items.get(i)
            if it is None:
                continue
            drop = skip.get(i) if skip is not None else None
            kept = it.word if drop is None else it.word & ~drop
            for u in {u for u, w in zip(it.units, kept, strict=True) if w}:
                rows.append(r)
                cols.append(index.setdefault(u, len(index)))
        docs = sp.csr_matrix(
            (np.ones(len(rows)), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
            shape=(len(item_ids), len(index)),
        )
        return docs, list(index)


def run_text(
    texts: Iterable[tuple[str, str, Sequence[Span], Sequence[Span], Sequence[Span], Any]],
) -> RunText:
    """Build a :class:`RunText` from ``(item_id, text, content spans, prompt spans, token offsets,
    analysed-token mask)`` per item."""
    items: dict[str, ItemText] = {}
    cols: dict[str, list[Any]] = {"item_id": [], "start": [], "end": [], "word": [], "unit": []}
    for item_id, text, spans, prompt_spans, offsets, mask in texts:
        it = item_text(text, spans, prompt_spans)
        items[item_id] = it
        seen: dict[Span, tuple[str, int]] = {}
        for (a, b), keep in zip(offsets, mask, strict=True):
            if not keep:
                continue
            key = (int(a), int(b))
            if key not in seen:
                seen[key] = it.word_at(*key)
            w, u = seen[key]
            cols["item_id"].append(item_id)
            cols["start"].append(key[0])
            cols["end"].append(key[1])
            cols["word"].append(w)
            cols["unit"].append(u)
    tokens = pd.DataFrame(cols)
    tokens["start"] = tokens["start"].astype(np.int64)
    tokens["end"] = tokens["end"].astype(np.int64)
    tokens["unit"] = tokens["unit"].astype(np.int64)
    return RunText(items, tokens)
