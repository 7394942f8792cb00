"""Evaluation protocols (docs/benchmarks.md "Evaluation protocols"): what exactly is scored.

Fast tests pin the (context, continuation) strings of each protocol with a recording fake
generator, the choice rule against a plain argmax, ``mc_scoring: auto``, the option table and
the staleness of an evaluation whose settings changed; a tiny random model checks
:meth:`HFBackend.loglikelihood` against a plain one-sequence-at-a-time reference. The slow test
runs lm-evaluation-harness itself (tests/harness.py) and ``cgaps evaluate`` on the same
SocialIQA items and compares them item by item and option by option.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.evaluate.evaluator import loglik_requests, pick, protocol
from cgaps.evaluate.stage import evaluate_run
from cgaps.items import load_suite, prompts

sys.path.insert(0, str(Path(__file__).parents[1]))
import harness  # noqa: E402
from helpers import FakeGenerator  # noqa: E402

OPTIONS = ["a red fox", "the moon", "42"]


def _item(**kw):
    base = {
        "item_id": "bench/0",
        "benchmark": "bench",
        "prompt": prompts.multiple_choice("Which one?", OPTIONS, context="Some context."),
        "reference": "B",
        "answer_type": "choice",
        "choices": json.dumps(OPTIONS),
        "messages": None,
    }
    return {**base, **kw}


class Recording(FakeGenerator):
    """A generator whose option log-likelihoods are given per continuation; records every request."""

    name = "recording"

    def __init__(self, scores: dict[str, float]):
        self.scores = scores
        self.requests: list = []

    def generate(self, conversations, max_new_tokens, batch_size, progress=None):
        return ["Answer: A"] * len(conversations)

    def loglikelihood(self, requests, batch_size, progress=None):
        self.requests.extend(requests)
        return [self.scores.get(cont.strip(), -10.0) for _, cont in requests]


# ------------------------------------------------------------------ what is scored


def test_cloze_scores_delimiter_plus_option_without_listing_the_options():
    item = _item()
    bare = loglik_requests(item, OPTIONS, "loglik", chat_template=False)
    assert bare == [("Some context.\n\nWhich one?\nAnswer:", f" {o}") for o in OPTIONS]
    chat = loglik_requests(item, OPTIONS, "loglik_norm", chat_template=True)
    assert chat == [
        ([{"role": "user", "content": "Some context.\n\nWhich one?\nAnswer:"}], o) for o in OPTIONS
    ]


def test_letter_protocol_lists_the_options_and_scores_letters():
    item = _item()
    bare = loglik_requests(item, OPTIONS, "loglik_letter", chat_template=False)
    assert [c for _, c in bare] == [" A", " B", " C"]
    assert bare[0][0] == item["prompt"] + "\nAnswer:"
    assert "B) the moon" in bare[0][0]
    chat = loglik_requests(item, OPTIONS, "loglik_letter", chat_template=True)
    assert chat[1] == ([{"role": "user", "content": item["prompt"]}], "B")


def test_a_spec_template_prompt_is_scored_as_written():
    item = _item(prompt="Q: Which one?\nA:")
    assert loglik_requests(item, OPTIONS, "loglik", False)[2] == ("Q: Which one?\nA:", " 42")


def test_yesno_items_score_yes_and_no_under_every_loglik_protocol():
    item = _item(prompt="Is it? Answer with yes or no.", answer_type="yesno", choices=None, reference="no")
    for mode in ("loglik", "loglik_norm", "loglik_letter"):
        assert [c for _, c in loglik_requests(item, ["yes", "no"], mode, False)] == [" yes", " no"]


def test_pick_is_the_harness_argmax_raw_or_per_character():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 6))
        opts = ["x" * int(k) for k in rng.integers(1, 30, size=n)]
        ll = [float(v) for v in rng.normal(-20, 8, size=n)]
        assert pick(ll, opts, "loglik") == int(np.argmax(ll))
        assert pick(ll, opts, "loglik_norm") == int(np.argmax(np.array(ll) / [len(o) for o in opts]))
    assert pick([-1.0, -1.0], ["a", "b"], "loglik") == 0  # ties: the first, as np.argmax


@pytest.mark.parametrize(
    ("benchmark", "answer_type", "mc_scoring", "expected"),
    [
        ("socialiqa", "choice", "auto", "loglik"),
        ("bbq", "choice", "auto", "loglik"),
        ("agieval", "choice", "auto", "generate"),
        ("crows_pairs", "loglik_choice", "auto", "loglik"),
        ("crows_pairs", "loglik_choice", "generate", "loglik"),  # always by log-likelihood
        ("crows_pairs", "loglik_choice", "loglik_letter", "loglik_letter"),
        ("agieval", "choice", "loglik_norm", "loglik_norm"),
        ("socialiqa", "choice", "generate", "generate"),
    ],
)
def test_protocol_per_benchmark(benchmark, answer_type, mc_scoring, expected):
    item = _item(benchmark=benchmark, answer_type=answer_type)
    assert protocol(item, RunConfig(mc_scoring=mc_scoring)) == expected
    free = _item(benchmark="gsm8k", answer_type="number", choices=None)
    assert protocol(free, RunConfig(mc_scoring=mc_scoring)) == "generate"


def test_option_table_and_settings_recorded(tmp_path):
    items = pd.DataFrame([_item(item_id=f"bench/{i}") for i in range(3)])
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    gen = Recording({"a red fox": -3.0, "the moon": -2.0, "42": -2.5})
    out = evaluate_run(tmp_path, RunConfig(mc_scoring="loglik", chat_template=False), gen)
    assert out["response"].tolist() == ["B) the moon"] * 3
    assert out["score"].tolist() == [1.0] * 3
    table = pd.read_parquet(tmp_path / rundir.OPTION_LOGLIKS)
    assert list(table.columns) == [
        "item_id",
        "option",
        "letter",
        "continuation",
        "loglik",
        "chars",
        "chosen",
        "protocol",
    ]
    first = table[table["item_id"] == "bench/0"]
    assert first["continuation"].tolist() == [" a red fox", " the moon", " 42"]
    assert first["loglik"].tolist() == [-3.0, -2.0, -2.5]
    assert first["chars"].tolist() == [9, 8, 2]
    assert first["chosen"].tolist() == [False, True, False]
    assert set(table["protocol"]) == {"loglik"}
    meta = rundir.read_run_json(tmp_path)
    assert meta["inputs"]["evaluate"]["config"]["mc_scoring"] == "loglik"
    assert meta["inputs"]["evaluate"]["config"]["chat_template"] is False
    assert rundir.stage_check(tmp_path, "evaluate", rundir.read_items(tmp_path))[0] is True
    # the run's config now asks for another protocol: the evaluation is stale, naming the setting
    rundir.update_run_json(tmp_path, config={**meta["config"], "mc_scoring": "loglik_norm"})
    current, reason = rundir.stage_check(tmp_path, "evaluate", rundir.read_items(tmp_path))
    assert current is False
    assert "mc_scoring='loglik'" in reason and "mc_scoring='loglik_norm'" in reason


def test_norm_protocol_changes_the_pick(tmp_path):
    items = pd.DataFrame([_item()])
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    gen = Recording({"a red fox": -3.0, "the moon": -4.0, "42": -2.5})
    raw = evaluate_run(tmp_path, RunConfig(mc_scoring="loglik"), gen)["response"].iloc[0]
    norm = evaluate_run(tmp_path, RunConfig(mc_scoring="loglik_norm"), gen)["response"].iloc[0]
    assert raw == "C) 42"  # -2.5 is the highest sum
    assert norm == "A) a red fox"  # -0.33 per character beats -0.5 ("the moon") and -1.25 ("42")


def test_generated_run_removes_an_older_option_table(tmp_path):
    items = pd.DataFrame([_item()])
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    evaluate_run(tmp_path, RunConfig(mc_scoring="loglik"), Recording({}))
    assert (tmp_path / rundir.OPTION_LOGLIKS).exists()
    evaluate_run(tmp_path, RunConfig(mc_scoring="generate"), Recording({}))
    assert not (tmp_path / rundir.OPTION_LOGLIKS).exists()


# ------------------------------------------------------------------ the backend's log-likelihoods


def _reference_loglik(model, tok, context: str, cont: str, raw: bool) -> float:
    """One sequence at a time, no batching: the harness's _encode_pair, then a plain sum."""
    n = len(context) - len(context.rstrip())
    if n:
        context, cont = context[:-n], context[-n:] + cont
    ctx = tok(context, add_special_tokens=raw)["input_ids"]
    whole = tok(context + cont, add_special_tokens=raw)["input_ids"]
    cid = whole[len(ctx) :]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(ctx) - 1 + k, t] for k, t in enumerate(cid)))


