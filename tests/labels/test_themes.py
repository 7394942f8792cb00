"""The labels stage end to end on a tiny model and SAE, and the themes' words.

The themes and their tests come from :mod:`cgaps.scoring.themes` and :mod:`cgaps.scoring.core`
(tested against the plain reference in test_scoring_themes.py); here a loop over items
recomputes each theme's saliency (the sum of its members' ŝ') and χ_model from it, the words
are checked on planted families, and the clustering on planted structure: concepts that
co-fire, and near-duplicate decoder directions that fire on different items.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.labels import evidence, themes
from cgaps.labels.config import LabelConfig
from cgaps.labels.stage import LABELS_TABLE_COLUMNS, THEMES, label_run, thresholded_matrix
from cgaps.runtables import load_run
from cgaps.sae import load_sae
from cgaps.scoring.core import build_matrix
from cgaps.scoring.themes import cluster
from helpers import save_random_sae


def test_cluster_joins_cofiring_and_near_duplicate_concepts():
    rng = np.random.default_rng(0)
    n = 60
    x = np.zeros((n, 6))
    x[:20, 0:2] = rng.uniform(0.5, 1, (20, 2))  # 0 and 1 fire on the same items
    x[20:40, 2] = rng.uniform(0.5, 1, 20)  # 2 and 3: different items, one decoder direction
    x[40:60, 3] = rng.uniform(0.5, 1, 20)
    x[:, 4] = rng.uniform(0, 1, n) * (rng.random(n) < 0.3)
    x[:, 5] = rng.uniform(0, 1, n) * (rng.random(n) < 0.3)
    w = rng.normal(size=(6, 16))
    w[3] = w[2] + 0.01 * rng.normal(size=16)
    labels = cluster(sp.csr_matrix(x), w, cut=0.4)
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert len({labels[0], labels[2], labels[4], labels[5]}) == 4
    # without decoder directions only co-activation joins
    labels = cluster(sp.csr_matrix(x), None, cut=0.4)
    assert labels[0] == labels[1] and labels[2] != labels[3]


def _suite(seed=0, n_concepts=40):
    """Four families; concepts 0-5 fire together on the failing family f0, 6-11 on the easy family f1."""
    rng = np.random.default_rng(seed)
    items, sal = [], []
    acc = {"f0": 0.05, "f1": 0.95, "f2": 0.5, "f3": 0.5}
    for fam, p in acc.items():
        for k in range(40):
            iid = f"{fam}/{k}"
            items.append(
                {
                    "item_id": iid,
                    "benchmark": "probes",
                    "prompt": "p",
                    "reference": "r",
                    "response": "x",
                    "score": float(rng.random() < p),
                    "category": fam,
                }
            )
            fires = rng.random(n_concepts) < 0.15
            if fam == "f0":
                fires[0:6] = rng.random() < 0.9
            else:
                fires[0:6] = False
            if fam == "f1":
                fires[6:12] = rng.random() < 0.9
            else:
                fires[6:12] = False
            for c in np.flatnonzero(fires):
                # the planted concepts fire with similar strength: they co-activate
                value = rng.uniform(0.8, 1.0) if c < 12 else rng.gamma(2.0, 1.0) + 1e-3
                sal.append((iid, int(c), float(value)))
    return pd.DataFrame(items), pd.DataFrame(sal, columns=["item_id", "concept", "value"])


def test_themes_match_plain_reference():
    items, sal = _suite()
    cfg = RunConfig(presence=0.2, min_support=5)
    m = build_matrix(items, sal, 40, presence=cfg.presence)
    tests = themes.scored_themes(m, cfg)
    groups = evidence.item_groups(items)
    tokens = pd.DataFrame(
        {
            "concept": [0, 1, 6],
            "token": ["zero", "zero", "one"],
            "count": [3, 3, 3],
            "z": [3.0, 3.0, 3.0],
            "delta": [4.0, 4.0, 4.0],
        }
    )
    table = themes.build_themes(m, tests, groups, tokens, 1e-3)
    assert list(table.columns) == list(themes.THEME_TABLE_COLUMNS)
    all_rows = table[table["scope"] == rundir.ALL_SCOPE].reset_index(drop=True)
    members = [json.loads(x) for x in all_rows["members"]]
    # the words sit beside the scoring stage's rows, unchanged
    pd.testing.assert_frame_equal(
        table[list(tests.columns)].reset_index(drop=True), tests.reset_index(drop=True), check_dtype=False
    )
    # the planted families end up in one gap theme and one strength theme, listed first
    assert all_rows["gap"].iloc[0] == "weak" and set(range(6)) <= set(members[0])
    first_strong = int(np.flatnonzero(all_rows["gap"] == "strong")[0])
    assert set(range(6, 12)) <= set(members[first_strong])
    assert list(all_rows["theme"]) == list(range(len(all_rows)))
    calls = all_rows["gap"].map({"weak": 0, "strong": 1}).fillna(2).to_numpy()
    assert (np.diff(calls) >= 0).all()  # gap themes, then strengths, then the rest
    assert all_rows["enrich_group"].iloc[0] == "probes:f0" and all_rows["enrich_mass"].iloc[
        0
    ] == pytest.approx(1.0)
    assert "zero" in json.loads(all_rows["tokens"].iloc[0])
    # plain reference: theme saliency = sum over members of s/m_c where present; chi_model by a loop
    scale = sal.groupby("concept")["value"].max()
    score = items.set_index("item_id")["score"]
    for t, ms in enumerate(members):
        num = den = 0.0
        support = 0
        for iid in items["item_id"]:
            vals = [
                v / scale[c]
                for c, v in sal[sal["item_id"] == iid][["concept", "value"]].itertuples(index=False)
                if c in ms and v >= cfg.presence * scale[c]
            ]
            if vals:
                s = sum(min(v, 1.0) for v in vals)
                num += s * score[iid]
                den += s
                support += 1
        assert all_rows["support"].iloc[t] == support
        assert all_rows["chi_model"].iloc[t] == pytest.approx(num / den, rel=1e-12)


def _tiny_run(tmp_path, backend):
    from cgaps.extract.stage import extract_run
    from cgaps.scoring.stage import score_run

    rng = np.random.default_rng(1)
    words = ["Monday", "Friday", "seven", "reverse", "the", "cat", "apple", "plus"]
    rows = []
    for fam in ("weekday", "add", "spell"):
        for k in range(12):
            text = " ".join(rng.choice(words, 6)) + (" Monday Friday" if fam == "weekday" else "")
            rows.append(
                {
                    "item_id": f"{fam}/{k}",
                    "benchmark": "probes",
                    "prompt": text,
                    "reference": "r",
                    "response": "ok",
                    "score": float(fam != "weekday" or k < 2),
                    "category": fam,
                    "meta": json.dumps({"family": fam}),
                }
            )
    pd.DataFrame(rows).to_parquet(tmp_path / rundir.ITEMS, index=False)
    folder = save_random_sae(
        tmp_path / "sae", "topk", d_in=backend.hidden_size, d_sae=24, layer=2, k=4, scale=0.3
    )
    spec = load_sae(str(folder), hidden_size=backend.hidden_size, n_layers=backend.n_layers)
    cfg = RunConfig(sae=str(folder), max_norm_ratio=None, presence=0.2, min_support=3, fdr=0.5)
    extract_run(tmp_path, cfg, backend=backend, sae_spec=spec)
    rundir.update_run_json(tmp_path, config=cfg.to_dict())
    score_run(tmp_path, cfg)
    return spec


@pytest.mark.integration
def test_label_stage_end_to_end(tmp_path, tiny_backend):
    from cgaps.labels.format import repeated_units
    from cgaps.labels.stage import peak_words, read_run_text

    spec = _tiny_run(tmp_path, tiny_backend)
    table = label_run(tmp_path, LabelConfig(min_log_odds=0.0, prior=5.0), backend=tiny_backend, sae=spec)
    stored = pd.read_parquet(tmp_path / rundir.LABELS)
    assert list(stored.columns) == list(LABELS_TABLE_COLUMNS)
    assert stored["concept"].tolist() == list(range(24))
    pd.testing.assert_frame_equal(stored, table.reset_index(drop=True), check_dtype=False)
    run = load_run(tmp_path, results=True)
    m = thresholded_matrix(run)
    # distinctive words: recomputed from the peaks with the documented formula
    text, digests = read_run_text(run, tiny_backend.tokenizer)
    peaks = peak_words(run, m, m.shat_matrix(), text, digests, repeated_units(text.items, 0.1))
    assert len(peaks) == m.saliency.nnz  # one firing token per present cell
    ref = evidence.distinctive_tokens(peaks.rename(columns={"word": "token"}), text.base(), 5.0, 8, 0.0)
    for c in range(24):
        got = [t[0] for t in json.loads(stored["tokens"].iloc[c])]
        assert got == ref[ref["concept"] == c]["token"].tolist()
    assert any(json.loads(x) for x in stored["tokens"])
    # enrichment = the function on the run's ŝ'
    enrich = evidence.enrichment(m.shat_matrix(), evidence.item_groups(run.items))
    np.testing.assert_array_equal(stored["enrich_group"].to_numpy(), enrich["enrich_group"].to_numpy())
    # output tokens: the logit lens of W_dec through the model's unembedding, words of the run only
    outs = json.loads(
        stored["output_tokens"].iloc[int(np.flatnonzero(np.diff(m.saliency.tocsc().indptr))[0])]
    )
    assert 0 < len(outs) <= 8 and {t[0] for t in outs} <= text.vocabulary()
    present = np.diff(m.saliency.tocsc().indptr) > 0
    assert (stored.loc[present, "source"] == "evidence").all()
    assert (stored.loc[~present, "label"] == "").all()
    assert (tmp_path / THEMES).exists()
    scoring_config = rundir.read_table_config(tmp_path / THEMES)
    assert scoring_config["presence"] == 0.2 and scoring_config["theme_cut"] == 0.4
    meta = rundir.read_run_json(tmp_path)
    assert meta["inputs"]["label"]["evidence"] and "themes" in meta["counts"]

    # an imported table wins over evidence and survives a rerun that imports nothing
    pd.DataFrame({"concept": [1], "label": ["hand label"]}).to_csv(tmp_path / "l.csv", index=False)
    label_run(
        tmp_path,
        LabelConfig(min_log_odds=0.0, prior=5.0, labels_file=str(tmp_path / "l.csv")),
        backend=tiny_backend,
        sae=spec,
    )
    again = label_run(tmp_path, LabelConfig(min_log_odds=0.0, prior=5.0), backend=tiny_backend, sae=spec)
    assert again.loc[1, "label"] == "hand label" and again.loc[1, "source"] == "imported"
    pd.testing.assert_series_equal(again["tokens"], stored["tokens"])
