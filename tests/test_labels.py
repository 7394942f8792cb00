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


# ---------------------------------------------------------------- evidence (issue 10)

import gzip  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from cgaps.errors import CGapsError  # noqa: E402
from cgaps.labels import evidence  # noqa: E402
from cgaps.labels.imported import ImportedLabels  # noqa: E402


def _reference_distinctive(peaks, base, prior, k, min_log_odds):
    """Loop-by-loop Fightin' Words (the formulas of cgaps.labels.evidence's docstring)."""
    big_n = sum(base.values())
    out = {}
    for c in sorted(set(peaks["concept"])):
        toks = list(peaks.loc[peaks["concept"] == c, "token"])
        n = len(toks)
        rows = []
        for w in sorted(set(toks)):
            y = toks.count(w)
            big_y = max(base.get(w, 0), y)
            a = prior * big_y / big_n
            d = math.log((y + a) / (n + prior - y - a)) - math.log((big_y + a) / (big_n + prior - big_y - a))
            z = d / math.sqrt(1 / (y + a) + 1 / (big_y + a))
            if y >= 2 and z >= 1.96 and d >= min_log_odds:
                rows.append((-d, w, y, z))
        out[c] = [(w, y, z) for _, w, y, z in sorted(rows)[:k]]
    return out


def test_distinctive_tokens_match_reference_and_the_does_not_win():
    rng = np.random.default_rng(0)
    vocab = ["the", "a", "of", ".", "Monday", "Friday", "cat", "7", "days", "␣"]
    base = {"the": 5000, "a": 3000, "of": 2500, ".": 4000, "Monday": 12, "Friday": 9, "cat": 30, "7": 80}
    base.update({"days": 40, "␣": 900})
    rows = []
    for c in range(12):
        weights = rng.dirichlet(np.ones(len(vocab)) * 0.5)
        for _ in range(int(rng.integers(3, 60))):
            rows.append((c, str(rng.choice(vocab, p=weights))))
    # concept 12: frequent "the" peaks (15 of 40), fewer but far rarer weekday names
    rows += [(12, "the")] * 15 + [(12, "Monday")] * 6 + [(12, "Friday")] * 4 + [(12, ".")] * 15
    peaks = pd.DataFrame(rows, columns=["concept", "token"])
    got = evidence.distinctive_tokens(peaks, pd.Series(base), prior=50.0, k=3, min_log_odds=1.0)
    ref = _reference_distinctive(peaks, base, 50.0, 3, 1.0)
    for c, expected in ref.items():
        sub = got[got["concept"] == c]
        assert list(sub["token"]) == [w for w, _, _ in expected]
        assert list(sub["count"]) == [y for _, y, _ in expected]
        np.testing.assert_allclose(sub["z"].to_numpy(), [z for _, _, z in expected], rtol=1e-12)
    first = got[got["concept"] == 12]["token"].tolist()
    assert first[:2] == ["Monday", "Friday"] and "the" not in first  # raw frequency never decides


def test_token_key():
    assert evidence.token_key(" Monday") == "Monday"
    assert evidence.token_key("\n\n") == "⏎"
    assert evidence.token_key("  ") == "␣"


def _reference_enrichment(dense, groups):
    """Per concept: per facet the group of largest mass share, the facet of largest m log(m/b), and
    the hypergeometric tail by explicit binomial coefficients."""
    n_items, f = dense.shape
    out = []
    for c in range(f):
        col = dense[:, c]
        total = col.sum()
        best = None
        for facet, labels in groups.items():
            names = [g for g in dict.fromkeys(labels) if g is not None]
            if total == 0 or not names:
                continue
            shares = {g: sum(col[i] for i in range(n_items) if labels[i] == g) / total for g in names}
            g = max(names, key=lambda x: (shares[x], -names.index(x)))
            m = shares[g]
            size = sum(1 for lab in labels if lab == g)
            b = size / n_items
            info = m * math.log(m / b) if m > 0 else -math.inf
            if best is None or info > best[0]:
                n = int((col > 0).sum())
                k = sum(1 for i in range(n_items) if labels[i] == g and col[i] > 0)
                p = sum(
                    math.comb(size, j) * math.comb(n_items - size, n - j) for j in range(k, min(size, n) + 1)
                ) / math.comb(n_items, n)
                best = (info, facet, g, m, b, p)
        out.append(best)
    return out


def test_enrichment_matches_reference():
    rng = np.random.default_rng(3)
    n_items, f = 40, 9
    dense = rng.random((n_items, f)) * (rng.random((n_items, f)) < 0.3)
    dense[:, 8] = 0.0  # never present
    dense[:, 7] = 0.0
    dense[:10, 7] = 0.9  # all in the first family
    items = pd.DataFrame(
        {
            "benchmark": ["b1"] * 25 + ["b2"] * 15,
            "category": ["fam0"] * 10 + ["fam1"] * 15 + [None] * 5 + ["fam2"] * 10,
            "meta": [
                json.dumps({"family": c}) if c else None
                for c in ["fam0"] * 10 + ["fam1"] * 15 + [None] * 5 + ["fam2"] * 10
            ],
        }
    )
    groups = evidence.item_groups(items)
    assert list(groups) == ["benchmark", "category"]  # family repeats the category: left out
    got = evidence.enrichment(sp.csr_matrix(dense), groups)
    ref = _reference_enrichment(dense, {k: list(v) for k, v in groups.items()})
    for c in range(f):
        row = got.iloc[c]
        if ref[c] is None:
            assert row["enrich_group"] == "" and math.isnan(row["enrich_mass"])
            continue
        _, facet, group, m, b, p = ref[c]
        assert (row["enrich_facet"], row["enrich_group"]) == (facet, group)
        assert row["enrich_mass"] == pytest.approx(m, rel=1e-12)
        assert row["enrich_items"] == pytest.approx(b, rel=1e-12)
        assert row["enrich_p"] == pytest.approx(p, rel=1e-9)
    assert got.iloc[7]["enrich_group"] == "b1:fam0" and got.iloc[7]["enrich_mass"] == pytest.approx(1.0)
    assert got.iloc[7]["enrich_p"] < 1e-6