@pytest.mark.integration
def test_backend_loglikelihood_matches_a_plain_reference():
    from cgaps.models import HFBackend, format_chat
    from helpers import embedded_tokenizer, tiny_causal_lm

    tok = embedded_tokenizer()
    model = tiny_causal_lm()
    backend = HFBackend(model, tok, "tiny", "cpu")
    convo = [{"role": "user", "content": "Which one?"}]
    requests = [
        ("Q: Which one?\nA:", " the moon"),
        ("Q: Which one?\nA:", " a red fox"),
        ("Q: Which one?\nA: ", "42"),  # trailing space moves into the continuation
        ("Some longer context, so that the batch is padded.\nAnswer:", " B"),
        (convo, "the moon"),
        (convo, "B"),
    ]
    got = backend.loglikelihood(requests, batch_size=3)
    want = [
        _reference_loglik(
            model, tok, c if isinstance(c, str) else format_chat(tok, c).text, cont, isinstance(c, str)
        )
        for c, cont in requests
    ]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=1e-5)
    assert got[2] == pytest.approx(backend.loglikelihood([("Q: Which one?\nA:", " 42")], 1)[0], abs=1e-5)


# ------------------------------------------------------------------ against the harness itself

HARNESS_ITEMS = 60  # SocialIQA dev items: ~180 option log-likelihoods per side


