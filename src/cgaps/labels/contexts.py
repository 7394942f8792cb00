"""Top activating contexts and provisional labels, from the peak tokens extraction records.

For each concept the items with the highest saliency are kept with the text around the
firing token (``contexts.parquet``): a window of :data:`WINDOW_TOKENS` tokens on each side,
cut on the reader's own token boundaries (so a window never splits a token, and it is as
long in tokens whatever the script or tokenizer), or :data:`SNIPPET_CHARS` characters where
the tokens' character spans are not known; the provisional label of a concept is the most frequent
firing words of those contexts (the whole word of the text each firing token is part of,
:func:`cgaps.labels.text.word_in_context`: "Ved" + "as" is "Vedas" whatever the tokenizer;
``labels.parquet``, source ``top_contexts``), kept until a better label source writes the table.

:class:`TopContextLabels` is that label source (a :class:`cgaps.seams.LabelSource`);
:func:`provisional_labels` is its table in one call, as ``cgaps extract`` writes it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from cgaps import rundir
from cgaps.labels.text import word_in_context

TOP_CONTEXTS = 8
WINDOW_TOKENS = 12  # tokens kept on each side of the firing token
SNIPPET_CHARS = 80  # characters on each side, where the tokens' spans are not given
TOP_CONTEXTS_SOURCE = "top_contexts"
# Label sources that a better one replaces: ``cgaps extract`` rewrites labels.parquet only
# while every row comes from these ('' = a concept that never fired; "evidence" = the labels
# stage's own, which depend on the extraction and are recomputed after it).
PROVISIONAL_SOURCES = {TOP_CONTEXTS_SOURCE, "", "evidence"}


def token_window(offsets: Sequence[tuple[int, int]], start: int, end: int, n: int) -> tuple[int, int]:
    """Character bounds of the ``n`` tokens before the token spanning ``start:end`` and the ``n``
    after it, given every token's character span (``offsets``, in order)."""
    # bisect on the spans themselves: O(log n) per context, no list of starts built per call
    i = max(bisect_right(offsets, start, key=itemgetter(0)) - 1, 0)  # the token the firing span starts in
    j = i
    while j + 1 < len(offsets) and offsets[j][1] < end:  # a span cut over several tokens
        j += 1
    lo = offsets[max(i - n, 0)][0] if offsets else start
    hi = offsets[min(j + n, len(offsets) - 1)][1] if offsets else end
    return min(lo, start), max(hi, end)


def top_contexts(
    shards: pd.DataFrame,
    texts: dict[str, str],
    k: int = TOP_CONTEXTS,
    offsets: Mapping[str, Sequence[tuple[int, int]]] | None = None,
) -> pd.DataFrame:
    """The k highest-saliency items per concept with the firing token and the text around it:
    :data:`WINDOW_TOKENS` tokens each side when ``offsets`` (each item's token spans) are
    given, else :data:`SNIPPET_CHARS` characters."""
    top = shards.sort_values(["concept", "value"], ascending=[True, False]).groupby("concept").head(k).copy()
    top["rank"] = top.groupby("concept").cumcount().astype(np.int16)
    lefts, toks, rights = [], [], []
    for item_id, a, b in zip(top["item_id"], top["peak_start"], top["peak_end"], strict=True):
        text = texts[item_id]
        spans = offsets.get(item_id) if offsets is not None else None
        if spans:
            lo, hi = token_window(spans, int(a), int(b), WINDOW_TOKENS)
        else:
            lo, hi = max(0, a - SNIPPET_CHARS), b + SNIPPET_CHARS
        lefts.append(text[lo:a])
        toks.append(text[a:b])
        rights.append(text[b:hi])
    top["left"], top["token"], top["right"] = lefts, toks, rights
    return top[list(rundir.CONTEXT_COLUMNS)].reset_index(drop=True)


class TopContextLabels:
    """:class:`cgaps.seams.LabelSource`: a concept's label is the most frequent firing words of
    its top contexts (a table of :data:`cgaps.rundir.CONTEXT_COLUMNS`, from :func:`top_contexts`)."""

    name = TOP_CONTEXTS_SOURCE

    def __init__(self, contexts: pd.DataFrame):
        self.contexts = contexts

    def labels(self, n_concepts: int) -> pd.DataFrame:
        labels = ["" for _ in range(n_concepts)]
        for concept, grp in self.contexts.groupby("concept"):
            words = (
                word_in_context(str(a), str(t), str(b))
                for a, t, b in zip(grp["left"], grp["token"], grp["right"], strict=True)
            )
            common = Counter(words).most_common(3)
            labels[int(concept)] = " · ".join(f"“{t}”" for t, _ in common)
        return pd.DataFrame(
            {
                "concept": np.arange(n_concepts, dtype=np.int32),
                "label": labels,
                "source": [self.name if s else "" for s in labels],
            }
        )


def provisional_labels(contexts: pd.DataFrame, n_concepts: int) -> pd.DataFrame:
    """The labels table of :class:`TopContextLabels`, until a better label source is used."""
    return TopContextLabels(contexts).labels(n_concepts)


def labels_are_provisional(run_dir: Path) -> bool:
    labels = pd.read_parquet(run_dir / rundir.LABELS, columns=["source"])
    return bool(set(labels["source"]) <= PROVISIONAL_SOURCES)
