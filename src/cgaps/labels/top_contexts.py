"""Labels from the top activating contexts: a concept named by the words it fires on most.

:class:`TopContextLabels` is a :class:`cgaps.seams.LabelSource` over ``contexts.parquet``
(written by ``cgaps extract``, :mod:`cgaps.extract.contexts`): a concept's label is the three
most frequent firing words of its top contexts (the whole word of the text each firing token is
part of, :func:`cgaps.labels.text.word_in_context`: "Ved" + "as" is "Vedas" whatever the
tokenizer), ``source`` ``top_contexts``. The labels stage
falls back on it where it finds no evidence of its own (saliency that another tool wrote, read
without the reader model), so such a run still has words for its concepts.

The labels stage is the only writer of ``labels.parquet``. Runs made by earlier versions hold
these labels there, written by extraction as provisional ones: :data:`PROVISIONAL_SOURCES`
names the sources the stage recomputes rather than keeps as another tool's labels.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from cgaps.labels.text import word_in_context

TOP_CONTEXTS_SOURCE = "top_contexts"
# Label sources that the labels stage recomputes rather than keeps: '' (a concept without a
# label), the top contexts' and its own evidence labels, which all follow from the extraction.
PROVISIONAL_SOURCES = {TOP_CONTEXTS_SOURCE, "", "evidence"}


class TopContextLabels:
    """:class:`cgaps.seams.LabelSource`: a concept's label is the most frequent firing words of
    its top contexts (a table of :data:`cgaps.rundir.CONTEXT_COLUMNS`)."""

    name = TOP_CONTEXTS_SOURCE

    def __init__(self, contexts: pd.DataFrame):
        self.contexts = contexts

    def labels(self, n_concepts: int) -> pd.DataFrame:
        labels = ["" for _ in range(n_concepts)]
        for concept, grp in self.contexts.groupby("concept"):
            if 0 <= int(concept) < n_concepts:
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
