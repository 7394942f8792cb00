"""Labels: the top-context label source, the evidence, imported and LLM labels, the stage."""

from __future__ import annotations

import pandas as pd

from cgaps import rundir
from cgaps.labels.top_contexts import TopContextLabels
from cgaps.seams import LabelSource
from helpers import free_port


def _contexts() -> pd.DataFrame:
    # (left, token, right): a firing token is shown as the whole word it is part of
    tokens = {
        0: [
            ("the", " cat", "s"),
            ("", "cat", ""),
            ("hot", "dog", " stand"),
            ("a", " ", "b"),
            ("", "cat", ""),
        ],
        2: [("", "7", "")],
        3: [("the ", "Ved", "as say"), ("holy ", "Ved", "as,"), ("", "V", "edas")],
    }
    rows = [
        {
            "concept": c,
            "rank": r,
            "item_id": f"i{r}",
            "value": 1.0 - r / 10,
            "left": left,
            "token": t,
            "right": right,
        }
        for c, toks in tokens.items()
        for r, (left, t, right) in enumerate(toks)
    ]
    return pd.DataFrame(rows, columns=list(rundir.CONTEXT_COLUMNS))


def test_top_context_labels_is_a_label_source():
    source = TopContextLabels(_contexts())
    assert isinstance(source, LabelSource) and source.name == "top_contexts"
    labels = source.labels(5)
    assert list(labels.columns) == list(rundir.LABEL_COLUMNS)
    assert labels["concept"].tolist() == [0, 1, 2, 3, 4]
    # most frequent first; "cat" + "s" is the word "cats"; "Ved" + "as" the word "Vedas"
    assert labels["label"].tolist() == ["“cat” · “cats” · “hotdog”", "", "“7”", "“Vedas”", ""]
    assert labels["source"].tolist() == ["top_contexts", "", "top_contexts", "top_contexts", ""]
    # a table narrower than the contexts (another tool's) names only the concepts it has
    assert TopContextLabels(_contexts()).labels(1)["label"].tolist() == ["“cat” · “cats” · “hotdog”"]


# ---------------------------------------------------------------- evidence (issue 10)

import gzip  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

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


def test_group_shares_match_reference():
    rng = np.random.default_rng(5)
    n_items, f = 60, 7
    dense = rng.random((n_items, f)) * (rng.random((n_items, f)) < 0.4)
    dense[:, 6] = 0.0  # never present: no groups
    labels = pd.Series([f"b:g{k % 5}" if k % 11 else None for k in range(n_items)])
    got = evidence.group_shares(sp.csr_matrix(dense), labels, cover=0.8, top=3)
    for j in range(f):
        total = dense[:, j].sum()
        mass = {}
        for i in range(n_items):
            if labels[i] is not None:
                mass[labels[i]] = mass.get(labels[i], 0.0) + dense[i, j]
        want, held = [], 0.0
        for g in sorted(mass, key=lambda g: -mass[g])[:3]:
            if total == 0 or mass[g] == 0:
                break
            want.append(g)
            held += mass[g] / total
            if held >= 0.8:
                break
        assert [r[0] for r in got[j]] == want
        for name, share, items in got[j]:
            assert share == pytest.approx(mass[name] / total, rel=1e-12)
            assert items == pytest.approx(sum(x == name for x in labels) / n_items)
    assert got[6] == []


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


# ---------------------------------------------------------------- LLM labels (auto-interp)

import http.server  # noqa: E402
import threading  # noqa: E402

from cgaps.config import RunConfig  # noqa: E402
from cgaps.labels.autointerp import CACHE, balanced_accuracy, parse_numbers  # noqa: E402
from cgaps.labels.config import LabelConfig  # noqa: E402