def test_logit_lens_matches_dense_topk():
    import torch

    gen = torch.Generator().manual_seed(0)
    w_dec, w_u, g = (
        torch.randn(20, 8, generator=gen),
        torch.randn(50, 8, generator=gen),
        torch.rand(8, generator=gen),
    )
    ids, vals = evidence.logit_lens(w_dec, w_u, g, [3, 0, 19], k=4, chunk=2)
    dense = (w_dec[[3, 0, 19]] * g) @ w_u.T
    top = dense.topk(4, dim=1)
    np.testing.assert_array_equal(ids, top.indices.numpy())
    np.testing.assert_allclose(vals, top.values.numpy(), rtol=1e-5)


def test_compose_label():
    assert (
        evidence.compose_label(["Monday", "Friday", "Sunday", "x"], [], "probes:weekday", 0.912, 1e-9, 1e-3)
        == "“Monday” “Friday” “Sunday” · probes:weekday 91%"
    )
    # no distinctive token: the output tokens; an insignificant group is left out
    assert evidence.compose_label([], ["day"], "probes:weekday", 0.2, 0.5, 1e-3) == "→ “day”"
    assert evidence.compose_label([], [], "", float("nan"), float("nan"), 1e-3) == ""


# ---------------------------------------------------------------- imported labels


def _neuronpedia_records(model="gemma-2-2b", layer="20-gemmascope-res-16k"):
    # the fields of a Neuronpedia explanations export record
    return [
        {
            "modelId": model,
            "layer": layer,
            "index": str(i),
            "description": d,
            "explanationModelName": "gpt-4o-mini",
            "typeName": "oai_token-act-pair",
        }
        for i, d in [(3, "days of the week"), (0, " refusals  of harmful requests"), (3, "a later duplicate")]
    ]


@pytest.mark.parametrize("form", ["jsonl", "json", "jsonl.gz"])
def test_neuronpedia_export_imports(tmp_path, form):
    recs = _neuronpedia_records()
    path = tmp_path / f"explanations.{form}"
    text = "\n".join(json.dumps(r) for r in recs) if form.startswith("jsonl") else json.dumps(recs)
    if form.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    source = ImportedLabels(path, model="google/gemma-2-2b", sae="20-gemmascope-res-16k")
    assert isinstance(source, LabelSource) and source.name == "neuronpedia"
    labels = source.labels(5)
    assert labels["label"].tolist() == ["refusals of harmful requests", "", "", "days of the week", ""]
    assert labels["source"].tolist() == ["neuronpedia", "", "", "neuronpedia", ""]


def test_mismatched_neuronpedia_export_is_refused_naming_both(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _neuronpedia_records(model="gpt2-small")))
    with pytest.raises(CGapsError, match=r"model 'gpt2-small'.*this run's model is 'google/gemma-2-2b'"):
        ImportedLabels(path, model="google/gemma-2-2b", sae="20-gemmascope-res-16k").labels(5)
    path.write_text("\n".join(json.dumps(r) for r in _neuronpedia_records(layer="12-gemmascope-res-16k")))
    with pytest.raises(
        CGapsError, match=r"SAE '12-gemmascope-res-16k'.*this run's SAE is '20-gemmascope-res-16k'"
    ):
        ImportedLabels(path, model="gemma-2-2b", sae="20-gemmascope-res-16k").labels(5)
    path.write_text(json.dumps({"modelId": "gemma-2-2b", "index": "1", "description": "x"}) + "\n")
    with pytest.raises(CGapsError, match="record 1 has no layer"):
        ImportedLabels(path, model="gemma-2-2b", sae="s").labels(5)


def test_label_table_imports_and_bad_rows_are_named(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"concept": [2, 4], "label": ["weekdays", "carry digits"]}).to_csv(path, index=False)
    labels = ImportedLabels(path, model="m", sae="s").labels(5)
    assert labels["label"].tolist() == ["", "", "weekdays", "", "carry digits"]
    assert labels["source"].tolist() == ["", "", "imported", "", "imported"]
    pd.DataFrame({"concept": [7], "label": ["x"]}).to_parquet(tmp_path / "l.parquet")
    with pytest.raises(CGapsError, match=r"row 0: concept 7 is not a latent index in 0..4"):
        ImportedLabels(tmp_path / "l.parquet", model="m", sae="s").labels(5)
    pd.DataFrame({"latent": [1]}).to_csv(path, index=False)
    with pytest.raises(CGapsError, match="missing column"):
        ImportedLabels(path, model="m", sae="s").labels(5)
