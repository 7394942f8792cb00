"""Top activating contexts, from the peak tokens extraction records (``contexts.parquet``).

For each concept the items with the highest saliency are kept with the text around the
firing token: a window of :data:`WINDOW_TOKENS` tokens on each side, cut on the reader's own
token boundaries (so a window never splits a token, and it is as long in tokens whatever the
script or tokenizer), or :data:`SNIPPET_CHARS` characters where the tokens' character spans
are not known. Extraction writes the table; the labels stage, the report and the explorer read
it (:class:`cgaps.labels.top_contexts.TopContextLabels` names a concept by its firing tokens).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from operator import itemgetter

import numpy as np
import pandas as pd

from cgaps import rundir

TOP_CONTEXTS = 8
WINDOW_TOKENS = 12  # tokens kept on each side of the firing token
SNIPPET_CHARS = 80  # characters on each side, where the tokens' spans are not given


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
    # ties broken by item id: the rows' order depends on which shard held an item, and a resumed or
    # repaired extraction numbers its shards differently (issue 23)
    top = (
        shards.sort_values(["concept", "value", "item_id"], ascending=[True, False, True], kind="stable")
        .groupby("concept")
        .head(k)
        .copy()
    )
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