class _Endpoint(http.server.BaseHTTPRequestHandler):
    """A deterministic OpenAI-compatible chat endpoint on 127.0.0.1 for the client's plumbing: the
    first request gets a 429 (retried), explanations say "weekday names", detection names the texts
    that mention Monday."""

    calls: list[float] = []

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(time.monotonic())
        if len(type(self).calls) == 1:
            self.send_response(429)
            self.end_headers()
            return
        user = body["messages"][-1]["content"]
        if user.startswith("Label:"):
            lines = [ln for ln in user.splitlines() if re.match(r"\d+\. ", ln)]
            answer = ", ".join(ln.split(".")[0] for ln in lines if "Monday" in ln) or "none"
        else:
            answer = "weekday names"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _weekday_run(root, twins=False):
    """40 probe items, weekday (mostly wrong) and add (right); concept 0 fires on the weekday items,
    1 on the add items, 2 everywhere. ``twins``: concepts 3 and 4 co-fire with 0 and 1, so that
    each pair forms a theme (docs/method.md §3), and 2 fires on every third item only."""
    from cgaps.scoring.stage import score_run

    rows, sal, ctx = [], [], []
    for k in range(40):
        monday = k < 20
        prompt = f"Today is Monday, what day is it in {k} days?" if monday else f"What is {k} + 2?"
        rows.append(
            {
                "item_id": f"i{k}",
                "benchmark": "probes",
                "prompt": prompt,
                "reference": "r",
                "response": "x",
                "score": float(not monday or k < 2),
                "category": "weekday" if monday else "add",
            }
        )
        sal.append((f"i{k}", 0 if monday else 1, 1.0 + k / 100))
        if not twins or k % 3 == 0:  # with twins, concept 2 fires on a third of the items only
            sal.append((f"i{k}", 2, 0.5 + (k % 7) / 10))
        if twins:
            sal.append((f"i{k}", 3 if monday else 4, 0.8 + k / 200))
    for c, ids in ((0, range(19, 11, -1)), (1, range(39, 31, -1)), (2, range(8))):
        for r, k in enumerate(ids):
            tok = "Monday" if c == 0 else "+"
            ctx.append(
                {
                    "concept": c,
                    "rank": r,
                    "item_id": f"i{k}",
                    "value": 1.0,
                    "left": "Today is " if c == 0 else f"What is {k} ",
                    "token": tok,
                    "right": f", what day is it in {k} days?" if c == 0 else " 2?",
                }
            )
    root.mkdir(parents=True, exist_ok=True)
    rundir.write_json(
        {"n_concepts": 5 if twins else 3, "config": RunConfig(presence=0.0, min_support=3).to_dict()},
        root / rundir.RUN_JSON,
    )
    pd.DataFrame(rows).to_parquet(root / rundir.ITEMS, index=False)
    pd.DataFrame(sal, columns=["item_id", "concept", "value"]).to_parquet(root / rundir.SALIENCY, index=False)
    pd.DataFrame(ctx, columns=list(rundir.CONTEXT_COLUMNS)).to_parquet(root / rundir.CONTEXTS, index=False)
    score_run(root)
    return root


def test_without_reader_evidence_the_label_stage_names_concepts_by_their_top_contexts(tmp_path):
    """Saliency another tool wrote (no `sae` in run.json): no distinctive or output tokens, so a
    concept without an enrichment label is named by its top contexts; the stage, not extraction,
    writes them into labels.parquet."""
    from cgaps.labels.stage import label_run

    run = _weekday_run(tmp_path / "run")
    assert not (run / rundir.LABELS).exists()
    table = label_run(run).set_index("concept")
    top = TopContextLabels(pd.read_parquet(run / rundir.CONTEXTS)).labels(3).set_index("concept")
    fell_back = table["evidence_label"] == ""
    assert fell_back.any() and not fell_back.all()  # both kinds of concept are in this run
    assert (table.loc[fell_back, "label"] == top.loc[fell_back, "label"]).all()
    assert (table.loc[fell_back, "source"] == "top_contexts").all()
    assert (table.loc[~fell_back, "label"] == table.loc[~fell_back, "evidence_label"]).all()
    assert (table.loc[~fell_back, "source"] == "evidence").all()
    stored = pd.read_parquet(run / rundir.LABELS).set_index("concept")
    assert stored["label"].tolist() == table["label"].tolist()


def test_detection_scoring_helpers():
    assert parse_numbers("1, 3 and 12; 0", 5) == {1, 3}
    assert balanced_accuracy({1, 2}, {1, 2}, 4) == 1.0
    assert balanced_accuracy({1, 2, 3, 4}, {1, 2}, 4) == 0.5
    assert balanced_accuracy(set(), {1}, 4) == 0.5


