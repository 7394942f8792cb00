"""The provisional label source: the most frequent firing tokens of each concept's top contexts."""

from __future__ import annotations

import pandas as pd

from cgaps import rundir
from cgaps.labels.contexts import TopContextLabels, labels_are_provisional, provisional_labels
from cgaps.seams import LabelSource


def _contexts() -> pd.DataFrame:
    tokens = {0: [" cat", "cat", "dog", " ", "cat"], 2: ["7"]}
    rows = [
        {
            "concept": c,
            "rank": r,
            "item_id": f"i{r}",
            "value": 1.0 - r / 10,
            "left": "",
            "token": t,
            "right": "",
        }
        for c, toks in tokens.items()
        for r, t in enumerate(toks)
    ]
    return pd.DataFrame(rows, columns=list(rundir.CONTEXT_COLUMNS))


def test_top_context_labels_is_a_label_source(tmp_path):
    source = TopContextLabels(_contexts())
    assert isinstance(source, LabelSource) and source.name == "top_contexts"
    labels = source.labels(4)
    assert list(labels.columns) == list(rundir.LABEL_COLUMNS)
    assert labels["concept"].tolist() == [0, 1, 2, 3]
    # most frequent first; a whitespace token is shown by its repr
    assert labels["label"].tolist() == ["“cat” · “dog” · “' '”", "", "“7”", ""]
    assert labels["source"].tolist() == ["top_contexts", "", "top_contexts", ""]
    pd.testing.assert_frame_equal(provisional_labels(_contexts(), 4), labels)
    rundir.write_table(labels, tmp_path / rundir.LABELS)
    assert labels_are_provisional(tmp_path)
    rundir.write_table(labels.assign(source="llm"), tmp_path / rundir.LABELS)
    assert not labels_are_provisional(tmp_path)
