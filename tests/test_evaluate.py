"""Evaluation stage logic with a fake backend: routing, grading, resuming, log-likelihood choice."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cgaps import rundir
from cgaps.config import RunConfig
from cgaps.evaluate.stage import evaluate_run


class FakeBackend:
    """Answers from a lookup table; prefers the option whose text is longest."""

    name = "fake"
    n_layers = 2
    hidden_size = 8

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.generated: list[str] = []
        self.loglik_requests = 0

    def generate(self, conversations, max_new_tokens, batch_size, progress=None):
        out = []
        for msgs in conversations:
            text = msgs[-1]["content"]
            self.generated.append(text)
            out.append(self.answers.get(text, "I don't know"))
        if progress:
            progress(len(conversations))
        return out

    def loglikelihood(self, requests, batch_size, progress=None):
        self.loglik_requests += len(requests)
        return [float(len(cont)) for _, cont in requests]


ITEMS = pd.DataFrame(
    {
        "item_id": [f"i{n}" for n in range(6)],
        "benchmark": ["arith"] * 3 + ["mc"] * 3,
        "prompt": ["1+1?", "2+2?", "3+3?", "Pick one", "Pick two", "Which sentence?"],
        "reference": ["2", "4", "6", "B", "A", "B"],
        "answer_type": ["number", "number", "number", "choice", "choice", "loglik_choice"],
        "choices": [
            None,
            None,
            None,
            json.dumps(["no", "yes!"]),
            json.dumps(["long option", "x"]),
            json.dumps(["short", "the longer one"]),
        ],
    }
)


@pytest.fixture
def run_dir(tmp_path):
    rundir.write_table(ITEMS, tmp_path / rundir.ITEMS)
    return tmp_path


def test_generate_and_grade(run_dir):
    backend = FakeBackend(
        {"1+1?": "The answer is 2.", "2+2?": "5", "3+3?": "#### 6", "Pick one": "(b)", "Pick two": "B"}
    )
    items = evaluate_run(run_dir, RunConfig(batch_size=2), backend)
    assert items.set_index("item_id")["score"].to_dict() == {
        "i0": 1.0,
        "i1": 0.0,
        "i2": 1.0,
        "i3": 1.0,
        "i4": 0.0,
        "i5": 1.0,
    }
    # the loglik_choice item is never generated; its response names the chosen option
    assert "Which sentence?" not in backend.generated
    assert items.set_index("item_id").loc["i5", "response"] == "B) the longer one"
    stored = rundir.read_items(run_dir, scored=True)
    assert stored["score"].tolist() == items["score"].tolist()
    assert not (run_dir / rundir.RESPONSES_PARTIAL).exists()
    meta = rundir.read_run_json(run_dir)
    assert meta["accuracy"]["arith"] == {"n": 3, "mean": pytest.approx(2 / 3)}


def test_mc_scoring_loglik_routes_every_choice_item(run_dir):
    backend = FakeBackend({})
    items = evaluate_run(run_dir, RunConfig(mc_scoring="loglik"), backend).set_index("item_id")
    assert backend.loglik_requests == 6
    assert items.loc["i3", "response"] == "B) yes!" and items.loc["i3", "score"] == 1.0
    assert items.loc["i4", "response"] == "A) long option" and items.loc["i4", "score"] == 1.0


def test_resume_uses_partial_responses(run_dir):
    with (run_dir / rundir.RESPONSES_PARTIAL).open("w") as f:
        f.write(json.dumps({"item_id": "i0", "response": "2"}) + "\n")
        f.write(json.dumps({"item_id": "i1", "response": "4"}) + "\n")
        f.write('{"item_id": "i2", "resp')  # cut short by a crash
    backend = FakeBackend({"3+3?": "6"})
    items = evaluate_run(run_dir, RunConfig(), backend)
    assert sorted(backend.generated) == ["3+3?", "Pick one", "Pick two"]
    assert items["score"].tolist()[:3] == [1.0, 1.0, 1.0]


def test_resume_refuses_other_settings(run_dir):
    from cgaps.errors import CGapsError

    backend = FakeBackend({})

    class Dies(FakeBackend):
        def loglikelihood(self, requests, batch_size, progress=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run_dir, RunConfig(batch_size=1), Dies({}))
    assert (run_dir / rundir.RESPONSES_PARTIAL).exists()
    with pytest.raises(CGapsError, match="other settings"):
        evaluate_run(run_dir, RunConfig(batch_size=1, mc_scoring="loglik"), backend)
    evaluate_run(run_dir, RunConfig(batch_size=1), backend)  # same settings: resumes


def test_short_answers_get_short_budgets_and_yesno_loglik(tmp_path):
    items = pd.DataFrame(
        {
            "item_id": ["n", "c", "y"],
            "benchmark": ["b"] * 3,
            "prompt": ["num?", "mc?", "yn?"],
            "reference": ["1", "A", "no"],
            "answer_type": ["number", "choice", "yesno"],
            "choices": [None, json.dumps(["p", "q"]), None],
        }
    )
    rundir.write_table(items, tmp_path / rundir.ITEMS)
    budgets = {}

    class Records(FakeBackend):
        def generate(self, conversations, max_new_tokens, batch_size, progress=None):
            for m in conversations:
                budgets[m[-1]["content"]] = max_new_tokens
            return super().generate(conversations, max_new_tokens, batch_size, progress)

    evaluate_run(tmp_path, RunConfig(max_new_tokens=200), Records({}))
    assert budgets == {"num?": 200, "mc?": 32, "yn?": 32}
    rundir.write_table(items, tmp_path / "ll" / rundir.ITEMS)
    out = evaluate_run(tmp_path / "ll", RunConfig(mc_scoring="loglik"), Records({}))
    # the fake prefers the longer continuation: "yes" (3) beats "no" (2)
    assert out.set_index("item_id").loc["y", "response"] == "A) yes"
    assert out.set_index("item_id").loc["y", "score"] == 0.0