@pytest.mark.integration
def test_llm_labels_cached_resumed_rate_limited_and_retried(tmp_path):
    from cgaps.labels.stage import label_run

    run = _weekday_run(tmp_path / "run")
    _Endpoint.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        opts = LabelConfig(labeler=url, labeler_model="fake", llm_concepts=2, llm_rate=5.0, llm_retries=2)
        table = label_run(run, opts)
        assert table.loc[0, "llm_label"] == "weekday names"
        assert table.loc[0, "llm_score"] == 1.0  # the held-out Monday texts found, the others left out
        assert table.loc[0, "label"] == "weekday names" and table.loc[0, "source"] == "llm"
        n_calls = len(_Endpoint.calls)
        assert n_calls == 1 + 2 * 2  # the 429, then explain + detect for two concepts
        gaps = np.diff(_Endpoint.calls)  # arrival times (jitter can shorten one gap: a margin)
        assert gaps.min() >= 0.1 and _Endpoint.calls[-1] - _Endpoint.calls[0] >= (n_calls - 1) / 5 - 0.05
        lines = (run / CACHE).read_text().splitlines()
        assert len(lines) == 2
        again = label_run(run, opts)  # resumed from the cache: no request
        assert len(_Endpoint.calls) == n_calls
        assert again.loc[0, "llm_score"] == 1.0
    finally:
        server.shutdown()
    opts = LabelConfig(labeler="http://127.0.0.1:9/v1", labeler_model="fake", llm_concepts=3, llm_retries=0)
    with pytest.raises(CGapsError, match="labeler request failed.*rerun to resume"):
        label_run(run, opts)  # the third concept is not cached and nothing answers


def test_api_key_env_must_be_set(tmp_path, monkeypatch):
    from cgaps.labels.autointerp import AutoInterp

    monkeypatch.delenv("CGAPS_TEST_KEY", raising=False)
    opts = LabelConfig(labeler="http://127.0.0.1:9/v1", labeler_model="m", api_key_env="CGAPS_TEST_KEY")
    with pytest.raises(CGapsError, match="'CGAPS_TEST_KEY' is not set"):
        AutoInterp(tmp_path, opts)
    with pytest.raises(CGapsError, match="needs --labeler-model"):
        LabelConfig(labeler="http://127.0.0.1:9/v1")


@pytest.mark.slow
def test_llm_labels_against_a_real_llama_cpp_server(tmp_path):
    """llama-cpp-python's OpenAI-compatible server running the embedded SmolLM2 GGUF on 127.0.0.1.
    A 135M model writes poor labels: this checks the plumbing and the score, not the prose."""
    import importlib.util
    import subprocess
    import sys

    import httpx

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[llama]')")
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as e:
        pytest.skip(f"llama-cpp-python's server extra is missing ({e})")
    from cgaps.labels.autointerp import AutoInterp
    from cgaps.labels.stage import label_run, thresholded_matrix
    from cgaps.models import embedded_gguf
    from cgaps.runtables import load_run

    run = _weekday_run(tmp_path / "run")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_gguf()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--model_alias",
        "smollm2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "the llama.cpp server exited"
            assert time.monotonic() < deadline, "the llama.cpp server did not start in 180 s"
            time.sleep(1)
        opts = LabelConfig(labeler=url, labeler_model="smollm2", llm_concepts=2, llm_timeout=300.0)
        table = label_run(run, opts)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    cached = [json.loads(x) for x in (run / CACHE).read_text().splitlines()]
    assert sorted(r["concept"] for r in cached) == [0, 1]
    tables = load_run(run, results=True)
    interp = AutoInterp(run, opts)
    for rec in cached:
        c = rec["concept"]
        assert isinstance(table.loc[c, "llm_label"], str)
        p = interp.prompts(tables, thresholded_matrix(tables), table, c)
        # the score is the balanced accuracy of the server's own detection answer
        expected = balanced_accuracy(
            parse_numbers(rec["answer"], len(p["texts"])), p["positives"], len(p["texts"])
        )
        assert table.loc[c, "llm_score"] == pytest.approx(expected) and 0.0 <= expected <= 1.0


@pytest.mark.integration
def test_label_command(tmp_path):
    """`cgaps label` through the real command group: a summary of the first themes, and a bad
    option or a mismatched import as one line with exit status 2."""
    import subprocess
    import sys

    run = _weekday_run(tmp_path / "run", twins=True)
    cmd = [sys.executable, "-m", "cgaps", "label", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert "first gap and strength themes" in out and "│ weak │" in out and "probes:add 100%" in out
    bad = subprocess.run([*cmd, "--enrich-p", "2"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "'enrich_p' (--enrich-p) must be a number in (0, 1], got 2.0" in bad.stderr
    assert "Traceback" not in bad.stderr
    export = tmp_path / "np.jsonl"
    export.write_text(
        json.dumps({"modelId": "gpt2-small", "layer": "0-res-jb", "index": "0", "description": "x"})
    )
    bad = subprocess.run([*cmd, "--labels-file", str(export)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "model 'gpt2-small'" in bad.stderr and "Traceback" not in bad.stderr