def _kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two 0/1 vectors."""
    po = float(np.mean(a == b))
    pe = float(np.mean(a) * np.mean(b) + (1 - np.mean(a)) * (1 - np.mean(b)))
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def _siqa_docs() -> tuple[list[dict], str]:
    """The first SocialIQA dev items where ../shared/benchmarks is (CGAPS_BENCHMARKS), else items
    in its format written by the test, so the agreement is checked on every machine, CI's too."""
    import os

    root = Path(
        os.environ.get(
            "CGAPS_BENCHMARKS", Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"
        )
    )
    if (root / "socialiqa" / "dev.jsonl").exists():
        return harness.socialiqa_docs(root, HARNESS_ITEMS), "SocialIQA dev"
    return harness.synthetic_socialiqa_docs(HARNESS_ITEMS), "SocialIQA-format (written by the test)"


@pytest.mark.slow
def test_cgaps_evaluate_agrees_with_lm_evaluation_harness(tmp_path, capsys):
    from typer.testing import CliRunner

    from cgaps.cli.main import app

    docs, source = _siqa_docs()
    task_dir = harness.write_mc_task(
        tmp_path / "task", "cg_siqa", docs, harness.SIQA_TEXT, harness.SIQA_CHOICES, harness.SIQA_TARGET
    )
    out = harness.run_harness(task_dir, "cg_siqa", tmp_path / "lm_eval_out", dtype="float32")
    samples = harness.read_samples(out, "cg_siqa")
    assert [s["doc_id"] for s in samples] == list(range(HARNESS_ITEMS))

    # the same task as a spec file: the harness's prompt, the three answers, the 0-based label
    spec = {
        "name": "siqa_harness",
        "path": str(task_dir / "cg_siqa.jsonl"),
        "answer_type": "choice",
        "fields": {"question": "question", "answer": "label", "choices": ["answerA", "answerB", "answerC"]},
        "prompt_template": "Q: {context} {question}\nA:",
    }
    spec_path = tmp_path / "siqa_harness.yaml"
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["items", str(spec_path), "--out", str(run)])
    assert result.exit_code == 0, result.output
    args = ["evaluate", str(run), "--mc-scoring", "loglik", "--no-chat-template", "--dtype", "float32"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output

    items = rundir.read_items(run, scored=True)
    ours = items["score"].to_numpy()
    theirs = np.array([s["acc"] for s in samples])
    agreement = float(np.mean(ours == theirs))
    kappa = _kappa(ours, theirs)
    table = pd.read_parquet(run / rundir.OPTION_LOGLIKS).sort_values(["item_id", "option"])
    ll_ours = table["loglik"].to_numpy().reshape(HARNESS_ITEMS, 3)
    ll_theirs = np.array([s["logliks"] for s in samples])
    diff = np.abs(ll_ours - ll_theirs)
    with capsys.disabled():
        print(
            f"\nharness vs cgaps on {HARNESS_ITEMS} {source} items: per-item agreement {agreement:.3f}, "
            f"kappa {kappa:.3f}, acc {theirs.mean():.3f} vs {ours.mean():.3f}; per-choice |d loglik| "
            f"max {diff.max():.2e}, median {np.median(diff):.2e}"
        )
    assert agreement >= 0.98
    assert diff.max() < 1e-3
    assert math.isclose(theirs.mean(), ours.mean(), abs_tol=0.02)
    # and the prompt the model read is the harness's: no options listed, no chat template
    assert (
        load_suite(str(spec_path))["prompt"].iloc[0] == f"Q: {docs[0]['context']} {docs[0]['question']}\nA:"
    )
